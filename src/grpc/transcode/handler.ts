/**
 * HTTP/JSON -> gRPC on the sidecar's outbound path. For a destination service with a
 * GrpcTranscoding policy, a request that is not gRPC already is matched against the compiled
 * bindings, its JSON body, path variables and query parameters become one protobuf request
 * message, and it goes upstream as a plain gRPC call (POST /pkg.Service/Method over h2c, through
 * the normal upstream pools, so the remote sidecar's inbound path sees a normal gRPC request).
 * The response becomes JSON: one object for a unary method; a JSON array (or newline-delimited
 * JSON when the client sends `Accept: application/x-ndjson`) for a server-streaming one; and a
 * gRPC status becomes its HTTP status with a google.rpc.Status-shaped JSON body.
 *
 * Bad input (malformed JSON, unknown fields, wrong types, a body too large) answers 400/413 with a
 * message naming the field, and the upstream is never called.
 */
import { editFlat } from '../../http/headers';
import type * as http2 from 'node:http2';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { classifyUpstreamError, FLAG_HEADER, Flags, MeshError } from '../../core/errors';
import type { H1Request } from '../../http/h1-server';
import { forwardRequestHeaders, HOP_BY_HOP } from '../../http/headers';
import type { DownstreamRequest, DownstreamResponse } from '../../http/listener';
import { UpstreamConnectError, type Headers, type ResponseSink, type UpstreamCall, type UpstreamRequest, type UpstreamTarget } from '../../http/upstream-types';
import type { HeaderEditor } from '../../policy/compiled';
import { encodeFrame, FrameDecoder } from './framing';
import { formatGrpcTimeout } from '../timeout';
import { decodeGrpcMessage, GrpcStatus, grpcStatusName, grpcToHttpStatus, httpToGrpcStatus } from './status';
import type { Binding, Transcoder } from './compile';
import { JsonMappingError } from './errors';

/** What the sidecar compiles from a GrpcTranscoding policy (one per destination service). */
export interface CompiledTranscoding {
  /** The policy's name, for logs. */
  name: string;
  transcoder: Transcoder;
  /** What to do with a non-gRPC request no binding matches. */
  unknownMethods: 'reject' | 'passthrough';
  maxRequestBytes: number;
  maxResponseBytes: number;
}

export interface TranscodeContext {
  send(target: UpstreamTarget, req: UpstreamRequest, sink: ResponseSink): UpstreamCall;
  /** Counts the response (status, response flag). */
  record(status: number, flag?: string): void;
  logger: Logger;
  via: string;
}

export interface TranscodePlan {
  target: UpstreamTarget;
  authority: string;
  method: string;
  path: string;
  query: string;
  timeoutMs?: number;
  requestEdits?: HeaderEditor;
  responseEdits?: HeaderEditor;
}

const NDJSON = 'application/x-ndjson';
/** Response metadata that is gRPC's own and never becomes an HTTP header. */
const RESERVED = new Set(['content-type', 'content-length', 'grpc-status', 'grpc-message', 'grpc-status-details-bin', 'grpc-encoding', 'grpc-accept-encoding', 'date']);
/** Request headers that describe the JSON request and do not travel as metadata. */
const NOT_METADATA = new Set(['content-type', 'content-length', 'accept', 'accept-encoding', 'grpc-timeout', 'grpc-encoding', 'grpc-accept-encoding']);

/** True when the request is gRPC already (passed through untouched). */
export function isGrpcRequest(req: DownstreamRequest): boolean {
  const ct = req.headers['content-type'];
  return typeof ct === 'string' && ct.startsWith('application/grpc');
}

/**
 * Handles the request when it is for the transcoder; returns false to let the caller forward it
 * unchanged (a gRPC request, or no binding matches and unknownMethods is passthrough).
 */
