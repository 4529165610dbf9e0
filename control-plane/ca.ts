/**
 * The control plane's certificate authority, kept in DATA_DIR/ca/ca.json (mode 0600, directory
 * 0700): the signing material (src/security/ca.ts) and the trust bundle.
 *
 * - First start: a new self-signed root for the trust domain (default `cluster.local`), or, when
 *   the user gives a root (`--ca-cert FILE --ca-key FILE`), an intermediate signed by it.
 * - Later starts load it; a different trust domain than the stored one is an error (every
 *   certificate would change meaning), a different user root makes a new intermediate and adds
 *   the new root to the bundle beside the old one (overlap).
 * - Root rotation (`meshlet ca rotate`, or `rotateRoot`): a new root signs from now on; the old
 *   root stays in the bundle until the overlap ends (default: twice the workload TTL, so every
 *   certificate it signed has been replaced by then). A running control plane notices the
 *   file's change (polled every 2 s), pushes the new bundle to every sidecar, and they request
 *   new certificates at once.
 *
 * Kept in the data dir like the policy store; replicas sharing a CA need the etcd store (later).
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import pino from 'pino';
import { systemClock, type Clock } from '../src/core/clock';
import { CertificateAuthority, DEFAULT_WORKLOAD_TTL_MS, type CaMaterial, type IssuedCertificate } from '../src/security/ca';
import { TrustBundle, type TrustedRoot } from '../src/security/bundle';
import { SecurityError } from '../src/security/errors';
import type { SpiffeId } from '../src/security/spiffe';
import { atomicWriteFile } from './fsutil';

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const CA_DIR = 'ca';
export const CA_FILE = 'ca.json';

export interface MeshCaOptions {
  dataDir: string;
  trustDomain?: string;
  /** A root (or CA chain ending in the root) and its key, PEM: meshlet signs with an intermediate under it. */
  userRoot?: { certPem: string; keyPem: string };
  /** Workload certificate lifetime (default 24 h). */
  workloadTtlMs?: number;
  clock?: Clock;
  logger?: Logger;
  /** How often a running control plane looks for a rotation made by the CLI (default 2000 ms; 0: never). */
  pollMs?: number;
}

interface Stored {
  version: 1;
  material: CaMaterial;
  bundle: TrustedRoot[];
}

export class MeshCa {
  readonly workloadTtlMs: number;
  private ca: CertificateAuthority;
  private bundle: TrustBundle;
  private readonly file: string;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly listeners: (() => void)[] = [];
  private seen: { mtimeMs: number; size: number } | undefined;
  private poll: NodeJS.Timeout | undefined;

  private constructor(ca: CertificateAuthority, bundle: TrustBundle, file: string, opts: MeshCaOptions) {
    this.ca = ca;
    this.bundle = bundle;
    this.file = file;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger ?? pino({ level: 'silent' });
    this.workloadTtlMs = opts.workloadTtlMs ?? DEFAULT_WORKLOAD_TTL_MS;
  }

  static async open(opts: MeshCaOptions): Promise<MeshCa> {
    const clock = opts.clock ?? systemClock;
    const dir = path.join(opts.dataDir, CA_DIR);
    const file = path.join(dir, CA_FILE);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const stored = await readStored(file);
    const td = opts.trustDomain ?? stored?.material.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    if (stored && stored.material.trustDomain !== td)
      throw new SecurityError('CA_INVALID', `the CA in ${file} is for trust domain ${stored.material.trustDomain}, not ${td}: keep --trust-domain ${stored.material.trustDomain}, or move ${dir} away to start a new CA (every workload certificate changes)`);
    let ca: CertificateAuthority;
    let bundle: TrustBundle;
    let changed = false;
    const now = clock.now();
    if (stored && (!opts.userRoot || sameRoot(stored.material.rootPem, opts.userRoot.certPem))) {
      ca = await CertificateAuthority.load(stored.material, clock);
      bundle = new TrustBundle(stored.bundle);
    } else if (opts.userRoot) {
      ca = await CertificateAuthority.createIntermediate(opts.userRoot.certPem, opts.userRoot.keyPem, { trustDomain: td, clock });
      bundle = stored ? new TrustBundle(stored.bundle).withNewRoot(ca.material.rootPem, now + 2 * (opts.workloadTtlMs ?? DEFAULT_WORKLOAD_TTL_MS)) : new TrustBundle([{ pem: ca.material.rootPem }]);
      changed = true;
    } else {
      ca = await CertificateAuthority.createRoot({ trustDomain: td, clock });
      bundle = new TrustBundle([{ pem: ca.material.rootPem }]);
      changed = true;
    }
    const m = new MeshCa(ca, bundle.pruned(now), file, opts);
    if (changed) await m.save();
    else m.seen = await statOf(file);
    if ((opts.pollMs ?? 2000) > 0) {
      m.poll = setInterval(() => void m.reloadIfChanged().catch((err) => m.logger.warn({ err }, 'could not reload the CA file')), opts.pollMs ?? 2000);
      m.poll.unref();
    }
    return m;
  }

