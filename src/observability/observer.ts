/**
 * One request, observed: the proxy calls `begin` when a request arrives (with the route's
 * pre-bound metrics handle once routed), lets it rewrite the forwarded headers (trace context,
 * x-request-id), counts response bytes, and calls `end` once with the status and flag. `end`
 * records the metrics, queues the span (when sampled) and writes the access-log line (when
 * logging and sampled). Nothing here formats text for Prometheus or a collector: that happens at
 * scrape and export time.
 */
import pino, { type Logger } from 'pino';
import type { MeshMetrics, RouteHandle, Direction } from './mesh-metrics';
import { extract, injectHeaders, newRequestId, newSpanId, newTraceId, TRACE_HEADERS, type TraceContext } from './trace-context';
import type { SpanExporter } from './tracing';

export interface ObserverOptions {
  metrics: MeshMetrics;
  /** Record request metrics (default true; off only to measure what they cost). */
  recordMetrics?: boolean;
  /** Trace-header propagation and spans (default on). */
  tracing?: boolean;
  /** Percent of new traces sampled (0..100, default 1); a caller's decision always wins. */
  samplingPercent?: number;
  exporter?: SpanExporter;
  /** Access log: a pino logger (lines at info) and the fraction of requests logged (0..1). */
  accessLog?: { logger: Logger; sample: number };
  random?: () => number;
  /**
   * Whether a name is a service of the snapshot in force: the caller's `x-meshlet-source` is a
   * metric label only then (bounded), else `unknown`.
   */
  knownService?: (name: string) => boolean;
}

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

export class Observer {
  readonly metrics: MeshMetrics;
  readonly recordMetrics: boolean;
  tracing: boolean;
  samplingPercent: number;
  exporter?: SpanExporter;
  accessLog?: { logger: Logger; sample: number };
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
    this.random = opts.random ?? Math.random;
    this.knownService = opts.knownService ?? (() => false);
  }

  private accessPrefix: string | undefined;
  private accessStream: { write(line: string): unknown } | null | undefined;

  /**
   * One access-log line, the same JSON pino would write, built by hand: formatting a 17-field
   * object through pino costs ~15 us a request here; this ~2 us. It goes to the logger's own
   * (asynchronous) destination, so the level set at runtime still applies.
   */
  writeAccessLog(r: ObservedRequest, status: number, flag: string | undefined, seconds: number, h: RouteHandle): void {
    const al = this.accessLog as { logger: Logger; sample: number };
    if (!al.logger.isLevelEnabled('info')) return;
    if (this.accessStream === undefined) {
      const stream = (al.logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { write(line: string): unknown } | undefined;
      this.accessStream = stream && typeof stream.write === 'function' ? stream : null;
      const prefix = JSON.stringify({ level: 30, ...al.logger.bindings() });
      this.accessPrefix = prefix.length > 2 ? `${prefix.slice(0, -1)},` : '{';
    }
    const upstream = r.upstream === undefined ? 'null' : JSON.stringify(r.upstream);
    const trace = r.traceId ? `"${r.traceId}"` : 'null';
    const fields =
      `"start_time":"${new Date(r.wallStart).toISOString()}","direction":"${r.direction}","method":${JSON.stringify(r.info.method)},` +
      `"authority":${JSON.stringify(r.info.authority)},"path":${JSON.stringify(r.info.path)},"protocol":"${r.info.protocol === 'http2' ? 'HTTP/2' : 'HTTP/1.1'}",` +
      `"response_code":${status},"response_flags":${JSON.stringify(flag ?? '-')},"bytes_received":${r.requestBytes},"bytes_sent":${r.responseBytes},` +
      `"duration_ms":${Math.round(seconds * 1e6) / 1000},"upstream_host":${upstream},"route":${JSON.stringify(h.route)},"destination":${JSON.stringify(h.destination)},` +
      `"trace_id":${trace},"request_id":${JSON.stringify(r.requestId)}}\n`;
    if (this.accessStream) this.accessStream.write(this.accessPrefix + fields);
    else al.logger.info(JSON.parse(`{${fields}`) as object);
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
    const cl = get('content-length');
    if (cl) r.requestBytes = Number(cl) || 0;
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
  requestBytes = 0;
  responseBytes = 0;
  private readonly t0 = performance.now();
  readonly wallStart = Date.now();
  private ended = false;

  constructor(
    private readonly o: Observer,
    readonly direction: Direction,
    readonly info: RequestInfo,
    private handle: RouteHandle,
  ) {
    if (o.recordMetrics) handle.active.value++;
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
  rewriteHeaders(flat: string[]): string[] {
    const out: string[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      const n = (flat[i] as string).toLowerCase();
      // The caller's identity is replaced on the way out; on the way in it is the caller sidecar's.
      if (n === 'x-request-id' || (n === SOURCE_HEADER && this.direction === 'outbound') || (this.o.tracing && TRACE_HEADERS.has(n))) continue;
      out.push(flat[i] as string, flat[i + 1] as string);
    }
    out.push('x-request-id', this.requestId);
    if (this.direction === 'outbound') out.push(SOURCE_HEADER, this.o.metrics.service);
    if (this.o.tracing)
      injectHeaders(out, {
        traceId: this.traceId,
        spanId: this.spanId,
        parentId: this.parentId,
        sampled: this.sampled,
        tracestate: this.incoming?.tracestate,
        format: this.incoming?.format ?? 'none',
      });
    return out;
  }

  end(status: number, flag?: string): void {
    if (this.ended) return;
    this.ended = true;
    const seconds = (performance.now() - this.t0) / 1000;
    const h = this.handle;
    if (this.o.recordMetrics) {
      h.active.value--;
      h.complete(status, flag, seconds, this.requestBytes, this.responseBytes);
    }
    if (this.sampled && this.o.exporter) {
      const tags: Record<string, string> = {
        'http.method': this.info.method,
        'http.path': this.info.path,
        'http.status_code': String(status),
        'http.host': this.info.authority,
        'meshlet.route': h.route,
        'meshlet.direction': this.direction,
        'guid:x-request-id': this.requestId,
      };
      if (flag) tags['meshlet.response_flags'] = flag;
      this.o.exporter.add({
        traceId: this.traceId,
        spanId: this.spanId,
        parentId: this.parentId,
        kind: this.direction === 'inbound' ? 'SERVER' : 'CLIENT',
        name: `${this.info.method} ${h.route}`,
        startUs: this.wallStart * 1000,
        durationUs: Math.round(seconds * 1e6),
        remote: this.upstream,
        tags,
        error: status >= 500 || status === 0,
      });
    }
    if (this.logged && this.o.accessLog) this.o.writeAccessLog(this, status, flag, seconds, h);
  }
}
