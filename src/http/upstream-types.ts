/** The contract between the proxy and its upstream clients (HTTP/1.1 pool, HTTP/2 session). */
import type { Readable } from 'node:stream';

export type UpstreamProtocol = 'http1' | 'http2';

export type Headers = Record<string, string | string[]>;

export interface UpstreamTarget {
  /** `address:port`, also the pool's key. */
  key: string;
  address: string;
  port: number;
  protocol: UpstreamProtocol;
  /** The destination service's connection limits (DestinationPolicy.circuitBreaker), if any. */
  limits?: ConnectionLimits;
  /** Idle keep-alive time for this endpoint's connections (DestinationPolicy.idleTimeout). */
  idleMs?: number;
  /**
   * The protocol was chosen automatically (`protocol: auto`): an endpoint that refuses HTTP/2 is
   * remembered as HTTP/1.1-only and gets HTTP/1.1 (src/stack/auto-protocol.ts).
   */
  auto?: boolean;
  /**
   * mTLS: the SPIFFE ID the endpoint must prove (another sidecar with a certificate, and this
   * sidecar has one too). The connection is TLS 1.3 with our certificate; a peer whose chain does
   * not verify or whose identity differs fails to connect (`UF`). Undefined: plaintext.
   */
  identity?: string;
}

/**
 * HTTP/1.1 connection limits: at most `maxConnections` connections to each endpoint; requests
 * beyond wait for a connection, at most `maxPendingRequests` of them across the service (the
 * shared `pending` counter); more fail with `UpstreamOverflowError` (the proxy's `UO`).
 */
export interface ConnectionLimits {
  maxConnections?: number;
  maxPendingRequests?: number;
  pending: { n: number };
}

/** A request refused because the destination's connection limits are full (the proxy's `UO`). */
export class UpstreamOverflowError extends Error {
  readonly code = 'MESH_UPSTREAM_OVERFLOW';
  constructor(detail: string) {
    super(detail);
    this.name = 'UpstreamOverflowError';
  }
}

export interface UpstreamRequest {
  method: string;
  /** Path with query. */
  path: string;
  /** The authority to send (Host for HTTP/1.1, :authority for HTTP/2). */
  authority: string;
  /** Flat `[name, value, ...]`, lower-case names, hop-by-hop already removed, no `host`. */
  headers: string[];
  /** The request body, or null when the request has none. */
  body: Readable | null;
}

/** Response callbacks. Exactly one of `onEnd` / `onError` is called, once. */
export interface ResponseSink {
  onResponse(status: number, headers: Headers): void;
  /** Return false to pause the upstream until `UpstreamCall.resume()`. */
  onData(chunk: Buffer): boolean;
  onEnd(trailers: Headers | undefined): void;
  /** `started`: whether `onResponse` was called before the failure. */
  onError(err: Error, started: boolean): void;
}

export interface UpstreamCall {
  abort(reason?: Error): void;
  resume(): void;
}

/** HTTP/2 REFUSED_STREAM (RFC 9113 §8.7): the server did no processing of the stream. */
const REFUSED_STREAM = 7;

/**
 * Whether an upstream HTTP/2 stream failed without the upstream having seen it: refused
 * (REFUSED_STREAM, or above the last stream id of a GOAWAY), or opened on a session already going
 * away. Such a request may be sent again whatever its method (RFC 9113 §8.7).
 */
export function refusedUnseen(err: Error): boolean {
  const e = err as Error & { rstCode?: number; code?: string };
  return e.rstCode === REFUSED_STREAM || e.code === 'ERR_HTTP2_GOAWAY_SESSION' || e.code === 'ERR_HTTP2_INVALID_SESSION';
}

/** Marks an error that happened before any connection to the upstream was up (the proxy's `UF`). */
export class UpstreamConnectError extends Error {
  readonly code: string;
  /** What the mesh's 503 says: the code, and for TLS failures (wrong identity, bad chain) the reason too. */
  readonly detail: string;
  constructor(cause: Error & { code?: string }) {
    super(`connect failed: ${cause.message}`, { cause });
    this.name = 'UpstreamConnectError';
    this.code = cause.code ?? 'ECONNREFUSED';
    this.detail = isTlsFailure(this.code) ? `${this.code}: ${cause.message}` : this.code;
  }
}

/** A TLS handshake failure (mTLS between sidecars): the peer's identity or chain, or the protocol. */
function isTlsFailure(code: string | undefined): boolean {
  return code !== undefined && (code.startsWith('PEER_') || code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || code.includes('CERT') || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || code === 'SELF_SIGNED_CERT_IN_CHAIN');
}
