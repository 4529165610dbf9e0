/**
 * One proxied request, from the downstream request to the end of the response: the backend
 * layers of the request path, in the order a request meets them.
 *
 *   deadline (route timeout, grpc-timeout)  ->  per try: pick (outlier-aware picker, another host
 *   than last time when it can) -> maxRequests -> connection limits (in the pool) -> per-try
 *   timeout -> upstream  ->  retry decision (policy, attempts, body buffer, maxRetries, budget,
 *   backoff, Retry-After)  ->  response streamed downstream.
 *
 * The response head goes downstream only once no retry will follow, so a retry never happens
 * after response bytes were sent. Every outcome is counted once, in `finish`, with its flags.
 */
import { editFlat } from '../src/http/headers';
import * as http2 from 'node:http2';
import type { Readable } from 'node:stream';
import type { Timer } from '../src/core/clock';
import { classifyUpstreamError, FLAG_HEADER, Flags, MeshError } from '../src/core/errors';
import { forwardRequestHeaders, forwardResponseHeaders } from '../src/http/headers';
import type { H1Request } from '../src/http/h1-server';
import type { DownstreamRequest, DownstreamResponse } from '../src/http/listener';
import { refusedUnseen, UpstreamConnectError, type Headers, type ResponseSink, type UpstreamCall, type UpstreamTarget } from '../src/http/upstream';
import { endpointKey } from '../src/lb';
import type { RouteHandle } from '../src/observability/mesh-metrics';
import type { ObservedRequest } from '../src/observability/observer';
import type { CompiledBackend, CompiledRule, HeaderEditor, RequestView } from '../src/policy';
import type { CircuitBreaker } from '../src/resilience/breaker';
import { replyGrpcError } from '../src/grpc/proxy';
import { multiplexH1, ORIG_PROTO_HEADER, withoutMark } from '../src/http/multiplex';
import { stampIdentity } from '../src/resilience/rate-limit';
import { ReplayableBody } from '../src/resilience/replay-body';
import { backoffMs, retryAfterMs, retryMatcher, type FailureKind } from '../src/resilience/retry';
import type { ServiceState } from '../src/resilience/state';
import { formatGrpcTimeout, parseGrpcTimeout } from '../src/grpc/timeout';
import type { Direction, ProxyContext } from './proxy';

export interface ExchangePlan {
  direction: Direction;
  req: DownstreamRequest;
  res: DownstreamResponse;
  protocol: 'http1' | 'http2';
  path: string;
  authority: string;
  /** Outbound: the matched rule; backends are picked from it for every try. */
  rule?: CompiledRule;
  view?: RequestView;
  breaker?: CircuitBreaker;
  /** Inbound: the one fixed upstream (the local app). */
  fixed?: UpstreamTarget;
  requestEdits?: HeaderEditor;
  responseEdits?: HeaderEditor;
  /** Flags already earned before the exchange (e.g. DI for an injected delay). */
  flags?: string;
  /** Inbound: the request came multiplexed from another sidecar; remove the mark. */
  unmark?: boolean;
  /** Outbound: the backend for the first try, when the caller already picked it. */
  firstBackend?: CompiledBackend;
  /** Outbound: caller identity headers to stamp (any the app sent are removed). */
  identity?: { source: string | undefined; route: string };
}

/** One try: its own sink, so callbacks of an abandoned try are ignored. */
class Attempt implements ResponseSink {
  call: UpstreamCall | undefined;
  private open = true;

  constructor(
    private readonly ex: Exchange,
    readonly key: string,
    readonly svc: ServiceState | undefined,
    readonly retry: boolean,
  ) {
    ex.ctx.active.begin(key);
    if (svc) {
      svc.active++;
      if (retry) svc.activeRetries++;
    }
  }

  /** Ends the try's accounting (idempotent). */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.ex.ctx.active.end(this.key);
    const svc = this.svc;
    if (svc) {
      svc.active--;
      if (this.retry) svc.activeRetries--;
    }
  }

  abort(): void {
    this.close();
    this.call?.abort();
  }

  onResponse(status: number, headers: Headers): void {
    if (this.ex.attempt === this) this.ex.onResponse(this, status, headers);
  }
  onData(chunk: Buffer): boolean {
    return this.ex.attempt === this ? this.ex.onData(chunk) : true;
  }
  onEnd(trailers: Headers | undefined): void {
    if (this.ex.attempt === this) this.ex.onEnd(this, trailers);
  }
  onError(err: Error, started: boolean): void {
    if (this.ex.attempt === this) this.ex.onError(this, err, started);
  }
}

