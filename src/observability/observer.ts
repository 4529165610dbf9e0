/**
 * One request, observed: the proxy calls `begin` when a request arrives (with the route's
 * pre-bound metrics handle once routed), lets it rewrite the forwarded headers (trace context,
 * x-request-id), counts response bytes, and calls `end` once with the status and flag. `end`
 * records the metrics, queues the span (when sampled) and writes the access-log line (when
 * logging and sampled). Nothing here formats text for Prometheus or a collector: that happens at
 * scrape and export time.
 */
import pino, { type Logger } from 'pino';
// node's global `performance` is a lazy accessor (a getter call on every read): the module's own object is not.
import { performance } from 'node:perf_hooks';

import type { MeshMetrics, RouteHandle, Direction } from './mesh-metrics';
import { extract, injectHeaders, newRequestId, newSpanId, newTraceId, TRACE_HEADERS, type TraceContext } from './trace-context';
import { LineBuffer } from './line-buffer';
import type { Span, SpanExporter } from './tracing';
import { TapHub } from './tap';
import { lowerName } from '../http/headers';

export interface ObserverOptions {
  metrics: MeshMetrics;
  /** Record request metrics (default true; off only to measure what they cost). */
  recordMetrics?: boolean;
  /** Trace-header propagation and spans (default on). */
  tracing?: boolean;
  /** Percent of new traces sampled (0..100, default 1); a caller's decision always wins. */
  samplingPercent?: number;
  exporter?: SpanExporter;
  /**
   * Access log: a pino logger (lines at info) and the fraction of requests logged (0..1).
   * `buffers`: the logger's destination takes Buffers (ACCESS_LOG_DESTINATION, sonic-boom
   * `contentMode: 'buffer'`): each batch of lines is then encoded once, here.
   */
  accessLog?: AccessLogOptions;
  random?: () => number;
  /**
   * Whether a name is a service of the snapshot in force: the caller's `x-meshlet-source` is a
   * metric label only then (bounded), else `unknown`.
   */
  knownService?: (name: string) => boolean;
  /** Live requests (tap.ts); one is made when not given. */
  tap?: TapHub;
}

/**
 * The options of the access log's pino destination (sidecar/index.ts, bench/observability.js):
 * asynchronous, written once ~12 KiB are waiting (a flush timer writes the rest), up to 64 KiB a
 * write, Buffers in (the observer encodes; pass `buffers: true` with it). In text mode sonic-boom
 * measures and encodes each string twice more. sonic-boom has one write in flight, so about
 * `maxWrite` bytes leave per completed write: at its default (16 KiB) the microbenchmark's
 * writer fell behind and its backlog grew to tens of MB (then costly GC).
 */
export const ACCESS_LOG_DESTINATION = { sync: false, minLength: 12 * 1024, maxWrite: 64 * 1024, contentMode: 'buffer' } as const;

/** Set by the calling sidecar to its service; read (and removed) by the receiving one. */
export const SOURCE_HEADER = 'x-meshlet-source';

export interface RequestInfo {
  method: string;
  authority: string;
  /** The path without the query, for logs and spans (never for metric labels). */
  path: string;
  protocol: 'http1' | 'http2';
  /** For inbound requests: the downstream peer address. */
  peer?: string;
}

type Get = (name: string) => string | undefined;

// The request headers the observer reads (begin, trace-context's extract) or replaces
// (rewriteHeaders), one bit each: a request's list is walked once for the bits it holds, and a
// name it does not hold is then not looked for again (the seven reads of a request with no trace
// headers were seven walks of its list, the replacement a cache lookup and a set lookup a field).
const ID_BIT = 1;
const SOURCE_BIT = 2;

/** The bit of `name` (lower-case; another spelling through `lowerName`), 0 for a header the observer does not read. */
export function observedBit(name: string): number {
  const b = exactBit(name);
  if (b !== 0) return b;
  // Another spelling of an observed name has its length and starts with b, t or x in either case.
  const len = name.length;
  if (len > 17 || ((OBSERVED_LENGTHS >> len) & 1) === 0) return 0;
  const c = name.charCodeAt(0) | 0x20;
  if (c !== 0x62 && c !== 0x74 && c !== 0x78) return 0;
  const lower = lowerName(name);
  return lower === name ? 0 : exactBit(lower);
}

