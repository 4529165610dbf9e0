/**
 * The gRPC front adapter: the top sink of the stack for gRPC and gRPC-Web calls, and the one place
 * a mesh error becomes a gRPC status: trailers-only (one HEADERS frame with END_STREAM; for
 * gRPC-Web its trailer frame) with the same `x-meshlet-flags` an HTTP client would get, or status
 * trailers when messages were already sent. Trailers-only answers from upstream stay
 * trailers-only; an upstream that reset the stream resets the client's with the same HTTP/2 code.
 */
import * as http2 from 'node:http2';
import type { Flag } from '../core/errors';
import { LocalReply, NOOP_CALL, type Handler, type MeshCall } from '../core/layer';
import { NativeDownstream, type GrpcDownstream } from '../grpc/downstream';
import { FLAG_STATUS, Status, statusFromRstCode, type StatusCode } from '../grpc/status';
import { WebDownstream } from '../grpc/web';
import { dropBody, type H2Response, type ResponseFollower } from '../http/h2-server';
import { isHopByHop } from '../http/headers';
import type { DownstreamRequest, DownstreamResponse } from '../http/listener';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import type { StackContext } from './context';
import { failedCall } from './respond-http';

export class GrpcResponder implements ResponseSink, ResponseFollower {
  upstream: UpstreamCall = NOOP_CALL;
  private finished = false;
  private trailersOnly: Headers | undefined;
  readonly down: GrpcDownstream;

  constructor(
    private readonly ctx: StackContext,
    private readonly call: MeshCall,
    res: DownstreamResponse,
    req: { header(name: string): string | undefined },
  ) {
    this.down = call.kind === 'grpc-web' ? new WebDownstream(req, res, () => call.rule?.grpc) : new NativeDownstream(res as H2Response);
  }

  run(stack: Handler): void {
    this.down.follow(this);
    this.upstream = stack(this.call, this);
  }

  downstreamDrain(): void {
    this.upstream.resume();
  }

  downstreamClose(): void {
    if (this.finished) return;
    // The client cancelled (or went away): cancel upstream too.
    this.finished = true;
    this.upstream.abort();
    if (this.call.body) dropBody(this.call.body);
  }

  onResponse(status: number, h: Headers): void {
    if (h['grpc-status'] !== undefined && status === 200) {
      // Trailers-only: the status is in the headers; answered so at the end.
      this.trailersOnly = h;
      return;
    }
    const o = clean(h);
    this.call.responseEdits?.apply(o);
    this.down.headers(status, o);
  }

  onData(chunk: Buffer): boolean {
    if (this.trailersOnly || this.finished) return true;
    return this.down.write(chunk);
  }

  onEnd(trailers: Headers | undefined): void {
    if (this.finished) return;
    this.finished = true;
    const only = this.trailersOnly;
    if (only) {
      const t = clean(only);
      this.call.responseEdits?.apply(t);
      const code = Number(t['grpc-status']) as StatusCode;
      const { 'grpc-status': _s, 'grpc-message': msg, 'content-type': _c, ...rest } = t;
      this.down.fail(code, decodeMessage(msg), this.call.flags || undefined, rest);
      return;
    }
    this.down.end(trailers ? clean(trailers) : undefined);
  }

  onError(err: Error, started: boolean): void {
    if (this.finished) return;
    this.finished = true;
    const { reply, flags } = failedCall(this.ctx, this.call, err);
    const cause = ((err as { cause?: unknown }).cause ?? err) as { rstCode?: number; connectionLost?: boolean };
    const rst = cause.rstCode;
    if (rst !== undefined && rst !== http2.constants.NGHTTP2_REFUSED_STREAM && !cause.connectionLost) {
      // The upstream reset the stream (it cancelled the call): the client sees the same.
      if (this.call.kind === 'grpc-web') this.down.fail(statusFromRstCode(rst), `upstream reset the stream (HTTP/2 error ${rst})`, flags || undefined);
      else this.down.reset(rst);
      return;
    }
    this.down.fail(grpcStatusOf(reply), reply.message, flags || undefined);
    void started;
  }
}

/** The gRPC status of a mesh error. */
export function grpcStatusOf(reply: LocalReply | { status: number; flag?: string }): StatusCode {
  if (reply instanceof LocalReply && reply.extra?.grpcStatus !== undefined) return reply.extra.grpcStatus as StatusCode;
  const byFlag = reply.flag ? FLAG_STATUS[reply.flag as Flag] : undefined;
  if (byFlag !== undefined) return byFlag;
  const s = reply.status;
  return s === 504 ? Status.DEADLINE_EXCEEDED : s === 429 ? Status.RESOURCE_EXHAUSTED : Status.UNAVAILABLE;
}

/** Upstream response headers or trailers, cleaned for the client: no pseudo or hop-by-hop headers. */
function clean(h: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in h) {
    if (name.charCodeAt(0) === 58 || isHopByHop(name)) continue;
    out[name] = h[name] as string | string[];
  }
  return out;
}

function decodeMessage(v: string | string[] | undefined): string {
  const s = Array.isArray(v) ? v.join(', ') : (v ?? '');
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** A mesh-made error for a gRPC or gRPC-Web request that never reached a stack (bad target...). */
export function replyGrpc(res: DownstreamResponse, req: DownstreamRequest, kind: 'grpc' | 'grpc-web', reply: LocalReply | { status: number; flag?: string; message: string }): void {
  const down: GrpcDownstream = kind === 'grpc-web' ? new WebDownstream({ header: (n) => headerOf(req, n) }, res, () => undefined) : new NativeDownstream(res as H2Response);
  down.fail(grpcStatusOf(reply), reply.message, reply.flag);
}

function headerOf(req: DownstreamRequest, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : Array.isArray(v) ? v.join(', ') : undefined;
}
