/**
 * The mesh's certificate authority: it signs short-lived workload certificates (X.509-SVIDs)
 * that carry a SPIFFE ID as their only URI SAN.
 *
 * Two ways to have one:
 * - `CertificateAuthority.createRoot`: meshlet makes its own self-signed root (P-256, 10 years).
 * - `CertificateAuthority.createIntermediate`: the user brings a root (cert + key from files,
 *   e.g. cert-manager's or openssl's); meshlet makes its own P-256 key and an intermediate
 *   certificate signed by that root, and signs workloads with it. The root's key is needed only
 *   at that moment.
 *
 * Workload certificates: P-256 keys only (checked in csr.ts), digitalSignature, serverAuth +
 * clientAuth, valid from a minute ago (clock skew) for `ttlMs` (default 24 h), never past the
 * signing certificate's own expiry. The chain handed out is leaf + intermediate (when there is
 * one); the roots are the trust bundle (bundle.ts).
 */
import { randomBytes, X509Certificate as NodeX509 } from 'node:crypto';
import { isIP } from 'node:net';
import { systemClock, type Clock } from '../core/clock';
import { checkCsr } from './csr';
import { SecurityError } from './errors';
import { generateKeyPair, keyPairFromPem, privateKeyToPem, signerFromPem, SIGNING_ALGORITHM, type Signer } from './keys';
import { checkTrustDomain, type SpiffeId } from './spiffe';
import { subtle, x509 } from './x509';

export const DEFAULT_WORKLOAD_TTL_MS = 24 * 3600_000;
export const DEFAULT_ROOT_TTL_MS = 10 * 365 * 24 * 3600_000;
/** Backdating of notBefore, for clocks a little behind the CA's. */
export const CLOCK_SKEW_MS = 60_000;

/** What a CA is made of, in PEM: what the control plane keeps in its store. */
export interface CaMaterial {
  trustDomain: string;
  /** The certificate the CA signs with (the root itself, or meshlet's intermediate). */
  certPem: string;
  /** Its private key (PKCS#8 PEM). */
  keyPem: string;
  /** Certificates between the signing certificate and the root, excluding both (usually none). */
  chainPem: string[];
  /** The root that anchors this CA. */
  rootPem: string;
}

export interface IssuedCertificate {
  /** The leaf, then the intermediates: what a TLS peer presents (`cert` in node:tls). */
  chainPem: string;
  certPem: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  spiffeId: string;
}

export interface CaOptions {
  trustDomain: string;
  clock?: Clock;
  /** Default 10 years (root) or the user root's remaining life (intermediate). */
  ttlMs?: number;
}

export class CertificateAuthority {
  readonly material: CaMaterial;
  readonly cert: x509.X509Certificate;
  private readonly signer: Signer;
  private readonly clock: Clock;

  private constructor(material: CaMaterial, cert: x509.X509Certificate, signer: Signer, clock: Clock) {
    this.material = material;
    this.cert = cert;
    this.signer = signer;
    this.clock = clock;
  }

  get trustDomain(): string {
    return this.material.trustDomain;
  }

  /** When the signing certificate expires. */
  get notAfter(): Date {
    return this.cert.notAfter;
  }

