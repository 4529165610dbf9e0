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

/** One endpoint's count, changed in place. */
interface Count {
  n: number;
}

/**
 * Requests in flight per endpoint. Each endpoint has a mutable cell that stays in the map while
 * its count goes to zero and back, so a request changes a number, not the map: deleting the entry
 * at zero and adding it again on the next request made V8 rebuild the map's table every few
 * requests, ~130 bytes per request that outlived a scavenge and fed the mark-compacts (measured
 * at 5k req/s with bench/lib/alloc-sample.js, MESHLET_ALLOC_MINOR=0). Cells of idle endpoints
 * (endpoints come and go with snapshots) are dropped when a new endpoint would grow the map past
 * `pruneAt`, which then doubles the live size (at least 64), so pruning stays rare.
 */
export class ActiveRequests implements EndpointStats {
  private readonly counts = new Map<string, Count>();
  private pruneAt = 64;

  active(ep: Endpoint): number {
    return this.counts.get(endpointKey(ep))?.n ?? 0;
  }

  begin(key: string): void {
    const c = this.counts.get(key);
    if (c !== undefined) c.n++;
    else this.add(key);
  }

  end(key: string): void {
    const c = this.counts.get(key);
    if (c !== undefined && c.n > 0) c.n--;
  }

  /** Endpoints with a cell (in flight or idle since the last prune). */
  get size(): number {
    return this.counts.size;
  }

  private add(key: string): void {
    if (this.counts.size >= this.pruneAt) {
      for (const [k, c] of this.counts) if (c.n === 0) this.counts.delete(k);
      this.pruneAt = Math.max(64, 2 * this.counts.size);
    }
    this.counts.set(key, { n: 1 });
  }
}

export const noStats: EndpointStats = { active: () => 0 };
