/**
 * Server certificates for TLS termination (the gateway's HTTPS listeners): several certificate /
 * key pairs, each from files on the host or given as PEM text (a TLSCertificate from the
 * control plane's store), the one for a connection chosen by the client's SNI against each
 * certificate's DNS names (exact first, then `*.` wildcards, then the first certificate) whatever
 * its source, and reloaded without a restart when a file changes or the stored one is replaced
 * (`replace`): new handshakes get the new certificate, connections open keep theirs (nothing is
 * dropped). Files are polled (`fs.watchFile`): a Kubernetes Secret volume swaps a symlink, which
 * inotify on the file itself misses.
 *
 * TLS 1.2 and 1.3 only, with the AEAD ciphers of Mozilla's "intermediate" profile, and ALPN
 * h2 / http/1.1.
 *
 * What is in force is described by `certificates()` (subject, DNS names, validity, serial, the
 * file), read once per load: the gateway reports it in its `/stats` (the control plane samples it
 * for `meshlet check`'s expiry findings) and as a not-after gauge for alerts. Expiry is reported,
 * never enforced: an expired certificate keeps being served (clients refuse it) until its file is
 * renewed, exactly as before.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as tls from 'node:tls';
import { dnsNames } from './tls-material';

/** Mozilla "intermediate" (TLS 1.2 ECDHE + AEAD; TLS 1.3 suites are always on). */
export const MODERN_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export interface CertFiles {
  certFile: string;
  keyFile: string;
}

/** A certificate and key given as PEM text: a TLSCertificate of the store, by its name. */
interface CertPem {
  secret: string;
  certPem: string;
  keyPem: string;
}

export type CertSource = CertFiles | CertPem;

/** A certificate in force, as loaded from its file or the store. */
export interface CertificateInfo {
  /** The certificate file; for a stored one, `TLSCertificate/NAME`. */
  certFile: string;
  /** The TLSCertificate it came from, when from the store. */
  secret?: string;
  /** The subject, as one line (`CN=a.example.com`, RFC 2253-like order of node's X509Certificate). */
  subject: string;
  /** Lower-cased DNS names (SAN, else the subject CN): what SNI selects it by. */
  names: string[];
  /** Validity, ms since the epoch. */
  notBefore: number;
  notAfter: number;
  serial: string;
  /** When this file was (re)loaded, ms since the epoch. */
  loadedAt: number;
}

interface Loaded {
  context: tls.SecureContext;
  /** Lower-cased DNS names (SAN, else the subject CN). */
  names: string[];
  options: tls.SecureContextOptions;
  info: CertificateInfo;
}

export class ServerCertificates {
  private loaded: Loaded[] = [];
  private readonly byName = new Map<string, tls.SecureContext>();
  private server: tls.Server | undefined;
  private readonly watched: string[] = [];
  private reloadTimer: NodeJS.Timeout | undefined;
  /** Reloads so far (metrics, tests). */
  reloads = 0;

  constructor(
    private sources: readonly CertSource[],
    private readonly minVersion: tls.SecureVersion,
    private readonly events: { reloaded?: (names: string[]) => void; failed?: (err: Error) => void } = {},
    private readonly now: () => number = Date.now,
  ) {
    this.load();
  }

  /** Reads every pair; throws (with the file or TLSCertificate named) when one cannot be read or does not match its key. */
  private load(sources: readonly CertSource[] = this.sources): void {
    const loaded: Loaded[] = [];
    for (const f of sources) {
      let cert: Buffer;
      let key: Buffer;
      const what = 'secret' in f ? `TLSCertificate ${f.secret}` : `certificate ${f.certFile} with key ${f.keyFile}`;
      if ('secret' in f) {
        cert = Buffer.from(f.certPem);
        key = Buffer.from(f.keyPem);
      } else
        try {
          cert = fs.readFileSync(f.certFile);
          key = fs.readFileSync(f.keyFile);
        } catch (err) {
          throw new Error(`cannot read certificate ${f.certFile} / key ${f.keyFile}: ${(err as Error).message}`);
        }
      const options: tls.SecureContextOptions = { cert, key, minVersion: this.minVersion, ciphers: MODERN_CIPHERS, honorCipherOrder: true };
      let context: tls.SecureContext;
      let x: X509Certificate;
      try {
        context = tls.createSecureContext(options);
        x = new X509Certificate(cert);
      } catch (err) {
        throw new Error(`${what}: ${(err as Error).message}`);
      }
      const names = dnsNames(x);
      const info: CertificateInfo = {
        certFile: 'secret' in f ? `TLSCertificate/${f.secret}` : f.certFile,
        ...('secret' in f ? { secret: f.secret } : {}),
        subject: x.subject.split('\n').join(', '),
        names,
        notBefore: Date.parse(x.validFrom),
        notAfter: Date.parse(x.validTo),
        serial: x.serialNumber,
        loadedAt: this.now(),
      };
      loaded.push({ context, names, options, info });
    }
    this.loaded = loaded;
    this.byName.clear();
    // The first certificate naming a host wins, as the list is ordered.
    for (const l of [...loaded].reverse()) for (const n of l.names) this.byName.set(n, l.context);
  }

