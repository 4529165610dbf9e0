/**
 * The HTTP front adapter: the top sink of the stack for HTTP/1.1 and HTTP/2 requests, and the one
 * place a mesh error becomes an HTTP response (status, plain-text body, `x-meshlet-flags` with the
 * flags the call earned). A response that already started and then fails is cut (connection
 * closed, or the HTTP/2 stream reset): the only honest signal left.
 */
import * as http2 from 'node:http2';
import { FLAG_HEADER, Flags, MeshError } from '../core/errors';
import { LocalReply, NOOP_CALL, type Handler, type MeshCall } from '../core/layer';
import { connectionDrops, forwardResponseFields, forwardResponseHeaders } from '../http/headers';
import { H1Response } from '../http/h1-server';
import { followResponse, trailersPossible, type H2Response, type ResponseFollower } from '../http/h2-server';
import type { DownstreamResponse } from '../http/listener';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import type { StackContext } from './context';

export class HttpResponder implements ResponseSink, ResponseFollower {
  upstream: UpstreamCall = NOOP_CALL;
  private finished = false;

  constructor(
    private readonly ctx: StackContext,
    private readonly call: MeshCall,
    private readonly res: DownstreamResponse,
  ) {}

  /** Runs the call through a stack, following the client (backpressure, going away). */
  run(stack: Handler): void {
    followResponse(this.res, this);
    this.upstream = stack(this.call, this);
  }

  downstreamDrain(): void {
    this.upstream.resume();
  }

  downstreamClose(): void {
    if (this.finished) return;
    // The client went away (or its stream was reset): cancel upstream too.
    this.finished = true;
    this.upstream.abort();
  }

  onResponse(status: number, h: Headers): void {
    const res = this.res;
    if (!this.call.responseEdits) {
      if (this.call.version === '2') {
        if (this.respondFields(status, h)) return;
      } else if (res instanceof H1Response) {
        // HTTP/1.1: the head straight from the upstream's object (no cleaned copy in between).
        if (res.headersSent || res.destroyed) return;
        res.writeForwardedHead(status, h, this.ctx.via.h1, this.call.flags, connectionDrops(h));
        return;
      }
    }
    const out = forwardResponseHeaders(h, this.call.version === '2' ? this.ctx.via.h2 : this.ctx.via.h1);
    if (this.call.responseEdits) this.call.responseEdits.apply(out);
    const flags = this.call.flags;
    if (flags) {
      const prev = out[FLAG_HEADER];
      out[FLAG_HEADER] = prev !== undefined && prev.length > 0 ? `${String(prev)},${flags}` : flags;
    }
    if (res.headersSent || res.destroyed) return;
    try {
      if (this.call.version === '2') {
        // HTTP/2: the head as built, straight to the stream's respond() (h2-server.ts). Trailers
        // are asked for only when this response can have them (an HTTP/2 or chunked HTTP/1.1
        // upstream); the ones addTrailers() collects (onEnd) go out when the stream asks.
        const h2 = res as H2Response;
        if (h2.stream.closed || h2.stream.destroyed) return;
        out[':status'] = String(status);
        h2.respond(out, trailersPossible(h));
      } else res.writeHead(status, out as never);
    } catch (err) {
      this.invalidHead(err);
    }
  }

  /**
   * HTTP/2 on meshlet's own framing, no response edits: the head straight to its field list, no
   * header object (forwardResponseFields). False when that path does not apply (node's framing,
   * a head it leaves to the object path): nothing was done then.
   */
  private respondFields(status: number, h: Headers): boolean {
    const res = this.res as H2Response;
    if (!res.takesFields) return false;
    const head = forwardResponseFields(h, status, this.ctx.via.h2, this.call.flags);
    if (head === undefined) return false;
    if (res.headersSent || res.destroyed || res.stream.closed) return true;
    try {
      res.respondFields(head.fields, status, head.contentLength, trailersPossible(h));
    } catch (err) {
      this.invalidHead(err);
    }
    return true;
  }

  /** The upstream's head cannot be sent downstream: the upstream is let go, the client gets a 502. */
  private invalidHead(err: unknown): void {
    this.ctx.logger.debug({ err }, 'invalid upstream response header');
    this.finished = true;
    this.upstream.abort(new MeshError('MESH_UPSTREAM_RESET', 'invalid response header'));
    sendLocalRaw(this.res, 502, Flags.UpstreamReset, 'upstream sent an invalid response header');
  }

