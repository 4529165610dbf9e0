/**
 * The request path of the sidecar: outbound (app -> mesh) and inbound (mesh -> the local app).
 *
 * Outbound reads the way a request travels: parse the target -> route match -> redirect ->
 * fault injection -> route breaker -> mirror -> the exchange (exchange.ts: deadline, pick, limits,
 * per-try timeout, retries, streaming both ways). Inbound sends everything to the app through the
 * same exchange with one fixed target. Mesh-made responses leave through `sendLocal`, with their
 * response flag, and are counted.
 */
import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Clock } from '../src/core/clock';
import { FLAG_HEADER, Flags, meshErrorInfo, type MeshErrorCode } from '../src/core/errors';
import { H1Request, type H1Response } from '../src/http/h1-server';
import type { DownstreamRequest, DownstreamResponse, RequestHandler } from '../src/http/listener';
import { parseRequestTarget } from '../src/http/target';
import type { Headers, UpstreamPools, UpstreamProtocol, UpstreamTarget } from '../src/http/upstream';
import { ActiveRequests, endpointKey } from '../src/lb';
import type { CompiledBackend, CompiledRule, CompiledSnapshot, RequestView } from '../src/policy';
import type { FaultDecision } from '../src/resilience/fault';
import { decideFault } from '../src/resilience/fault';
import { type RateLimitLayer } from '../src/resilience/rate-limit';
import type { ResilienceState } from '../src/resilience/state';
import { transcode, type TranscodeContext } from '../src/grpc/transcode/handler';
import { forwardGrpc, grpcKind } from '../src/grpc/proxy';
import { answerPreflight } from '../src/grpc/web';
import { originalProtocol } from '../src/http/multiplex';
import { forwardUpgrade } from '../src/http/websocket';
import { Exchange, sendLocalRaw } from './exchange';
import type { ProxyStats } from './stats';

export type Direction = 'inbound' | 'outbound';

export interface ProxyContext {
  /** The compiled snapshot in force, or undefined before the first one. */
  snapshot(): CompiledSnapshot | undefined;
  pools: UpstreamPools;
  active: ActiveRequests;
  stats: ProxyStats;
  logger: Logger;
  /** This sidecar's name in `via` headers. */
  viaName: string;
  /** Per-service and per-route state that outlives snapshots (budgets, breakers, ejections). */
  resilience: ResilienceState;
  clock: Clock;
  random: () => number;
  /** This sidecar's service, stamped on outbound requests as `x-meshlet-source`. */
  service?: string;
  /** Inbound rate limits (RateLimitPolicy for this service). */
  rateLimit?: RateLimitLayer;
}

export interface AppTarget {
  host: string;
  port: number;
  /** Protocol to the app; by default the one the request arrived in. */
  protocol?: UpstreamProtocol;
}

class View implements RequestView {
  constructor(
    private readonly req: DownstreamRequest,
    readonly method: string,
    readonly path: string,
    readonly query: string,
    readonly authority: string,
  ) {}
  header(name: string): string | undefined {
    if (this.req instanceof H1Request) return this.req.header(name);
    const v = this.req.headers[name];
    return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : v;
  }
}