export class Exchange {
  attempt: Attempt | undefined;
  private tries = 0;
  /** Tries sent again because the upstream refused them unseen (not counted against the policy). */
  private resent = 0;
  private finished = false;
  private committed = false;
  private status = 0;
  private flags: string;
  private headers: string[];
  private body: Readable | null;
  private replay: ReplayableBody | undefined;
  private readonly startedAt: number;
  private deadline = 0;
  private timeoutMs = 0;
  private deadlineTimer: Timer | undefined;
  private tryTimer: Timer | undefined;
  private backoffTimer: Timer | undefined;
  private lastKey = '';
  private readonly version: '1.1' | '2';
  private grpcTimeoutAt = -1;
  /** Metrics, the span and the access-log line of this request. */
  private readonly obs: ObservedRequest;
  private destination = '';
  /** This try goes multiplexed over HTTP/2 to another sidecar. */
  private mux = false;

  constructor(
    readonly ctx: ProxyContext,
    private readonly plan: ExchangePlan,
  ) {
    this.startedAt = ctx.clock.monotonic();
    this.flags = plan.flags ?? '';
    this.version = plan.protocol === 'http2' ? '2' : '1.1';
    const req = plan.req;
    let headers = forwardRequestHeaders(req.rawHeaders, {
      remoteAddress: req.socket?.remoteAddress,
      proto: 'http',
      version: this.version,
      via: ctx.viaName,
      dropHost: true,
    });
    if (plan.requestEdits) headers = editFlat(headers, plan.requestEdits);
    if (plan.identity) headers = stampIdentity(headers, plan.identity.source, plan.identity.route);
    if (plan.unmark) headers = withoutMark(headers);
    const q = plan.path.indexOf('?');
    // Read from the forwarded (lower-cased) list: building req.headers costs an object per request.
    const flat = headers;
    this.obs = ctx.stats.observer.begin(plan.direction, (n) => flatHeader(flat, n), {
      method: req.method ?? 'GET',
      authority: plan.authority,
      path: q < 0 ? plan.path : plan.path.slice(0, q),
      protocol: plan.protocol,
    }, plan.firstBackend && plan.rule ? routeHandle(ctx, plan.rule, plan.firstBackend.service) : undefined, plan.rule?.traceSamplingPercent);
    this.headers = this.obs.rewriteHeaders(headers);
    this.body = bodyOf(req, plan.protocol);
    if (this.body) this.obs.received = receivedCounter(req, plan.protocol);
  }

  /** The request headers as they go upstream (the mirror sends the same). */
  upstreamHeaders(): string[] {
    return this.headers;
  }

  requestBody(): Readable | null {
    return this.body;
  }

  start(): void {
    const { rule, res } = this.plan;
    let timeoutMs = rule?.timeoutMs ?? 0;
    // gRPC deadlines: honoured (the shorter of the route timeout and grpc-timeout wins) and
    // passed on shrunk by the time spent here.
    const h = this.headers;
    for (let i = 0; i < h.length; i += 2)
      if (h[i] === 'grpc-timeout') {
        const g = parseGrpcTimeout(h[i + 1] as string);
        if (typeof g === 'number' && (timeoutMs === 0 || g < timeoutMs)) timeoutMs = Math.max(1, g);
        this.grpcTimeoutAt = i + 1;
        break;
      }
    if (timeoutMs > 0) {
      this.timeoutMs = timeoutMs;
      this.deadline = this.startedAt + timeoutMs;
      this.deadlineTimer = this.ctx.clock.setTimeout(() => this.onDeadline(), timeoutMs);
    }
    const retries = rule?.retries;
    if (retries && retries.attempts > 0 && this.body) this.replay = new ReplayableBody(this.body, retries.bufferLimitBytes);
    res.on('drain', () => this.attempt?.call?.resume());
    res.on('close', () => {
      if (this.finished) return;
      // The client went away (or its stream was reset): cancel upstream too.
      this.attempt?.abort();
      this.finish(499, Flags.DownstreamClosed);
    });
    this.send();
  }

