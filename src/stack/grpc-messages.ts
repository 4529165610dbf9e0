/**
 * gRPC message sizes: follows message boundaries both ways (framing.ts's MessageSizeGuard, which
 * never buffers a message) and stops a message over the route's `maxMessageBytes` (default 4 MiB)
 * with RESOURCE_EXHAUSTED before any of it is forwarded. Request bodies that cannot be decoded (a
 * gRPC-Web text body with broken base64) end the call with INTERNAL. Other kinds pass untouched.
 *
 * Hot path: an HTTP/2 request body is guarded in place, as node pushes its chunks (no Transform
 * and pipe per call: docs/performance.md); listeners are shared functions that find the guard on
 * the body.
 */
import { Transform, type Readable } from 'node:stream';
import { Flags } from '../core/errors';
import { LocalReply, type Layer } from '../core/layer';
import { DEFAULT_MAX_MESSAGE_BYTES, MessageSizeGuard } from '../grpc/framing';
import { dropBody, filterBody, type BodyFilter } from '../http/h2-server';
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

const GUARDED = Symbol('meshlet.grpcGuard');
type Guardable = Readable & { [GUARDED]?: Guarded };

/** A LocalReply the request body failed with (a broken gRPC-Web text body) ends the call with it. */
function onSourceError(this: Guardable, err: Error): void {
  if (err instanceof LocalReply) this[GUARDED]?.stop(err);
}

class Guarded implements ResponseSink, UpstreamCall, BodyFilter {
  inner: UpstreamCall | undefined;
  private started = false;
  private done = false;
  private readonly resp: MessageSizeGuard;
  private src: Readable | undefined;
  private req: MessageSizeGuard | undefined;
  /** Set by `filter` when a request message is over the limit; acted on in `afterPush`. */
  private tooLarge: number | undefined;
  constructor(
    private readonly sink: ResponseSink,
    private readonly max: number,
  ) {
    this.resp = new MessageSizeGuard(max);
  }

  /**
   * The request body, guarded. An HTTP/2 request stream is filtered in place as node pushes its
   * chunks (h2-server.ts `filterBody`: no Transform, no second pipe per call); any other body, or
   * one whose buffered chunks cannot pass whole, goes through a Transform.
   */
  guardRequest(src: Readable): Readable {
    this.src = src;
    const g = src as Guardable;
    if (g[GUARDED] === undefined) {
      g[GUARDED] = this;
      src.on('error', onSourceError);
    } else {
      src.on('error', (err) => {
        if (err instanceof LocalReply) this.stop(err);
      });
    }
    this.req = new MessageSizeGuard(this.max);
    if (filterBody(src, this)) return src;
    // What the check of the buffered chunks saw is seen again by the Transform's guard.
    this.tooLarge = undefined;
    const guard = (this.req = new MessageSizeGuard(this.max));
    const self = this;
    const out = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        const r = guard.push(chunk);
        if (r.out.length > 0) this.push(r.out);
        if (r.tooLarge !== undefined) self.requestTooLarge(r.tooLarge);
        cb();
      },
    });
    src.pipe(out);
    return out;
  }

  /** BodyFilter: what may be forwarded of a request chunk (h2-server.ts). */
  filter(chunk: Buffer): Buffer {
    const r = (this.req as MessageSizeGuard).push(chunk);
    if (r.tooLarge !== undefined) this.tooLarge = r.tooLarge;
    return r.out;
  }

  afterPush(): void {
    const n = this.tooLarge;
    if (n !== undefined) {
      this.tooLarge = undefined;
      this.requestTooLarge(n);
    }
  }

  private requestTooLarge(n: number): void {
    this.stop(new LocalReply(200, Flags.DownstreamProtocolError, `request message of ${n} bytes is over the limit of ${this.max} bytes`, { grpcStatus: RESOURCE_EXHAUSTED }));
  }

  stop(reply: LocalReply): void {
    if (this.done) return;
    this.done = true;
    this.inner?.abort(reply);
    if (this.src) dropBody(this.src);
    this.sink.onError(reply, this.started);
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
