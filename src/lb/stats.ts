/** Live per-endpoint request counts, shared across snapshots (keyed by address:port), read by
 * the least-request picker and kept current by the data path. */
import type { EndpointStats } from './picker';
import type { Endpoint } from '../policy/types';

// Keys are asked for on every request (pick, counts, pools): built once per endpoint object, and
// the same string each time, so map lookups reuse its cached hash.
const keys = new WeakMap<object, string>();

/** `address:port` (`[v6]:port`) of an endpoint; memoised per object (endpoints are frozen per snapshot). */
export function endpointKey(ep: { address: string; port: number }): string {
  let k = keys.get(ep);
  if (k === undefined) {
    k = ep.address.includes(':') ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
    keys.set(ep, k);
  }
  return k;
}

export class ActiveRequests implements EndpointStats {
  private readonly counts = new Map<string, number>();

  active(ep: Endpoint): number {
    return this.counts.get(endpointKey(ep)) ?? 0;
  }

  begin(key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  end(key: string): void {
    const n = (this.counts.get(key) ?? 0) - 1;
    if (n <= 0) this.counts.delete(key);
    else this.counts.set(key, n);
  }
}

export const noStats: EndpointStats = { active: () => 0 };
