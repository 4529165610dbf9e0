/**
 * gRPC message sizes: follows message boundaries both ways (framing.ts's MessageSizeGuard, which
 * never buffers a message) and stops a message over the route's `maxMessageBytes` (default 4 MiB)
 * with RESOURCE_EXHAUSTED before any of it is forwarded. Request bodies that cannot be decoded (a
 * gRPC-Web text body with broken base64) end the call with INTERNAL. Other kinds pass untouched.
 */
import { Transform, type Readable } from 'node:stream';
import { Flags } from '../core/errors';
import { LocalReply, type Layer } from '../core/layer';
import { DEFAULT_MAX_MESSAGE_BYTES, MessageSizeGuard } from '../grpc/framing';
import { dropBody } from '../http/h2-server';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import { isGrpcKind } from './profile';

const RESOURCE_EXHAUSTED = 8;

export function grpcMessagesLayer(maxBytes: number | undefined): Layer {
  const max = maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  return (next) => (call, sink) => {
    if (!isGrpcKind(call.kind) || call.kind === 'transcode') return next(call, sink);
    const g = new Guarded(sink, max);
    if (call.body) call.body = g.guardRequest(call.body);
    g.inner = next(call, g);
    return g;
  };
}

class Guarded implements ResponseSink, UpstreamCall {
  inner: UpstreamCall | undefined;
  private started = false;
  private done = false;
  private readonly resp: MessageSizeGuard;
  constructor(
    private readonly sink: ResponseSink,
    private readonly max: number,
  ) {
    this.resp = new MessageSizeGuard(max);
  }

  guardRequest(src: Readable): Readable {
    const max = this.max;
    const guard = new MessageSizeGuard(max);
    const stop = (reply: LocalReply): void => {
      if (this.done) return;
      this.done = true;
      this.inner?.abort(reply);
      dropBody(src);
      this.sink.onError(reply, this.started);
    };
    src.on('error', (err) => {
      if (err instanceof LocalReply) stop(err);
    });
    const out = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        const r = guard.push(chunk);
        if (r.out.length > 0) this.push(r.out);
        if (r.tooLarge !== undefined) stop(new LocalReply(200, Flags.DownstreamProtocolError, `request message of ${r.tooLarge} bytes is over the limit of ${max} bytes`, { grpcStatus: RESOURCE_EXHAUSTED }));
        cb();
      },
    });
    src.pipe(out);
    return out;
  }

  abort(reason?: Error): void {
    this.done = true;
    this.inner?.abort(reason);
  }
  resume(): void {
    this.inner?.resume();
  }
  onResponse(status: number, headers: Headers): void {
    if (this.done) return;
    if (headers['grpc-status'] === undefined || status !== 200) this.started = true;
    this.sink.onResponse(status, headers);
  }
  onData(chunk: Buffer): boolean {
    if (this.done) return true;
    const r = this.resp.push(chunk);
    let ok = true;
    if (r.out.length > 0) ok = this.sink.onData(r.out);
    if (r.tooLarge !== undefined) {
      this.done = true;
      const reply = new LocalReply(200, Flags.UpstreamReset, `response message of ${r.tooLarge} bytes is over the limit of ${this.max} bytes`, { grpcStatus: RESOURCE_EXHAUSTED });
      this.inner?.abort(reply);
      this.sink.onError(reply, this.started);
      return true;
    }
    return ok;
  }
  onEnd(trailers: Headers | undefined): void {
    if (this.done) return;
    this.done = true;
    this.sink.onEnd(trailers);
  }
  onError(err: Error, started: boolean): void {
    if (this.done) return;
    this.done = true;
    this.sink.onError(err, started);
  }
}
