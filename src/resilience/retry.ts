/**
 * Retry decisions: which outcomes are retriable under a policy, the backoff before the next try
 * (exponential, full jitter, `Retry-After` honoured), and the retry budget that keeps retries from
 * amplifying an outage.
 */
import type { Clock } from '../core/clock';
import type { Headers } from '../http/upstream-types';
import type { RetryOn, RetryPolicy } from '../policy/types';

/** How an attempt failed without a usable response. */
export type FailureKind = 'connect-failure' | 'reset' | 'timeout';

const GRPC_CODES: Partial<Record<RetryOn, number>> = {
  cancelled: 1,
  'deadline-exceeded': 4,
  'resource-exhausted': 8,
  internal: 13,
  unavailable: 14,
};

/** Compiled once per policy: a predicate over (status, headers). */
export interface RetryMatcher {
  status(status: number, headers: Headers): boolean;
  failure(kind: FailureKind): boolean;
}

const cache = new WeakMap<RetryPolicy, RetryMatcher>();

export function retryMatcher(p: RetryPolicy): RetryMatcher {
  let m = cache.get(p);
  if (m) return m;
  const on = new Set(p.retryOn);
  const any5xx = on.has('5xx');
  const gateway = on.has('gateway-error');
  const codes = new Set(on.has('retriable-status-codes') ? (p.retriableStatusCodes ?? []) : []);
  const grpc = new Set<string>();
  for (const k of on) {
    const code = GRPC_CODES[k];
    if (code !== undefined) grpc.add(String(code));
  }
  m = {
    status(status, headers) {
      if (any5xx && status >= 500) return true;
      if (gateway && (status === 502 || status === 503 || status === 504)) return true;
      if (codes.has(status)) return true;
      if (grpc.size > 0) {
        // Only a trailers-only gRPC response carries its status in the headers; a status in
        // trailers comes after the response has started and can no longer be retried.
        const g = headers['grpc-status'];
        if (typeof g === 'string' && grpc.has(g)) return true;
      }
      return false;
    },
    failure(kind) {
      if (kind === 'connect-failure') return any5xx || gateway || on.has('connect-failure') || on.has('reset');
      if (kind === 'reset') return any5xx || gateway || on.has('reset');
      return any5xx || gateway;
    },
  };
  cache.set(p, m);
  return m;
}

/** `Retry-After` in milliseconds (delta-seconds or an HTTP date), or undefined. */
export function retryAfterMs(headers: Headers, now: number): number | undefined {
  const v = headers['retry-after'];
  if (typeof v !== 'string') return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/**
 * Delay before retry number `retry` (1-based): a random value in [0, base * 2^(retry-1)], capped
 * at the max interval (full jitter); at least the server's `Retry-After` when it sent one.
 */
export function backoffMs(retry: number, p: RetryPolicy, random: () => number, retryAfter?: number): number {
  const base = p.backoff?.baseIntervalMs ?? 25;
  const max = p.backoff?.maxIntervalMs ?? base * 10;
  const ceiling = Math.min(max, base * 2 ** Math.min(retry - 1, 30));
  const jitter = Math.floor(random() * (ceiling + 1));
  return retryAfter !== undefined ? Math.max(retryAfter, jitter) : jitter;
}

const BUCKETS = 10;
const BUCKET_MS = 1000;

/**
 * A retry budget over a sliding 10-second window (Linkerd's model): retries may be at most
 * `percent`% of the requests sent in the window, plus `minRetriesPerSecond` for every second of
 * it, so low-traffic services can still retry. One budget per destination service.
 */
export class RetryBudget {
  private readonly requests = new Float64Array(BUCKETS);
  private readonly retries = new Float64Array(BUCKETS);
  private bucket = -1;
  private reqSum = 0;
  private retrySum = 0;
  /** Retries refused by the budget, for metrics. */
  refused = 0;

  constructor(private readonly clock: Clock) {}

  private rotate(): number {
    const b = Math.floor(this.clock.monotonic() / BUCKET_MS);
    if (b !== this.bucket) {
      const steps = this.bucket < 0 ? BUCKETS : Math.min(BUCKETS, b - this.bucket);
      for (let i = 1; i <= steps; i++) {
        const idx = (((this.bucket + i) % BUCKETS) + BUCKETS) % BUCKETS;
        this.reqSum -= this.requests[idx] as number;
        this.retrySum -= this.retries[idx] as number;
        this.requests[idx] = 0;
        this.retries[idx] = 0;
      }
      this.bucket = b;
    }
    return ((b % BUCKETS) + BUCKETS) % BUCKETS;
  }

  /** An original request (not a retry) was sent. */
  request(): void {
    const i = this.rotate();
    this.requests[i]++;
    this.reqSum++;
  }

  /** Takes a retry from the budget when there is room; false (and counted) when there is not. */
  tryRetry(budget: RetryPolicy['budget']): boolean {
    const i = this.rotate();
    const allowed = (this.reqSum * budget.percent) / 100 + budget.minRetriesPerSecond * BUCKETS;
    if (this.retrySum + 1 > allowed) {
      this.refused++;
      return false;
    }
    this.retries[i]++;
    this.retrySum++;
    return true;
  }
}
