/**
 * The deadline: the route's timeout, or the gRPC client's `grpc-timeout` when shorter. When it
 * passes, the call is cancelled upstream and answered UT (504, or DEADLINE_EXCEEDED to gRPC
 * clients); a response already streaming is cut (HTTP) or ended with DEADLINE_EXCEEDED trailers
 * (gRPC). The upstream gets the time left (`grpc-timeout` rewritten on every try by the
 * dispatcher), not the client's original figure; gRPC calls with a route timeout get one.
 */
import { Flags, MeshError } from '../core/errors';
import { LocalReply, NOOP_CALL, type Layer, type MeshCall } from '../core/layer';
import { Expiring, timeoutsOf, type Timeouts } from '../core/timeouts';
import { parseGrpcTimeout } from '../grpc/timeout';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import type { StackContext } from './context';
import { isGrpcKind } from './profile';

const INTERNAL = 13;
/** The `grpc-timeout` pair a gRPC call without one gets (its value set per try by the dispatcher). */
const GRPC_TIMEOUT_SLOT: readonly string[] = ['grpc-timeout', ''];

export function deadlineLayer(ctx: StackContext, routeTimeoutMs: number | undefined): Layer {
  const timeouts = timeoutsOf(ctx.clock);
  return (next) => (call, sink) => {
    // A WebSocket tunnel lives as long as it is used (its idle timeout), not a request's deadline.
    if (call.kind === 'websocket') return next(call, sink);
    let ms = routeTimeoutMs ?? 0;
    const h = call.headers;
    for (let i = 0; i < h.length; i += 2)
      if (h[i] === 'grpc-timeout') {
        const g = parseGrpcTimeout(h[i + 1] as string);
        if (g instanceof Error) {
          if (isGrpcKind(call.kind)) {
            sink.onError(new LocalReply(200, Flags.DownstreamProtocolError, g.message, { grpcStatus: INTERNAL }), false);
            return NOOP_CALL;
          }
        } else if (ms === 0 || g < ms) ms = Math.max(1, g);
        call.grpcTimeoutAt = i + 1;
        break;
      }
    if (ms <= 0) return next(call, sink);
    if (call.grpcTimeoutAt < 0 && isGrpcKind(call.kind)) {
      // One exact-size copy (a spread grows its result as it iterates): the call's array may be
      // shared with a mirrored copy of the call, so it is not extended in place.
      call.headers = h.concat(GRPC_TIMEOUT_SLOT);
      call.grpcTimeoutAt = call.headers.length - 1;
    }
    return new Deadline(ctx, timeouts, call, sink, ms).start(next);
  };
}

/** The deadline of one call: its own timeout (timeouts.ts), so starting one allocates nothing more. */
class Deadline extends Expiring implements ResponseSink, UpstreamCall {
  private inner: UpstreamCall | undefined;
  private started = false;
  private done = false;

  constructor(
    private readonly ctx: StackContext,
    private readonly timeouts: Timeouts,
    private readonly call: MeshCall,
    private readonly sink: ResponseSink,
    private readonly ms: number,
  ) {
    super();
  }

  start(next: (c: MeshCall, s: ResponseSink) => UpstreamCall): UpstreamCall {
    const now = this.ctx.clock.monotonic();
    this.call.deadline = now + this.ms;
    this.timeouts.start(this, this.ms, now);
    this.inner = next(this.call, this);
    return this;
  }

  expire(): void {
    if (this.done) return;
    this.done = true;
    this.inner?.abort(new MeshError('MESH_UPSTREAM_TIMEOUT', 'deadline'));
    this.ctx.stats.metrics.timeout(this.call.destination || 'app');
    this.sink.onError(new MeshError('MESH_UPSTREAM_TIMEOUT', isGrpcKind(this.call.kind) ? 'deadline exceeded in the mesh' : `request timeout ${this.ms}ms`), this.started);
  }

  private end(): void {
    this.done = true;
    this.timeouts.cancel(this);
  }

  abort(reason?: Error): void {
    if (this.done) return;
    this.end();
    this.inner?.abort(reason);
  }
  resume(): void {
    this.inner?.resume();
  }
  onResponse(status: number, headers: Headers): void {
    if (this.done) return;
    this.started = true;
    this.sink.onResponse(status, headers);
  }
  onData(chunk: Buffer): boolean {
    return this.done ? true : this.sink.onData(chunk);
  }
  onEnd(trailers: Headers | undefined): void {
    if (this.done) return;
    this.end();
    this.sink.onEnd(trailers);
  }
  onError(err: Error, started: boolean): void {
    if (this.done) return;
    this.end();
    this.sink.onError(err, started);
  }
}
