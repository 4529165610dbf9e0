/**
 * Spans and their export. The sidecar makes one span per hop: a SERVER span for an inbound
 * request, a CLIENT span for an outbound one, each a child of the span id the request arrived
 * with. Finished spans are queued as plain objects; a timer (never the request) formats a batch
 * as Zipkin v2 JSON or OTLP/HTTP JSON and POSTs it to the collector. One export in flight at a
 * time; a full queue, a dead collector or an error status drops the batch, and the drop is
 * counted (`meshlet_trace_spans_dropped_total`). After a failed export the exporter backs off
 * (one interval, doubling to 30 s): meanwhile finished spans are dropped and counted at once,
 * before they are built, so a dead collector costs neither connection attempts nor formatting
 * per request. A flush sends what was queued when it began, never chasing spans that arrive
 * during its own POSTs. A request never waits for the exporter. A
 * span's `name` and `tags` may be getters (observer.ts builds them only when a batch is
 * formatted).
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { systemClock, type Clock } from '../core/clock';
import type { Counter, CounterChild } from './metrics';

export type TraceFormat = 'zipkin' | 'otlp';

export interface Span {
  traceId: string;
  spanId: string;
  parentId?: string;
  kind: 'SERVER' | 'CLIENT';
  name: string;
  /** Start, microseconds since the epoch. */
  startUs: number;
  durationUs: number;
  /** For CLIENT spans: the upstream `ip:port`. */
  remote?: string;
  tags: Record<string, string>;
  error: boolean;
}

export interface ExporterOptions {
  url: string;
  format: TraceFormat;
  service: string;
  /** Spans waiting beyond this are dropped (default 2048). */
  maxQueue?: number;
  /** Spans per POST (default 512). */
  maxBatch?: number;
  /** How often the queue is flushed (default 1000 ms). */
  intervalMs?: number;
  /** A POST is abandoned (and its spans dropped) after this (default 5000 ms). */
  timeoutMs?: number;
  clock?: Clock;
  counters?: { exported: Counter; dropped: Counter };
}

export function parseTraceFormat(v: string): TraceFormat | undefined {
  return v === 'zipkin' || v === 'otlp' ? v : undefined;
}

export class SpanExporter {
  private queue: Span[] = [];
  private inFlight = false;
  private timer?: { cancel(): void };
  private closed = false;
  private readonly url: URL;
  private readonly maxQueue: number;
  private readonly maxBatch: number;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly clock: Clock;
  private readonly agent: http.Agent;
  exported = 0;
  dropped = 0;
  /** Consecutive failed exports, and until when (clock.monotonic) spans are refused. */
  private failures = 0;
  private backoffUntil = 0;

  constructor(private readonly opts: ExporterOptions) {
    this.url = new URL(opts.url);
    if (this.url.protocol !== 'http:' && this.url.protocol !== 'https:') throw new Error(`trace collector URL must be http(s): ${opts.url}`);
    this.maxQueue = opts.maxQueue ?? 2048;
    this.maxBatch = opts.maxBatch ?? 512;
    this.intervalMs = opts.intervalMs ?? 1000;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.clock = opts.clock ?? systemClock;
    this.agent = new (this.url.protocol === 'https:' ? https.Agent : http.Agent)({ keepAlive: true, maxSockets: 1 });
    opts.counters?.exported.labels();
    this.droppedChildren = { queue_full: opts.counters?.dropped.labels('queue_full'), export_failed: opts.counters?.dropped.labels('export_failed') };
  }

  private readonly droppedChildren: Record<'queue_full' | 'export_failed', CounterChild | undefined>;
  private readonly flushTickFn = (): void => this.flushTick();

  /**
   * Whether a span finished now would be queued; a full queue counts the span as dropped here
   * (then the caller does not build it).
   */
  accepting(): boolean {
    if (this.closed) return false;
    if (this.failures > 0 && this.clock.monotonic() < this.backoffUntil) {
      this.drop('export_failed', 1);
      return false;
    }
    if (this.queue.length >= this.maxQueue) {
      this.drop('queue_full', 1);
      return false;
    }
    return true;
  }

  /** Queues a finished span: an array push, or a counted drop when the queue is full. */
  add(span: Span): void {
    if (this.closed) return;
    if (this.queue.length >= this.maxQueue) {
      this.drop('queue_full', 1);
      return;
    }
    this.queue.push(span);
    if (!this.timer) this.timer = this.clock.setTimeout(this.flushTickFn, this.intervalMs);
  }

  private drop(reason: 'queue_full' | 'export_failed', n: number): void {
    this.dropped += n;
    const c = this.droppedChildren[reason];
    if (c) c.value += n;
  }

