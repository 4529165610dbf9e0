/**
 * The front of the sidecar's request path: outbound (app -> mesh) and inbound (mesh -> the local
 * app). It parses the target, detects the call's kind (HTTP, gRPC, gRPC-Web, WebSocket), builds
 * the per-request MeshCall (forwarded headers, body), matches the route, and runs the call
 * through its stack (src/stack/outbound.ts, inbound.ts: every layer of the request path) with the
 * front adapter of its protocol (src/stack/respond-http.ts, respond-grpc.ts), the one place a
 * mesh-made answer is written. See docs/request-path.md.
 */
import { randomBytes } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { MeshError, meshErrorInfo, type MeshErrorCode } from '../core/errors';
import { Flags } from '../core/errors';
import { LocalReply, MeshCall, type CallKind, type Handler } from '../core/layer';
import { grpcKind } from '../grpc/downstream';
import { webRequestHeaders, type Base64Decoder } from '../grpc/web';
import { H1Request, type H1Response } from '../http/h1-server';
import type { H2Request, H2Response } from '../http/h2-server';
import { forwardRequestHeaders } from '../http/headers';
import type { DownstreamRequest, DownstreamResponse, RequestHandler } from '../http/listener';
import { originalProtocol, withoutMark } from '../http/multiplex';
import { peerOf } from '../http/peer';
import { SOURCE_HEADER } from '../resilience/rate-limit/identity';
import { serviceOf } from '../security/spiffe';
import { parseRequestTarget } from '../http/target';
import type { Headers, UpstreamPools, UpstreamProtocol, UpstreamTarget } from '../http/upstream';
import { type ActiveRequests, endpointKey } from '../lb';
import type { CompiledSnapshot, RequestView, RouteTable } from '../policy';
import { inboundStack } from './inbound';
import { bodyLimitLayer as bodyLimit } from './body-limit';
import { ruleStack } from './outbound';
import { GrpcResponder, replyGrpc } from './respond-grpc';
import { HttpResponder, sendLocalRaw } from './respond-http';
import { H2UpgradeResponder, UpgradeResponder } from './respond-upgrade';
import type { DecisionRing } from '../observability/decisions';
import type { StackContext } from './context';
import type { ProxyStats } from '../observability/proxy-stats';

export type Direction = 'inbound' | 'outbound';


/**
 * What the front needs: the stack's context (src/stack/context.ts), with the concrete pools,
 * active-request counts and stats the front itself uses, and the ring of recent decisions.
 */
export interface ProxyContext extends StackContext {
  pools: UpstreamPools;
  active: ActiveRequests;
  stats: ProxyStats;
  /** The ring of recent decisions (`meshlet explain --last`); absent: none kept. */
  decisions?: DecisionRing;
}

export interface AppTarget {
  host: string;
  port: number;
  /** Protocol to the app; by default the one the request arrived in. */
  protocol?: UpstreamProtocol;
}

class View implements RequestView {
  /**
   * Inbound over mTLS: the caller's service from its certificate, what `x-meshlet-source` reads as
   * (the header from the wire is never believed on a TLS connection). Undefined: plaintext.
   */
  tlsSource: string | null | undefined = undefined;
  constructor(
    private readonly req: DownstreamRequest,
    readonly method: string,
    readonly path: string,
    readonly query: string,
    readonly authority: string,
  ) {}
  header(name: string): string | undefined {
    if (this.tlsSource !== undefined && name === SOURCE_HEADER) return this.tlsSource ?? undefined;
    if (this.req instanceof H1Request) return this.req.header(name);
    const v = this.req.headers[name];
    return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : v;
  }
}

/** What differs at a gateway's listener (gateway/plane.ts) from a sidecar's outbound listener. */
export interface FrontOptions {
  /** The route table (default: the mesh's, `snapshot.routes`); a gateway's has only the routes attached to it. */
  routes?: (snap: CompiledSnapshot) => RouteTable;
  /** The scheme the client used (`x-forwarded-proto`; default http). */
  proto?: 'http' | 'https';
  /** Request bodies larger than this are answered 413 (default: no limit). */
  maxBodyBytes?: number;
  /** Checked before routing: an answer ends the request there (host not served, https redirect). */
  before?: (req: DownstreamRequest, res: DownstreamResponse, authority: string, path: string) => boolean;
}

