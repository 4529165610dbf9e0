/**
 * HTTP/JSON -> gRPC, as a layer. For a destination service with a GrpcTranscoding policy, a plain
 * HTTP request that a binding matches is rewritten into a gRPC call (its JSON body, path variables
 * and query parameters become one protobuf request message; POST /pkg.Service/Method, gRPC
 * headers), and the sink is wrapped to turn the gRPC response back into JSON: one object for a
 * unary method; a JSON array (or newline-delimited JSON for `Accept: application/x-ndjson`) for a
 * server-streaming one; a gRPC status becomes its HTTP status with a google.rpc.Status-shaped JSON
 * body. Everything below this layer sees a gRPC call (kind `transcode`): the deadline
 * (grpc-timeout), retries on gRPC statuses, endpoint pick and outlier detection apply to it as to
 * any gRPC call; the breaker and observe layers above see the call's gRPC status.
 *
 * Bad input (malformed JSON, unknown fields, wrong types, a body too large) is answered 400/413
 * with a message naming the field, and the upstream is never called.
 */
import { Readable } from 'node:stream';
import { Flags, MeshError } from '../core/errors';
import { LocalReply, NOOP_CALL, type Handler, type Layer, type MeshCall } from '../core/layer';
import { encodeFrame, MessageDecoder } from '../grpc/framing';
import type { Binding, CompiledTranscoding } from '../grpc/transcode/compile';
import { JsonMappingError } from '../grpc/transcode/errors';
import { decodeGrpcMessage, GrpcStatus, grpcStatusName, grpcToHttpStatus, httpToGrpcStatus } from '../grpc/transcode/status';
import { isHopByHop } from '../http/headers';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import type { RequestView } from '../policy/compiled';
import type { StackContext } from './context';

const NDJSON = 'application/x-ndjson';
/** Response metadata that is gRPC's own and never becomes an HTTP header. */
const RESERVED = new Set(['content-type', 'content-length', 'grpc-status', 'grpc-message', 'grpc-status-details-bin', 'grpc-encoding', 'grpc-accept-encoding', 'date']);
/** Request headers that describe the JSON request and do not travel as metadata. */
const NOT_METADATA = new Set(['content-type', 'content-length', 'accept', 'accept-encoding', 'grpc-timeout', 'grpc-encoding', 'grpc-accept-encoding']);

export function transcodeLayer(ctx: StackContext): Layer {
  return (next) => (call, sink) => {
    if (call.kind !== 'http' || !call.backend) return next(call, sink);
    const tc = ctx.snapshot()?.transcoders.get(call.backend.service);
    if (!tc || call.header('content-type')?.startsWith('application/grpc')) return next(call, sink);
    const view = call.view as RequestView;
    const m = tc.transcoder.match(call.method, view.path);
    if (m === undefined || 'methodNotAllowed' in m) {
      if (tc.unknownMethods === 'passthrough') return next(call, sink);
      call.body?.resume();
      if (m === undefined) sink.onError(jsonReply(404, GrpcStatus.NOT_FOUND, `no gRPC method is bound to ${call.method} ${view.path}`, Flags.NoRoute), false);
      else sink.onError(jsonReply(405, GrpcStatus.UNIMPLEMENTED, `${call.method} is not allowed on ${view.path}; use ${m.methodNotAllowed.join(', ')}`, Flags.NoRoute, { allow: m.methodNotAllowed.join(', ') }), false);
      return NOOP_CALL;
    }
    const t = new Transcoded(ctx, tc, m.binding, call, sink);
    t.start(next, m.vars, view.query);
    return t;
  };
}

/** An error answered as google.rpc.Status-shaped JSON (plus the code's name). */
function jsonReply(status: number, code: number, message: string, flag?: string, headers?: Record<string, string>): LocalReply {
  const body = JSON.stringify({ code, status: grpcStatusName(code), message, details: [] }) + '\n';
  return new LocalReply(status, flag, message, { body, grpcStatus: code, headers: { 'content-type': 'application/json', ...headers } });
}

function jsonBody(code: number, message: string): string {
  return JSON.stringify({ code, status: grpcStatusName(code), message, details: [] }) + '\n';
}