/** App -> mesh. */
export function outboundHandler(ctx: ProxyContext): RequestHandler {
  const tctx: TranscodeContext = { send: (t, r, s) => ctx.pools.send(t, r, s), record: (st, f) => ctx.stats.record('outbound', st, f), logger: ctx.logger, via: ctx.viaName };
  return (req, res, protocol) => {
    const target = parseRequestTarget(req.url ?? '');
    if (!target || target.path === '*') return sendLocal(ctx, 'outbound', res, 'MESH_BAD_REQUEST', 'unsupported request target');
    const rawAuthority = target.authority ?? (protocol === 'http1' ? (req as H1Request).host : headerOf(req, ':authority') ?? headerOf(req, 'host'));
    if (!rawAuthority) return sendLocal(ctx, 'outbound', res, 'MESH_BAD_REQUEST', 'no host');
    const authority = rawAuthority.toLowerCase();
    const snap = ctx.snapshot();
    if (!snap) return sendLocal(ctx, 'outbound', res, 'MESH_NO_HEALTHY_UPSTREAM', 'no policy snapshot yet');
    const view = new View(req, req.method ?? 'GET', target.path, target.query, authority);
    const rule = snap.routes.match(view);
    if (!rule) return sendLocal(ctx, 'outbound', res, 'MESH_NO_ROUTE', authority);
    // gRPC-Web from browsers: CORS preflight for the origins the route allows.
    const preflight = rule.grpc ? answerPreflight(req, res, rule.grpc) : 0;
    if (preflight) return ctx.stats.record('outbound', preflight);
    if (rule.redirect) {
      const r = rule.redirect(view);
      ctx.stats.record('outbound', r.status, Flags.Redirect);
      res.writeHead(r.status, { location: r.location, 'content-length': '0', [FLAG_HEADER]: Flags.Redirect });
      res.end();
      return;
    }
    const path = rule.rewritePath ? rule.rewritePath(view) : target.query ? `${target.path}?${target.query}` : target.path;
    const upstreamAuthority = rule.rewriteHost ?? rawAuthority;
    if (rule.fault) {
      const f = decideFault(rule.fault, view, ctx.random);
      if (f.abort) return sendFault(ctx, res, f.abort);
      if (f.delayMs > 0) return delayThen(ctx, res, f, () => routed(ctx, req, res, protocol, view, rule, path, upstreamAuthority, Flags.FaultDelay));
    }
    // HTTP/JSON -> gRPC for services with a GrpcTranscoding policy (src/grpc/transcode/).
    let first: CompiledBackend | undefined;
    if (snap.transcoders.size > 0) {
      first = rule.pickBackend();
      const tc = first && snap.transcoders.get(first.service);
      const ep = tc && first ? ctx.resilience.service(first.service)?.picker(first.subset)?.pick(view) : undefined;
      if (
        tc &&
        ep &&
        transcode(tctx, tc, req, res, protocol, {
          target: { key: endpointKey(ep), address: ep.address, port: ep.port, protocol: 'http2' },
          authority: upstreamAuthority,
          method: view.method,
          path: target.path,
          query: target.query,
          timeoutMs: rule.timeoutMs,
          requestEdits: rule.requestHeaders,
          responseEdits: rule.responseHeaders,
        })
      )
        return;
    }
    routed(ctx, req, res, protocol, view, rule, path, upstreamAuthority, undefined, first);
  };
}