/** The lengths of the observed names, one bit each: 2, 10, 11, 12, 16 and 17. */
const OBSERVED_LENGTHS = (1 << 2) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 16) | (1 << 17);

function exactBit(name: string): number {
  switch (name.length) {
    case 2:
      return name === 'b3' ? 0x10 : 0;
    case 10:
      return name === 'tracestate' ? 0x8 : name === 'x-b3-flags' ? 0x200 : 0;
    case 11:
      return name === 'traceparent' ? 0x4 : name === 'x-b3-spanid' ? 0x40 : 0;
    case 12:
      return name === 'x-request-id' ? ID_BIT : name === 'x-b3-traceid' ? 0x20 : name === 'x-b3-sampled' ? 0x100 : 0;
    case 16:
      return name === SOURCE_HEADER ? SOURCE_BIT : 0;
    case 17:
      return name === 'x-b3-parentspanid' ? 0x80 : 0;
    default:
      return 0;
  }
}

/** The bits of traceparent, tracestate, b3 and the five x-b3-* headers: TRACE_HEADERS. */
const TRACE_BITS = [...TRACE_HEADERS].reduce((bits, name) => bits | exactBit(name), 0);

/** The bits of the names a flat `[name, value, ...]` list holds. */
export function observedBits(flat: readonly string[]): number {
  let bits = 0;
  for (let i = 0; i < flat.length; i += 2) bits |= observedBit(flat[i] as string);
  return bits;
}

/**
 * A header getter over a flat, lower-cased request list holding `bits` (observedBits): the first
 * value of a name, with no walk for an observed name the list does not hold.
 */
export function flatGetter(flat: readonly string[], bits: number): Get {
  return (name) => {
    const b = observedBit(name);
    if (b !== 0 && (bits & b) === 0) return undefined;
    for (let i = 0; i < flat.length; i += 2) if (flat[i] === name) return flat[i + 1];
    return undefined;
  };
}

export interface AccessLogOptions {
  logger: Logger;
  sample: number;
  buffers?: boolean;
}

/** Access-log lines are handed to the destination this many at a time (~40-60 KiB)... */
const ACCESS_BATCH_LINES = 128;
/** ...or this long after the first line of a batch, so a quiet sidecar's lines still show. */
const ACCESS_FLUSH_MS = 100;

export class Observer {
  readonly metrics: MeshMetrics;
  readonly recordMetrics: boolean;
  tracing: boolean;
  samplingPercent: number;
  exporter?: SpanExporter;
  accessLog?: AccessLogOptions;
  /** Watchers of live requests: `end()` looks at `tap.active` only, while nobody watches. */
  readonly tap: TapHub;
  private readonly random: () => number;
  private readonly knownService: (name: string) => boolean;
  private readonly inboundBySource = new Map<string, RouteHandle>();

  constructor(opts: ObserverOptions) {
    this.metrics = opts.metrics;
    this.recordMetrics = opts.recordMetrics ?? true;
    this.tracing = opts.tracing ?? true;
    this.samplingPercent = opts.samplingPercent ?? 1;
    if (!(this.samplingPercent >= 0 && this.samplingPercent <= 100)) throw new Error(`trace sampling must be a percentage 0..100, got ${opts.samplingPercent}`);
    this.exporter = opts.exporter;
    this.accessLog = opts.accessLog;
    if (opts.accessLog) {
      const logger = opts.accessLog.logger;
      const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { write(chunk: string | Buffer): unknown } | undefined;
      // Every pino logger has one (pino's own destination, or the stream it was given).
      if (typeof stream?.write !== 'function') throw new Error('access log: the logger has no destination stream to write to');
      this.accessStream = stream;
      const bound = JSON.stringify({ level: 30, ...logger.bindings() });
      this.accessPrefix = Buffer.from(bound.length > 2 ? `${bound.slice(0, -1)},` : '{');
    }
    this.random = opts.random ?? Math.random;
    this.knownService = opts.knownService ?? (() => false);
    this.tap = opts.tap ?? new TapHub();
  }

