/**
 * `protocol: auto`: a request goes upstream in the protocol it arrived in, except to endpoints
 * known to speak only HTTP/1.1. An endpoint that refuses the HTTP/2 connection preface (a plain
 * node:http app answers it with an HTTP/1.1 400, and node's HTTP/2 client fails the session) is
 * remembered here, per endpoint, and the request is sent again over HTTP/1.1 by the retry layer
 * (retry.ts), as Envoy's auto protocol users expect. The memory is bounded and forgets an entry
 * after ten minutes, so an endpoint that learns HTTP/2 gets it again.
 */
import type { Clock } from '../core/clock';
import type { UpstreamProtocol } from '../http/upstream-types';

const FORGET_MS = 10 * 60_000;
const MAX_ENTRIES = 4096;
const h1Only = new Map<string, number>();

/** The protocol for a request to this endpoint. */
export function protocolFor(service: 'auto' | UpstreamProtocol, downstream: UpstreamProtocol, key: string, clock: Clock): UpstreamProtocol {
  if (service !== 'auto') return service;
  if (downstream === 'http2' && h1Only.size > 0) {
    const at = h1Only.get(key);
    if (at !== undefined) {
      if (clock.monotonic() - at < FORGET_MS) return 'http1';
      h1Only.delete(key);
    }
  }
  return downstream;
}

/** Remembers that this endpoint refused HTTP/2. */
export function rememberHttp1Only(key: string, clock: Clock): void {
  if (h1Only.size >= MAX_ENTRIES) h1Only.delete(h1Only.keys().next().value as string);
  h1Only.set(key, clock.monotonic());
}

export function isHttp1Only(key: string): boolean {
  return h1Only.has(key);
}

/** The HTTP/2 session failed before its preface was answered: the peer does not speak h2c. */
export function refusedHttp2(err: Error): boolean {
  return (err as { h2PrefaceRefused?: boolean }).h2PrefaceRefused === true;
}
