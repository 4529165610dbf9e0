/**
 * Certificate signing requests (PKCS#10) for workload certificates: made by the sidecar
 * (`createCsr`: the key never leaves its process; only the CSR does), judged by the CA
 * (`checkCsr`) before it signs anything.
 *
 * A CSR is signed only if it is at most MAX_CSR_BYTES, parses (with asn1js resource limits),
 * carries a valid self-signature (proof the requester holds the key), holds an ECDSA P-256
 * public key, and names exactly one SAN: the URI of the SPIFFE ID its credential proved.
 */
import { createPublicKey } from 'node:crypto';
import { SecurityError } from './errors';
import { SIGNING_ALGORITHM, type KeyPair } from './keys';
import type { SpiffeId } from './spiffe';
import { x509 } from './x509';

/** A P-256 CSR with one URI SAN is ~450 bytes of PEM; 8 KiB is generous and bounds the parser's work. */
export const MAX_CSR_BYTES = 8 * 1024;

export async function createCsr(keys: KeyPair, id: SpiffeId): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `O=${id.trustDomain}`,
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id.uri }])],
  });
  return csr.toString('pem').replace(/\n?$/, '\n');
}

export interface CheckedCsr {
  /** The requester's public key (SPKI DER), what the certificate will certify. */
  publicKey: x509.PublicKey;
}

/** Checks a CSR for `expected`; throws a SecurityError with a code and a message a person can act on. */
export async function checkCsr(pem: string, expected: SpiffeId): Promise<CheckedCsr> {
  if (typeof pem !== 'string' || pem.trim() === '') throw new SecurityError('CSR_MALFORMED', 'the CSR is empty');
  const size = Buffer.byteLength(pem);
  if (size > MAX_CSR_BYTES) throw new SecurityError('CSR_TOO_LARGE', `the CSR is ${size} bytes; at most ${MAX_CSR_BYTES} are accepted`);
  if (!/-----BEGIN (NEW )?CERTIFICATE REQUEST-----/.test(pem)) throw new SecurityError('CSR_MALFORMED', 'not a PEM certificate request (no BEGIN CERTIFICATE REQUEST line)');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch (err) {
    throw new SecurityError('CSR_MALFORMED', `the CSR does not parse: ${(err as Error).message}`, { cause: err });
  }
  let keyType: string;
  try {
    const ko = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
    const d = ko.asymmetricKeyDetails;
    keyType = ko.asymmetricKeyType === 'ec' ? `ec ${d?.namedCurve}` : `${ko.asymmetricKeyType}${d?.modulusLength ? ` ${d.modulusLength}-bit` : ''}`;
  } catch (err) {
    throw new SecurityError('CSR_MALFORMED', `the CSR's public key does not parse: ${(err as Error).message}`, { cause: err });
  }
  if (keyType !== 'ec prime256v1') throw new SecurityError('CSR_KEY_TYPE', `the CSR's key must be ECDSA P-256, got ${keyType}`);
  let valid = false;
  try {
    valid = await csr.verify();
  } catch {
    valid = false;
  }
  if (!valid) throw new SecurityError('CSR_BAD_SIGNATURE', "the CSR's signature does not verify with its own key (proof of possession failed)");
  let names: { type: string; value: string }[] = [];
  try {
    const san = csr.getExtension('2.5.29.17') as x509.SubjectAlternativeNameExtension | null;
    names = san ? san.names.items.map((n) => ({ type: n.type, value: n.value })) : [];
  } catch (err) {
    throw new SecurityError('CSR_MALFORMED', `the CSR's subjectAltName does not parse: ${(err as Error).message}`, { cause: err });
  }
  const uris = names.filter((n) => n.type === 'url');
  if (uris.length === 0) throw new SecurityError('CSR_NO_IDENTITY', `the CSR names no SPIFFE ID; it must ask for ${expected.uri}`);
  const others = names.filter((n) => n.type !== 'url' || n.value !== expected.uri);
  if (others.length > 0 || uris.length !== 1)
    throw new SecurityError(
      'CSR_WRONG_IDENTITY',
      `the CSR asks for ${names.map((n) => `${n.type === 'url' ? 'URI' : n.type.toUpperCase()}:${n.value}`).join(', ')}; its credential proves only ${expected.uri}`,
    );
  return { publicKey: csr.publicKey };
}