  private send(): void {
    const ctx = this.ctx;
    const plan = this.plan;
    this.tries++;
    let target: UpstreamTarget;
    let svc: ServiceState | undefined;
    if (plan.fixed) target = plan.fixed;
    else {
      const rule = plan.rule as CompiledRule;
      const backend = this.tries === 1 && plan.firstBackend ? plan.firstBackend : rule.pickBackend();
      const snap = ctx.snapshot();
      const cs = backend && snap?.services.get(backend.service);
      svc = backend && ctx.resilience.service(backend.service);
      if (!cs || !svc || !backend) return this.fail(new MeshError('MESH_NO_HEALTHY_UPSTREAM', backend?.service));
      if (svc.maxRequests !== undefined && svc.active >= svc.maxRequests) return this.fail(new MeshError('MESH_UPSTREAM_OVERFLOW', `${svc.maxRequests} requests in flight to ${svc.name}`));
      const picker = svc.picker(backend.subset);
      const view = plan.view as RequestView;
      let ep = picker?.pick(view);
      // A retry goes to another endpoint when there is one.
      if (ep && this.tries > 1 && endpointKey(ep) === this.lastKey) ep = picker?.pick(view) ?? ep;
      if (!ep) return this.fail(new MeshError('MESH_NO_HEALTHY_UPSTREAM', backend.service));
      const key = endpointKey(ep);
      // HTTP/1.1 to another sidecar travels multiplexed over one HTTP/2 connection (multiplex.ts).
      const mux = multiplexH1(plan.req, plan.protocol, ep.meshed, cs);
      this.mux = mux;
      target = { key, address: ep.address, port: ep.port, protocol: mux ? 'http2' : cs.protocol === 'auto' ? plan.protocol : cs.protocol, limits: svc.limits, idleMs: svc.idleMs };
      if (this.tries === 1) {
        svc.budget.request();
        this.destination = svc.name;
        this.obs.setRoute(routeHandle(ctx, rule, svc.name));
      }
    }
    this.lastKey = target.key;
    this.obs.upstream = target.key;
    let body: Readable | null = null;
    if (this.body) body = this.replay ? (this.replay.cursor() ?? null) : this.body;
    let headers = this.headers;
    if (this.mux) headers = [...headers, ORIG_PROTO_HEADER, `HTTP/${(plan.req as H1Request).httpVersion}`];
    if (this.grpcTimeoutAt >= 0 && this.deadline > 0) {
      headers = headers.slice();
      headers[this.grpcTimeoutAt] = formatGrpcTimeout(Math.max(1, this.deadline - ctx.clock.monotonic()));
    }
    const a = new Attempt(this, target.key, svc, this.tries > 1);
    this.attempt = a;
    const perTry = plan.rule?.retries?.perTryTimeoutMs;
    if (perTry !== undefined) this.tryTimer = ctx.clock.setTimeout(() => this.onTryTimeout(a), perTry);
    a.call = ctx.pools.send(target, { method: plan.req.method ?? 'GET', path: plan.path, authority: plan.authority, headers, body }, a);
  }

  onResponse(a: Attempt, status: number, headers: Headers): void {
    a.svc?.report(a.key, status < 500 ? 'success' : status === 502 || status === 503 || status === 504 ? 'gateway' : 'http-5xx');
    const retries = this.plan.rule?.retries;
    if (retries && retryMatcher(retries).status(status, headers)) {
      const ra = retryAfterMs(headers, this.ctx.clock.now());
      const room = this.deadline > 0 ? this.deadline - this.ctx.clock.monotonic() : (retries.backoff?.maxIntervalMs ?? 250);
      const why = ra !== undefined && ra > room ? Flags.RetriesExhausted : this.canRetry(a);
      if (why === '') {
        this.clearTryTimer();
        a.abort();
        this.scheduleRetry(ra);
        return;
      }
      this.addFlag(why);
    }
    this.commit(a, status, headers);
  }

  private commit(a: Attempt, status: number, h: Headers): void {
    const res = this.plan.res;
    this.clearTryTimer();
    this.status = status;
    this.committed = true;
    const out = forwardResponseHeaders(h, this.version, this.ctx.viaName);
    if (this.plan.responseEdits) this.plan.responseEdits.apply(out);
    if (this.flags) {
      const prev = out[FLAG_HEADER];
      out[FLAG_HEADER] = prev ? `${String(prev)},${this.flags}` : this.flags;
    }
    if (res.headersSent || res.destroyed) return;
    try {
      res.writeHead(status, out as never);
    } catch (err) {
      this.ctx.logger.debug({ err }, 'invalid upstream response header');
      a.abort();
      this.finish(502, Flags.UpstreamReset);
      sendLocalRaw(res, 502, Flags.UpstreamReset, 'upstream sent an invalid response header');
    }
  }

