/**
 * How a sidecar (or gateway) knows it talks to the real control plane on the push port before it
 * sends its credential there.
 *
 * - The push port's certificate is issued by the mesh CA and names the control plane's SPIFFE ID
 *   `spiffe://TD/control-plane` (which no workload can get: workload IDs are `/svc/NAME` or
 *   `/ns/NS/sa/SA`), besides DNS names and IPs. A client accepts the certificate when it chains
 *   to a CA it trusts and names either that SPIFFE ID or the host it dialled.
 * - The CA it trusts: a file (`--ca-file`), or, for a first join with nothing but a join token,
 *   the CA's public-key hash that `meshlet token create` puts in the token (as kubeadm's
 *   `--discovery-token-ca-cert-hash`): `sha256:` and the hex SHA-256 of the CA certificate's
 *   DER SubjectPublicKeyInfo. The same hash as
 *   `openssl x509 -pubkey -noout -in ca.pem | openssl pkey -pubin -outform der | sha256sum`.
 *
 * A join token carrying a pin reads `mlj_ID.SECRET.sha256:HEX`; the control plane only needs
 * `mlj_ID.SECRET` (the pin is the client's, it proves nothing to the server).
 */
import { createHash, X509Certificate } from 'node:crypto';
import { SecurityError } from './errors';

export const CONTROL_PLANE_PATH = '/control-plane';

/** The SPIFFE ID in the push port's certificate. */
export function controlPlaneSpiffeUri(trustDomain: string): string {
  return `spiffe://${trustDomain}${CONTROL_PLANE_PATH}`;
}

const PIN = /^sha256:[0-9a-f]{64}$/;

/** `sha256:HEX` of a CA certificate's SubjectPublicKeyInfo (PEM or DER). */
export function caPinOf(cert: string | Buffer | X509Certificate): string {
  const x = cert instanceof X509Certificate ? cert : new X509Certificate(cert);
  const spki = x.publicKey.export({ type: 'spki', format: 'der' });
  return 'sha256:' + createHash('sha256').update(spki).digest('hex');
}

/** A pin as given (`sha256:` and 64 hex digits, case-insensitive); throws a SecurityError otherwise. */
export function parseCaPin(s: string): string {
  const p = s.trim().toLowerCase();
  if (!PIN.test(p)) throw new SecurityError('CREDENTIAL_INVALID', `not a CA hash: expected sha256: and 64 hex digits (from \`meshlet ca show\` or \`meshlet token create\`), got ${JSON.stringify(s.length > 80 ? s.slice(0, 80) + '...' : s)}`);
  return p;
}

/** A join token with its CA pin split off: `credential` is what the control plane verifies. */
export function splitJoinToken(token: string): { credential: string; pin?: string } {
  const t = token.trim();
  const m = /^(mlj_[0-9a-f]{8}\.[A-Za-z0-9_-]{43})\.(sha256:[0-9a-fA-F]{64})$/.exec(t);
  return m ? { credential: m[1] as string, pin: (m[2] as string).toLowerCase() } : { credential: t };
}

/** `token` with `pin` appended (join tokens only). */
export function withCaPin(token: string, pin: string | undefined): string {
  return pin ? `${token}.${pin}` : token;
}

/** The certificates of a PEM text (a bundle or a chain), each as its own PEM block. */
export function pemCertificates(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((b) => b + '\n') ?? [];
}