export function transcode(ctx: TranscodeContext, tc: CompiledTranscoding, req: DownstreamRequest, res: DownstreamResponse, protocol: 'http1' | 'http2', plan: TranscodePlan): boolean {
  if (isGrpcRequest(req)) return false;
  const m = tc.transcoder.match(plan.method, plan.path);
  if (m === undefined || 'methodNotAllowed' in m) {
    if (tc.unknownMethods === 'passthrough') return false;
    drainBody(req, protocol);
    if (m === undefined) sendError(ctx, res, 404, GrpcStatus.NOT_FOUND, `no gRPC method is bound to ${plan.method} ${plan.path}`, Flags.NoRoute);
    else sendError(ctx, res, 405, GrpcStatus.UNIMPLEMENTED, `${plan.method} is not allowed on ${plan.path}; use ${m.methodNotAllowed.join(', ')}`, Flags.NoRoute, { allow: m.methodNotAllowed.join(', ') });
    return true;
  }
  readBody(req, protocol, tc.maxRequestBytes, (err, body) => {
    if (err) {
      const tooLarge = err.message.startsWith('request body');
      return sendError(ctx, res, tooLarge ? 413 : 400, GrpcStatus.INVALID_ARGUMENT, err.message, Flags.DownstreamProtocolError);
    }
    let message: Uint8Array;
    try {
      let json: unknown;
      const text = (body as Buffer).toString('utf8').trim();
      if (text !== '') {
        if (!m.binding.hasBody) throw new JsonMappingError('', `${m.binding.describe} takes no request body`);
        try {
          json = JSON.parse(text);
        } catch (e) {
          throw new JsonMappingError('', `malformed JSON body: ${(e as Error).message}`);
        }
      }
      message = m.binding.encodeRequest(m.vars, plan.query, json);
    } catch (e) {
      if (e instanceof JsonMappingError) return sendError(ctx, res, 400, GrpcStatus.INVALID_ARGUMENT, `invalid request for ${m.binding.grpcPath}: ${e.message}`, Flags.DownstreamProtocolError);
      ctx.logger.warn({ err: e, method: m.binding.grpcPath }, 'could not encode a transcoded request');
      return sendError(ctx, res, 400, GrpcStatus.INVALID_ARGUMENT, `invalid request for ${m.binding.grpcPath}: ${(e as Error).message}`, Flags.DownstreamProtocolError);
    }
    call(ctx, tc, m.binding, req, res, plan, protocol, message);
  });
  return true;
}

