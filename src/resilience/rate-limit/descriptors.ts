/**
 * Descriptor extractors, built once per snapshot: for each limit, a function from the request to
 * its bucket key, or undefined when the limit does not apply to this request (a route-scoped
 * limit on another route, or a descriptor whose value is missing, like Envoy's rate limit
 * actions: a missing header skips the limit, it does not share one bucket among everyone
 * without the header).
 */
import { createHash } from 'node:crypto';
import type { Descriptor, RateLimit } from '../../policy/types';
import { CONSUMER_HEADER, ROUTE_HEADER, SOURCE_HEADER } from './identity';

/** What the limiter looks at; built by the inbound handler. */
export interface LimitRequest {
  /** Path without the query string. */
  path: string;
  /** The TCP peer's address (the calling pod), or undefined. */
  remoteAddress: string | undefined;
  /** A request header by lower-case name (on an mTLS connection `x-meshlet-source` reads as the certificate's service). */
  header(name: string): string | undefined;
  /** The caller's SPIFFE ID from its verified client certificate (mTLS), else undefined. */
  peer?: string;
}

export type KeyFn = (req: LimitRequest) => string | undefined;

/** Keys longer than this are hashed, so a huge header value never makes a huge key. */
const MAX_PART = 96;

function part(v: string): string {
  return v.length > MAX_PART ? 'h:' + createHash('sha256').update(v).digest('base64url').slice(0, 24) : v;
}

function extractor(d: Descriptor, destination: string): (req: LimitRequest) => string | undefined {
  if ('header' in d) {
    const name = d.header;
    return (req) => req.header(name);
  }
  switch (d.key) {
    case 'source-service':
      return (req) => req.header(SOURCE_HEADER);
    case 'source-identity':
      // Only a verified certificate: a plaintext caller has none, and the limit does not apply to it.
      return (req) => req.peer;
    case 'destination-service':
      return () => destination;
    case 'route':
      return (req) => req.header(ROUTE_HEADER);
    case 'remote-address':
      return (req) => req.remoteAddress;
    case 'path':
      return (req) => req.path;
    case 'consumer':
      return (req) => req.header(CONSUMER_HEADER);
  }
}

/** `route` and `route/rule` references to a matcher on the `x-meshlet-route` value. */
export function routeMatcher(routes: readonly string[] | undefined): ((req: LimitRequest) => boolean) | undefined {
  if (!routes || routes.length === 0) return undefined;
  const exact = new Set(routes.filter((r) => r.includes('/')));
  const whole = new Set(routes.filter((r) => !r.includes('/')));
  return (req) => {
    const v = req.header(ROUTE_HEADER);
    if (v === undefined) return false;
    if (exact.has(v)) return true;
    const slash = v.indexOf('/');
    return whole.has(slash < 0 ? v : v.slice(0, slash));
  };
}

/** The key function of one limit: descriptor values joined by `|` (each escaped), or undefined. */
export function compileKey(limit: RateLimit, destination: string): KeyFn {
  const applies = routeMatcher(limit.routes);
  const parts = limit.descriptors.map((d) => extractor(d, destination));
  if (parts.length === 0) return applies ? (req) => (applies(req) ? '' : undefined) : () => '';
  return (req) => {
    if (applies && !applies(req)) return undefined;
    let key = '';
    for (let i = 0; i < parts.length; i++) {
      const v = parts[i]!(req);
      if (v === undefined) return undefined;
      key += (i === 0 ? '' : '|') + part(v.replace(/[|\\]/g, '\\$&'));
    }
    return key;
  };
}
