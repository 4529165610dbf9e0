/**
 * The rate-limit layer of a sidecar's inbound path. Limits protect the destination, so they are
 * enforced where the destination is: on the inbound side of its own sidecar, which sees every
 * caller (meshed or not) and needs no cooperation from them. The caller's sidecar contributes the
 * source service and route as headers (see identity.ts).
 *
 * `apply(policy)` compiles the policy for this sidecar's service once per snapshot into a chain:
 * local limits first (a token bucket in memory, synchronous), then global ones (Redis, one
 * batched round trip, or none when the local pre-check already knows). Bucket state, Redis
 * connections and counters survive a snapshot that keeps the same limit.
 *
 * `admit(req, allow, deny)` calls exactly one of the two, never throws, never rejects.
 */
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../../core/clock';
import type { RateLimitPolicySpec } from '../../policy/types';
import { compileKey, type KeyFn, type LimitRequest } from './descriptors';
import { limitedHeaders, type LimitInfo } from './headers';
import { RateLimitMetrics, type LimitCounters, type RedisCounters } from './metrics';
import { RedisLimiter, type GlobalOutcome } from './redis-limiter';
import { TokenBuckets } from './token-bucket';

export type { LimitRequest } from './descriptors';

export interface RateLimitLayerOptions {
  /** This sidecar's service: the policy whose `service` matches it is enforced. */
  service: string;
  clock?: Clock;
  logger?: Logger;
  /** Keys per limit kept in memory (local buckets, pre-check entries). */
  maxKeys?: number;
  /**
   * The share of each local limit this process enforces (default 1). A sidecar running N workers
   * (`--concurrency N`) gives each 1/N of the rate and of the burst: the kernel spreads connections
   * over the workers, so the sidecar admits about the policy's rate in total. An approximation: a
   * caller whose connections all land on one worker gets 1/N of the limit, and the remaining-token
   * headers count that worker's bucket. Global (Redis) limits are shared properly and not divided.
   */
  localShare?: number;
}

/** Called when a request is limited: the headers for the 429 and a short reason for its body. */
export type DenyFn = (headers: Record<string, string>, reason: string) => void;

interface CompiledLimit {
  info: LimitInfo;
  key: KeyFn;
  counters: LimitCounters;
  buckets?: TokenBuckets;
  redis?: RedisLimiter;
  redisPrefix: string;
  emissionMs: number;
  capacity: number;
}

interface Chain {
  failureMode: 'open' | 'closed';
  locals: CompiledLimit[];
  globals: CompiledLimit[];
}

type Checked = [CompiledLimit, GlobalOutcome, string];

/** Notes each bucket a request was counted against (the sidecar's recent decisions; src/observability/decisions.ts). */
export interface LimitRecorder {
  limit(seq: number, name: string, key: string, outcome: 'allowed' | 'limited' | 'failed-open' | 'failed-closed'): void;
}

export class RateLimitLayer {
  private readonly service: string;
  private readonly clock: Clock;
  private readonly log?: Logger;
  private readonly maxKeys: number;
  private readonly localShare: number;
  private readonly metrics = new RateLimitMetrics();
  private chain: Chain | undefined;
  private buckets = new Map<string, TokenBuckets>();
  private redis = new Map<string, RedisLimiter>();
  /** Overflow counts of buckets no longer in force, so the counter never goes down. */
  private readonly retiredOverflow = new Map<string, number>();

  constructor(opts: RateLimitLayerOptions) {
    this.service = opts.service;
    this.clock = opts.clock ?? systemClock;
    this.log = opts.logger;
    this.maxKeys = opts.maxKeys ?? 10_000;
    this.localShare = opts.localShare ?? 1;
    if (!(this.localShare > 0 && this.localShare <= 1)) throw new RangeError(`localShare must be within (0, 1], got ${this.localShare}`);
  }

  /** Whether any limit is in force. */
  get active(): boolean {
    return this.chain !== undefined;
  }

  /** Compiles the policy in force for this service (undefined: none) and swaps it in. */
  apply(policy: RateLimitPolicySpec | undefined): void {
    if (!policy || policy.service !== this.service) {
      this.chain = undefined;
      this.retire(new Map(), new Map());
      return;
    }
    const buckets = new Map<string, TokenBuckets>();
    const redis = new Map<string, RedisLimiter>();
    const chain: Chain = { failureMode: policy.failureMode, locals: [], globals: [] };
    for (const l of policy.limits) {
      const info: LimitInfo = { name: l.name, requests: l.requests, periodMs: l.periodMs };
      const c: CompiledLimit = {
        info,
        key: compileKey(l, this.service),
        counters: this.metrics.counters(l.name, l.scope),
        redisPrefix: `meshlet:rl:${this.service}:${l.name}:`,
        emissionMs: l.periodMs / l.requests,
        capacity: l.requests + l.burst,
      };
      if (l.scope === 'local') {
        const sig = `${l.name}\0${l.requests}\0${l.periodMs}\0${l.burst}`;
        const b = this.buckets.get(sig) ?? buckets.get(sig) ?? new TokenBuckets(this.share(l), this.clock, this.maxKeys);
        buckets.set(sig, b);
        c.buckets = b;
        chain.locals.push(c);
      } else {
        // The parser requires `redis` when a limit is global.
        const r = policy.redis!;
        const sig = `${r.address}\0${r.timeoutMs}`;
        let client = this.redis.get(sig) ?? redis.get(sig);
        if (!client) client = new RedisLimiter({ address: r.address, timeoutMs: r.timeoutMs, clock: this.clock, logger: this.log, maxKeys: this.maxKeys });
        redis.set(sig, client);
        c.redis = client;
        chain.globals.push(c);
      }
    }
    this.chain = chain;
    this.retire(buckets, redis);
  }