  /** `{"level":30,<the logger's bindings>,` encoded once. */
  private accessPrefix: Buffer | undefined;
  private accessStream: { write(chunk: string | Buffer): unknown } | undefined;
  /** Access-log lines not yet handed to the stream, and how many. */
  private readonly accessLines = new LineBuffer();
  private accessCount = 0;
  private accessTimer: NodeJS.Timeout | undefined;
  private readonly flushAccess = (): void => {
    this.accessTimer = undefined;
    this.flushAccessLog();
  };

  /** Hands the access-log lines built so far to the logger's stream (also run at shutdown). */
  flushAccessLog(): void {
    if (this.accessTimer) {
      clearTimeout(this.accessTimer);
      this.accessTimer = undefined;
    }
    if (this.accessCount === 0) return;
    this.accessCount = 0;
    const batch = this.accessLines.take();
    // A Buffers destination takes the batch as it is; a text stream gets it decoded.
    this.accessStream?.write((this.accessLog as AccessLogOptions).buffers ? batch : batch.toString('utf8'));
  }

  /**
   * One access-log line, the same JSON pino would write, built by hand: formatting a 17-field
   * object through pino costs ~15 us a request here. The line is written straight into the
   * batch's Buffer (line-buffer.ts: no string per line, nothing to flatten or encode later); the
   * timestamp reuses its formatted second; the route's fields are encoded once per route handle.
   * Lines go to the logger's own (asynchronous) destination in batches of ACCESS_BATCH_LINES
   * (as one Buffer for the sidecar's own destination, else as one string), or ACCESS_FLUSH_MS
   * after the first line of a batch: a text destination (sonic-boom) measures its whole pending
   * buffer on every `write`, which cost ~3 us a line when lines were written one by one. The level
   * set at runtime applies to each line when it is built.
   */
  writeAccessLog(r: ObservedRequest, status: number, flag: string | undefined, seconds: number, h: RouteHandle): void {
    const al = this.accessLog as AccessLogOptions;
    if (!al.logger.isLevelEnabled('info')) return;
    const w = this.accessLines;
    const prefix = this.accessPrefix as Buffer;
    const route = (h.accessLogFields ??= routeFields(h));
    w.bytes(prefix);
    w.bytes(K.start);
    w.isoTime(r.wallStart);
    w.bytes(r.direction === 'inbound' ? K.inbound : K.outbound);
    const info = r.info;
    w.string(info.method);
    w.bytes(K.authority);
    w.string(info.authority);
    w.bytes(K.path);
    w.string(info.path);
    w.bytes(info.protocol === 'http2' ? K.h2 : K.h1);
    w.int(status);
    w.bytes(K.flags);
    if (flag === undefined) w.bytes(K.dash);
    else w.string(flag);
    w.bytes(K.received);
    w.int(r.requestBytes);
    w.bytes(K.sent);
    w.int(r.responseBytes);
    w.bytes(K.duration);
    w.thousandths(Math.round(seconds * 1e6));
    w.bytes(K.upstream);
    if (r.upstream === undefined) w.bytes(K.null);
    else w.string(r.upstream);
    w.bytes(route);
    w.bytes(K.trace);
    if (r.traceId) w.string(r.traceId);
    else w.bytes(K.null);
    w.bytes(K.request);
    w.string(r.requestId);
    if (r.authzLog !== undefined) w.bytes(r.authzLog);
    w.byte(0x7d);
    w.byte(0x0a);
    if (++this.accessCount >= ACCESS_BATCH_LINES) this.flushAccessLog();
    else if (this.accessTimer === undefined) {
      this.accessTimer = setTimeout(this.flushAccess, ACCESS_FLUSH_MS);
      this.accessTimer.unref();
    }
  }

  private inboundHandle(source: string | undefined): RouteHandle {
    if (!source || !this.knownService(source)) return this.metrics.unrouted('inbound');
    let h = this.inboundBySource.get(source);
    if (!h) this.inboundBySource.set(source, (h = this.metrics.handle('inbound', this.metrics.service, 'unknown', source)));
    return h;
  }

