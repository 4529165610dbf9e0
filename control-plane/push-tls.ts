/**
 * TLS on the push port (15010): the server side. The certificate comes from the mesh CA (P-256,
 * serverAuth; SANs: the control plane's SPIFFE ID `spiffe://TD/control-plane`, localhost,
 * loopback, the --push host and every --push-hostname), 30 days, re-issued at half life and when
 * the CA rotates, swapped into the running gRPC server without dropping a stream. The chain
 * presented ends with the root, so a sidecar holding only a join token (with the root's hash,
 * src/security/ca-pin.ts) can find and check it. Or the user's own certificate and key.
 */
import * as grpc from '@grpc/grpc-js';
import type { SecureContextOptions } from 'node:tls';
import type { Logger } from 'pino';
import { controlPlaneSpiffeUri, pemCertificates } from '../src/security/ca-pin';
import type { MeshCa } from './ca';

const PUSH_CERT_TTL_MS = 30 * 86_400_000;

/** grpc-js server credentials whose certificate can be replaced while the server runs. */
class RenewableServerCredentials extends grpc.ServerCredentials {
  constructor(ctx: SecureContextOptions) {
    super({ minVersion: 'TLSv1.2' }, ctx);
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
    return { credentials: new RenewableServerCredentials({ cert: settings.certPem, key: settings.keyPem }), stop: () => undefined };
  }
  if (!ca) throw new Error('TLS on the push port from the built-in CA needs the CA (no --no-identity), or give --push-tls-cert and --push-tls-key');
  const hosts = [...new Set([...(settings.hosts ?? []), 'localhost', '127.0.0.1', '::1', ...(bindHost === '0.0.0.0' || bindHost === '::' ? [] : [bindHost])])];
  const issue = async (): Promise<{ ctx: SecureContextOptions; notAfter: Date }> => {
    const c = await ca.issueServing(hosts, PUSH_CERT_TTL_MS, [controlPlaneSpiffeUri(ca.trustDomain)]);
    // The chain ends with the signing root: a client pinning it (a join token's hash) finds it there.
    const chain = [...new Set([...pemCertificates(c.chainPem), ...pemCertificates(ca.rootPem())])].join('');
    return { ctx: { cert: chain, key: c.keyPem }, notAfter: c.notAfter };
  };
  const first = await issue();
  const creds = new RenewableServerCredentials(first.ctx);
  const renew = async (): Promise<void> => {
    const c = await issue();
    creds.renew(c.ctx);
    logger.info({ hosts, notAfter: c.notAfter.toISOString() }, 'push port certificate renewed');
  };
  const onErr = (err: unknown) => logger.warn({ err }, 'could not renew the push port certificate');
  const timer = setInterval(() => void renew().catch(onErr), PUSH_CERT_TTL_MS / 2);
  timer.unref();
  ca.onChange(() => void renew().catch(onErr));
  logger.info({ hosts, spiffeId: controlPlaneSpiffeUri(ca.trustDomain), notAfter: first.notAfter.toISOString() }, 'push port certificate issued by the mesh CA');
  return { credentials: creds, stop: () => clearInterval(timer) };
}