class Transcoded implements ResponseSink, UpstreamCall {
  private inner: UpstreamCall | undefined;
  private gone = false;
  private ndjson = false;
  private decoder: MessageDecoder;
  private httpStatus = 0;
  private respHeaders: Headers = {};
  private readonly unary: unknown[] = [];
  private streamed = 0;
  private started = false;
  private done = false;

  constructor(
    private readonly ctx: StackContext,
    private readonly tc: CompiledTranscoding,
    private readonly b: Binding,
    private readonly call: MeshCall,
    private readonly sink: ResponseSink,
  ) {
    this.decoder = new MessageDecoder(tc.maxResponseBytes);
  }

  start(next: Handler, vars: string[], query: string): void {
    readBody(this.call.body, this.tc.maxRequestBytes, (err, body) => {
      if (this.gone) return;
      if (err) {
        const tooLarge = err.message.startsWith('request body');
        return this.reply(jsonReply(tooLarge ? 413 : 400, GrpcStatus.INVALID_ARGUMENT, err.message, Flags.DownstreamProtocolError));
      }
      let message: Uint8Array;
      const b = this.b;
      try {
        let json: unknown;
        const text = (body as Buffer).toString('utf8').trim();
        if (text !== '') {
          if (!b.hasBody) throw new JsonMappingError('', `${b.describe} takes no request body`);
          try {
            json = JSON.parse(text);
          } catch (e) {
            throw new JsonMappingError('', `malformed JSON body: ${(e as Error).message}`);
          }
        }
        message = b.encodeRequest(vars, query, json);
      } catch (e) {
        if (!(e instanceof JsonMappingError)) this.ctx.logger.warn({ err: e, method: b.grpcPath }, 'could not encode a transcoded request');
        return this.reply(jsonReply(400, GrpcStatus.INVALID_ARGUMENT, `invalid request for ${b.grpcPath}: ${(e as Error).message}`, Flags.DownstreamProtocolError));
      }
      const call = this.call;
      this.ndjson = b.serverStreaming && (call.view?.header('accept') ?? '').includes(NDJSON);
      const headers: string[] = [];
      const h = call.headers;
      for (let i = 0; i < h.length; i += 2) if (!NOT_METADATA.has(h[i] as string)) headers.push(h[i] as string, h[i + 1] as string);
      headers.push('content-type', 'application/grpc', 'te', 'trailers', 'grpc-accept-encoding', 'identity');
      // From here down it is a gRPC call.
      call.kind = 'transcode';
      call.method = 'POST';
      call.path = b.grpcPath;
      call.headers = headers;
      call.body = Readable.from([encodeFrame(message)], { objectMode: false });
      this.inner = next(call, this);
    });
  }

  private reply(r: LocalReply): void {
    if (this.done) return;
    this.done = true;
    this.call.grpcStatus = r.extra?.grpcStatus ?? -1;
    this.sink.onError(r, false);
  }

  abort(reason?: Error): void {
    this.gone = true;
    this.done = true;
    this.inner?.abort(reason);
  }
  resume(): void {
    this.inner?.resume();
  }

  private passHeaders(h: Headers | undefined, into: Headers): void {
    if (!h) return;
    for (const k in h) {
      if (k.charCodeAt(0) === 58 || RESERVED.has(k) || isHopByHop(k) || k.endsWith('-bin')) continue;
      into[k] = h[k] as string | string[];
    }
  }

  private startStream(): void {
    if (this.started) return;
    this.started = true;
    const out: Headers = {};
    this.passHeaders(this.respHeaders, out);
    out['content-type'] = this.ndjson ? NDJSON : 'application/json';
    this.sink.onResponse(200, out);
    if (!this.ndjson) this.sink.onData(Buffer.from('['));
  }

  /** The response cannot be read (too large, compressed, undecodable): cancel the call and say so. */
  private abortWith(err: Error): void {
    if (this.done) return;
    this.done = true;
    const e = new MeshError('MESH_UPSTREAM_RESET', err.message);
    this.inner?.abort(e);
    this.call.grpcStatus = GrpcStatus.INTERNAL;
    if (this.started) return this.sink.onError(e, true);
    this.sink.onError(jsonReply(502, GrpcStatus.INTERNAL, err.message, Flags.UpstreamReset), false);
  }

  onResponse(status: number, h: Headers): void {
    this.httpStatus = status;
    this.respHeaders = h;
  }

