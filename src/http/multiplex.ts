/**
 * HTTP/1.1 multiplexed between sidecars (as Linkerd does): an HTTP/1.1 request to a meshed
 * endpoint (another sidecar's inbound port) travels as an HTTP/2 stream on the one connection the
 * two sidecars share, marked with `x-meshlet-orig-proto`; the far sidecar removes the mark and
 * gives its app HTTP/1.1 again, for services of protocol `auto` whose DestinationPolicy says
 * `http2Upgrade: true`. Off by default: it cost more CPU per request than plain HTTP/1.1 between
 * the sidecars (about 2x through node:http2, 1.02-1.3x on meshlet's own HTTP/2 framing), until
 * the session's stream table stopped a promotion cascade (2026-12-05: 0.77x in one bench run, with
 * a higher p99 at full load; docs/performance.md); it stays opt-in until more runs confirm it.
 * Upgrades (WebSocket) stay HTTP/1.1 end to end.
 */
import type { DownstreamRequest } from './listener';
import type { UpstreamProtocol } from './upstream-types';

export const ORIG_PROTO_HEADER = 'x-meshlet-orig-proto';

export interface MultiplexService {
  protocol: 'auto' | UpstreamProtocol;
  policy?: { http2Upgrade?: boolean };
}

/** Whether this downstream HTTP/1.1 request goes to this endpoint as HTTP/2. */
export function multiplexH1(protocol: 'http1' | 'http2', meshed: boolean, svc: MultiplexService): boolean {
  return protocol === 'http1' && meshed && svc.protocol === 'auto' && svc.policy?.http2Upgrade === true;
}

/** On the far side: the HTTP/1.x version the request was sent in, when it came multiplexed. */
export function originalProtocol(req: DownstreamRequest, protocol: 'http1' | 'http2'): string | undefined {
  if (protocol !== 'http2') return undefined;
  const v = req.headers[ORIG_PROTO_HEADER];
  return typeof v === 'string' ? v : undefined;
}

/**
 * The flat header list without the mark, removed in place: the list is the call's own copy
 * (forwardRequestHeaders made it); copying it made three arrays per multiplexed request.
 */
export function withoutMark(flat: string[]): string[] {
  const i = flat.indexOf(ORIG_PROTO_HEADER);
  if (i < 0 || i % 2 !== 0) return flat;
  const n = flat.length - 2;
  for (let j = i; j < n; j++) flat[j] = flat[j + 2] as string;
  flat.length = n;
  return flat;
}
