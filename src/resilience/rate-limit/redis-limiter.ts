/**
 * Global limits, shared by every sidecar through Redis (ioredis), with the GCRA script.
 *
 * Off the critical path where the algorithm allows:
 * - a local pre-check: every answer tells us when the next request for that key could pass at
 *   the earliest; until then this sidecar denies locally, without a round trip. Other sidecars
 *   only ever consume more, so the local view never denies what Redis would allow (beyond the
 *   few ms between the two clocks);
 * - batching: checks made in the same event-loop turn go out as one EVALSHA over all their keys;
 * - EVALSHA; the script is loaded on every (re)connect, and EVAL (which loads it too) is the
 *   fallback on NOSCRIPT, e.g. after a SCRIPT FLUSH.
 *
 * Failures never throw: a check resolves to `{ kind: 'error' }` when Redis is down (the offline
 * queue is off, so this is immediate), slow (after `timeoutMs`), or too backed up; the caller's
 * failureMode decides. ioredis reconnects by itself, with a capped backoff.
 */
import { createHash } from 'node:crypto';
import type Redis from 'ioredis';
import type { Logger } from 'pino';
import type { Clock } from '../../core/clock';
import { GCRA_SCRIPT } from './gcra.lua';
import type { TakeResult } from './token-bucket';

export type GlobalOutcome = ({ kind: 'ok'; local: boolean } & TakeResult) | { kind: 'error'; reason: string };

export interface RedisLimiterOptions {
  address: string;
  timeoutMs: number;
  clock: Clock;
  logger?: Logger;
  /** Keys checked in one script call at most. */
  maxBatch?: number;
  /** Batches in flight at most; beyond, checks fail at once instead of piling up behind a stalled Redis. */
  maxInflight?: number;
  /** Keys remembered for the local pre-check. */
  maxKeys?: number;
}

interface Pending {
  key: string;
  emissionMs: number;
  capacity: number;
  resolve: (o: GlobalOutcome) => void;
}

/** While Redis stays unavailable, a reminder at warn at most this often. */
export const REDIS_DOWN_LOG_INTERVAL_MS = 60_000;

const SHA = createHash('sha1').update(GCRA_SCRIPT).digest('hex');

export function parseHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  let host = address.slice(0, i);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: Number(address.slice(i + 1)) };
}

export class RedisLimiter {
  readonly client: Redis;
  private readonly clock: Clock;
  private readonly timeoutMs: number;
  private readonly maxBatch: number;
  private readonly maxInflight: number;
  private readonly maxKeys: number;
  private readonly log?: Logger;
  private queue: Pending[] = [];
  private scheduled = false;
  private inflight = 0;
  /** key -> monotonic ms before which the key is known to be over its limit. */
  private readonly deniedUntil = new Map<string, number>();
  private closed = false;
  private wasReady = false;
  /** Monotonic ms since Redis has been unavailable, or undefined while it is (or was never tried) reachable. */
  private downSince: number | undefined;
  private lastDownLog = 0;

  /** Script calls sent (each one round trip), including NOSCRIPT retries. */
  roundTrips = 0;
  /** Checks answered by Redis. */
  remoteChecks = 0;
  /** Checks denied by the local pre-check, without a round trip. */
  localDenials = 0;
  /** Checks that failed: Redis down, slow or backed up. */
  failures = 0;
  /** Script (re)loads after NOSCRIPT. */
  scriptLoads = 0;

  constructor(opts: RedisLimiterOptions) {
    this.clock = opts.clock;
    this.timeoutMs = opts.timeoutMs;
    this.maxBatch = opts.maxBatch ?? 256;
    this.maxInflight = opts.maxInflight ?? 64;
    this.maxKeys = opts.maxKeys ?? 10_000;
    this.log = opts.logger;
    const { host, port } = parseHostPort(opts.address);
    // ioredis is loaded only when a global limit exists (~10 MB of RSS otherwise).
    const RedisClient = (require('ioredis') as typeof import('ioredis')).default;
    this.client = new RedisClient({
      host,
      port,
      // Fail at once while disconnected; the policy's failureMode answers instead.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 1000,
      retryStrategy: (times) => Math.min(50 * times, 1000),
      // Never give up reconnecting, and do not resend our commands (they have timed out).
      reconnectOnError: () => false,
    });
    // Unavailable: logged at warn when it happens (even if Redis was never reached), then at most
    // once a minute while it lasts (ioredis reports every reconnect attempt); back: logged once.
    this.client.on('error', (err: Error) => {
      const now = this.clock.monotonic();
      if (this.downSince === undefined) {
        this.downSince = now;
        this.lastDownLog = now;
        this.log?.warn({ err: err.message, redis: opts.address, failureModeApplies: true }, this.wasReady ? 'rate-limit redis unavailable' : 'rate-limit redis unreachable');
      } else if (now - this.lastDownLog >= REDIS_DOWN_LOG_INTERVAL_MS) {
        this.lastDownLog = now;
        this.log?.warn({ err: err.message, redis: opts.address, downForMs: Math.round(now - this.downSince), failedChecks: this.failures }, 'rate-limit redis still unavailable');
      }
      this.wasReady = false;
    });
    this.client.on('ready', () => {
      const down = this.downSince;
      this.downSince = undefined;
      this.wasReady = true;
      // Load the script as soon as we connect, so that EVALSHA finds it (off the request path).
      this.client.script('LOAD', GCRA_SCRIPT).catch(() => undefined);
      if (down !== undefined) this.log?.warn({ redis: opts.address, downForMs: Math.round(this.clock.monotonic() - down) }, 'rate-limit redis reachable again');
      else this.log?.info({ redis: opts.address }, 'rate-limit redis connected');
    });
  }

