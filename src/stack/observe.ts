/**
 * Observe: the request's metrics (meshlet_requests_total and the duration histograms on the route's
 * pre-bound handle; gRPC calls also by grpc_status), its trace context (propagated in the
 * forwarded headers) and span, and its access-log line (observer.ts). Every kind of call passes
 * here: HTTP, gRPC, gRPC-Web, transcoded JSON and WebSocket upgrades.
 *
 * It ends the observation once: at the response's end, at an error (the MeshError's status and
 * flag, or the status already sent with the error's flag when the response had started), or when
 * the call is aborted from above (499 DC, or the reason's status and flag when the reason is a
 * MeshError / LocalReply).
 */
import { Flags, MeshError } from '../core/errors';
import { LocalReply, type Layer, type MeshCall } from '../core/layer';
import type { H1Request } from '../http/h1-server';
import type { H2Request } from '../http/h2-server';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import type { RouteHandle } from '../observability/mesh-metrics';
import { flatGetter, observedBits, type ObservedRequest } from '../observability/observer';
import type { CompiledRule } from '../policy/compiled';
import type { StackContext } from './context';
import { grpcStatusOf, isGrpcKind } from './profile';

export function observeLayer(ctx: StackContext, rule: CompiledRule | undefined): Layer {
  return (next) => (call, sink) => {
    const q = call.path.indexOf('?');
    const flat = call.headers;
    // One walk of the list for the headers the observer reads and replaces (observer.ts).
    const bits = observedBits(flat);
    const obs = ctx.stats.observer.begin(
      call.direction,
      flatGetter(flat, bits),
      { method: call.method, authority: call.authority, path: q < 0 ? call.path : call.path.slice(0, q), protocol: call.protocol },
      rule && call.backend ? routeHandle(ctx, rule, call.backend.service) : undefined,
      rule?.traceSamplingPercent,
    );
    call.obs = obs;
    call.headers = obs.rewriteHeaders(flat, bits);
    if (call.body && call.downstream) obs.received = receivedCounter(call.downstream, call.protocol);
    const o = new Observed(ctx, call, obs, sink);
    o.inner = next(call, o);
    return o;
  };
}

class Observed implements ResponseSink, UpstreamCall {
  inner: UpstreamCall | undefined;
  private status = 0;
  private done = false;
  constructor(
    private readonly ctx: StackContext,
    private readonly call: MeshCall,
    private readonly obs: ObservedRequest,
    private readonly sink: ResponseSink,
  ) {}

  private end(status: number, flag: string | undefined, grpcCode: number): void {
    if (this.done) return;
    this.done = true;
    this.obs.end(status, flag);
    const g = this.call.grpcStatus >= 0 ? this.call.grpcStatus : grpcCode;
    this.call.decision?.finish(this.call.decisionSeq, status, flag, this.obs.requestId, g);
    if (g >= 0 || isGrpcKind(this.call.kind)) this.ctx.stats.metrics.grpcStatus(this.obs.route, g);
  }

  abort(reason?: Error): void {
    if (reason instanceof MeshError || reason instanceof LocalReply) this.end(reason.status, reason.flag, -1);
    else this.end(499, Flags.DownstreamClosed, -1);
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
  private grpc = -1;
  onData(chunk: Buffer): boolean {
    this.obs.responseBytes += chunk.length;
    return this.sink.onData(chunk);
  }
  onEnd(trailers: Headers | undefined): void {
    const g = grpcStatusOf(trailers);
    this.end(this.status, this.call.flags || undefined, g >= 0 ? g : this.grpc);
    this.sink.onEnd(trailers);
  }
  onError(err: Error, started: boolean): void {
    const e = err as Partial<MeshError> & { extra?: { grpcStatus?: number } };
    if (started) this.end(this.status || 502, e.flag ?? Flags.UpstreamReset, e.extra?.grpcStatus ?? -1);
    else {
      const flag = e.flag && !(err instanceof LocalReply && err.extra?.uncountedFlag) ? (this.call.flags ? `${e.flag},${this.call.flags}` : e.flag) : this.call.flags || undefined;
      this.end(e.status ?? 502, flag, e.extra?.grpcStatus ?? -1);
    }
    this.sink.onError(err, started);
  }
}

/** The metrics handle of (rule, destination), cached on the compiled rule (one per snapshot). */
const handles = new WeakMap<CompiledRule, { service: string; handle: RouteHandle }>();
export function routeHandle(ctx: StackContext, rule: CompiledRule, service: string): RouteHandle {
  const c = handles.get(rule);
  if (c && c.service === service) return c.handle;
  const handle = ctx.stats.route('outbound', service, rule.statName);
  handles.set(rule, { service, handle });
  return handle;
}

/** A request body's byte count as it arrives: the HTTP/1.1 parser and the HTTP/2 request (h2-server.ts) keep it. */
function receivedCounter(req: unknown, _protocol: 'http1' | 'http2'): { bodyBytes: number } {
  return req as H1Request | H2Request;
}
