/**
 * Endpoint pick, once per try: the backend (the route's weighted choice; the first try's was
 * picked with the route), the service's `maxRequests`, the outlier-aware picker (another endpoint
 * than the last try's when there is one), and the protocol: the service's, or for `auto` the
 * downstream one, HTTP/1.1 multiplexed over HTTP/2 to another sidecar (multiplex.ts), HTTP/2 for
 * gRPC (the dispatcher then sends HTTP/1.1 to endpoints known to refuse HTTP/2: auto-protocol.ts).
 *
 * Each try counts as active on its endpoint (least-request pickers, maxRequests, maxRetries) until
 * it ends, and reports its outcome to outlier detection.
 */
import { MeshError } from '../core/errors';
import { NOOP_CALL, type Layer, type MeshCall } from '../core/layer';
import { multiplexH1 } from '../http/multiplex';
import { refusedUnseen, type Headers, type ResponseSink, type UpstreamCall } from '../http/upstream-types';
import { endpointKey } from '../lb';
import type { CompiledRule, RequestView } from '../policy/compiled';
import type { ServiceState } from '../resilience/state';
import type { StackContext } from './context';
import { grpcOutcome, grpcStatusOf, httpOutcome, isGrpcKind, PER_TRY_TIMEOUT } from './profile';

export function pickLayer(ctx: StackContext, rule: CompiledRule): Layer {
  return (next) => (call, sink) => {
    const backend = call.tries <= 1 && call.backend ? call.backend : rule.pickBackend();
    const cs = backend && ctx.snapshot()?.services.get(backend.service);
    const svc = backend && ctx.resilience.service(backend.service);
    call.svc = svc;
    if (!cs || !svc || !backend) return fail(sink, new MeshError('MESH_NO_HEALTHY_UPSTREAM', backend?.service));
    call.backend = backend;
    if (svc.maxRequests !== undefined && svc.active >= svc.maxRequests) return fail(sink, new MeshError('MESH_UPSTREAM_OVERFLOW', `${svc.maxRequests} requests in flight to ${svc.name}`));
    const picker = svc.picker(backend.subset);
    const view = call.view as RequestView;
    let ep = picker?.pick(view);
    // A retry goes to another endpoint when there is one.
    if (ep && call.tries > 1 && call.target !== undefined && endpointKey(ep) === call.target.key) ep = picker?.pick(view) ?? ep;
    if (!ep) return fail(sink, new MeshError('MESH_NO_HEALTHY_UPSTREAM', backend.service));
    const key = endpointKey(ep);
    const grpc = isGrpcKind(call.kind);
    // HTTP/1.1 to another sidecar travels multiplexed over one HTTP/2 connection (multiplex.ts).
    const mux = !grpc && call.kind !== 'websocket' && multiplexH1(call.protocol, ep.meshed, cs);
    call.mux = mux;
    call.target = {
      key,
      address: ep.address,
      port: ep.port,
      protocol: grpc || mux ? 'http2' : call.kind === 'websocket' ? 'http1' : cs.protocol === 'auto' ? call.protocol : cs.protocol,
      auto: cs.protocol === 'auto' && !grpc && !mux,
      limits: svc.limits,
      idleMs: svc.idleMs,
      // mTLS: the endpoint's sidecar has a certificate, so do we, and its service does not DISABLE it.
      identity: ep.identity !== undefined && ctx.pools.hasTls === true && cs.peerAuthMode !== 'DISABLE' ? ep.identity : undefined,
    };
    if (call.tries <= 1) {
      svc.budget.request();
      call.destination = svc.name;
    }
    if (call.obs) call.obs.upstream = key;
    const t = new PickedTry(ctx, call, key, svc, call.tries > 1, sink);
    t.call = next(call, t);
    return t;
  };
}

function fail(sink: ResponseSink, e: MeshError): UpstreamCall {
  sink.onError(e, false);
  return NOOP_CALL;
}

/** One try at one endpoint: its accounting and its outcome for outlier detection. */
class PickedTry implements ResponseSink, UpstreamCall {
  call: UpstreamCall | undefined;
  private open = true;
  private reported = false;
  /** This try's index in the request's recent-decision slot (-1: not recorded). */
  private readonly slot: number;

  constructor(
    private readonly ctx: StackContext,
    private readonly mc: MeshCall,
    readonly key: string,
    readonly svc: ServiceState,
    readonly retry: boolean,
    private readonly sink: ResponseSink,
  ) {
    ctx.active.begin(key);
    svc.active++;
    if (retry) svc.activeRetries++;
    this.slot = mc.decision ? mc.decision.tryBegin(mc.decisionSeq, key) : -1;
  }

  private close(error?: string): void {
    if (!this.open) return;
    this.open = false;
    if (this.slot >= 0) this.mc.decision?.tryDone(this.mc.decisionSeq, this.slot, error);
    this.ctx.active.end(this.key);
    this.svc.active--;
    if (this.retry) this.svc.activeRetries--;
  }

  private report(outcome: 'success' | 'http-5xx' | 'gateway'): void {
    if (this.reported) return;
    this.reported = true;
    this.svc.report(this.key, outcome);
  }

  abort(reason?: Error): void {
    // A per-try timeout is the endpoint's failure.
    if (reason === PER_TRY_TIMEOUT) this.report('gateway');
    this.close(reason === PER_TRY_TIMEOUT ? 'per-try timeout' : reason ? ((reason as { flag?: string }).flag ?? reason.name) : undefined);
    this.call?.abort(reason);
  }
  resume(): void {
    this.call?.resume();
  }

  onResponse(status: number, headers: Headers): void {
    if (this.slot >= 0) this.mc.decision?.tryResponse(this.mc.decisionSeq, this.slot, status);
    if (!isGrpcKind(this.mc.kind)) this.report(httpOutcome(status));
    else {
      const g = grpcStatusOf(headers);
      if (g >= 0 || status !== 200) this.report(g >= 0 ? grpcOutcome(g) : httpOutcome(status));
    }
    this.sink.onResponse(status, headers);
  }
  onData(chunk: Buffer): boolean {
    return this.sink.onData(chunk);
  }
  onEnd(trailers: Headers | undefined): void {
    if (!this.reported) this.report(grpcOutcome(grpcStatusOf(trailers)));
    this.close();
    this.sink.onEnd(trailers);
  }
  onError(err: Error, started: boolean): void {
    const e = err as { code?: string; flag?: string };
    this.close(e.flag ?? e.code ?? err.name);
    const overflow = e.code === 'MESH_UPSTREAM_OVERFLOW';
    // Refused unseen: sent again, not the endpoint's fault.
    if (!overflow && !refusedUnseen(err)) this.report('gateway');
    this.sink.onError(err, started);
  }
}