  /** The certificates in force, in the listener's order (the first is the default). */
  certificates(): CertificateInfo[] {
    return this.loaded.map((l) => ({ ...l.info, names: [...l.info.names] }));
  }

  /** The `tls.createServer` options: SNI selection, versions, ciphers, ALPN. */
  serverOptions(): tls.TlsOptions {
    const first = this.loaded[0] as Loaded;
    return {
      ...first.options,
      ALPNProtocols: ['h2', 'http/1.1'],
      SNICallback: (servername, cb) => cb(null, this.select(servername)),
    };
  }

  /** The context for an SNI name: exact, then the longest matching wildcard, then the first certificate. */
  select(servername: string | undefined): tls.SecureContext {
    if (servername) {
      const name = servername.toLowerCase();
      const exact = this.byName.get(name);
      if (exact) return exact;
      const dot = name.indexOf('.');
      if (dot > 0) {
        const wild = this.byName.get(`*${name.slice(dot)}`);
        if (wild) return wild;
      }
    }
    return (this.loaded[0] as Loaded).context;
  }

  /** Starts watching the files; on a change, reloads them and swaps the server's default context. */
  watch(server: tls.Server, intervalMs = 1000): void {
    this.server = server;
    const onChange = (cur: fs.Stats, prev: fs.Stats) => {
      if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
      // Debounced: a certificate and its key are usually written one after the other.
      if (this.reloadTimer) clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => this.reload(), 100);
      this.reloadTimer.unref();
    };
    for (const f of this.sources) {
      if ('secret' in f) continue;
      for (const file of [f.certFile, f.keyFile]) {
        if (this.watched.includes(file)) continue;
        this.watched.push(file);
        fs.watchFile(file, { interval: intervalMs, persistent: false }, onChange);
      }
    }
  }

  /** The sources in force. */
  sourceList(): readonly CertSource[] {
    return this.sources;
  }

  /** Whether these are the sources in force (same files, same stored PEM text, same order). */
  same(sources: readonly CertSource[]): boolean {
    return sources.length === this.sources.length && sources.every((s, i) => sameSource(s, this.sources[i] as CertSource));
  }

  /**
   * Replaces the sources (a stored certificate was updated): loads them, then swaps the contexts
   * new handshakes use. Throws, keeping what is in force, when one does not load. Files watched
   * stay watched (the file sources of one listener are the same as long as its spec is).
   */
  replace(sources: readonly CertSource[]): void {
    this.load(sources);
    this.sources = sources;
    this.server?.setSecureContext((this.loaded[0] as Loaded).options);
    this.reloads++;
    this.events.reloaded?.(this.loaded.flatMap((l) => l.names));
  }

  /** Reloads now; on failure the certificates in force stay (the error is reported). */
  reload(): boolean {
    try {
      this.load();
    } catch (err) {
      this.events.failed?.(err as Error);
      return false;
    }
    this.server?.setSecureContext((this.loaded[0] as Loaded).options);
    this.reloads++;
    this.events.reloaded?.(this.loaded.flatMap((l) => l.names));
    return true;
  }

  close(): void {
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
    for (const f of this.watched) fs.unwatchFile(f);
    this.watched.length = 0;
  }
}

function sameSource(a: CertSource, b: CertSource): boolean {
  if ('secret' in a) return 'secret' in b && a.secret === b.secret && a.certPem === b.certPem && a.keyPem === b.keyPem;
  return !('secret' in b) && a.certFile === b.certFile && a.keyFile === b.keyFile;
}