function routed(
  ctx: ProxyContext,
  req: DownstreamRequest,
  res: DownstreamResponse,
  protocol: 'http1' | 'http2',
  view: RequestView,
  rule: CompiledRule,
  path: string,
  authority: string,
  flags: string | undefined,
  firstBackend?: CompiledBackend,
): void {
  // WebSocket upgrades and gRPC calls have their own forwarding (src/http/websocket.ts,
  // src/grpc/proxy.ts): a tunnel, and message-aware gRPC with deadlines and trailers-only errors.
  const breaker = ctx.resilience.breaker(rule);
  const upgrade = protocol === 'http1' && (req as H1Request).upgrade;
  const grpc = !upgrade && grpcKind(req, protocol);
  // The route breaker guards HTTP and gRPC calls (a WebSocket tunnel has no call outcome).
  if (breaker && !upgrade && !breaker.allow()) return sendLocal(ctx, 'outbound', res, 'MESH_BREAKER_OPEN', rule.statName);
  if (upgrade || grpc) {
    const pick = (b: CompiledBackend | undefined): UpstreamTarget | undefined => {
      const cs = b && ctx.snapshot()?.services.get(b.service);
      const st = b && ctx.resilience.service(b.service);
      const ep = b && st?.picker(b.subset)?.pick(view);
      if (!cs || !st || !ep) return undefined;
      return { key: endpointKey(ep), address: ep.address, port: ep.port, protocol: grpc ? 'http2' : 'http1', limits: st.limits, idleMs: st.idleMs };
    };
    const backend = firstBackend ?? rule.pickBackend();
    const t = pick(backend);
    if (!t) {
      if (grpc) breaker?.record(false, 0);
      return sendLocal(ctx, 'outbound', res, 'MESH_NO_HEALTHY_UPSTREAM', backend?.service);
    }
    if (upgrade) return forwardUpgrade(ctx, 'outbound', req as H1Request, res as H1Response, { target: t, path, authority, idleTimeoutMs: rule.websocketIdleTimeoutMs });
    const st = backend && ctx.resilience.service(backend.service);
    st?.budget.request();
    const retries = rule.retries;
    return forwardGrpc(ctx, 'outbound', req, res, protocol, {
      target: t,
      path,
      authority,
      requestEdits: rule.requestHeaders,
      responseEdits: rule.responseHeaders,
      grpc: rule.grpc,
      timeoutMs: rule.timeoutMs,
      repick: () => pick(backend),
      retries,
      tryRetry: () => !st || !retries || st.budget.tryRetry(retries.budget),
      report: st ? (key, outcome) => st.report(key, outcome) : undefined,
      done: breaker ? (ok, ms) => breaker.record(ok, ms) : undefined,
    });
  }
  // The first try's backend, picked now so that the request's metrics are bound to it at once.
  firstBackend ??= rule.pickBackend();
  const ex = new Exchange(ctx, {
    direction: 'outbound',
    req,
    res,
    protocol,
    path,
    authority,
    rule,
    view,
    breaker,
    requestEdits: rule.requestHeaders,
    responseEdits: rule.responseHeaders,
    flags,
    firstBackend,
    identity: ctx.service === undefined ? undefined : { source: ctx.service, route: rule.statName },
  });
  const m = rule.mirror;
  if (m && ctx.random() * 100 < m.percent) mirror(ctx, m, view, req.method ?? 'GET', path, authority, ex.upstreamHeaders(), ex.requestBody(), protocol);
  ex.start();
}

/** Mesh -> the local app. */
export function inboundHandler(ctx: ProxyContext, app: AppTarget): RequestHandler {
  const key = endpointKey({ address: app.host, port: app.port });
  const h1: UpstreamTarget = { key, address: app.host, port: app.port, protocol: app.protocol ?? 'http1' };
  const h2: UpstreamTarget = { key, address: app.host, port: app.port, protocol: app.protocol ?? 'http2' };
  return (req, res, protocol) => {
    const target = parseRequestTarget(req.url ?? '');
    if (!target || target.path === '*') return sendLocal(ctx, 'inbound', res, 'MESH_BAD_REQUEST', 'unsupported request target');
    const authority =
      target.authority ?? (protocol === 'http1' ? (req as H1Request).host : headerOf(req, ':authority') ?? headerOf(req, 'host')) ?? `${app.host}:${app.port}`;
    const go = (): void => {
      if (res.destroyed) return ctx.stats.record('inbound', 499, Flags.DownstreamClosed);
      const path = target.query ? `${target.path}?${target.query}` : target.path;
      if (protocol === 'http1' && (req as H1Request).upgrade) return forwardUpgrade(ctx, 'inbound', req as H1Request, res as H1Response, { target: h1, path, authority });
      if (grpcKind(req, protocol)) return forwardGrpc(ctx, 'inbound', req, res, protocol, { target: h2, path, authority });
      // HTTP/1.1 that another sidecar multiplexed over HTTP/2 goes to the app as HTTP/1.1 again.
      const multiplexed = originalProtocol(req, protocol) !== undefined;
      new Exchange(ctx, {
        unmark: multiplexed,
        direction: 'inbound',
        req,
        res,
        protocol,
        path: target.query ? `${target.path}?${target.query}` : target.path,
        authority,
        fixed: protocol === 'http2' && !multiplexed ? h2 : h1,
      }).start();
    };
    if (!ctx.rateLimit?.active) return go();
    const limitReq = { path: target.path, remoteAddress: req.socket?.remoteAddress, header: (n: string) => headerOf(req, n) };
    // A local denial is decided synchronously, inside the parser's callback; answering after it
    // returns lets the HTTP/1.1 server see the request complete and keep the connection alive.
    const deny = (headers: Record<string, string>, reason: string): void => queueMicrotask(() => sendLocal(ctx, 'inbound', res, 'MESH_RATE_LIMITED', reason, headers));
    ctx.rateLimit.admit(limitReq, go, deny);
  };
}