  /** A new self-signed root CA for `trustDomain`. */
  static async createRoot(opts: CaOptions): Promise<CertificateAuthority> {
    const tdErr = checkTrustDomain(opts.trustDomain);
    if (tdErr) throw new SecurityError('CA_INVALID', tdErr);
    const clock = opts.clock ?? systemClock;
    const keys = await generateKeyPair();
    const now = clock.now();
    const name = `O=meshlet, CN=meshlet root CA ${opts.trustDomain} ${randomBytes(3).toString('hex')}`;
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + (opts.ttlMs ?? DEFAULT_ROOT_TTL_MS)),
      signingAlgorithm: SIGNING_ALGORITHM,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 1, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${opts.trustDomain}` }]),
      ],
    });
    const certPem = pemOf(cert);
    const material: CaMaterial = { trustDomain: opts.trustDomain, certPem, keyPem: await privateKeyToPem(keys.privateKey), chainPem: [], rootPem: certPem };
    return new CertificateAuthority(material, cert, { privateKey: keys.privateKey, algorithm: SIGNING_ALGORITHM }, clock);
  }

  /**
   * An intermediate CA under a root the user brings. `rootCertPem` may hold the root alone, or
   * the user's CA certificate followed by its chain up to the root (the last one is the root).
   */
  static async createIntermediate(rootCertPem: string, rootKeyPem: string, opts: CaOptions): Promise<CertificateAuthority> {
    const tdErr = checkTrustDomain(opts.trustDomain);
    if (tdErr) throw new SecurityError('CA_INVALID', tdErr);
    const clock = opts.clock ?? systemClock;
    const certs = splitPem(rootCertPem);
    if (certs.length === 0) throw new SecurityError('CA_INVALID', 'the CA certificate file holds no PEM certificate');
    let issuer: x509.X509Certificate;
    try {
      issuer = new x509.X509Certificate(certs[0] as string);
    } catch (err) {
      throw new SecurityError('CA_INVALID', `the CA certificate does not parse: ${(err as Error).message}`);
    }
    const bc = issuer.getExtension(x509.BasicConstraintsExtension);
    if (!bc?.ca) throw new SecurityError('CA_INVALID', `the certificate ${issuer.subject} is not a CA (basicConstraints CA:TRUE missing)`);
    let signer: Signer;
    try {
      signer = await signerFromPem(rootKeyPem, 'the CA key');
    } catch (err) {
      throw new SecurityError('CA_INVALID', (err as Error).message);
    }
    const keys = await generateKeyPair();
    const now = clock.now();
    const notAfter = new Date(Math.min(issuer.notAfter.getTime(), now + (opts.ttlMs ?? DEFAULT_ROOT_TTL_MS)));
    if (notAfter.getTime() <= now) throw new SecurityError('CA_INVALID', `the CA certificate ${issuer.subject} expired on ${issuer.notAfter.toISOString()}`);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `O=meshlet, CN=meshlet intermediate CA ${opts.trustDomain} ${randomBytes(3).toString('hex')}`,
      issuer: issuer.subjectName,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter,
      signingAlgorithm: signer.algorithm,
      publicKey: keys.publicKey,
      signingKey: signer.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(issuer.publicKey),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${opts.trustDomain}` }]),
      ],
    });
    // The key must be the certificate's: a signature the user's certificate does not verify is a wrong pair.
    if (!(await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true })))
      throw new SecurityError('CA_INVALID', `the CA key does not belong to the certificate ${issuer.subject}`);
    const material: CaMaterial = {
      trustDomain: opts.trustDomain,
      certPem: pemOf(cert),
      keyPem: await privateKeyToPem(keys.privateKey),
      // The user's certificates below the root (none when it is the root): handed out after ours.
      chainPem: certs.slice(0, -1),
      rootPem: certs[certs.length - 1] as string,
    };
    return new CertificateAuthority(material, cert, { privateKey: keys.privateKey, algorithm: SIGNING_ALGORITHM }, clock);
  }

  /** A CA from the material a previous `createRoot` / `createIntermediate` made (the store's copy). */
  static async load(material: CaMaterial, clock: Clock = systemClock): Promise<CertificateAuthority> {
    let cert: x509.X509Certificate;
    try {
      cert = new x509.X509Certificate(material.certPem);
    } catch (err) {
      throw new SecurityError('CA_INVALID', `the stored CA certificate does not parse: ${(err as Error).message}`);
    }
    let keys;
    try {
      keys = await keyPairFromPem(material.keyPem, 'the stored CA key');
    } catch (err) {
      throw new SecurityError('CA_INVALID', (err as Error).message);
    }
    const n = new NodeX509(material.certPem);
    const spki = Buffer.from(await subtle.exportKey('spki', keys.publicKey));
    if (!n.publicKey.export({ format: 'der', type: 'spki' }).equals(spki)) throw new SecurityError('CA_INVALID', 'the stored CA key does not belong to the stored CA certificate');
    return new CertificateAuthority({ ...material, chainPem: [...material.chainPem] }, cert, { privateKey: keys.privateKey, algorithm: SIGNING_ALGORITHM }, clock);
  }

  /**
   * Checks `csrPem` (csr.ts: size, parse, proof of possession, P-256, exactly `identity` as URI
   * SAN) and signs it. Throws a SecurityError with a code when the CSR is refused.
   */
  async sign(csrPem: string, identity: SpiffeId, ttlMs = DEFAULT_WORKLOAD_TTL_MS): Promise<IssuedCertificate> {
    if (identity.trustDomain !== this.trustDomain)
      throw new SecurityError('CSR_WRONG_IDENTITY', `${identity.uri} is not in this CA's trust domain ${this.trustDomain}`);
    const { publicKey } = await checkCsr(csrPem, identity);
    const now = this.clock.now();
    const notBefore = new Date(now - CLOCK_SKEW_MS);
    const notAfter = new Date(Math.min(now + ttlMs, this.cert.notAfter.getTime()));
    const serialNumber = serial();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber,
      subject: `O=${identity.trustDomain}`,
      issuer: this.cert.subjectName,
      notBefore,
      notAfter,
      signingAlgorithm: this.signer.algorithm,
      publicKey,
      signingKey: this.signer.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        await x509.AuthorityKeyIdentifierExtension.create(this.cert.publicKey),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity.uri }]),
      ],
    });
    const certPem = pemOf(cert);
    return {
      certPem,
      chainPem: [certPem, ...(this.material.rootPem === this.material.certPem ? [] : [this.material.certPem]), ...this.material.chainPem].join(''),
      serial: serialNumber,
      notBefore,
      notAfter,
      spiffeId: identity.uri,
    };
  }
  /** Whether this CA signs with a self-signed root of its own (not an intermediate under a user root). */
  get selfSigned(): boolean {
    return this.material.certPem === this.material.rootPem;
  }

  /**
   * A cross-certificate for `next` (a root rotation): `next`'s subject and public key, signed by
   * this CA, valid until `notAfter`. A chain `leaf <- cross <- this root` verifies under this
   * root, so a client that pins this root (a join token made before the rotation) can verify a
   * certificate `next` signed, during the overlap only. pathLen 0: it signs leaves, never CAs.
   */
  async crossSign(next: CertificateAuthority, notAfter: Date): Promise<string> {
    const now = this.clock.now();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: next.cert.subjectName,
      issuer: this.cert.subjectName,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(Math.min(notAfter.getTime(), this.cert.notAfter.getTime(), next.cert.notAfter.getTime())),
      signingAlgorithm: this.signer.algorithm,
      publicKey: next.cert.publicKey,
      signingKey: this.signer.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(next.cert.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.cert.publicKey),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${this.trustDomain}` }]),
      ],
    });
    return pemOf(cert);
  }

  /**
   * A TLS server certificate for the control plane's own ports (its REST API): a fresh P-256 key,
   * DNS and IP SANs for `hosts`, serverAuth only. Returns the chain (leaf first) and the key, PEM.
   */
  async issueServing(hosts: readonly string[], ttlMs: number, uris: readonly string[] = []): Promise<{ certPem: string; chainPem: string; keyPem: string; notAfter: Date }> {
    if (hosts.length === 0) throw new SecurityError('CA_INVALID', 'a serving certificate needs at least one host name or IP address');
    const keys = await generateKeyPair();
    const now = this.clock.now();
    const notAfter = new Date(Math.min(now + ttlMs, this.cert.notAfter.getTime()));
    const ip = (h: string): boolean => isIP(h) !== 0;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `O=meshlet, CN=${hosts[0]}`,
      issuer: this.cert.subjectName,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter,
      signingAlgorithm: this.signer.algorithm,
      publicKey: keys.publicKey,
      signingKey: this.signer.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        await x509.AuthorityKeyIdentifierExtension.create(this.cert.publicKey),
        new x509.SubjectAlternativeNameExtension([
          ...uris.map((u) => ({ type: 'url' as const, value: u })),
          ...hosts.map((h) => (ip(h) ? { type: 'ip' as const, value: h } : { type: 'dns' as const, value: h })),
        ]),
      ],
    });
    const certPem = pemOf(cert);
    const chainPem = [certPem, ...(this.material.rootPem === this.material.certPem ? [] : [this.material.certPem]), ...this.material.chainPem].join('');
    return { certPem, chainPem, keyPem: await privateKeyToPem(keys.privateKey), notAfter };
  }
}

/** PEM ending in a newline, so certificates concatenate into a valid chain or bundle. */
function pemOf(cert: x509.X509Certificate): string {
  return cert.toString('pem').replace(/\r\n/g, '\n').replace(/\n?$/, '\n');
}

/** A positive 128-bit serial, hex. */
function serial(): string {
  const b = randomBytes(16);
  b[0] = ((b[0] as number) & 0x7f) | 0x01;
  return b.toString('hex');
}

/** The PEM certificates in a text, in order. */
export function splitPem(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)?.map((s) => (s.endsWith('\n') ? s : s + '\n')) ?? [];
}
