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
 * Kept in the data dir like the policy store, or, with the etcd store, in etcd (secrets.ts): then
 * every replica signs with the same CA and trusts the same bundle, and the first replica to start
 * makes it (a replica that loses that race loads the winner's).
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
import { FileSecret, type SecretDoc } from './secrets';

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
  /** How often a running control plane looks for a rotation made by the CLI or another replica (default 2000 ms; 0: never). */
  pollMs?: number;
  /** Where the CA is kept (default: DATA_DIR/ca/ca.json): etcd for replicas that share it. */
  doc?: SecretDoc;
}

interface Stored {
  version: 1;
  material: CaMaterial;
  bundle: TrustedRoot[];
  /** The last rotation's cross-certificate (the signing root's key, signed by the root before it), while its overlap lasts. */
  cross?: CrossCertificate;
}

/** See `MeshCa.crossChain`. */
export interface CrossCertificate {
  pem: string;
  /** The previous root, which signed it. */
  issuerPem: string;
  /** Its overlap's end (ms since the epoch). */
  until: number;
}

export class MeshCa {
  readonly workloadTtlMs: number;
  private ca: CertificateAuthority;
  private bundle: TrustBundle;
  private cross: CrossCertificate | undefined;
  private readonly doc: SecretDoc;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly listeners: (() => void)[] = [];
  private seen: string | undefined;
  private poll: NodeJS.Timeout | undefined;

  private constructor(ca: CertificateAuthority, bundle: TrustBundle, doc: SecretDoc, opts: MeshCaOptions) {
    this.ca = ca;
    this.bundle = bundle;
    this.doc = doc;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger ?? pino({ level: 'silent' });
    this.workloadTtlMs = opts.workloadTtlMs ?? DEFAULT_WORKLOAD_TTL_MS;
  }

  static async open(opts: MeshCaOptions): Promise<MeshCa> {
    const clock = opts.clock ?? systemClock;
    const doc = opts.doc ?? new FileSecret(path.join(opts.dataDir, CA_DIR, CA_FILE));
    if (!opts.doc) await fsp.mkdir(path.join(opts.dataDir, CA_DIR), { recursive: true, mode: 0o700 });
    // Twice at most: a replica that loses the race to create (or to change) the CA loads the winner's.
    for (let attempt = 1; ; attempt++) {
      const cur = await doc.read();
      const stored = cur ? parseStored(cur.text, doc.where) : undefined;
      const td = opts.trustDomain ?? stored?.material.trustDomain ?? DEFAULT_TRUST_DOMAIN;
      if (stored && stored.material.trustDomain !== td)
        throw new SecurityError('CA_INVALID', `the CA in ${doc.where} is for trust domain ${stored.material.trustDomain}, not ${td}: keep --trust-domain ${stored.material.trustDomain}, or remove it to start a new CA (every workload certificate changes)`);
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
      const m = new MeshCa(ca, bundle.pruned(now), doc, opts);
      if (!changed) m.cross = stored?.cross;
      if (changed) {
        if (!(await m.save(cur?.version))) {
          if (attempt >= 3) throw new SecurityError('CA_INVALID', `the CA in ${doc.where} kept changing while this control plane started; try again`);
          continue;
        }
      } else m.seen = cur?.version;
      if ((opts.pollMs ?? 2000) > 0) {
        m.poll = setInterval(() => void m.reloadIfChanged().catch((err) => m.logger.warn({ err }, 'could not reload the CA')), opts.pollMs ?? 2000);
        m.poll.unref();
      }
      return m;
    }
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

  /**
   * During a rotation's overlap: the cross-certificate of the signing root (its key, signed by
   * the previous root) and the previous root, to send after the push port's certificate instead
   * of the new root. A client pinning the previous root (a join token made before the rotation)
   * then verifies the push port under it, one pinning the new root finds the new root's key in
   * the chain (src/snapshot/push-tls.ts), and a client holding the bundle verifies under the new
   * root as before. Undefined when there is none: no rotation, its overlap ended, or a rotation
   * to or from a user's root (the previous signing certificate is then not a root of ours).
   */
  crossChain(): string[] | undefined {
    const c = this.cross;
    if (!c || c.until <= this.clock.now()) return undefined;
    return [c.pem, c.issuerPem];
  }

  /** When the cross-certificate's overlap ends (undefined: none). */
  crossUntil(): number | undefined {
    return this.crossChain() ? this.cross?.until : undefined;
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
    const before = { ca: this.ca, bundle: this.bundle, cross: this.cross };
    const until = now + (opts.overlapMs ?? 2 * this.workloadTtlMs);
    // The old root vouches for the new one until the overlap ends: join tokens pinning it still join (crossChain).
    this.cross = before.ca.selfSigned && ca.selfSigned && until > now ? { pem: await before.ca.crossSign(ca, new Date(until)), issuerPem: before.ca.material.rootPem, until } : undefined;
    this.ca = ca;
    this.bundle = this.bundle.withNewRoot(ca.material.rootPem, until).pruned(now);
    if (!(await this.save(this.seen))) {
      Object.assign(this, before);
      throw new SecurityError('CA_INVALID', `the CA in ${this.doc.where} was changed by another control plane (or the CLI) meanwhile: nothing rotated; try again`);
    }
    this.logger.info({ roots: this.bundle.info() }, 'CA root rotated; the old root stays trusted until the overlap ends');
    this.emit();
  }

  /** Re-reads the CA if another process (the CLI, another replica) changed it. */
  async reloadIfChanged(): Promise<boolean> {
    const v = await this.doc.version();
    if (v === undefined || v === this.seen) return false;
    const cur = await this.doc.read();
    if (!cur) return false;
    const stored = parseStored(cur.text, this.doc.where);
    this.ca = await CertificateAuthority.load(stored.material, this.clock);
    this.bundle = new TrustBundle(stored.bundle).pruned(this.clock.now());
    this.cross = stored.cross;
    this.seen = cur.version;
    this.logger.info({ roots: this.bundle.info(), where: this.doc.where }, 'CA reloaded (rotated by the CLI or another replica)');
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

  /** Writes the CA if it is still at version `expected`; false when someone else changed it first. */
  private async save(expected: string | undefined): Promise<boolean> {
    const stored: Stored = { version: 1, material: this.ca.material, bundle: [...this.bundle.roots], ...(this.cross ? { cross: this.cross } : {}) };
    const written = await this.doc.write(JSON.stringify(stored, null, 2) + '\n', expected);
    if (written === undefined) return false;
    this.seen = written;
    return true;
  }
}

/** The signing root of the CA kept in `dataDir`, without opening (or creating) it; undefined when there is none. */
export async function storedCaRootPem(dataDir: string): Promise<string | undefined> {
  const cur = await new FileSecret(path.join(dataDir, CA_DIR, CA_FILE)).read();
  return cur ? parseStored(cur.text, path.join(dataDir, CA_DIR, CA_FILE)).material.rootPem : undefined;
}

function parseStored(text: string, where: string): Stored {
  let s: Stored;
  try {
    s = JSON.parse(text) as Stored;
  } catch (err) {
    throw new SecurityError('CA_INVALID', `${where}: not JSON (${(err as Error).message})`);
  }
  if (s?.version !== 1 || !s.material?.certPem || !Array.isArray(s.bundle)) throw new SecurityError('CA_INVALID', `${where}: not a meshlet CA (version 1)`);
  return s;
}

function sameRoot(storedRootPem: string, userCertPem: string): boolean {
  const norm = (s: string) => s.replace(/\s+/g, '');
  return norm(userCertPem).endsWith(norm(storedRootPem));
}
