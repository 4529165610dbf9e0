/**
 * The route's circuit breaker: refuses calls while open (503 CO, UNAVAILABLE to gRPC clients) and
 * records every call's outcome (profile.ts says what success is for each protocol) and duration.
 */
import { Flags, MeshError } from '../core/errors';
import { LocalReply, NOOP_CALL, type Layer, type MeshCall } from '../core/layer';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import type { CompiledRule } from '../policy/compiled';
import type { CircuitBreaker } from '../resilience/breaker';
import type { StackContext } from './context';
import { callSucceeded, grpcStatusOf } from './profile';

export function breakerLayer(ctx: StackContext, rule: CompiledRule): Layer {
  return (next) => (call, sink) => {
    const breaker = ctx.resilience.breaker(rule);
    // A WebSocket tunnel has no call outcome.
    if (!breaker || call.kind === 'websocket') return next(call, sink);
    if (!breaker.allow()) {
      sink.onError(new MeshError('MESH_BREAKER_OPEN', rule.statName), false);
      return NOOP_CALL;
    }
    const b = new Guarded(ctx, breaker, call, sink);
    b.inner = next(call, b);
    return b;
  };
}

class Guarded implements ResponseSink, UpstreamCall {
  inner: UpstreamCall | undefined;
  private readonly t0: number;
  private status = 0;
  private grpc = -1;
  private done = false;
  constructor(
    private readonly ctx: StackContext,
    private readonly breaker: CircuitBreaker,
    private readonly call: MeshCall,
    private readonly sink: ResponseSink,
  ) {
    this.t0 = ctx.clock.monotonic();
  }
  private record(status: number, flag: string | undefined, grpc: number): void {
    if (this.done) return;
    this.done = true;
    const g = this.call.grpcStatus >= 0 ? this.call.grpcStatus : grpc;
    this.breaker.record(callSucceeded(this.call.kind, status, flag, g), this.ctx.clock.monotonic() - this.t0);
  }
  abort(reason?: Error): void {
    const r = reason as Partial<MeshError> | undefined;
    if (reason instanceof MeshError || reason instanceof LocalReply) this.record(r?.status ?? 502, r?.flag, -1);
    else this.record(499, Flags.DownstreamClosed, -1);
    this.inner?.abort(reason);
  }
  resume(): void {
    this.inner?.resume();
  }
  onResponse(status: number, headers: Headers): void {
    this.status = status;
    this.grpc = grpcStatusOf(headers);
    this.sink.onResponse(status, headers);
  }
  onData(chunk: Buffer): boolean {
    return this.sink.onData(chunk);
  }
  onEnd(trailers: Headers | undefined): void {
    const g = grpcStatusOf(trailers);
    this.record(this.status, undefined, g >= 0 ? g : this.grpc);
    this.sink.onEnd(trailers);
  }
  onError(err: Error, started: boolean): void {
    const e = err as Partial<MeshError>;
    this.record(started ? this.status || 502 : (e.status ?? 502), e.flag ?? Flags.UpstreamReset, -1);
    this.sink.onError(err, started);
  }
}