  private flushTick(): void {
    this.timer = undefined;
    void this.flush();
  }

  /** Sends what is queued, batch by batch. Resolves when done; never rejects. */
  async flush(): Promise<void> {
    if (this.inFlight) return;
    this.inFlight = true;
    try {
      // Only what is queued now: spans finished during these POSTs wait for the next tick.
      let left = this.queue.length;
      while (left > 0 && this.queue.length > 0) {
        const batch = this.queue.splice(0, Math.min(this.maxBatch, left));
        left -= batch.length;
        const ok = await this.post(batch);
        if (ok) {
          this.failures = 0;
          this.exported += batch.length;
          this.opts.counters?.exported.inc(batch.length);
          continue;
        }
        // The collector is down or refusing: drop this batch and what waits behind it, back off.
        this.failures++;
        this.backoffUntil = this.clock.monotonic() + Math.min(30_000, this.intervalMs * 2 ** Math.min(this.failures - 1, 15));
        this.drop('export_failed', batch.length + this.queue.length);
        this.queue.length = 0;
        break;
      }
    } finally {
      this.inFlight = false;
    }
    if (this.queue.length > 0 && !this.timer && !this.closed) this.timer = this.clock.setTimeout(() => this.flushTick(), this.intervalMs);
  }

  private post(batch: Span[]): Promise<boolean> {
    const body = Buffer.from(JSON.stringify(this.opts.format === 'zipkin' ? toZipkin(batch, this.opts.service) : toOtlp(batch, this.opts.service)));
    const mod = this.url.protocol === 'https:' ? https : http;
    return new Promise((resolve) => {
      let done = false;
      const finish = (ok: boolean): void => {
        if (done) return;
        done = true;
        resolve(ok);
      };
      const req = mod.request(
        this.url,
        { method: 'POST', agent: this.agent, headers: { 'content-type': 'application/json', 'content-length': body.length }, timeout: this.timeoutMs },
        (res) => {
          res.resume();
          res.on('end', () => finish((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300));
          res.on('error', () => finish(false));
        },
      );
      req.on('timeout', () => req.destroy(new Error('trace export timed out')));
      req.on('error', () => finish(false));
      req.end(body);
    });
  }

  /** Flushes what is queued (bounded by the POST timeout), then stops. */
  async close(): Promise<void> {
    this.timer?.cancel();
    this.timer = undefined;
    await this.flush();
    this.closed = true;
    this.agent.destroy();
  }
}

/** Zipkin v2 JSON (`POST /api/v2/spans`). */
export function toZipkin(spans: Span[], service: string): unknown[] {
  return spans.map((s) => {
    const tags: Record<string, string> = { ...s.tags };
    if (s.error) tags.error = tags['http.status_code'] ?? 'true';
    const o: Record<string, unknown> = {
      traceId: s.traceId,
      id: s.spanId,
      kind: s.kind,
      name: s.name,
      timestamp: s.startUs,
      duration: Math.max(1, s.durationUs),
      localEndpoint: { serviceName: service },
      tags,
    };
    if (s.parentId) o.parentId = s.parentId;
    if (s.remote) {
      const i = s.remote.lastIndexOf(':');
      const ip = s.remote.slice(0, i);
      o.remoteEndpoint = { [ip.includes(':') ? 'ipv6' : 'ipv4']: ip.replace(/^\[|\]$/g, ''), port: Number(s.remote.slice(i + 1)) };
    }
    return o;
  });
}

/** OTLP/HTTP JSON (`POST /v1/traces`): ids as hex, times as unix-nano strings. */
export function toOtlp(spans: Span[], service: string): unknown {
  return {
    resourceSpans: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
        scopeSpans: [
          {
            scope: { name: 'meshlet' },
            spans: spans.map((s) => {
              const start = BigInt(s.startUs) * 1000n;
              const attributes = Object.entries(s.tags).map(([key, v]) => ({ key, value: { stringValue: v } }));
              if (s.remote) attributes.push({ key: 'server.address', value: { stringValue: s.remote } });
              return {
                traceId: s.traceId,
                spanId: s.spanId,
                ...(s.parentId ? { parentSpanId: s.parentId } : {}),
                name: s.name,
                kind: s.kind === 'SERVER' ? 2 : 3,
                startTimeUnixNano: String(start),
                endTimeUnixNano: String(start + BigInt(Math.max(1, s.durationUs)) * 1000n),
                attributes,
                status: { code: s.error ? 2 : 0 },
              };
            }),
          },
        ],
      },
    ],
  };
}
