/**
 * The per-process state of the edge layers, shared by every rule's stack and kept across
 * snapshots: one JWKS store (JWT keys, fetched and cached per URL) and the response caches under
 * one byte bound. The sidecar and the gateway build it the same way, and export the same
 * `meshlet_cache_*` series.
 */
import type { Clock } from '../core/clock';
import { CacheRegistry } from '../edge/cache';
import type { JwksStore } from '../edge/jwt';
import type { Registry as MetricsRegistry } from '../observability/metrics';
import type { EdgeContext } from './context';

export interface EdgeContextOptions {
  /** Bytes all the response caches of this process keep together (`--cache-max-mb`; default 64 MiB). */
  cacheMaxBytes?: number;
  /** JWT keys: at most one JWKS fetch per URL in this interval (default 30 s). */
  jwksMinRefreshMs?: number;
  clock: Clock;
}

export function createEdgeContext(o: EdgeContextOptions): EdgeContext {
  let jwks: JwksStore | undefined;
  return {
    // jose is loaded only when a rule with a jwt block builds its stack.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    jwks: () => (jwks ??= new (require('../edge/jwt') as typeof import('../edge/jwt')).JwksStore({ clock: o.clock, minRefreshIntervalMs: o.jwksMinRefreshMs })),
    caches: new CacheRegistry(o.cacheMaxBytes ?? 64 << 20, o.clock),
  };
}

/** The response caches' series, read at scrape time: requests by result per rule, evictions, bytes, entries. */
export function registerCacheMetrics(reg: MetricsRegistry, caches: CacheRegistry): void {
  const requests = reg.counter('meshlet_cache_requests_total', 'Requests that went through a rule\'s response cache, by result: hit, miss, stale, revalidated, pass.', ['route', 'result']);
  const coalesced = reg.counter('meshlet_cache_coalesced_total', 'Cache misses that waited for another request\'s upstream fetch instead of making their own.', ['route']);
  const evictions = reg.counter('meshlet_cache_evictions_total', 'Cached responses evicted to stay within --cache-max-mb.');
  const purged = reg.counter('meshlet_cache_purged_total', 'Cached responses removed by purges.');
  const bytes = reg.gauge('meshlet_cache_bytes', 'Bytes the response caches hold (estimated: bodies, headers, keys, bookkeeping).');
  const entries = reg.gauge('meshlet_cache_entries', 'Responses the caches hold.');
  const max = reg.gauge('meshlet_cache_max_bytes', 'The caches\' byte bound (--cache-max-mb).');
  reg.beforeCollect(() => {
    let p = 0;
    for (const { rule, stats } of caches.rules()) {
      const set = (result: string, v: number) => (requests.labels(rule, result).value = v);
      set('hit', stats.hits);
      set('miss', stats.misses);
      set('stale', stats.stale);
      set('revalidated', stats.revalidated);
      set('pass', stats.passes);
      coalesced.labels(rule).value = stats.coalesced;
      p += stats.purged;
    }
    purged.labels().value = p;
    const t = caches.totals();
    evictions.labels().value = t.evictions;
    bytes.set(t.bytes);
    entries.set(t.entries);
    max.set(caches.maxBytes);
  });
}
