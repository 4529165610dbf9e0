/**
 * Overload protection for the listeners, after Envoy's overload manager and Linkerd's limits: the
 * sidecar keeps serving what it can and refuses the rest early and cheaply, instead of running out
 * of file descriptors or memory and failing everyone.
 *
 * - Connections per listener are capped (default from the process's file-descriptor limit, keeping
 *   headroom for one upstream connection per downstream one, the admin port and files). At the cap
 *   the oldest idle connection (keep-alive with no request, HTTP/2 with no stream, or one that has
 *   not sent a byte yet) is closed to make room; when none is idle the new connection is refused.
 * - Concurrent requests (HTTP/1.1 requests and HTTP/2 streams, both listeners) are capped: over
 *   the cap a request is answered 503 with the `OL` response flag.
 * - A memory watermark (resident set size): above it the listeners stop accepting connections,
 *   shed new requests with 503 `OL`, and close idle connections oldest first until back under.
 *
 * Every action is counted (`onAction`) and logged, at most once per action and listener every
 * 10 s with the number suppressed. The admin port is a separate server and is not limited.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Clock } from '../core/clock';

/** Response flags of the mesh's own answers here (beside src/core/errors.ts's): shed, and body too slow. */
export const OVERLOAD_FLAG = 'OL';
export const BODY_TIMEOUT_FLAG = 'SI';

export type OverloadAction = 'connection_refused' | 'idle_closed' | 'request_shed' | 'body_timeout' | 'body_too_slow';

export interface OverloadOptions {
  /** Connections per listener (default: `defaultMaxConnections()`). */
  maxConnections?: number;
  /** Requests and streams in flight across the listeners (default 10,000). */
  maxRequests?: number;
  /** Resident set size above which the sidecar is overloaded, in bytes (default: none). */
  memoryWatermarkBytes?: number;
  /** How the resident set size is read (tests inject one); default process.memoryUsage.rss. */
  rss?: () => number;
  clock: Clock;
  logger: Logger;
  onAction?: (listener: string, action: OverloadAction) => void;
}

/** Soft limit on open files of this process (/proc/self/limits), or undefined when unknown. */
export function fdLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return undefined;
    return m[1] === 'unlimited' ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/**
 * Per listener: half of what is left of the fd limit after 256 for the admin port, the control
 * plane, logs and files, halved again because each downstream connection may hold an upstream one,
 * and shared by the two listeners. A 20,000 limit gives 4,936; Node raises the soft limit to the
 * hard one at startup, so this follows `ulimit -Hn`.
 */
export function defaultMaxConnections(limit = fdLimit()): number {
  if (limit === undefined) return 16_384;
  return Math.max(16, Math.floor((limit - 256) / 4));
}

export class OverloadManager {
  readonly maxConnections: number;
  readonly maxRequests: number;
  readonly memoryWatermarkBytes: number | undefined;
  /** Requests and streams in flight, across the listeners. */
  active = 0;
  /** Above the memory watermark at the last sample. */
  overloaded = false;
  private readonly logged = new Map<string, { at: number; suppressed: number }>();
  private readonly sweepers = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: OverloadOptions) {
    this.maxConnections = opts.maxConnections ?? defaultMaxConnections();
    this.maxRequests = opts.maxRequests ?? 10_000;
    this.memoryWatermarkBytes = opts.memoryWatermarkBytes;
    if (this.memoryWatermarkBytes !== undefined) {
      this.timer = setInterval(() => this.sample(), 250);
      this.timer.unref();
    }
  }

  /** Reads the memory once: over the watermark, asks every listener to close its idle connections. */
  sample(): void {
    if (this.memoryWatermarkBytes === undefined) return;
    const rss = (this.opts.rss ?? (() => process.memoryUsage.rss()))();
    const over = rss > this.memoryWatermarkBytes;
    if (over !== this.overloaded) {
      this.overloaded = over;
      if (over) this.opts.logger.warn({ rss, watermark: this.memoryWatermarkBytes }, 'overload: memory above the watermark: refusing new connections, shedding new requests, closing idle connections');
      else this.opts.logger.info({ rss, watermark: this.memoryWatermarkBytes }, 'overload: memory back under the watermark');
    }
    if (over) for (const s of this.sweepers) s();
  }

  /** A listener's "close your idle connections" hook, run while over the memory watermark. */
  onPressure(sweep: () => void): () => void {
    this.sweepers.add(sweep);
    return () => this.sweepers.delete(sweep);
  }

  /** Whether a new request must be shed (and why); `counted` is 1 when it is in `active` already. */
  shedReason(counted: 0 | 1 = 0): string | undefined {
    if (this.overloaded) return 'memory above the watermark';
    if (this.active - counted >= this.maxRequests) return `${this.maxRequests} requests in flight`;
    return undefined;
  }

  /** Counts an action and logs it, at most once per 10 s per listener and action. */
  record(listener: string, action: OverloadAction, detail: Record<string, unknown> = {}): void {
    this.opts.onAction?.(listener, action);
    const key = `${listener}/${action}`;
    const now = this.opts.clock.monotonic();
    const l = this.logged.get(key);
    if (l && now - l.at < 10_000) {
      l.suppressed++;
      return;
    }
    this.logged.set(key, { at: now, suppressed: 0 });
    this.opts.logger.warn({ listener, action, ...(l?.suppressed ? { suppressed: l.suppressed } : {}), ...detail }, `overload: ${MESSAGES[action]}`);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sweepers.clear();
  }
}

const MESSAGES: Record<OverloadAction, string> = {
  connection_refused: 'new connection refused',
  idle_closed: 'idle connection closed to make room',
  request_shed: 'request shed with 503 OL',
  body_timeout: 'request body idle too long: 408',
  body_too_slow: 'request body slower than the minimum upload rate: 408',
};
