/**
 * Answers a rule gives without an upstream: a CORS preflight for gRPC-Web from browsers (204 with
 * the CORS headers for an origin the route allows, 403 otherwise), and a redirect rule's 3xx.
 */
import { FLAG_HEADER, Flags } from '../core/errors';
import { LocalReply, NOOP_CALL, type Layer } from '../core/layer';
import { preflightAnswer } from '../grpc/web';
import type { CompiledRule, GrpcRouteOptions, RequestView } from '../policy';

export function preflightLayer(opts: GrpcRouteOptions): Layer {
  return (next) => (call, sink) => {
    const a = call.method === 'OPTIONS' ? preflightAnswer(call.view as RequestView, opts) : undefined;
    if (!a) return next(call, sink);
    const reply =
      a.status === 204
        ? new LocalReply(204, undefined, '', { headers: a.headers, empty: true })
        : new LocalReply(403, undefined, 'origin not allowed', { headers: { ...a.headers, [FLAG_HEADER]: 'CORS' }, uncountedFlag: true });
    sink.onError(reply, false);
    return NOOP_CALL;
  };
}

export function redirectLayer(redirect: NonNullable<CompiledRule['redirect']>): Layer {
  return () => (call, sink) => {
    const r = redirect(call.view as RequestView);
    sink.onError(new LocalReply(r.status, Flags.Redirect, '', { headers: { location: r.location }, empty: true }), false);
    return NOOP_CALL;
  };
}