  get trustDomain(): string {
    return this.ca.trustDomain;
  }

  /** The roots to trust, as PEM (the ones still in their overlap included). */
  bundlePem(): string {
    return this.bundle.pem(this.clock.now());
  }

  trustBundle(): TrustBundle {
    return this.bundle;
  }

  /** The root that signs now (its certificate or the user root above meshlet's intermediate). */
  rootPem(): string {
    return this.ca.material.rootPem;
  }

  /** A TLS certificate for the control plane's REST API or push port (`hosts`: DNS names and IPs; `uris`: URI SANs). */
  issueServing(hosts: readonly string[], ttlMs: number, uris: readonly string[] = []): ReturnType<CertificateAuthority['issueServing']> {
    return this.ca.issueServing(hosts, ttlMs, uris);
  }

  /** Checks and signs a CSR for `id` (src/security/csr.ts's checks); throws a SecurityError. */
  sign(csrPem: string, id: SpiffeId): Promise<IssuedCertificate> {
    return this.ca.sign(csrPem, id, this.workloadTtlMs);
  }

  /** Called when the bundle or the signing CA changed (a rotation): sidecars need the new bundle and new certificates. */
  onChange(fn: () => void): void {
    this.listeners.push(fn);
  }

  /**
   * A new self-signed root signs from now on; the previous roots stay trusted until
   * `now + overlapMs` (default twice the workload TTL). With a user root, pass the new one.
   */
  async rotateRoot(opts: { overlapMs?: number; userRoot?: { certPem: string; keyPem: string } } = {}): Promise<void> {
    const now = this.clock.now();
    const ca = opts.userRoot
      ? await CertificateAuthority.createIntermediate(opts.userRoot.certPem, opts.userRoot.keyPem, { trustDomain: this.trustDomain, clock: this.clock })
      : await CertificateAuthority.createRoot({ trustDomain: this.trustDomain, clock: this.clock });
    this.ca = ca;
    this.bundle = this.bundle.withNewRoot(ca.material.rootPem, now + (opts.overlapMs ?? 2 * this.workloadTtlMs)).pruned(now);
    await this.save();
    this.logger.info({ roots: this.bundle.info() }, 'CA root rotated; the old root stays trusted until the overlap ends');
    this.emit();
  }

  /** Re-reads ca.json if another process (the CLI) changed it. */
  async reloadIfChanged(): Promise<boolean> {
    const st = await statOf(this.file);
    if (!st || (this.seen && st.mtimeMs === this.seen.mtimeMs && st.size === this.seen.size)) return false;
    const stored = await readStored(this.file);
    if (!stored) return false;
    this.ca = await CertificateAuthority.load(stored.material, this.clock);
    this.bundle = new TrustBundle(stored.bundle).pruned(this.clock.now());
    this.seen = st;
    this.logger.info({ roots: this.bundle.info() }, 'CA reloaded from its file (rotated by the CLI?)');
    this.emit();
    return true;
  }

  close(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = undefined;
  }

  private emit(): void {
    for (const fn of this.listeners) {
      try {
        fn();
      } catch (err) {
        this.logger.warn({ err }, 'CA change listener failed');
      }
    }
  }

  private async save(): Promise<void> {
    const stored: Stored = { version: 1, material: this.ca.material, bundle: [...this.bundle.roots] };
    await atomicWriteFile(this.file, JSON.stringify(stored, null, 2) + '\n', 0o600);
    this.seen = await statOf(this.file);
  }
}

/** The signing root of the CA kept in `dataDir`, without opening (or creating) it; undefined when there is none. */
export async function storedCaRootPem(dataDir: string): Promise<string | undefined> {
  return (await readStored(path.join(dataDir, CA_DIR, CA_FILE)))?.material.rootPem;
}

async function readStored(file: string): Promise<Stored | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let s: Stored;
  try {
    s = JSON.parse(text) as Stored;
  } catch (err) {
    throw new SecurityError('CA_INVALID', `${file}: not JSON (${(err as Error).message})`);
  }
  if (s?.version !== 1 || !s.material?.certPem || !Array.isArray(s.bundle)) throw new SecurityError('CA_INVALID', `${file}: not a meshlet CA file (version 1)`);
  return s;
}

async function statOf(file: string): Promise<{ mtimeMs: number; size: number } | undefined> {
  try {
    const st = await fsp.stat(file);
    return { mtimeMs: st.mtimeMs, size: st.size };
  } catch {
    return undefined;
  }
}

function sameRoot(storedRootPem: string, userCertPem: string): boolean {
  const norm = (s: string) => s.replace(/\s+/g, '');
  return norm(userCertPem).endsWith(norm(storedRootPem));
}
