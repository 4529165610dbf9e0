/**
 * TLS for mesh hops (sidecar <-> sidecar, gateway -> sidecar): TLS 1.3 only, both ends present
 * a workload certificate, both verify the other's chain against the trust bundle, and the
 * caller checks the callee's SPIFFE ID against the identity it expects for that endpoint
 * (hostnames mean nothing here: endpoints are dialled by IP).
 *
 * Rotation-friendly: `MeshTls.update(material)` builds new secure contexts; servers bound with
 * `bindServer` switch at once (`server.setSecureContext`), clients take `clientOptions()` per
 * new connection. Open connections keep the certificate they were made with.
 *
 * Entry points for the data path (wired when the request stack lands):
 *   outbound: tls.connect({ host, port, ...meshTls.clientOptions(expectedSpiffeId) })
 *   inbound:  tls.createServer(meshTls.serverOptions()), meshTls.bindServer(server);
 *             peerSpiffeId(socket) is the caller's identity (never a header from the wire).
 */
import * as tls from 'node:tls';
import { SecurityError } from './errors';

export interface MeshTlsMaterial {
  keyPem: string;
  /** Leaf first, then intermediates. */
  chainPem: string;
  /** The roots to trust. */
  bundlePem: string;
}

export const MESH_ALPN = ['h2', 'http/1.1'];

export interface MeshTlsOptions {
  /** ALPN protocols offered/accepted, in order of preference (default h2, http/1.1). */
  alpn?: string[];
}

export class MeshTls {
  private context: tls.SecureContext;
  private material: MeshTlsMaterial;
  private readonly alpn: string[];
  private readonly servers = new Set<tls.Server>();

  constructor(material: MeshTlsMaterial, opts: MeshTlsOptions = {}) {
    this.alpn = opts.alpn ?? MESH_ALPN;
    this.material = material;
    this.context = tls.createSecureContext(this.contextOptions(material));
  }

  /** New certificate or bundle: new handshakes use it; bound servers switch now. */
  update(material: MeshTlsMaterial): void {
    const ctx = tls.createSecureContext(this.contextOptions(material));
    this.material = material;
    this.context = ctx;
    for (const s of this.servers) s.setSecureContext(this.contextOptions(material));
  }

  /** Options for `tls.createServer`: TLS 1.3, a client certificate required and verified against the bundle. */
  serverOptions(): tls.TlsOptions {
    return {
      ...this.contextOptions(this.material),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: this.alpn,
    };
  }

  /** Follows this identity's updates (call once per server; `unbindServer` on close). */
  bindServer(server: tls.Server): void {
    this.servers.add(server);
    server.once('close', () => this.servers.delete(server));
  }

  unbindServer(server: tls.Server): void {
    this.servers.delete(server);
  }

  /**
   * Options for `tls.connect` to a peer that must be `expected` (a SPIFFE ID, or a predicate over
   * it): its chain must verify against the bundle and its URI SAN must match, or the handshake fails.
   */
  clientOptions(expected: string | ((spiffeId: string) => boolean), servername?: string): tls.ConnectionOptions {
    const ok = typeof expected === 'string' ? (id: string) => id === expected : expected;
    return {
      secureContext: this.context,
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      rejectUnauthorized: true,
      ALPNProtocols: this.alpn,
      // Not the hostname: the SPIFFE ID. Node calls this once the chain verified.
      checkServerIdentity: (_host, cert) => {
        const id = spiffeIdOf(cert);
        if (id === undefined) return new SecurityError('PEER_UNVERIFIED', `the peer's certificate carries no SPIFFE ID (subjectAltName ${cert.subjectaltname ?? 'none'})`);
        if (!ok(id)) return new SecurityError('PEER_WRONG_IDENTITY', `the peer is ${id}, not ${typeof expected === 'string' ? expected : 'an identity this endpoint may have'}`);
        return undefined;
      },
      ...(servername ? { servername } : {}),
    };
  }

  private contextOptions(m: MeshTlsMaterial): tls.SecureContextOptions {
    return { key: m.keyPem, cert: m.chainPem, ca: m.bundlePem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' };
  }
}

/** The SPIFFE ID of a verified peer (a TLS socket whose chain verified), else undefined. */
export function peerSpiffeId(socket: tls.TLSSocket): string | undefined {
  if (!socket.authorized) return undefined;
  return spiffeIdOf(socket.getPeerCertificate());
}

/** The one `URI:spiffe://` SAN of a certificate; undefined when there is none or more than one. */
export function spiffeIdOf(cert: tls.PeerCertificate | undefined): string | undefined {
  const san = cert?.subjectaltname;
  if (!san) return undefined;
  const uris = san
    .split(', ')
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
  const spiffe = uris.filter((u) => u.startsWith('spiffe://'));
  return spiffe.length === 1 ? spiffe[0] : undefined;
}