  onData(chunk: Buffer): boolean {
    if (this.done || this.httpStatus !== 200) return true;
    let msgs: Buffer[];
    try {
      msgs = this.decoder.push(chunk);
    } catch (e) {
      this.abortWith(e as Error);
      return true;
    }
    let ok = true;
    for (const m of msgs) {
      let json: unknown;
      try {
        json = this.b.decodeResponse(m);
      } catch (e) {
        this.abortWith(new Error(`could not decode the response message: ${(e as Error).message}`));
        return true;
      }
      if (!this.b.serverStreaming) {
        this.unary.push(json);
        continue;
      }
      this.startStream();
      ok = this.sink.onData(Buffer.from(this.ndjson ? JSON.stringify(json) + '\n' : (this.streamed > 0 ? ',' : '') + JSON.stringify(json)));
      this.streamed++;
    }
    return ok;
  }

  onEnd(trailers: Headers | undefined): void {
    if (this.done) return;
    this.done = true;
    const rh = this.respHeaders;
    const raw = trailers?.['grpc-status'] ?? rh['grpc-status'];
    const grpcMessage = decodeGrpcMessage(String(trailers?.['grpc-message'] ?? rh['grpc-message'] ?? ''));
    const hs = this.httpStatus;
    let code: number = raw === undefined ? (hs === 200 ? GrpcStatus.INTERNAL : httpToGrpcStatus(hs)) : Number(raw);
    let text = raw === undefined ? (hs === 200 ? 'upstream response carried no grpc-status' : `upstream answered HTTP ${hs}`) : grpcMessage;
    if (code === GrpcStatus.OK) {
      let failed: Error | undefined;
      try {
        this.decoder.end();
      } catch (e) {
        failed = e as Error;
      }
      if (failed) {
        code = GrpcStatus.INTERNAL;
        text = failed.message;
      } else if (!this.b.serverStreaming && this.unary.length !== 1) {
        code = GrpcStatus.INTERNAL;
        text = `a unary method answered ${this.unary.length} messages`;
      }
    }
    this.call.grpcStatus = code;
    const sink = this.sink;
    if (code === GrpcStatus.OK) {
      if (this.b.serverStreaming) {
        this.startStream();
        if (!this.ndjson) sink.onData(Buffer.from(']'));
        return sink.onEnd(undefined);
      }
      const out: Headers = {};
      this.passHeaders(rh, out);
      this.passHeaders(trailers, out);
      const body = Buffer.from(JSON.stringify(this.unary[0]) + '\n');
      out['content-type'] = 'application/json';
      out['content-length'] = String(body.length);
      sink.onResponse(200, out);
      sink.onData(body);
      return sink.onEnd(undefined);
    }
    const status = grpcToHttpStatus(code);
    if (this.started) {
      // A stream failed after it started: NDJSON can say so in a last line; a JSON array cannot.
      if (this.ndjson) {
        sink.onData(Buffer.from(JSON.stringify({ error: { code, status: grpcStatusName(code), message: text } }) + '\n'));
        return sink.onEnd(undefined);
      }
      return sink.onError(new MeshError('MESH_UPSTREAM_RESET', text), true);
    }
    // The app's gRPC status, as its HTTP status and JSON body (an upstream answer, not the mesh's).
    const body = Buffer.from(jsonBody(code, text));
    sink.onResponse(status, { 'content-type': 'application/json', 'content-length': String(body.length) });
    sink.onData(body);
    sink.onEnd(undefined);
  }

  onError(err: Error, started: boolean): void {
    if (this.done) return;
    this.done = true;
    if (this.started) return this.sink.onError(err, true);
    const e = err instanceof MeshError ? err : new MeshError('MESH_UPSTREAM_RESET', err.message);
    const code = e.status === 504 ? GrpcStatus.DEADLINE_EXCEEDED : GrpcStatus.UNAVAILABLE;
    this.call.grpcStatus = code;
    void started;
    this.sink.onError(jsonReply(e.status, code, e.message, e.flag), false);
  }
}

/** The whole request body, up to `max` bytes; a larger one is read to its end and refused. */
function readBody(s: Readable | null, max: number, done: (err: Error | undefined, body?: Buffer) => void): void {
  if (!s) return done(undefined, Buffer.alloc(0));
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  let called = false;
  const once = (err: Error | undefined, body?: Buffer): void => {
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
