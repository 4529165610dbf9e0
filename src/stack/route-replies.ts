/**
 * Answers a rule gives without an upstream: a CORS preflight (204 with the CORS headers for an
 * origin the route allows, 403 otherwise) for the Route's `cors` (src/edge/cors.ts: origins,
 * methods, headers, credentials, max age) or, without one, for gRPC-Web browsers
 * (`grpc.allowOrigins`); and a redirect rule's 3xx. With `cors`, actual requests from an allowed
 * origin get the CORS response headers.
 */
import { FLAG_HEADER, Flags } from '../core/errors';
import { LocalReply, NOOP_CALL, type Layer } from '../core/layer';
import { preflightAnswer } from '../grpc/web';
import type { CompiledRule, GrpcRouteOptions, RequestView } from '../policy';
import type { CorsSpec } from '../policy/types';
import { compileCors } from '../edge/cors';
import type { Headers, ResponseSink } from '../http/upstream-types';

/** The answer to a preflight: 204 with the CORS headers, or 403 CORS (counted without its flag). */
function preflightReply(status: number, headers: Record<string, string>, why: string): LocalReply {
  return status === 204
    ? new LocalReply(204, undefined, '', { headers, empty: true })
    : new LocalReply(403, undefined, why, { headers: { ...headers, [FLAG_HEADER]: 'CORS' }, uncountedFlag: true });
}

export function preflightLayer(opts: GrpcRouteOptions): Layer {
  return (next) => (call, sink) => {
    const a = call.method === 'OPTIONS' ? preflightAnswer(call.view as RequestView, opts) : undefined;
    if (!a) return next(call, sink);
    sink.onError(preflightReply(a.status, a.headers, 'origin not allowed'), false);
    return NOOP_CALL;
  };
}

export function corsLayer(spec: CorsSpec): Layer {
  const r = compileCors(spec, 'cors');
  if (!r.ok) throw new Error(`cors: ${r.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`); // validated by the parser already
  const policy = r.value;
  return (next) => (call, sink) => {
    const view = call.view as RequestView;
    const origin = view.header('origin');
    if (origin === undefined) return next(call, sink);
    const out = policy.evaluate(call.method, {
      origin,
      'access-control-request-method': view.header('access-control-request-method'),
      'access-control-request-headers': view.header('access-control-request-headers'),
    });
    if (out.kind === 'preflight' || out.kind === 'rejected') {
      sink.onError(out.kind === 'preflight' ? preflightReply(204, out.headers, '') : preflightReply(403, out.headers, out.error.message), false);
      return NOOP_CALL;
    }
    if (out.kind === 'none' || Object.keys(out.headers).length === 0) return next(call, sink);
    return next(call, withHeaders(sink, out.headers));
  };
}

/** The sink with headers added to the response head (`vary` appended to the upstream's). */
function withHeaders(sink: ResponseSink, add: Record<string, string>): ResponseSink {
  return {
    onResponse(status: number, headers: Headers) {
      const h: Headers = { ...headers };
      for (const [k, v] of Object.entries(add)) {
        const cur = h[k];
        h[k] = k === 'vary' && cur !== undefined ? `${Array.isArray(cur) ? cur.join(', ') : cur}, ${v}` : v;
      }
      sink.onResponse(status, h);
    },
    onData: (c) => sink.onData(c),
    onEnd: (t) => sink.onEnd(t),
    onError: (e, started) => sink.onError(e, started),
  };
}

export function redirectLayer(redirect: NonNullable<CompiledRule['redirect']>): Layer {
  return () => (call, sink) => {
    const r = redirect(call.view as RequestView);
    sink.onError(new LocalReply(r.status, Flags.Redirect, '', { headers: { location: r.location }, empty: true }), false);
    return NOOP_CALL;
  };
}