  onData(chunk: Buffer): boolean {
    const res = this.plan.res;
    if (res.destroyed) return true;
    this.obs.responseBytes += chunk.length;
    return (res as { write(c: Buffer): boolean }).write(chunk);
  }

  onEnd(a: Attempt, trailers: Headers | undefined): void {
    const res = this.plan.res;
    if (trailers && this.plan.protocol === 'http2') {
      try {
        (res as http2.Http2ServerResponse).addTrailers(trailers as never);
      } catch {
        // invalid trailer names: drop them
      }
    }
    res.end();
    a.close();
    this.finish(this.status, this.flags || undefined);
  }

  onError(a: Attempt, err: Error, started: boolean): void {
    if (this.finished) return;
    a.close();
    this.clearTryTimer();
    if (started || this.committed) {
      // Bytes already went downstream: the only honest signal left is a reset.
      this.finish(this.status || 502, Flags.UpstreamReset);
      resetDownstream(this.plan.res);
      return;
    }
    // Refused unseen (a GOAWAY racing the request, e.g. the upstream's sidecar shutting down): sent
    // again at once, to another endpoint when there is one, whatever the policy and the method
    // (RFC 9113 §8.7), as long as the body can be replayed.
    if (refusedUnseen(err) && this.resent < MAX_RESENDS && (!this.body || this.replay?.replayable)) {
      this.resent++;
      this.attempt = undefined;
      this.ctx.logger.debug({ err, upstream: a.key }, 'upstream refused the stream unseen: sending it again');
      this.send();
      return;
    }
    const e = err instanceof UpstreamConnectError ? new MeshError('MESH_UPSTREAM_CONNECT_FAILURE', err.code, { cause: err }) : classifyUpstreamError(err);
    this.ctx.logger.debug({ err, upstream: a.key, direction: this.plan.direction }, 'upstream request failed');
    if (e.code !== 'MESH_UPSTREAM_OVERFLOW') {
      a.svc?.report(a.key, 'gateway');
      const kind: FailureKind = e.code === 'MESH_UPSTREAM_CONNECT_FAILURE' ? 'connect-failure' : e.code === 'MESH_UPSTREAM_TIMEOUT' ? 'timeout' : 'reset';
      if (this.retryFailure(a, kind)) return;
    }
    this.fail(e);
  }

  private onTryTimeout(a: Attempt): void {
    if (this.attempt !== a || this.committed || this.finished) return;
    this.tryTimer = undefined;
    a.abort();
    a.svc?.report(a.key, 'gateway');
    if (this.retryFailure(a, 'timeout')) return;
    this.fail(new MeshError('MESH_UPSTREAM_TIMEOUT', `per-try timeout ${this.plan.rule?.retries?.perTryTimeoutMs}ms`));
  }

  /** Retries a failed try when the policy allows; true when a retry was scheduled. */
  private retryFailure(a: Attempt, kind: FailureKind): boolean {
    const retries = this.plan.rule?.retries;
    if (!retries || !retryMatcher(retries).failure(kind)) return false;
    const why = this.canRetry(a);
    if (why !== '') {
      this.addFlag(why);
      return false;
    }
    this.scheduleRetry(undefined);
    return true;
  }

  /** '' when another try may go, else the flag saying why not. */
  private canRetry(a: Attempt): string {
    const p = this.plan.rule?.retries;
    if (!p || this.tries - this.resent > p.attempts) return Flags.RetriesExhausted;
    if (this.body && !this.replay?.replayable) return Flags.RetryBodyTooLarge;
    const svc = a.svc;
    if (svc?.maxRetries !== undefined && svc.activeRetries >= svc.maxRetries) return Flags.UpstreamOverflow;
    if (svc && !svc.budget.tryRetry(p.budget)) return Flags.RetryBudgetExhausted;
    return '';
  }

  private scheduleRetry(retryAfter: number | undefined): void {
    this.attempt = undefined;
    this.ctx.stats.metrics.retry(this.destination || 'app');
    const p = this.plan.rule?.retries;
    const delay = p ? backoffMs(this.tries, p, this.ctx.random, retryAfter) : 0;
    this.backoffTimer = this.ctx.clock.setTimeout(() => {
      this.backoffTimer = undefined;
      if (!this.finished) this.send();
    }, delay);
  }

