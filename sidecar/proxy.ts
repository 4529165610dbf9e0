/**
 * The request path of the sidecar: outbound (app -> mesh: route, pick an endpoint, forward) and
 * inbound (mesh -> the local app). Both end in `forward()`, which streams the request and the
 * response without buffering, in both directions with backpressure, and maps failures to the
 * mesh's own responses in one place (`sendLocal`).
 */
import * as http2 from 'node:http2';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { classifyUpstreamError, FLAG_HEADER, Flags, MeshError, meshErrorInfo, type MeshErrorCode } from '../src/core/errors';
import { forwardRequestHeaders, forwardResponseHeaders } from '../src/http/headers';
import type { H1Request, H1Response } from '../src/http/h1-server';
import type { DownstreamRequest, DownstreamResponse, RequestHandler } from '../src/http/listener';
import { parseRequestTarget } from '../src/http/target';
import { UpstreamConnectError, type Headers, type UpstreamPools, type UpstreamProtocol, type UpstreamTarget } from '../src/http/upstream';
import { ActiveRequests, endpointKey } from '../src/lb';
import type { CompiledSnapshot, HeaderEditor, RequestView } from '../src/policy';
import { forwardGrpc, grpcKind, replyGrpcError } from '../src/grpc/proxy';
import { answerPreflight } from '../src/grpc/web';
import { forwardUpgrade } from '../src/http/websocket';
import { multiplexH1, ORIG_PROTO_HEADER, originalProtocol, withoutMark } from '../src/http/multiplex';
import type { GrpcRouteOptions } from '../src/policy';
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
    const v = this.req.headers[name];
    return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : v;
  }
}

/** App -> mesh. */
export function outboundHandler(ctx: ProxyContext): RequestHandler {
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
    const preflight = rule.grpc ? answerPreflight(req, res, rule.grpc) : 0;
    if (preflight) return ctx.stats.record('outbound', preflight);
    if (rule.redirect) {
      const r = rule.redirect(view);
      ctx.stats.record('outbound', r.status, Flags.Redirect);
      res.writeHead(r.status, { location: r.location, 'content-length': '0', [FLAG_HEADER]: Flags.Redirect });
      res.end();
      return;
    }
    const backend = rule.pickBackend();
    const svc = backend && snap.services.get(backend.service);
    const ep = svc?.picker(backend?.subset)?.pick(view);
    if (!svc || !ep) return sendLocal(ctx, 'outbound', res, 'MESH_NO_HEALTHY_UPSTREAM', backend?.service);
    const path = rule.rewritePath ? rule.rewritePath(view) : target.query ? `${target.path}?${target.query}` : target.path;
    const mux = multiplexH1(req, protocol, ep.meshed, svc);
    const upstreamProtocol: UpstreamProtocol = mux ? 'http2' : svc.protocol === 'auto' ? protocol : svc.protocol;
    forward(ctx, 'outbound', req, res, protocol, {
      target: { key: endpointKey(ep), address: ep.address, port: ep.port, protocol: upstreamProtocol },
      path,
      authority: rule.rewriteHost ?? rawAuthority,
      requestEdits: rule.requestHeaders,
      responseEdits: rule.responseHeaders,
      grpc: rule.grpc,
      timeoutMs: rule.timeoutMs,
      websocketIdleTimeoutMs: rule.websocketIdleTimeoutMs,
      origProto: mux ? `HTTP/${(req as H1Request).httpVersion}` : undefined,
      repick: () => {
        const e = svc.picker(backend.subset)?.pick(view);
        return e && { key: endpointKey(e), address: e.address, port: e.port, protocol: upstreamProtocol };
      },
    });
  };
}

/** Mesh -> the local app. */
export function inboundHandler(ctx: ProxyContext, app: AppTarget): RequestHandler {
  const key = endpointKey({ address: app.host, port: app.port });
  return (req, res, protocol) => {
    const target = parseRequestTarget(req.url ?? '');
    if (!target || target.path === '*') return sendLocal(ctx, 'inbound', res, 'MESH_BAD_REQUEST', 'unsupported request target');
    const authority =
      target.authority ?? (protocol === 'http1' ? (req as H1Request).host : headerOf(req, ':authority') ?? headerOf(req, 'host')) ?? `${app.host}:${app.port}`;
    const orig = originalProtocol(req, protocol);
    forward(ctx, 'inbound', req, res, protocol, {
      target: { key, address: app.host, port: app.port, protocol: app.protocol ?? (orig ? 'http1' : protocol) },
      unmark: orig !== undefined,
      path: target.query ? `${target.path}?${target.query}` : target.path,
      authority,
    });
  };
}

interface ForwardPlan {
  target: UpstreamTarget;
  path: string;
  authority: string;
  requestEdits?: HeaderEditor;
  responseEdits?: HeaderEditor;
  grpc?: GrpcRouteOptions;
  timeoutMs?: number;
  websocketIdleTimeoutMs?: number;
  /** HTTP/1.x sent multiplexed over HTTP/2 to another sidecar: the original version, for the mark. */
  origProto?: string;
  /** The request came multiplexed from another sidecar: remove the mark. */
  unmark?: boolean;
  /** Another endpoint, for a transparent retry of a request no upstream has seen. */
  repick?(): UpstreamTarget | undefined;
}