  onData(chunk: Buffer): boolean {
    const res = this.res;
    if (res.destroyed || this.finished) return true;
    return (res as { write(c: Buffer): boolean }).write(chunk);
  }

  onEnd(trailers: Headers | undefined): void {
    if (this.finished) return;
    this.finished = true;
    const res = this.res;
    if (trailers && this.call.version === '2') {
      // A response whose head did not ask for trailers (an HTTP/1.1 response with a length)
      // cannot get any from upstream; were some handed here, they would be dropped.
      if (!(res as H2Response).trailersAsked) {
        this.ctx.logger.debug('upstream trailers dropped: the response head did not ask for them');
      } else {
        try {
          (res as H2Response).addTrailers(trailers as never);
        } catch {
          // invalid trailer names: drop them
        }
      }
    }
    res.end();
  }

  onError(err: Error, started: boolean): void {
    if (this.finished) return;
    this.finished = true;
    const { reply, flags } = failedCall(this.ctx, this.call, err);
    if (started) return resetDownstream(this.res);
    writeReply(this.res, reply, flags);
  }
}

/** Any error as the status, flag and text of the answer. */
/** The response flags of a call that ended in `reply`: the reply's own first, then what the call collected. */
export function replyFlags(reply: LocalReply | MeshError, call: MeshCall): string {
  return reply.flag ? (call.flags ? `${reply.flag},${call.flags}` : reply.flag) : call.flags;
}

export function asReply(err: Error): LocalReply | MeshError {
  if (err instanceof LocalReply || err instanceof MeshError) return err;
  return new MeshError('MESH_UPSTREAM_RESET', (err as { code?: string }).code ?? err.message);
}

/** A call that failed: its answer and flags, counted here when no observe layer saw the call. */
export function failedCall(ctx: StackContext, call: MeshCall, err: Error): { reply: LocalReply | MeshError; flags: string } {
  const reply = asReply(err);
  const flags = replyFlags(reply, call);
  if (!call.obs) countUnobserved(ctx, call, reply, flags);
  return { reply, flags };
}

/** A mesh answer to a call no observe layer saw (no route, rate limited, breaker open...). */
export function countUnobserved(ctx: StackContext, call: MeshCall, reply: LocalReply | MeshError, flags: string): void {
  const uncounted = reply instanceof LocalReply && reply.extra?.uncountedFlag;
  ctx.stats.record(call.direction, reply.status, uncounted ? undefined : flags || undefined);
  call.decision?.finish(call.decisionSeq, reply.status, flags || undefined, undefined, reply instanceof LocalReply ? (reply.extra?.grpcStatus ?? -1) : -1);
}

export function writeReply(res: DownstreamResponse, reply: LocalReply | MeshError, flags: string): void {
  if (res.headersSent || res.destroyed) return resetDownstream(res);
  const extra = reply instanceof LocalReply ? reply.extra : undefined;
  if (extra?.empty) {
    const h: Record<string, string> = { 'content-length': '0', ...extra.headers };
    if (flags) h[FLAG_HEADER] = flags;
    res.writeHead(reply.status, h as never);
    res.end();
    return;
  }
  if (extra?.body !== undefined) {
    const h: Record<string, string> = { ...extra.headers, 'content-length': String(Buffer.byteLength(extra.body)) };
    if (flags) h[FLAG_HEADER] = flags;
    res.writeHead(reply.status, h as never);
    res.end(extra.body);
    return;
  }
  sendLocalRaw(res, reply.status, flags, reply.message, extra?.headers);
}

export function resetDownstream(res: DownstreamResponse): void {
  const stream = (res as H2Response).stream;
  if (stream && typeof stream.close === 'function') {
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  (res as { destroy(): void }).destroy();
}

/** A response the mesh makes itself (plain text, with its flags). */
export function sendLocalRaw(res: DownstreamResponse, status: number, flag: string, text: string, extra?: Record<string, string>): void {
  if (res.headersSent || res.destroyed) {
    resetDownstream(res);
    return;
  }
  const body = `${text}\n`;
  const h: Record<string, string> = {
    ...extra,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
  };
  if (flag) h[FLAG_HEADER] = flag;
  res.writeHead(status, h as never);
  res.end(body);
}