function call(ctx: TranscodeContext, tc: CompiledTranscoding, b: Binding, req: DownstreamRequest, res: DownstreamResponse, plan: TranscodePlan, protocol: 'http1' | 'http2', message: Uint8Array): void {
  const fwd = forwardRequestHeaders(req.rawHeaders, { remoteAddress: req.socket?.remoteAddress, proto: 'http', version: protocol === 'http2' ? '2' : '1.1', via: ctx.via, dropHost: true });
  let headers: string[] = [];
  for (let i = 0; i < fwd.length; i += 2) if (!NOT_METADATA.has(fwd[i] as string)) headers.push(fwd[i] as string, fwd[i + 1] as string);
  if (plan.requestEdits) headers = editFlat(headers, plan.requestEdits);
  headers.push('content-type', 'application/grpc', 'te', 'trailers', 'grpc-accept-encoding', 'identity');
  if (plan.timeoutMs !== undefined) headers.push('grpc-timeout', formatGrpcTimeout(plan.timeoutMs));
  const body = Readable.from([encodeFrame(message)], { objectMode: false });
  const ndjson = b.serverStreaming && acceptsNdjson(req);
  const decoder = new FrameDecoder(tc.maxResponseBytes);
  let httpStatus = 0;
  let respHeaders: Headers = {};
  let finished = false;
  const unary: unknown[] = [];
  let streamed = 0;
  let failed: Error | undefined;
  const finish = (status: number, flag?: string) => {
    if (finished) return;
    finished = true;
    ctx.record(status, flag);
  };
  const passHeaders = (h: Headers | undefined, into: Record<string, string | string[]>) => {
    if (!h) return;
    for (const [k, v] of Object.entries(h)) {
      if (k.startsWith(':') || RESERVED.has(k) || HOP_BY_HOP.has(k) || k.endsWith('-bin')) continue;
      into[k] = v;
    }
  };
  const startStream = () => {
    if (res.headersSent) return;
    const out: Record<string, string | string[]> = {};
    passHeaders(respHeaders, out);
    out['content-type'] = ndjson ? NDJSON : 'application/json';
    plan.responseEdits?.apply(out);
    res.writeHead(200, out as never);
    if (!ndjson) write('[');
  };
  // The response cannot be read (too large, compressed, undecodable): cancel the call and say so.
  const abortWith = (err: Error): void => {
    if (failed || finished) return;
    failed = err;
    upstream.abort();
    if (res.headersSent) {
      finish(502, Flags.UpstreamReset);
      return destroy(res);
    }
    finished = true;
    sendError(ctx, res, 502, GrpcStatus.INTERNAL, err.message, Flags.UpstreamReset);
  };
  const write = (s: string): boolean => (res.destroyed ? true : (res as { write(c: string): boolean }).write(s));
  const upstream = ctx.send(
    { ...plan.target, protocol: 'http2' },
    { method: 'POST', path: b.grpcPath, authority: plan.authority, headers, body },
    {
      onResponse(status, h) {
        httpStatus = status;
        respHeaders = h;
      },
      onData(chunk) {
        if (failed || httpStatus !== 200) return true;
        let msgs: Buffer[];
        try {
          msgs = decoder.push(chunk);
        } catch (e) {
          abortWith(e as Error);
          return true;
        }
        let ok = true;
        for (const m of msgs) {
          let json: unknown;
          try {
            json = b.decodeResponse(m);
          } catch (e) {
            abortWith(new Error(`could not decode the response message: ${(e as Error).message}`));
            return true;
          }
          if (!b.serverStreaming) {
            unary.push(json);
            continue;
          }
          startStream();
          ok = write(ndjson ? JSON.stringify(json) + '\n' : (streamed > 0 ? ',' : '') + JSON.stringify(json));
          streamed++;
        }
        return ok;
      },
      onEnd(trailers) {
        const grpcStatusRaw = trailers?.['grpc-status'] ?? respHeaders['grpc-status'];
        const grpcMessage = decodeGrpcMessage(String(trailers?.['grpc-message'] ?? respHeaders['grpc-message'] ?? ''));
        let code: number = grpcStatusRaw === undefined ? (httpStatus === 200 ? GrpcStatus.INTERNAL : httpToGrpcStatus(httpStatus)) : Number(grpcStatusRaw);
        let text = grpcStatusRaw === undefined ? (httpStatus === 200 ? 'upstream response carried no grpc-status' : `upstream answered HTTP ${httpStatus}`) : grpcMessage;
        if (code === GrpcStatus.OK) {
          try {
            decoder.end();
          } catch (e) {
            failed = e as Error;
          }
          if (failed) {
            code = GrpcStatus.INTERNAL;
            text = failed.message;
          } else if (!b.serverStreaming && unary.length !== 1) {
            code = GrpcStatus.INTERNAL;
            text = `a unary method answered ${unary.length} messages`;
          }
        }
        if (code === GrpcStatus.OK) {
          if (b.serverStreaming) {
            startStream();
            if (!ndjson) write(']');
            res.end();
            return finish(200);
          }
          const out: Record<string, string | string[]> = {};
          passHeaders(respHeaders, out);
          passHeaders(trailers, out);
          const text = JSON.stringify(unary[0]) + '\n';
          out['content-type'] = 'application/json';
          out['content-length'] = String(Buffer.byteLength(text));
          plan.responseEdits?.apply(out);
          if (res.headersSent || res.destroyed) return finish(200);
          res.writeHead(200, out as never);
          res.end(text);
          return finish(200);
        }
        const status = grpcToHttpStatus(code);
        if (res.headersSent) {
          // A stream failed after it started: NDJSON can say so in a last line; a JSON array cannot.
          if (ndjson) {
            write(JSON.stringify({ error: { code, status: grpcStatusName(code), message: text } }) + '\n');
            res.end();
          } else destroy(res);
          return finish(status);
        }
        finished = true;
        sendError(ctx, res, status, code, text);
      },
      onError(err, started) {
        if (finished) return;
        if (res.headersSent) {
          // Part of a stream already went downstream: the only honest signal left is a reset.
          finish(started ? 502 : 503, Flags.UpstreamReset);
          return destroy(res);
        }
        const e = err instanceof UpstreamConnectError ? new MeshError('MESH_UPSTREAM_CONNECT_FAILURE', err.code, { cause: err }) : classifyUpstreamError(err);
        ctx.logger.debug({ err, method: b.grpcPath }, 'transcoded call failed');
        const code = e.status === 504 ? GrpcStatus.DEADLINE_EXCEEDED : GrpcStatus.UNAVAILABLE;
        finished = true;
        sendError(ctx, res, e.status, code, e.message, e.flag);
      },
    },
  );
  res.on('drain', () => upstream.resume());
  res.on('close', () => {
    if (finished) return;
    upstream.abort(new Error('downstream closed'));
    finish(499, 'DC');
  });
}

