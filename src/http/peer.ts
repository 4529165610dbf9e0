/**
 * The verified identity of a downstream connection (mTLS), computed once when its TLS handshake
 * completes (src/http/listener.ts) and carried on the connection: the TLS socket, its HTTP/2
 * session, and each HTTP/1.1 request of it. Requests read it with a property lookup, never by
 * parsing anything.
 */
import type * as http2 from 'node:http2';
import type { SpiffeId } from '../security/spiffe';

/** Set on a TLS socket (and its HTTP/2 session) whose client certificate verified: the peer's SPIFFE ID. */
const MESH_PEER = Symbol('meshlet.peer');

interface Carrier {
  [MESH_PEER]?: SpiffeId;
}

/** The verified caller of a downstream request, or undefined (plaintext). */
export function peerOf(req: object, protocol: 'http1' | 'http2'): SpiffeId | undefined {
  if (protocol === 'http1') return (req as { peer?: SpiffeId }).peer;
  return ((req as { stream?: http2.ServerHttp2Stream }).stream?.session as Carrier | undefined)?.[MESH_PEER];
}

export function setPeer(o: object, peer: SpiffeId): void {
  (o as Carrier)[MESH_PEER] = peer;
}

export function getPeer(o: object | undefined): SpiffeId | undefined {
  return (o as Carrier | undefined)?.[MESH_PEER];
}
