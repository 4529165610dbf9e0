/**
 * A local token bucket, keyed by descriptor values, per sidecar. Capacity is `requests + burst`,
 * refilled at `requests` per `periodMs`, continuously (not in steps). Time comes from an
 * injectable Clock (monotonic ms), so tests run on a FakeClock.
 *
 * Keys are bounded (`maxKeys`): a new key evicts the least recently used one only when that one
 * has refilled completely (forgetting it loses nothing); otherwise the new key shares one
 * overflow bucket and the overflow is counted, so an attacker cycling through many keys cannot
 * reset a depleted bucket by pushing it out, nor grow memory.
 */
import type { Clock } from '../../core/clock';

export interface BucketSpec {
  requests: number;
  periodMs: number;
  burst: number;
}

export interface TakeResult {
  allowed: boolean;
  /** Whole tokens left after this request. */
  remaining: number;
  /** When denied: ms until one token is back. When allowed: 0. */
  retryAfterMs: number;
  /** ms until the bucket is full again. */
  resetMs: number;
}

interface Bucket {
  tokens: number;
  /** Monotonic ms of the last refill. */
  at: number;
}

export class TokenBuckets {
  readonly capacity: number;
  /** Tokens per ms. */
  private readonly rate: number;
  private readonly buckets = new Map<string, Bucket>();
  private readonly overflowBucket: Bucket;
  /** Requests that went to the shared overflow bucket because the key table was full. */
  overflowed = 0;
  /** Keys forgotten (refilled) to make room for new ones. */
  evicted = 0;

  constructor(
    readonly spec: BucketSpec,
    private readonly clock: Clock,
    readonly maxKeys = 10_000,
  ) {
    if (!(spec.requests > 0 && spec.periodMs > 0 && spec.burst >= 0)) throw new RangeError('a token bucket needs requests > 0, periodMs > 0, burst >= 0');
    if (!(maxKeys >= 1)) throw new RangeError('maxKeys must be at least 1');
    this.capacity = spec.requests + spec.burst;
    this.rate = spec.requests / spec.periodMs;
    this.overflowBucket = { tokens: this.capacity, at: clock.monotonic() };
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token for `key`. */
  take(key: string): TakeResult {
    const now = this.clock.monotonic();
    const b = this.bucketFor(key, now);
    this.refill(b, now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { allowed: true, remaining: Math.floor(b.tokens), retryAfterMs: 0, resetMs: Math.ceil((this.capacity - b.tokens) / this.rate) };
    }
    return { allowed: false, remaining: 0, retryAfterMs: Math.max(1, Math.ceil((1 - b.tokens) / this.rate)), resetMs: Math.ceil((this.capacity - b.tokens) / this.rate) };
  }

  private refill(b: Bucket, now: number): void {
    if (now > b.at) {
      b.tokens = Math.min(this.capacity, b.tokens + (now - b.at) * this.rate);
      b.at = now;
    }
  }

  private bucketFor(key: string, now: number): Bucket {
    const hit = this.buckets.get(key);
    if (hit) {
      // Map order is insertion order: re-inserting makes it the most recently used.
      this.buckets.delete(key);
      this.buckets.set(key, hit);
      return hit;
    }
    if (this.buckets.size >= this.maxKeys) {
      const oldest = this.buckets.entries().next().value as [string, Bucket];
      this.refill(oldest[1], now);
      if (oldest[1].tokens < this.capacity) {
        this.overflowed++;
        return this.overflowBucket;
      }
      this.buckets.delete(oldest[0]);
      this.evicted++;
    }
    const b: Bucket = { tokens: this.capacity, at: now };
    this.buckets.set(key, b);
    return b;
  }
}
