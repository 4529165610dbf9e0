/**
 * The trust bundle: the root certificates a mesh peer accepts. It holds more than one root while
 * a root is rotated: the new root signs new certificates, the old one stays trusted until
 * `until` (the overlap), so certificates it signed keep working until they are replaced.
 */
import { X509Certificate } from 'node:crypto';
import { splitPem } from './ca';

export interface TrustedRoot {
  pem: string;
  /** Trusted until then (ms since the epoch); absent: until the certificate itself expires. */
  until?: number;
}

export interface RootInfo {
  subject: string;
  fingerprint256: string;
  notAfter: string;
  until?: string;
}

export class TrustBundle {
  readonly roots: readonly TrustedRoot[];

  constructor(roots: readonly TrustedRoot[]) {
    for (const r of roots) new X509Certificate(r.pem); // throws on a certificate that does not parse
    this.roots = Object.freeze(roots.map((r) => Object.freeze({ ...r })));
  }

  /** From PEM text holding one or more certificates. */
  static fromPem(text: string): TrustBundle {
    const certs = splitPem(text);
    if (certs.length === 0) throw new Error('the trust bundle holds no PEM certificate');
    return new TrustBundle(certs.map((pem) => ({ pem })));
  }

  /** The roots still trusted at `now`, as one PEM text (node:tls `ca`). */
  pem(now = Date.now()): string {
    return this.active(now)
      .map((r) => r.pem)
      .join('');
  }

  active(now = Date.now()): TrustedRoot[] {
    return this.roots.filter((r) => (r.until === undefined || r.until > now) && new Date(new X509Certificate(r.pem).validTo).getTime() > now);
  }

  /** A new bundle with `pem` first, the others kept (an `until` set on those that had none is the overlap end). */
  withNewRoot(pem: string, overlapUntil?: number): TrustBundle {
    const others = this.roots.filter((r) => r.pem !== pem).map((r) => ({ pem: r.pem, until: r.until ?? overlapUntil }));
    return new TrustBundle([{ pem }, ...others]);
  }

  /** Without the roots no longer trusted at `now`. */
  pruned(now = Date.now()): TrustBundle {
    return new TrustBundle(this.active(now));
  }

  info(): RootInfo[] {
    return this.roots.map((r) => {
      const c = new X509Certificate(r.pem);
      return { subject: c.subject.replace(/\n/g, ', '), fingerprint256: c.fingerprint256, notAfter: new Date(c.validTo).toISOString(), until: r.until === undefined ? undefined : new Date(r.until).toISOString() };
    });
  }
}
