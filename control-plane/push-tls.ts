/**
 * TLS on the push port (15010): the server side. The certificate comes from the mesh CA (P-256,
 * serverAuth; SANs: the control plane's SPIFFE ID `spiffe://TD/control-plane`, localhost,
 * loopback, the --push host and every --push-hostname), 30 days, re-issued at half life and when
 * the CA rotates, swapped into the running gRPC server without dropping a stream. The chain
 * presented ends with the root, so a sidecar holding only a join token (with the root's hash,
 * src/security/ca-pin.ts) can find and check it; during a root rotation's overlap it ends with the
 * new root's cross-certificate and the previous root, so tokens made before the rotation still
 * join (control-plane/ca.ts, `crossChain`). Or the user's own certificate and key.
 *
 * Client certificates: the port asks for one (never requires it) and verifies it against the
 * mesh's trust bundle (`ca`, kept current as roots rotate and overlaps end). A sidecar or gateway
 * presents its workload certificate when it holds a valid one, and the push server takes it as
 * the credential of the stream (control-plane/identity.ts): a reconnect does not need the join
 * token, which may have expired since. No certificate, or one that does not verify: the stream's
 * credential message decides, as before.
 */
import * as grpc from '@grpc/grpc-js';
import type { SecureContextOptions } from 'node:tls';
import type { Logger } from 'pino';
import { controlPlaneSpiffeUri, pemCertificates } from '../src/security/ca-pin';
import type { MeshCa } from './ca';

const PUSH_CERT_TTL_MS = 30 * 86_400_000;
/** How often the trust bundle is compared with the one the port verifies client certificates with. */
const BUNDLE_CHECK_MS = 30_000;

/** grpc-js server credentials whose certificate can be replaced while the server runs. */
class RenewableServerCredentials extends grpc.ServerCredentials {
  constructor(ctx: SecureContextOptions, requestCert: boolean) {
    // Asked, never required: a first join has only its token; the push server reads the verified certificate (getAuthContext).
    super({ minVersion: 'TLSv1.2', ...(requestCert ? { requestCert: true, rejectUnauthorized: false } : {}) }, ctx);
  }
  renew(ctx: SecureContextOptions): void {
    this.updateSecureContextOptions(ctx);
  }
  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

export type PushTlsSettings = { hosts?: string[] } | { certPem: string; keyPem: string };

export interface PushTlsServer {
  credentials: grpc.ServerCredentials;
  stop(): void;
}

export async function pushTlsCredentials(settings: PushTlsSettings, bindHost: string, ca: MeshCa | undefined, logger: Logger): Promise<PushTlsServer> {
  if ('certPem' in settings) {
    const user = { cert: settings.certPem, key: settings.keyPem };
    if (!ca) return { credentials: new RenewableServerCredentials(user, false), stop: () => undefined };
    const creds = new RenewableServerCredentials({ ...user, ca: ca.bundlePem() }, true);
    let bundle = ca.bundlePem();
    const refresh = (): void => {
      if (ca.bundlePem() === bundle) return;
      bundle = ca.bundlePem();
      creds.renew({ ...user, ca: bundle });
    };
    const t = setInterval(refresh, BUNDLE_CHECK_MS);
    t.unref();
    ca.onChange(refresh);
    return { credentials: creds, stop: () => clearInterval(t) };
  }
  if (!ca) throw new Error('TLS on the push port from the built-in CA needs the CA (no --no-identity), or give --push-tls-cert and --push-tls-key');
  const hosts = [...new Set([...(settings.hosts ?? []), 'localhost', '127.0.0.1', '::1', ...(bindHost === '0.0.0.0' || bindHost === '::' ? [] : [bindHost])])];
  // The bundle the port verifies client certificates with (set at each issue).
  let bundle = '';
  // When the cross-certificate in the chain ends (the overlap): the port's certificate is issued again without it.
  let crossUntil: number | undefined;
  const issue = async (): Promise<{ ctx: SecureContextOptions; notAfter: Date }> => {
    bundle = ca.bundlePem();
    const c = await ca.issueServing(hosts, PUSH_CERT_TTL_MS, [controlPlaneSpiffeUri(ca.trustDomain)]);
    // The chain ends with the signing root: a client pinning it (a join token's hash) finds it there.
    // During a rotation's overlap it ends with the new root's cross-certificate and the previous
    // root instead: tokens pinning either root verify it (MeshCa.crossChain).
    const cross = ca.crossChain();
    crossUntil = cross ? ca.crossUntil() : undefined;
    const chain = [...new Set([...pemCertificates(c.chainPem), ...(cross ?? pemCertificates(ca.rootPem()))])].join('');
    return { ctx: { cert: chain, key: c.keyPem, ca: bundle }, notAfter: c.notAfter };
  };
  const first = await issue();
  const creds = new RenewableServerCredentials(first.ctx, true);
  // At the end of an overlap (the cross-certificate's, an old root's) the chain and the bundle change: issue again then.
  let edge: NodeJS.Timeout | undefined;
  const scheduleEdge = (): void => {
    if (edge) clearTimeout(edge);
    const now = Date.now();
    const ends = [crossUntil ?? Infinity, ...ca.trustBundle().roots.map((r) => r.until ?? Infinity)].filter((u) => u > now);
    const next = Math.min(...ends);
    if (!Number.isFinite(next) || next - now > BUNDLE_CHECK_MS) return;
    edge = setTimeout(() => void renew().catch(onErr), next - now + 50);
    edge.unref();
  };
  const renew = async (): Promise<void> => {
    const c = await issue();
    creds.renew(c.ctx);
    scheduleEdge();
    logger.info({ hosts, notAfter: c.notAfter.toISOString() }, 'push port certificate renewed');
  };
  const onErr = (err: unknown): void => logger.warn({ err }, 'could not renew the push port certificate');
  const timer = setInterval(() => void renew().catch(onErr), PUSH_CERT_TTL_MS / 2);
  timer.unref();
  // A root whose overlap ended leaves the bundle without a change event: client certificates under it stop verifying here too.
  const check = setInterval(() => {
    if (ca.bundlePem() !== bundle || (crossUntil !== undefined && Date.now() >= crossUntil)) void renew().catch(onErr);
    else scheduleEdge();
  }, BUNDLE_CHECK_MS);
  scheduleEdge();
  check.unref();
  ca.onChange(() => void renew().catch(onErr));
  logger.info({ hosts, spiffeId: controlPlaneSpiffeUri(ca.trustDomain), notAfter: first.notAfter.toISOString() }, 'push port certificate issued by the mesh CA');
  return {
    credentials: creds,
    stop: () => {
      clearInterval(timer);
      clearInterval(check);
      if (edge) clearTimeout(edge);
    },
  };
}