  /**
   * One token for `key`, at rate 1 per `emissionMs` with room for `capacity`. Synchronous when
   * the local pre-check already knows the answer.
   */
  check(key: string, emissionMs: number, capacity: number): GlobalOutcome | Promise<GlobalOutcome> {
    const now = this.clock.monotonic();
    const until = this.deniedUntil.get(key);
    if (until !== undefined) {
      if (now < until) {
        this.localDenials++;
        const wait = Math.ceil(until - now);
        return { kind: 'ok', local: true, allowed: false, remaining: 0, retryAfterMs: wait, resetMs: Math.ceil(wait + (capacity - 1) * emissionMs) };
      }
      this.deniedUntil.delete(key);
    }
    if (this.closed) return { kind: 'error', reason: 'closed' };
    if (this.client.status !== 'ready') {
      this.failures++;
      return { kind: 'error', reason: `redis ${this.client.status}` };
    }
    return new Promise<GlobalOutcome>((resolve) => {
      this.queue.push({ key, emissionMs, capacity, resolve });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    while (this.queue.length > 0) {
      const batch = this.queue.length <= this.maxBatch ? this.queue : this.queue.slice(0, this.maxBatch);
      this.queue = this.queue.length <= this.maxBatch ? [] : this.queue.slice(this.maxBatch);
      if (this.inflight >= this.maxInflight) {
        this.fail(batch, 'too many checks in flight');
        continue;
      }
      this.send(batch);
    }
  }

  private fail(batch: readonly Pending[], reason: string): void {
    this.failures += batch.length;
    for (const p of batch) p.resolve({ kind: 'error', reason });
  }

  private send(batch: Pending[]): void {
    const keys: string[] = [];
    const args: (string | number)[] = [];
    for (const p of batch) {
      keys.push(p.key);
      args.push(p.emissionMs, p.capacity);
    }
    let done = false;
    this.inflight++;
    const timer = this.clock.setTimeout(() => {
      if (done) return;
      done = true;
      this.inflight--;
      this.fail(batch, `no answer within ${this.timeoutMs} ms`);
    }, this.timeoutMs);
    const settle = (reply: unknown): void => {
      if (done) return;
      done = true;
      this.inflight--;
      timer.cancel();
      const r = reply as number[];
      const now = this.clock.monotonic();
      this.remoteChecks += batch.length;
      for (let i = 0; i < batch.length; i++) {
        const p = batch[i]!;
        const allowed = r[4 * i] === 1;
        const wait = r[4 * i + 2]!;
        if (wait > 0) this.remember(p.key, now + wait);
        p.resolve({ kind: 'ok', local: false, allowed, remaining: r[4 * i + 1]!, retryAfterMs: allowed ? 0 : wait, resetMs: r[4 * i + 3]! });
      }
    };
    const onError = (err: Error): void => {
      if (done) return;
      done = true;
      this.inflight--;
      timer.cancel();
      this.log?.debug({ err: err.message }, 'rate-limit redis check failed');
      this.fail(batch, err.message);
    };
    this.roundTrips++;
    this.client.evalsha(SHA, keys.length, ...keys, ...args).then(settle, (err: Error) => {
      if (done) return;
      if (!String(err.message).startsWith('NOSCRIPT')) return onError(err);
      this.roundTrips++;
      this.scriptLoads++;
      this.client.eval(GCRA_SCRIPT, keys.length, ...keys, ...args).then(settle, onError);
    });
  }

  private remember(key: string, until: number): void {
    this.deniedUntil.delete(key);
    if (this.deniedUntil.size >= this.maxKeys) {
      // Drop the oldest entry: forgetting only costs a round trip, never a wrong answer.
      const oldest = this.deniedUntil.keys().next().value as string;
      this.deniedUntil.delete(oldest);
    }
    this.deniedUntil.set(key, until);
  }

  get connected(): boolean {
    return this.client.status === 'ready';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail(this.queue, 'closed');
    this.queue = [];
    this.client.disconnect();
  }
}
