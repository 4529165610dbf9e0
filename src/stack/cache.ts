/**
 * The response cache (src/edge/cache.ts: RFC 9111 by http-cache-semantics, an LRU bounded by
 * bytes shared by the process, request coalescing): GET and HEAD answers of HTTP calls are
 * looked up and stored; every answer carries `x-cache` (HIT, MISS, STALE, REVALIDATED, PASS) and
 * cached ones `Age`. A miss goes down the rest of the stack (deadline, retry, pick) with the
 * headers the cache chose (its validators on a revalidation) and is buffered up to the rule's
 * `maxEntryBytes`; a larger answer streams on to the client unstored.
 *
 * A fresh HIT (`HttpCache.freshHit`) is answered synchronously, in the layer itself: no promise,
 * no per-request closure or CachedCall, no second copy of the headers. This is the hot path of a
 * cache in front of popular answers (bench/cache-hit.js, `bench/cpu.js --paths cache`).
 *
 * Concurrent misses wait for one upstream request. A waiting client that goes away does not
 * cancel it (the others still want it; the deadline layer below bounds it). A background
 * revalidation (stale-while-revalidate) runs on a copy of the call, after the client's answer.
 */
import { NOOP_CALL, type Layer, type MeshCall } from '../core/layer';
import { CacheRegistry, type CacheConfig, type CacheRequest, type CacheUpstream, type HttpCache } from '../edge/cache';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import type { CompiledRule } from '../policy/compiled';
import type { CacheSpec } from '../policy/types';
import type { StackContext } from './context';
import { BodyTooLarge, BufferSink, cleanHeaders, flatRecord, toFlat } from './edge-common';

/** Without a process registry (tests, tools): 64 MiB per rule stack. */
const OWN_BYTES = 64 << 20;

export function cacheLayer(ctx: StackContext, rule: CompiledRule, spec: CacheSpec): Layer {
  const registry = ctx.edge?.caches ?? new CacheRegistry(OWN_BYTES, ctx.clock);
  const cfg: Omit<CacheConfig, 'maxBytes'> = {
    maxEntryBytes: spec.maxEntryBytes,
    defaultTtlSeconds: spec.defaultTtlSeconds,
    hitForPassSeconds: spec.hitForPassSeconds,
    key: { host: spec.key.host, query: typeof spec.key.query === 'string' ? spec.key.query : [...spec.key.query].sort(), headers: [...spec.key.headers] },
  };
  const cache = registry.cache(rule.statName, cfg);
  return (next) => (call, sink) => {
    if (call.kind !== 'http') return next(call, sink);
    const req: CacheRequest = { method: call.method, host: call.authority, path: call.path, headers: flatRecord(call.headers) };
    const hit = cache.freshHit(req);
    if (hit !== undefined) {
      sink.onResponse(hit.status, hit.headers as Headers);
      if (hit.body.length) sink.onData(hit.body);
      sink.onEnd(undefined);
      return NOOP_CALL;
    }
    return new CachedCall(cache, call, req, next).run(sink);
  };
}

class CachedCall implements UpstreamCall {
  private gone = false;
  private settled = false;
  private used = false;
  private inner: UpstreamCall | undefined;
  private own: BufferSink | undefined;

  constructor(
    private readonly cache: HttpCache,
    private readonly call: MeshCall,
    private readonly req: CacheRequest,
    private readonly next: (c: MeshCall, s: ResponseSink) => UpstreamCall,
  ) {}

  run(sink: ResponseSink): UpstreamCall {
    const call = this.call;
    const req = this.req;
    const upstream: CacheUpstream = (r) =>
      new Promise((resolve, reject) => {
        // The first upstream request of a call that is still waiting is the call itself (its
        // flags, tries and endpoint are the client's); any other (a background revalidation, a
        // second fetch) runs on a copy.
        const c = this.used || this.settled ? copyCall(call) : call;
        const first = c === call;
        this.used = true;
        c.headers = toFlat(r.headers);
        const bs = new BufferSink(resolve, reject, this.cache.config.maxEntryBytes, 'stream');
        if (first) this.own = bs;
        const up = this.next(c, bs);
        bs.call = up;
        if (first) this.inner = up;
      });
    this.cache.handle(req, upstream).then(
      (res) => {
        this.settled = true;
        if (this.gone) return;
        sink.onResponse(res.status, cleanHeaders(res.headers));
        if (res.body.length) sink.onData(res.body);
        sink.onEnd(undefined);
      },
      (err: Error) => {
        this.settled = true;
        if (this.gone) return;
        if (err instanceof BodyTooLarge) {
          if (err.sink === this.own) {
            // Ours, too large to keep: the rest streams to the client as it comes.
            err.sink.headers = { ...err.sink.headers, 'x-cache': 'MISS' };
            err.sink.attach(sink);
            return;
          }
          // Another request's answer was too large to share: ours goes upstream on its own.
          this.inner = this.next(this.used ? copyCall(call) : call, passing(sink));
          return;
        }
        sink.onError(err, false);
      },
    );
    return this;
  }

  abort(reason?: Error): void {
    if (this.gone) return;
    this.gone = true;
    // Streaming to this client alone (a too-large answer, or a pass-through): cancel it. A buffered
    // fetch may have waiters; the deadline below bounds it.
    if (this.settled) this.inner?.abort(reason);
  }
  resume(): void {
    this.inner?.resume();
  }
}

/** The sink with `x-cache: PASS` on the response head (an answer the cache did not take part in). */
function passing(sink: ResponseSink): ResponseSink {
  return {
    onResponse: (status, headers) => sink.onResponse(status, { ...headers, 'x-cache': 'PASS' }),
    onData: (c) => sink.onData(c),
    onEnd: (t) => sink.onEnd(t),
    onError: (e, started) => sink.onError(e, started),
  };
}

/** A copy of the call for a request of its own (fresh per-try state, no client to report to). */
function copyCall(call: MeshCall): MeshCall {
  const c = Object.assign(Object.create(Object.getPrototypeOf(call) as object) as MeshCall, call);
  c.flags = '';
  c.tries = 0;
  c.deadline = 0;
  c.grpcTimeoutAt = -1;
  c.body = null;
  return c;
}