/** App -> mesh (or client -> gateway): the front adapter, route match, then the rule's stack (src/stack/outbound.ts). */
export function outboundHandler(ctx: ProxyContext, front: FrontOptions = {}): RequestHandler {
  const routes = front.routes;
  const maxBody = front.maxBodyBytes ?? 0;
  return (req, res, protocol) => {
    const kind = isUpgrade(req, protocol) ? 'websocket' : callKind(req, protocol);
    const target = parseRequestTarget(req.url ?? '');
    if (!target || target.path === '*') return reject(ctx, 'outbound', req, res, kind, 'MESH_BAD_REQUEST', 'unsupported request target');
    const rawAuthority = target.authority ?? (protocol === 'http1' ? (req as H1Request).host : headerOf(req, ':authority') ?? headerOf(req, 'host'));
    if (!rawAuthority) return reject(ctx, 'outbound', req, res, kind, 'MESH_BAD_REQUEST', 'no host');
    const authority = rawAuthority.toLowerCase();
    if (front.before?.(req, res, authority, target.query ? `${target.path}?${target.query}` : target.path)) return;
    if (maxBody > 0) {
      const len = headerOf(req, 'content-length');
      if (len !== undefined && Number(len) > maxBody) return tooLarge(ctx, req, res, kind, maxBody);
    }
    const snap = ctx.snapshot();
    if (!snap) return reject(ctx, 'outbound', req, res, kind, 'MESH_NO_HEALTHY_UPSTREAM', 'no policy snapshot yet');
    const view = new View(req, methodOf(req, kind), target.path, target.query, authority);
    const rule = (routes ? routes(snap) : snap.routes).match(view);
    if (!rule) {
      // Kept among the recent decisions when the request carries an id to find it by.
      if (ctx.decisions && view.header('x-request-id')) noRoute(ctx, req, kind, protocol, target.path, authority, view);
      return reject(ctx, 'outbound', req, res, kind, 'MESH_NO_ROUTE', authority);
    }
    const path = rule.rewritePath ? rule.rewritePath(view) : target.query ? `${target.path}?${target.query}` : target.path;
    const upstreamAuthority = rule.rewriteHost ?? rawAuthority;
    // The first try's backend, picked now so that the request's metrics are bound to it at once.
    const first = rule.pickBackend();
    const call = newCall(ctx, 'outbound', kind, req, protocol, path, upstreamAuthority, view, front.proto);
    call.rule = rule;
    call.backend = first;
    // A body without a declared length is counted as it streams (rare at the edge: one closure).
    const stack = maxBody > 0 && call.body && headerOf(req, 'content-length') === undefined ? bodyLimit(maxBody)(ruleStack(ctx, rule)) : ruleStack(ctx, rule);
    respond(ctx, call, req, res, view, stack, rule.websocketIdleTimeoutMs);
  };
}

/** Records a request no route serves among the recent decisions (it never becomes a call of a stack). */
function noRoute(ctx: ProxyContext, req: DownstreamRequest, kind: CallKind, protocol: 'http1' | 'http2', path: string, authority: string, view: RequestView): void {
  const call = new MeshCall('outbound', kind, protocol, req.method ?? 'GET', path, authority, view, ['x-request-id', view.header('x-request-id') as string], null, protocol === 'http2' ? '2' : '1.1');
  ctx.decisions?.claim(call);
  const info = meshErrorInfo('MESH_NO_ROUTE');
  call.decision?.finish(call.decisionSeq, info.status, info.flag, undefined);
}

/** 413 for a body whose declared length is over the limit (counted, written for the protocol). */
function tooLarge(ctx: ProxyContext, req: DownstreamRequest, res: DownstreamResponse, kind: CallKind, max: number): void {
  const text = `request body larger than ${max} bytes`;
  ctx.stats.record('outbound', 413, Flags.DownstreamProtocolError);
  if (kind === 'grpc' || kind === 'grpc-web') return replyGrpc(res, req, kind, new LocalReply(413, Flags.DownstreamProtocolError, text, { grpcStatus: 8 }));
  sendLocalRaw(res, 413, Flags.DownstreamProtocolError, text, protocol(req) === 'http1' ? { connection: 'close' } : undefined);
}