  /** `samplingPercent`: the route's own sampling for new traces (Route rule `tracing.samplingPercent`). */
  begin(direction: Direction, get: Get, info: RequestInfo, route?: RouteHandle, samplingPercent?: number): ObservedRequest {
    const handle = route ?? (direction === 'inbound' ? this.inboundHandle(get(SOURCE_HEADER)) : this.metrics.unrouted(direction));
    const r = new ObservedRequest(this, direction, info, handle);
    r.requestId = get('x-request-id') || newRequestId();
    if (this.tracing) {
      const incoming = extract(get);
      r.incoming = incoming;
      r.traceId = incoming?.traceId || newTraceId();
      r.parentId = incoming?.parentId;
      r.spanId = newSpanId();
      r.sampled = incoming?.sampled ?? this.random() * 100 < (samplingPercent ?? this.samplingPercent);
    }
    const al = this.accessLog;
    r.logged = al !== undefined && (al.sample >= 1 || this.random() < al.sample);
    if (this.tap.active && this.tap.headerNames.length) r.tapHeaders = this.tap.captureHeaders(get);
    return r;
  }
}

export class ObservedRequest {
  requestId = '';
  traceId = '';
  spanId = '';
  parentId?: string;
  sampled = false;
  incoming?: TraceContext;
  logged = false;
  upstream?: string;
  /** `,"authz_policy":...` of the access-log line: the AuthorizationPolicy decision (src/stack/authz.ts), encoded once per rule. */
  authzLog: Buffer | undefined = undefined;
  /** The headers a tap asked for (only while someone watches with `headers`). */
  tapHeaders?: Record<string, string>;
  /** Request body bytes received from the downstream: read from `received` when the request ends. */
  requestBytes = 0;
  /** What counts the request body as it arrives (chunked or not), when the request has one. */
  received: { readonly bodyBytes: number } | undefined;
  responseBytes = 0;
  /** When the request began, and ended (0 until then): monotonic ms, read once each (the recent decisions reuse them). */
  readonly t0 = performance.now();
  t1 = 0;
  /** Wall-clock start (ms since the epoch), derived from t0: one clock read per request, not two. */
  readonly wallStart = wallClock(this.t0);
  private ended = false;

  constructor(
    private readonly o: Observer,
    readonly direction: Direction,
    readonly info: RequestInfo,
    private handle: RouteHandle,
  ) {
    if (o.recordMetrics) handle.active.value++;
  }

  /** The metrics handle the request is counted on. */
  get route(): RouteHandle {
    return this.handle;
  }

  /** Moves the request to its route's handle once routed. */
  setRoute(h: RouteHandle): void {
    if (h === this.handle) return;
    if (this.o.recordMetrics) {
      this.handle.active.value--;
      h.active.value++;
    }
    this.handle = h;
  }

  /**
   * The forwarded request's headers (flat name/value list): trace headers replaced by this hop's
   * context, `x-request-id` kept or added.
   */
  rewriteHeaders(flat: string[], bits = observedBits(flat)): string[] {
    // In place: the list is this request's own copy (forwardRequestHeaders made it). `bits`: the
    // observed names it holds (observedBits), when the caller walked it already.
    const outbound = this.direction === 'outbound';
    const tracing = this.o.tracing;
    // The caller's identity is replaced on the way out; on the way in it is the caller sidecar's.
    const replaced = ID_BIT | (outbound ? SOURCE_BIT : 0) | (tracing ? TRACE_BITS : 0);
    if ((bits & replaced) !== 0) {
      let w = 0;
      for (let i = 0; i < flat.length; i += 2) {
        const name = flat[i] as string;
        if ((observedBit(name) & replaced) !== 0) continue;
        if (w !== i) {
          flat[w] = name;
          flat[w + 1] = flat[i + 1] as string;
        }
        w += 2;
      }
      // Nothing removed: no length store, which V8 makes through a runtime call.
      if (w !== flat.length) flat.length = w;
    }
    flat.push('x-request-id', this.requestId);
    if (outbound) flat.push(SOURCE_HEADER, this.o.metrics.service);
    if (tracing) {
      const inc = this.incoming;
      injectHeaders(flat, this.traceId, this.spanId, this.parentId, this.sampled, inc?.tracestate, inc ? inc.format : 'none');
    }
    return flat;
  }

