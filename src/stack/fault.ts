/**
 * Fault injection (the rule's `fault`): an abort answered here with its status (or a trailers-only
 * gRPC status), flag FI; a delay holds the request, flag DI, and a client that leaves meanwhile is
 * counted (499 DI,DC), not forwarded.
 */
import { Flags } from '../core/errors';
import type { Timer } from '../core/clock';
import { LocalReply, NOOP_CALL, type Layer, type MeshCall } from '../core/layer';
import type { ResponseSink, UpstreamCall } from '../http/upstream-types';
import type { FaultInjection, RequestView } from '../policy';
import { decideFault } from '../resilience/fault';
import type { StackContext } from './context';

export function faultLayer(ctx: StackContext, fault: FaultInjection): Layer {
  return (next) => (call, sink) => {
    const f = decideFault(fault, call.view as RequestView, ctx.random);
    if (f.abort) {
      const g = f.abort.grpcStatus;
      const reply =
        g !== undefined
          ? new LocalReply(200, Flags.FaultAbort, 'fault injected', { grpcStatus: g, empty: true, headers: { 'content-type': 'application/grpc', 'grpc-status': String(g), 'grpc-message': 'fault injected' } })
          : new LocalReply(f.abort.httpStatus ?? 503, Flags.FaultAbort, 'fault injected');
      sink.onError(reply, false);
      return NOOP_CALL;
    }
    if (f.delayMs > 0) return new Delayed(ctx, call, sink, next, f.delayMs);
    return next(call, sink);
  };
}

class Delayed implements UpstreamCall {
  private inner: UpstreamCall | undefined;
  private timer: Timer | undefined;
  constructor(
    private readonly ctx: StackContext,
    private readonly call: MeshCall,
    sink: ResponseSink,
    next: (c: MeshCall, s: ResponseSink) => UpstreamCall,
    ms: number,
  ) {
    call.addFlag(Flags.FaultDelay);
    this.timer = ctx.clock.setTimeout(() => {
      this.timer = undefined;
      this.inner = next(call, sink);
    }, ms);
  }
  abort(reason?: Error): void {
    if (this.timer) {
      this.timer.cancel();
      this.timer = undefined;
      this.ctx.stats.record('outbound', 499, `${Flags.FaultDelay},${Flags.DownstreamClosed}`);
      this.call.decision?.finish(this.call.decisionSeq, 499, `${Flags.FaultDelay},${Flags.DownstreamClosed}`, undefined);
      return;
    }
    this.inner?.abort(reason);
  }
  resume(): void {
    this.inner?.resume();
  }
}