function protocol(req: DownstreamRequest): 'http1' | 'http2' {
  return req instanceof H1Request ? 'http1' : 'http2';
}


/** An HTTP/1.1 `Upgrade` (its socket taken over), or an HTTP/2 extended CONNECT (RFC 8441; serveStream lets only those through). */
function isUpgrade(req: DownstreamRequest, protocol: 'http1' | 'http2'): boolean {
  return protocol === 'http1' ? (req as H1Request).upgrade !== undefined : (req as H2Request).connectProtocol !== undefined;
}

/**
 * The request's method as routes and layers see it: an extended CONNECT is the HTTP/2 form of a
 * `GET` with `Upgrade` (RFC 8441 4), so a WebSocket matches the same routes over either protocol,
 * and goes upstream as that GET.
 */
function methodOf(req: DownstreamRequest, kind: CallKind): string {
  return kind === 'websocket' && !(req instanceof H1Request) ? 'GET' : (req.method ?? 'GET');
}

/** The call's kind from its content type. */
function callKind(req: DownstreamRequest, protocol: 'http1' | 'http2'): CallKind {
  const g = grpcKind(req, protocol);
  return g === 'web' ? 'grpc-web' : g === 'grpc' ? 'grpc' : 'http';
}

/** The per-request context: forwarded headers, body (gRPC-Web converted to gRPC). */
function newCall(ctx: ProxyContext, direction: Direction, kind: CallKind, req: DownstreamRequest, protocol: 'http1' | 'http2', path: string, authority: string, view: RequestView | undefined, proto: 'http' | 'https' = 'http'): MeshCall {
  let headers = forwardRequestHeaders(req.rawHeaders, {
    remoteAddress: req.socket?.remoteAddress,
    proto,
    via: protocol === 'http2' ? ctx.via.h2 : ctx.via.h1,
    // One literal (no spread of a second object): a WebSocket keeps its authority as Host.
    host: kind === 'websocket' ? authority : undefined,
    dropHost: kind !== 'websocket',
  });
  let body = kind === 'websocket' ? null : bodyOf(req, protocol);
  // RFC 8441 5: an extended CONNECT has no Sec-WebSocket-Key (`:protocol` replaced it); the
  // HTTP/1.1 handshake upstream needs one (RFC 6455 4.1): a fresh nonce.
  if (kind === 'websocket' && protocol === 'http2' && !headers.includes('sec-websocket-key')) headers.push('sec-websocket-key', randomBytes(16).toString('base64'));
  if (kind === 'grpc-web') {
    const w = webRequestHeaders(headers);
    headers = w.headers;
    if (w.decoder && body) body = decoded(body, w.decoder);
  }
  const call = new MeshCall(direction, kind, protocol, kind === 'http' || kind === 'websocket' ? methodOf(req, kind) : 'POST', path, authority, view, headers, body, protocol === 'http2' ? '2' : (req as H1Request).httpVersion);
  call.downstream = req;
  ctx.decisions?.claim(call);
  return call;
}

/** A gRPC-Web text body, decoded from base64 as it streams; broken base64 fails the call (INTERNAL). */
function decoded(src: Readable, decoder: Base64Decoder): Readable {
  const t = new Transform({
    transform(chunk: Buffer, _e, cb) {
      cb(null, decoder.push(chunk));
    },
    flush(cb) {
      const rest = decoder.end();
      if (rest instanceof Error) cb(new LocalReply(200, Flags.DownstreamProtocolError, rest.message, { grpcStatus: 13 }));
      else cb(null, rest.length ? rest : undefined);
    },
  });
  src.pipe(t);
  return t;
}

/** Runs a call through a stack with the front adapter of its protocol. */
function respond(ctx: ProxyContext, call: MeshCall, req: DownstreamRequest, res: DownstreamResponse, view: RequestView, stack: Handler, idleMs?: number): void {
  if (call.kind === 'http') new HttpResponder(ctx, call, res).run(stack);
  else if (call.kind === 'websocket') {
    if (req instanceof H1Request) new UpgradeResponder(ctx, call, req, res as H1Response, idleMs).run(stack);
    else new H2UpgradeResponder(ctx, call, req, res as H2Response, idleMs).run(stack);
  }
  else new GrpcResponder(ctx, call, res, view).run(stack);
}