  end(status: number, flag?: string): void {
    if (this.ended) return;
    this.ended = true;
    const t1 = (this.t1 = performance.now());
    const seconds = (t1 - this.t0) / 1000;
    if (this.received) this.requestBytes = this.received.bodyBytes;
    const h = this.handle;
    if (this.o.recordMetrics) {
      h.active.value--;
      h.complete(status, flag, seconds, this.requestBytes, this.responseBytes);
    }
    const exporter = this.o.exporter;
    if (this.sampled && exporter && exporter.accepting()) exporter.add(new RequestSpan(this, status, flag, seconds, h.route));
    if (this.logged && this.o.accessLog) this.o.writeAccessLog(this, status, flag, seconds, h);
    const tap = this.o.tap;
    if (tap.active) tap.offer(this, status, flag, seconds, h.source, h.destination, h.route);
  }
}

// The wall clock is read once a second at most: in between, wall time = monotonic time + offset
// (so a request costs one clock read; a clock step or slew shows up within a second).
let wallOffset = Date.now() - performance.now();
let wallCheckedAt = performance.now();
function wallClock(mono: number): number {
  if (mono - wallCheckedAt >= 1000 || mono < wallCheckedAt) {
    wallOffset = Date.now() - performance.now();
    wallCheckedAt = mono;
  }
  return Math.floor(mono + wallOffset);
}

/** `"route":...,"destination":...,` of an access-log line, encoded once per route handle. */
function routeFields(h: RouteHandle): Buffer {
  return Buffer.from(`,"route":${JSON.stringify(h.route)},"destination":${JSON.stringify(h.destination)},`);
}

/** The constant parts of an access-log line, encoded once. */
const K = {
  start: Buffer.from('"start_time":"'),
  inbound: Buffer.from('","direction":"inbound","method":'),
  outbound: Buffer.from('","direction":"outbound","method":'),
  authority: Buffer.from(',"authority":'),
  path: Buffer.from(',"path":'),
  h1: Buffer.from(',"protocol":"HTTP/1.1","response_code":'),
  h2: Buffer.from(',"protocol":"HTTP/2","response_code":'),
  flags: Buffer.from(',"response_flags":'),
  dash: Buffer.from('"-"'),
  received: Buffer.from(',"bytes_received":'),
  sent: Buffer.from(',"bytes_sent":'),
  duration: Buffer.from(',"duration_ms":'),
  upstream: Buffer.from(',"upstream_host":'),
  null: Buffer.from('null'),
  trace: Buffer.from('"trace_id":'),
  request: Buffer.from(',"request_id":'),
};


/**
 * The span of one request, as the exporter queues it: flat fields copied at the end of the
 * request; its `name` and `tags` are built only when a batch is formatted for the collector.
 */
class RequestSpan implements Span {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentId?: string;
  readonly kind: 'SERVER' | 'CLIENT';
  readonly startUs: number;
  readonly durationUs: number;
  readonly remote?: string;
  readonly error: boolean;
  private readonly method: string;
  private readonly path: string;
  private readonly host: string;
  private readonly direction: Direction;
  private readonly requestId: string;

  constructor(
    r: ObservedRequest,
    private readonly status: number,
    private readonly flag: string | undefined,
    seconds: number,
    private readonly route: string,
  ) {
    this.traceId = r.traceId;
    this.spanId = r.spanId;
    this.parentId = r.parentId;
    this.kind = r.direction === 'inbound' ? 'SERVER' : 'CLIENT';
    this.startUs = r.wallStart * 1000;
    this.durationUs = Math.round(seconds * 1e6);
    this.remote = r.upstream;
    this.error = status >= 500 || status === 0;
    this.method = r.info.method;
    this.path = r.info.path;
    this.host = r.info.authority;
    this.direction = r.direction;
    this.requestId = r.requestId;
  }

  get name(): string {
    return `${this.method} ${this.route}`;
  }

  get tags(): Record<string, string> {
    const tags: Record<string, string> = {
      'http.method': this.method,
      'http.path': this.path,
      'http.status_code': String(this.status),
      'http.host': this.host,
      'meshlet.route': this.route,
      'meshlet.direction': this.direction,
      'guid:x-request-id': this.requestId,
    };
    if (this.flag) tags['meshlet.response_flags'] = this.flag;
    return tags;
  }
}
