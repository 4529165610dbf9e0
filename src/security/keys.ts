/**
 * ECDSA P-256 keys: every key meshlet makes (CA and workload) is one. WebCrypto (Node's own)
 * generates them, because @peculiar/x509 signs with CryptoKeys; PEM (PKCS#8 / SPKI) is what
 * node:tls and files take.
 */
import { createPrivateKey, createPublicKey, type KeyObject, type webcrypto } from 'node:crypto';
import { subtle } from './x509';

type CryptoKey = webcrypto.CryptoKey;

export const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
export const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface KeyPair {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

/** A fresh P-256 key pair. Extractable: node:tls needs the private key as PEM (in this process only). */
export async function generateKeyPair(): Promise<KeyPair> {
  return (await subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify'])) as KeyPair;
}

export async function privateKeyToPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await subtle.exportKey('pkcs8', key));
  return toPem(der, 'PRIVATE KEY');
}

/**
 * A P-256 private key from PEM (PKCS#8 or SEC1 "EC PRIVATE KEY", as openssl and cert-manager
 * write them), with its public half. Throws a clear error for another key type.
 */
export async function keyPairFromPem(pem: string | Buffer, what = 'key'): Promise<KeyPair> {
  let ko: KeyObject;
  try {
    ko = createPrivateKey(pem);
  } catch (err) {
    throw new Error(`${what}: not a PEM private key (${(err as Error).message})`);
  }
  const d = ko.asymmetricKeyDetails;
  if (ko.asymmetricKeyType !== 'ec' || d?.namedCurve !== 'prime256v1')
    throw new Error(`${what}: must be an ECDSA P-256 key, got ${ko.asymmetricKeyType}${d?.namedCurve ? ` ${d.namedCurve}` : d?.modulusLength ? ` ${d.modulusLength}-bit` : ''}`);
  const pkcs8 = ko.export({ format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(ko).export({ format: 'der', type: 'spki' });
  const privateKey = await subtle.importKey('pkcs8', pkcs8, EC_ALGORITHM, true, ['sign']);
  const publicKey = await subtle.importKey('spki', spki, EC_ALGORITHM, true, ['verify']);
  return { privateKey, publicKey };
}

export function toPem(der: Buffer, label: string): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** A key that signs certificates, with the algorithm its type needs. */
export interface Signer {
  privateKey: CryptoKey;
  algorithm: webcrypto.EcdsaParams | webcrypto.RsaHashedImportParams;
}

/**
 * The signing key of a CA the user brings (a root from cert-manager or openssl): ECDSA P-256 or
 * P-384, or RSA (2048 bits or more). The CA meshlet creates itself is always P-256.
 */
export async function signerFromPem(pem: string | Buffer, what = 'CA key'): Promise<Signer> {
  let ko: KeyObject;
  try {
    ko = createPrivateKey(pem);
  } catch (err) {
    throw new Error(`${what}: not a PEM private key (${(err as Error).message})`);
  }
  const pkcs8 = ko.export({ format: 'der', type: 'pkcs8' });
  const d = ko.asymmetricKeyDetails;
  if (ko.asymmetricKeyType === 'ec' && (d?.namedCurve === 'prime256v1' || d?.namedCurve === 'secp384r1')) {
    const p384 = d.namedCurve === 'secp384r1';
    const privateKey = await subtle.importKey('pkcs8', pkcs8, { name: 'ECDSA', namedCurve: p384 ? 'P-384' : 'P-256' }, false, ['sign']);
    return { privateKey, algorithm: { name: 'ECDSA', hash: p384 ? 'SHA-384' : 'SHA-256' } };
  }
  if (ko.asymmetricKeyType === 'rsa' && (d?.modulusLength ?? 0) >= 2048) {
    const algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    const privateKey = await subtle.importKey('pkcs8', pkcs8, algorithm, false, ['sign']);
    return { privateKey, algorithm };
  }
  throw new Error(`${what}: must be ECDSA P-256/P-384 or RSA of 2048 bits or more, got ${ko.asymmetricKeyType}${d?.namedCurve ? ` ${d.namedCurve}` : d?.modulusLength ? ` ${d.modulusLength}-bit` : ''}`);
}