function forward(
  ctx: ProxyContext,
  direction: Direction,
  req: DownstreamRequest,
  res: DownstreamResponse,
  protocol: 'http1' | 'http2',
  plan: ForwardPlan,
): void {
  if (protocol === 'http1' && (req as H1Request).upgrade)
    return forwardUpgrade(ctx, direction, req as H1Request, res as H1Response, { ...plan, idleTimeoutMs: plan.websocketIdleTimeoutMs });
  if (grpcKind(req, protocol)) return forwardGrpc(ctx, direction, req, res, protocol, { ...plan, target: { ...plan.target, protocol: 'http2' } });
  const version = protocol === 'http2' ? '2' : '1.1';
  let headers = forwardRequestHeaders(req.rawHeaders, {
    remoteAddress: req.socket?.remoteAddress,
    proto: 'http',
    version,
    via: ctx.viaName,
    dropHost: true,
  });
  if (plan.requestEdits) headers = editFlat(headers, plan.requestEdits);
  if (plan.origProto) headers.push(ORIG_PROTO_HEADER, plan.origProto);
  else if (plan.unmark) headers = withoutMark(headers);
  const body = bodyOf(req, protocol);
  const key = plan.target.key;
  ctx.active.begin(key);
  let finished = false;
  const finish = (status: number, flag?: string): void => {
    if (finished) return;
    finished = true;
    ctx.active.end(key);
    ctx.stats.record(direction, status, flag);
  };
  let status = 0;
  const call = ctx.pools.send(
    plan.target,
    { method: req.method ?? 'GET', path: plan.path, authority: plan.authority, headers, body },
    {
      onResponse(s, h) {
        status = s;
        const out = forwardResponseHeaders(h, version, ctx.viaName);
        if (plan.responseEdits) plan.responseEdits.apply(out);
        if (res.headersSent || res.destroyed) return;
        try {
          res.writeHead(s, out as never);
        } catch (err) {
          ctx.logger.debug({ err }, 'invalid upstream response header');
          call.abort();
          finish(502, Flags.UpstreamReset);
          sendLocalRaw(res, 502, Flags.UpstreamReset, 'upstream sent an invalid response header');
        }
      },
      onData(chunk) {
        if (res.destroyed) return true;
        return (res as { write(c: Buffer): boolean }).write(chunk);
      },
      onEnd(trailers) {
        if (trailers && protocol === 'http2') {
          try {
            (res as http2.Http2ServerResponse).addTrailers(trailers as never);
          } catch {
            // invalid trailer names: drop them
          }
        }
        res.end();
        finish(status);
      },
      onError(err, started) {
        if (finished) return;
        if (started || res.headersSent) {
          // Bytes already went downstream: the only honest signal left is a reset.
          finish(status || 502, Flags.UpstreamReset);
          resetDownstream(res);
          return;
        }
        const e = err instanceof UpstreamConnectError ? new MeshError('MESH_UPSTREAM_CONNECT_FAILURE', err.code, { cause: err }) : classifyUpstreamError(err);
        ctx.logger.debug({ err, upstream: key, direction }, 'upstream request failed');
        finish(e.status, e.flag);
        sendLocalRaw(res, e.status, e.flag, e.message);
      },
    },
  );
  res.on('drain', () => call.resume());
  res.on('close', () => {
    if (finished) return;
    // The client went away (or the downstream stream was reset): cancel upstream too.
    call.abort(new Error('downstream closed'));
    finish(499, 'DC');
  });
}

function bodyOf(req: DownstreamRequest, protocol: 'http1' | 'http2'): Readable | null {
  if (protocol === 'http1') return (req as H1Request).body;
  const h2 = req as http2.Http2ServerRequest;
  return h2.stream.endAfterHeaders ? null : h2;
}

function headerOf(req: DownstreamRequest, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
}

function editFlat(flat: string[], edits: HeaderEditor): string[] {
  const o: Record<string, string | string[] | undefined> = {};
  for (let i = 0; i < flat.length; i += 2) {
    const n = flat[i] as string;
    const v = flat[i + 1] as string;
    const prev = o[n];
    o[n] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  edits.apply(o);
  const out: string[] = [];
  for (const n in o) {
    const v = o[n];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(n, x);
    else out.push(n, v);
  }
  return out;
}

function resetDownstream(res: DownstreamResponse): void {
  const stream = (res as http2.Http2ServerResponse).stream;
  if (stream && typeof stream.close === 'function') {
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  (res as { destroy(): void }).destroy();
}

/** A response the mesh makes itself, with its flag; counted. */
export function sendLocal(ctx: ProxyContext, direction: Direction, res: DownstreamResponse, code: MeshErrorCode, detail?: string): void {
  const info = meshErrorInfo(code);
  ctx.stats.record(direction, info.status, info.flag);
  sendLocalRaw(res, info.status, info.flag, detail ? `${info.text}: ${detail}` : info.text);
}

function sendLocalRaw(res: DownstreamResponse, status: number, flag: string, text: string): void {
  if (replyGrpcError(res, status, flag, text)) return;
  if (res.headersSent || res.destroyed) {
    resetDownstream(res);
    return;
  }
  const body = `${text}\n`;
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    [FLAG_HEADER]: flag,
  });
  res.end(body);
}

export type { Headers };
