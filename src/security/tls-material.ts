/**
 * A certificate chain and its private key given as PEM text (a TLSCertificate in the store):
 * checked once, where it is applied, with a stable code per failure, and described (names,
 * validity) for `meshlet check` and the gateway's `/stats`.
 *
 * The checks are those a TLS server would otherwise fail on at its first handshake, or worse,
 * never (a key for another certificate): the chain is PEM certificates (and no key), the key is
 * an unencrypted PEM private key of a usable strength, and it is the key of the first certificate
 * (the leaf). Time is not checked here: a stored certificate that expires later must still parse
 * (a gateway given it keeps serving it, and `meshlet check` reports MC0018); `checkValidity` is
 * what the control plane's API adds when a certificate is written.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { REDACTED } from '../policy/redact';

type TlsMaterialCode =
  | 'TLS_CERT_INVALID'
  | 'TLS_CERT_HAS_KEY'
  | 'TLS_KEY_INVALID'
  | 'TLS_KEY_ENCRYPTED'
  | 'TLS_KEY_WEAK'
  | 'TLS_KEY_REDACTED'
  | 'TLS_KEY_MISMATCH'
  | 'TLS_CHAIN_ORDER'
  | 'TLS_CERT_EXPIRED'
  | 'TLS_CERT_NOT_YET_VALID';

interface TlsMaterialError {
  /** `certificate` or `privateKey` (the spec field). */
  field: 'certificate' | 'privateKey';
  code: TlsMaterialCode;
  message: string;
}

/** The leaf, described. */
interface LeafInfo {
  /** One line (`CN=a.example.com`). */
  subject: string;
  /** Lower-cased DNS names (SAN, else the subject CN): what SNI selects it by. */
  names: string[];
  /** ms since the epoch. */
  notBefore: number;
  notAfter: number;
  serial: string;
  /** Certificates in the chain, the leaf included. */
  chainLength: number;
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Checks a PEM chain and key; on success describes the leaf. */
export function checkTlsMaterial(certificatePem: string, privateKeyPem: string): { ok: true; leaf: LeafInfo } | { ok: false; errors: TlsMaterialError[] } {
  const errors: TlsMaterialError[] = [];
  const e = (field: TlsMaterialError['field'], code: TlsMaterialCode, message: string) => errors.push({ field, code, message });
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(certificatePem)) e('certificate', 'TLS_CERT_HAS_KEY', 'holds a private key: put the certificate chain here and the key in privateKey');
  const blocks = certificatePem.match(CERT_BLOCK) ?? [];
  const chain: X509Certificate[] = [];
  if (blocks.length === 0) e('certificate', 'TLS_CERT_INVALID', 'is not a PEM certificate (expected -----BEGIN CERTIFICATE----- blocks, the leaf first)');
  blocks.forEach((b, i) => {
    try {
      chain.push(new X509Certificate(b));
    } catch (err) {
      e('certificate', 'TLS_CERT_INVALID', `certificate ${i + 1} of ${blocks.length} does not parse: ${(err as Error).message}`);
    }
  });
  // Text around the blocks (openssl's "Bag Attributes", comments) is ignored, as OpenSSL does.
  let key: KeyObject | undefined;
  if (privateKeyPem.trim() === REDACTED) {
    e(
      'privateKey',
      'TLS_KEY_REDACTED',
      `is ${REDACTED}: the control plane never returns a private key, and pushes it only to a gateway it verified (TLS push port, a credential for the gateway's name); give the PEM key itself`,
    );
  } else if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(privateKeyPem)) {
    e('privateKey', 'TLS_KEY_ENCRYPTED', 'is encrypted: give the key unencrypted (`openssl pkey -in KEY -out PLAIN`); the store keeps it as the API role admin alone can write it');
  } else if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(privateKeyPem)) {
    e('privateKey', 'TLS_KEY_INVALID', 'is not a PEM private key (expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA/EC PRIVATE KEY-----)');
  } else {
    try {
      key = createPrivateKey({ key: privateKeyPem, format: 'pem' });
    } catch (err) {
      e('privateKey', 'TLS_KEY_INVALID', `does not parse: ${(err as Error).message}`);
    }
  }
  if (key) {
    const d = key.asymmetricKeyDetails;
    if (key.asymmetricKeyType === 'rsa' && (d?.modulusLength ?? 0) < 2048) e('privateKey', 'TLS_KEY_WEAK', `is an RSA key of ${d?.modulusLength} bits; at least 2048`);
    else if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'ec' && key.asymmetricKeyType !== 'ed25519' && key.asymmetricKeyType !== 'rsa-pss')
      e('privateKey', 'TLS_KEY_INVALID', `is a ${key.asymmetricKeyType} key; use RSA (2048 bits or more), ECDSA or Ed25519`);
  }
  const leaf = chain[0];
  const k = key;
  if (k && leaf && errors.length === 0 && !leaf.checkPrivateKey(k)) {
    const other = chain.findIndex((c) => c.checkPrivateKey(k));
    if (other > 0) e('certificate', 'TLS_CHAIN_ORDER', `the key belongs to certificate ${other + 1} of the chain, not the first: put the leaf (the server's own certificate) first`);
    else e('privateKey', 'TLS_KEY_MISMATCH', `is not the key of the certificate (${describe(leaf)}): give the key the certificate was issued for`);
  }
  if (errors.length > 0 || !leaf) return { ok: false, errors };
  return { ok: true, leaf: leafInfo(leaf, chain.length) };
}

/** The leaf of a PEM chain, described (undefined when it does not parse). */
export function describeLeaf(certificatePem: string): LeafInfo | undefined {
  const blocks = certificatePem.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) return undefined;
  try {
    return leafInfo(new X509Certificate(blocks[0] as string), blocks.length);
  } catch {
    return undefined;
  }
}

/** Whether the leaf is valid at `now`: an error naming the time otherwise. */
export function checkValidity(leaf: LeafInfo, now: number): TlsMaterialError | undefined {
  if (leaf.notAfter <= now) return { field: 'certificate', code: 'TLS_CERT_EXPIRED', message: `expired at ${new Date(leaf.notAfter).toISOString()} (${leaf.names.join(', ') || leaf.subject}): clients would refuse it; apply a renewed certificate` };
  if (leaf.notBefore > now) return { field: 'certificate', code: 'TLS_CERT_NOT_YET_VALID', message: `is not valid until ${new Date(leaf.notBefore).toISOString()} (${leaf.names.join(', ') || leaf.subject}): clients would refuse it until then; check the issuer's clock` };
  return undefined;
}

function leafInfo(x: X509Certificate, chainLength: number): LeafInfo {
  return { subject: x.subject.split('\n').join(', '), names: dnsNames(x), notBefore: Date.parse(x.validFrom), notAfter: Date.parse(x.validTo), serial: x.serialNumber, chainLength };
}

function describe(x: X509Certificate): string {
  const n = dnsNames(x);
  return n.length > 0 ? n.join(', ') : x.subject.split('\n').join(', ');
}

/** Lower-cased DNS names of a certificate: its SAN DNS entries, else the subject CN. */
export function dnsNames(x: X509Certificate): string[] {
  const san = x.subjectAltName;
  const names: string[] = [];
  if (san)
    for (const part of san.split(/,\s*/)) {
      if (part.startsWith('DNS:')) names.push(part.slice(4).toLowerCase());
    }
  if (names.length === 0) {
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(x.subject);
    if (cn) names.push((cn[1] as string).toLowerCase());
  }
  return names;
}