/** A mesh answer before any stack (bad request, no route): counted, written for the protocol. */
function reject(ctx: ProxyContext, direction: Direction, req: DownstreamRequest, res: DownstreamResponse, kind: CallKind, code: MeshErrorCode, detail?: string): void {
  if (kind === 'grpc' || kind === 'grpc-web') {
    const e = new MeshError(code, detail);
    ctx.stats.record(direction, e.status, e.flag);
    return replyGrpc(res, req, kind, e);
  }
  sendLocal(ctx, direction, res, code, detail);
}

/** Mesh -> the local app: the inbound stack (src/stack/inbound.ts) to one fixed endpoint. */
export function inboundHandler(ctx: ProxyContext, app: AppTarget): RequestHandler {
  const key = endpointKey({ address: app.host, port: app.port });
  const h1: UpstreamTarget = { key, address: app.host, port: app.port, protocol: app.protocol ?? 'http1' };
  const h2: UpstreamTarget = { key, address: app.host, port: app.port, protocol: app.protocol ?? 'http2', auto: app.protocol === undefined };
  const stack = inboundStack(ctx);
  return (req, res, protocol) => {
    const kind = isUpgrade(req, protocol) ? 'websocket' : callKind(req, protocol);
    const target = parseRequestTarget(req.url ?? '');
    if (!target || target.path === '*') return reject(ctx, 'inbound', req, res, kind, 'MESH_BAD_REQUEST', 'unsupported request target');
    const authority =
      target.authority ?? (protocol === 'http1' ? (req as H1Request).host : headerOf(req, ':authority') ?? headerOf(req, 'host')) ?? `${app.host}:${app.port}`;
    const path = target.query ? `${target.path}?${target.query}` : target.path;
    const view = new View(req, methodOf(req, kind), target.path, target.query, authority);
    const call = newCall(ctx, 'inbound', kind, req, protocol, path, authority, view);
    // mTLS: the caller is who its certificate says (computed once per connection); its source
    // service replaces any `x-meshlet-source` that came over the wire.
    const peer = peerOf(req, protocol);
    if (peer) {
      call.peer = peer;
      const source = serviceOf(peer);
      view.tlsSource = source ?? null;
      call.headers = replaceSource(call.headers, source);
    }
    // HTTP/1.1 that another sidecar multiplexed over HTTP/2 goes to the app as HTTP/1.1 again.
    const multiplexed = originalProtocol(req, protocol) !== undefined;
    if (multiplexed) call.headers = withoutMark(call.headers);
    call.target = kind === 'grpc' || kind === 'grpc-web' || (protocol === 'http2' && !multiplexed) ? h2 : h1;
    respond(ctx, call, req, res, view, stack);
  };
}

/** Removes `x-meshlet-source` from a flat header list (in place: the request's own copy) and sets `source` instead. */
function replaceSource(flat: string[], source: string | undefined): string[] {
  let w = 0;
  for (let i = 0; i < flat.length; i += 2) {
    if (flat[i] === SOURCE_HEADER) continue;
    if (w !== i) {
      flat[w] = flat[i] as string;
      flat[w + 1] = flat[i + 1] as string;
    }
    w += 2;
  }
  // Nothing removed (the usual case): no length store, which V8 makes through a runtime call.
  if (w !== flat.length) flat.length = w;
  if (source !== undefined) flat.push(SOURCE_HEADER, source);
  return flat;
}

function headerOf(req: DownstreamRequest, name: string): string | undefined {
  if (req instanceof H1Request) return req.header(name);
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
}

/** A response the mesh makes itself, with its flag; counted. */
export function sendLocal(ctx: ProxyContext, direction: Direction, res: DownstreamResponse, code: MeshErrorCode, detail?: string, extra?: Record<string, string>): void {
  const info = meshErrorInfo(code);
  ctx.stats.record(direction, info.status, info.flag);
  sendLocalRaw(res, info.status, info.flag, detail ? `${info.text}: ${detail}` : info.text, extra);
}

export type { Headers };

function bodyOf(req: DownstreamRequest, protocol: 'http1' | 'http2'): Readable | null {
  return protocol === 'http1' ? (req as H1Request).body : (req as H2Request).body;
}