function acceptsNdjson(req: DownstreamRequest): boolean {
  const a = req.headers.accept;
  const s = Array.isArray(a) ? a.join(',') : a;
  return typeof s === 'string' && s.includes(NDJSON);
}

function bodyStream(req: DownstreamRequest, protocol: 'http1' | 'http2'): Readable | null {
  if (protocol === 'http1') return (req as H1Request).body;
  const h2 = req as http2.Http2ServerRequest;
  return h2.stream.endAfterHeaders ? null : h2;
}

function drainBody(req: DownstreamRequest, protocol: 'http1' | 'http2'): void {
  bodyStream(req, protocol)?.resume();
}

/** The whole request body, up to `max` bytes; a larger one is read to its end and refused. */
function readBody(req: DownstreamRequest, protocol: 'http1' | 'http2', max: number, done: (err: Error | undefined, body?: Buffer) => void): void {
  const s = bodyStream(req, protocol);
  if (!s) return done(undefined, Buffer.alloc(0));
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  let called = false;
  const once = (err: Error | undefined, body?: Buffer) => {
    if (called) return;
    called = true;
    done(err, body);
  };
  s.on('data', (c: Buffer) => {
    size += c.length;
    if (size > max) over = true;
    if (!over) chunks.push(c);
  });
  s.on('end', () => (over ? once(new Error(`request body larger than ${max} bytes`)) : once(undefined, Buffer.concat(chunks))));
  s.on('error', (e) => once(e));
}

/** An error answer: google.rpc.Status-shaped JSON (plus the code's name), counted; `flag` when the mesh made it. */
function sendError(ctx: TranscodeContext, res: DownstreamResponse, status: number, code: number, message: string, flag?: string, extra?: Record<string, string>): void {
  ctx.record(status, flag);
  if (res.headersSent || res.destroyed) return destroy(res);
  const body = JSON.stringify({ code, status: grpcStatusName(code), message, details: [] }) + '\n';
  const h: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...extra };
  if (flag) h[FLAG_HEADER] = flag;
  res.writeHead(status, h as never);
  res.end(body);
}

function destroy(res: DownstreamResponse): void {
  const stream = (res as http2.Http2ServerResponse).stream;
  if (stream && typeof stream.close === 'function') {
    if (!stream.closed) stream.close(2 /* NGHTTP2_INTERNAL_ERROR */);
    return;
  }
  (res as { destroy(): void }).destroy();
}

