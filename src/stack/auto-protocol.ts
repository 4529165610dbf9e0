/**
 * `protocol: auto`: a request goes upstream in the protocol it arrived in, except to endpoints
 * known to speak only HTTP/1.1 (the dispatcher asks `withProtocol`). An endpoint that refuses the HTTP/2 connection preface (a plain
 * node:http app answers it with an HTTP/1.1 400, and node's HTTP/2 client fails the session) is
 * remembered here, per endpoint, and the request is sent again over HTTP/1.1 by the retry layer
 * (retry.ts; its body is held for that, up to 64 KiB), as Envoy's auto protocol users expect. The memory is bounded and forgets an entry
 * after ten minutes, so an endpoint that learns HTTP/2 gets it again.
 */
import type { Clock } from '../core/clock';
import type { UpstreamTarget } from '../http/upstream-types';

const FORGET_MS = 10 * 60_000;
const MAX_ENTRIES = 4096;
const h1Only = new Map<string, number>();

/** The target for a request: HTTP/1.1 instead of HTTP/2 for an automatic endpoint known to refuse it. */
export function withProtocol(t: UpstreamTarget, clock: Clock): UpstreamTarget {
  if (t.protocol !== 'http2' || !t.auto || h1Only.size === 0) return t;
  const at = h1Only.get(t.key);
  if (at === undefined) return t;
  if (clock.monotonic() - at >= FORGET_MS) {
    h1Only.delete(t.key);
    return t;
  }
  return { ...t, protocol: 'http1' };
}

/** Remembers that this endpoint refused HTTP/2. */
export function rememberHttp1Only(key: string, clock: Clock): void {
  if (h1Only.size >= MAX_ENTRIES) h1Only.delete(h1Only.keys().next().value as string);
  h1Only.set(key, clock.monotonic());
}

/** The HTTP/2 session failed before its preface was answered: the peer does not speak h2c. */
export function refusedHttp2(err: Error): boolean {
  return (err as { h2PrefaceRefused?: boolean }).h2PrefaceRefused === true;
}