  /** This process's share of a local limit; the bucket still holds at least one whole token. */
  private share(l: { requests: number; periodMs: number; burst: number }): { requests: number; periodMs: number; burst: number } {
    if (this.localShare === 1) return l;
    const requests = l.requests * this.localShare;
    return { requests, periodMs: l.periodMs, burst: Math.max(l.burst * this.localShare, 1 - requests) };
  }

  private retire(buckets: Map<string, TokenBuckets>, redis: Map<string, RedisLimiter>): void {
    for (const [sig, b] of this.buckets)
      if (!buckets.has(sig) && b.overflowed > 0) {
        const name = sig.split('\0')[0]!;
        this.retiredOverflow.set(name, (this.retiredOverflow.get(name) ?? 0) + b.overflowed);
      }
    for (const [sig, r] of this.redis) if (!redis.has(sig)) void r.close();
    this.buckets = buckets;
    this.redis = redis;
  }

  /**
   * Decides on one inbound request: calls `allow()` or `deny(headers, reason)`, once. `rec` (with
   * the request's `seq`) is told each bucket the request was counted against, and the outcome.
   */
  admit(req: LimitRequest, allow: () => void, deny: DenyFn, rec?: LimitRecorder, seq = 0): void {
    const chain = this.chain;
    if (!chain) return allow();
    for (const l of chain.locals) {
      const key = l.key(req);
      if (key === undefined) continue;
      const r = l.buckets!.take(key);
      if (!r.allowed) {
        l.counters.limited++;
        rec?.limit(seq, l.info.name, key, 'limited');
        return deny(limitedHeaders(l.info, 0, r.retryAfterMs), `limit ${JSON.stringify(l.info.name)}`);
      }
      l.counters.allowed++;
      rec?.limit(seq, l.info.name, key, 'allowed');
    }
    if (chain.globals.length === 0) return allow();
    let checked: Checked[] | undefined;
    let waiting: Promise<Checked>[] | undefined;
    for (const g of chain.globals) {
      const key = g.key(req);
      if (key === undefined) continue;
      const o = g.redis!.check(g.redisPrefix + key, g.emissionMs, g.capacity);
      if (o instanceof Promise) (waiting ??= []).push(o.then((x): Checked => [g, x, key]));
      else if (o.kind === 'ok' && !o.allowed) {
        // Known over the limit locally: no round trip, no waiting for the others.
        g.counters.limited++;
        rec?.limit(seq, g.info.name, key, 'limited');
        return deny(limitedHeaders(g.info, 0, o.retryAfterMs), `limit ${JSON.stringify(g.info.name)}`);
      } else (checked ??= []).push([g, o, key]);
    }
    if (!waiting) return this.decide(chain, checked ?? [], allow, deny, rec, seq);
    Promise.all(waiting)
      .then((more) => this.decide(chain, checked ? checked.concat(more) : more, allow, deny, rec, seq))
      .catch((err: unknown) => this.log?.error({ err }, 'rate-limit decision failed'));
  }

  private decide(chain: Chain, items: readonly Checked[], allow: () => void, deny: DenyFn, rec: LimitRecorder | undefined, seq: number): void {
    for (const [g, o, key] of items) {
      if (o.kind === 'error') {
        if (chain.failureMode === 'open') {
          g.counters.failedOpen++;
          rec?.limit(seq, g.info.name, key, 'failed-open');
          continue;
        }
        g.counters.failedClosed++;
        rec?.limit(seq, g.info.name, key, 'failed-closed');
        return deny(limitedHeaders(g.info, 0, 1000), `limit ${JSON.stringify(g.info.name)}: rate-limit store unavailable (${o.reason}); failureMode closed`);
      }
      if (!o.allowed) {
        g.counters.limited++;
        rec?.limit(seq, g.info.name, key, 'limited');
        return deny(limitedHeaders(g.info, 0, o.retryAfterMs), `limit ${JSON.stringify(g.info.name)}`);
      }
      g.counters.allowed++;
      rec?.limit(seq, g.info.name, key, 'allowed');
    }
    allow();
  }

  /** Decisions per limit so far (sidecar `/stats`, for the dashboard). */
  decisions(): ReturnType<RateLimitMetrics['decisions']> {
    return this.metrics.decisions();
  }

  /** Prometheus text for /metrics. */
  render(): string {
    const overflow = new Map(this.retiredOverflow);
    for (const [sig, b] of this.buckets) {
      const name = sig.split('\0')[0]!;
      overflow.set(name, (overflow.get(name) ?? 0) + b.overflowed);
    }
    const redis = new Map<string, RedisCounters>();
    for (const [sig, r] of this.redis) redis.set(sig.split('\0')[0]!, { ...r, connected: r.connected });
    return this.metrics.render(overflow, redis);
  }

  /** Redis checks so far, summed over every connection in force (for benches and tests). */
  redisCounters(): { roundTrips: number; remoteChecks: number; localDenials: number; failures: number } {
    const s = { roundTrips: 0, remoteChecks: 0, localDenials: 0, failures: 0 };
    for (const r of this.redis.values()) {
      s.roundTrips += r.roundTrips;
      s.remoteChecks += r.remoteChecks;
      s.localDenials += r.localDenials;
      s.failures += r.failures;
    }
    return s;
  }

  async close(): Promise<void> {
    this.chain = undefined;
    await Promise.all([...this.redis.values()].map((r) => r.close()));
    this.redis.clear();
  }
}