  private onDeadline(): void {
    this.deadlineTimer = undefined;
    if (this.finished) return;
    this.attempt?.abort();
    if (this.committed) {
      this.finish(this.status, Flags.UpstreamTimeout);
      resetDownstream(this.plan.res);
      return;
    }
    this.fail(new MeshError('MESH_UPSTREAM_TIMEOUT', `request timeout ${this.timeoutMs}ms`));
  }

  private fail(e: MeshError): void {
    if (e.code === 'MESH_UPSTREAM_TIMEOUT') this.ctx.stats.metrics.timeout(this.destination || 'app');
    const flags = this.flags ? `${e.flag},${this.flags}` : e.flag;
    this.finish(e.status, flags);
    sendLocalRaw(this.plan.res, e.status, flags, e.message);
  }

  private addFlag(f: string): void {
    this.flags = this.flags ? `${this.flags},${f}` : f;
  }

  private clearTryTimer(): void {
    this.tryTimer?.cancel();
    this.tryTimer = undefined;
  }

  private finish(status: number, flag: string | undefined): void {
    if (this.finished) return;
    this.finished = true;
    this.clearTryTimer();
    this.deadlineTimer?.cancel();
    this.backoffTimer?.cancel();
    this.attempt?.close();
    this.obs.end(status, flag);
    this.plan.breaker?.record(status < 500, this.ctx.clock.monotonic() - this.startedAt);
  }
}

/** The metrics handle of (rule, destination), cached on the compiled rule (one per snapshot). */
/** How many times one request is sent again after being refused unseen. */
const MAX_RESENDS = 2;

const handles = new WeakMap<CompiledRule, { service: string; handle: RouteHandle }>();
function routeHandle(ctx: ProxyContext, rule: CompiledRule, service: string): RouteHandle {
  const c = handles.get(rule);
  if (c && c.service === service) return c.handle;
  const handle = ctx.stats.route('outbound', service, rule.statName);
  handles.set(rule, { service, handle });
  return handle;
}

/** A header from a flat, lower-cased `[name, value, ...]` list (the first one). */
function flatHeader(flat: readonly string[], name: string): string | undefined {
  for (let i = 0; i < flat.length; i += 2) if (flat[i] === name) return flat[i + 1];
  return undefined;
}

function bodyOf(req: DownstreamRequest, protocol: 'http1' | 'http2'): Readable | null {
  if (protocol === 'http1') return (req as H1Request).body;
  const h2 = req as http2.Http2ServerRequest;
  return h2.stream.endAfterHeaders ? null : h2;
}

/** Counts a request body's bytes as they arrive: the HTTP/1.1 parser keeps the count itself. */
function receivedCounter(req: DownstreamRequest, protocol: 'http1' | 'http2'): { bodyBytes: number } {
  if (protocol === 'http1') return req as H1Request;
  // The compat request is fed by push() from its stream. A 'data' listener here (or on the stream)
  // would start the flow before the upstream reads it, and the body would be lost.
  const n = { bodyBytes: 0 };
  const h2 = req as http2.Http2ServerRequest;
  const push = h2.push;
  h2.push = function (chunk: Buffer | null, encoding?: BufferEncoding): boolean {
    if (chunk) n.bodyBytes += chunk.length;
    return push.call(this, chunk, encoding);
  };
  return n;
}

export function resetDownstream(res: DownstreamResponse): void {
  const stream = (res as http2.Http2ServerResponse).stream;
  if (stream && typeof stream.close === 'function') {
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  (res as { destroy(): void }).destroy();
}

/** A response the mesh makes itself (plain text, with its flags). */
export function sendLocalRaw(res: DownstreamResponse, status: number, flag: string, text: string, extra?: Record<string, string>): void {
  // A gRPC or gRPC-Web client gets a gRPC status (trailers-only), not an HTTP error page.
  if (replyGrpcError(res, status, flag, text)) return;
  if (res.headersSent || res.destroyed) {
    resetDownstream(res);
    return;
  }
  const body = `${text}\n`;
  res.writeHead(status, {
    ...extra,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    [FLAG_HEADER]: flag,
  });
  res.end(body);
}