function headerOf(req: DownstreamRequest, name: string): string | undefined {
  if (req instanceof H1Request) return req.header(name);
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
}

/** Holds a request for an injected delay; a client that leaves meanwhile is counted, not forwarded. */
function delayThen(ctx: ProxyContext, res: DownstreamResponse, f: FaultDecision, next: () => void): void {
  let gone = false;
  const onClose = (): void => {
    gone = true;
    timer.cancel();
    ctx.stats.record('outbound', 499, `${Flags.FaultDelay},${Flags.DownstreamClosed}`);
  };
  const timer = ctx.clock.setTimeout(() => {
    res.off('close', onClose);
    if (!gone) next();
  }, f.delayMs);
  res.once('close', onClose);
}

function sendFault(ctx: ProxyContext, res: DownstreamResponse, abort: NonNullable<FaultDecision['abort']>): void {
  if (abort.grpcStatus !== undefined) {
    // A trailers-only gRPC response: the status travels in the headers.
    ctx.stats.record('outbound', 200, Flags.FaultAbort);
    res.writeHead(200, { 'content-type': 'application/grpc', 'grpc-status': String(abort.grpcStatus), 'grpc-message': 'fault injected', [FLAG_HEADER]: Flags.FaultAbort });
    res.end();
    return;
  }
  const status = abort.httpStatus ?? 503;
  ctx.stats.record('outbound', status, Flags.FaultAbort);
  sendLocalRaw(res, status, Flags.FaultAbort, 'fault injected');
}

const MIRROR_BUFFER = 1024 * 1024;
const discard = { onResponse() {}, onData: () => true, onEnd() {}, onError() {} };

/**
 * Fire-and-forget copy of a request to the mirror backend (authority suffixed `-shadow`, as Envoy
 * does). Its response is discarded; if it cannot keep up with the request body it is dropped: the
 * primary never waits for it.
 */
function mirror(
  ctx: ProxyContext,
  m: NonNullable<CompiledRule['mirror']>,
  view: RequestView,
  method: string,
  path: string,
  authority: string,
  headers: string[],
  body: Readable | null,
  protocol: 'http1' | 'http2',
): void {
  const svc = ctx.resilience.service(m.service);
  const cs = ctx.snapshot()?.services.get(m.service);
  const ep = svc?.picker(m.subset)?.pick(view);
  if (!svc || !cs || !ep) return;
  let copy: PassThrough | null = null;
  if (body) {
    const pt = new PassThrough();
    copy = pt;
    const onData = (c: Buffer): void => {
      if (pt.writableLength > MIRROR_BUFFER) {
        body.off('data', onData);
        pt.destroy(new Error('mirror fell behind'));
        return;
      }
      pt.write(c);
    };
    body.on('data', onData);
    body.once('end', () => pt.end());
    body.once('aborted', () => pt.destroy(new Error('aborted')));
  }
  const target: UpstreamTarget = {
    key: endpointKey(ep),
    address: ep.address,
    port: ep.port,
    protocol: cs.protocol === 'auto' ? protocol : cs.protocol,
    limits: svc.limits,
    idleMs: svc.idleMs,
  };
  ctx.stats.metrics.mirror(m.service);
  ctx.pools.send(target, { method, path, authority: `${authority}-shadow`, headers, body: copy }, discard);
}

/** A response the mesh makes itself, with its flag; counted. */
export function sendLocal(ctx: ProxyContext, direction: Direction, res: DownstreamResponse, code: MeshErrorCode, detail?: string, extra?: Record<string, string>): void {
  const info = meshErrorInfo(code);
  ctx.stats.record(direction, info.status, info.flag);
  sendLocalRaw(res, info.status, info.flag, detail ? `${info.text}: ${detail}` : info.text, extra);
}

export type { Headers };
