/**
 * Aggregation (src/edge/aggregate.ts): the rule answers with one JSON document merged from its
 * backends' answers, called concurrently (or in order, when a path template names an earlier
 * backend). Each backend call goes back through the mesh: it is routed like a request the app
 * sent to that service (`route`, given by outbound.ts) and runs that rule's whole stack (identity,
 * observe: metrics and a span that is a child of this request's span, deadline, retries, breaker,
 * pick). Every answer carries `x-meshlet-completed: true|false`; a partial one has the per-backend
 * error summary under `_errors`; a required backend failing gives 502 (504 for a timeout).
 *
 * The rule's `aggregate` replaces its backends: the layer answers itself and calls no `next`.
 */
import { MeshCall, type Layer } from '../core/layer';
import { compileAggregate, matchPathTemplate, type AggregateCall } from '../edge/aggregate';
import type { ResponseSink, UpstreamCall } from '../http/upstream-types';
import type { RequestView } from '../policy/compiled';
import type { AggregateSpec } from '../policy/types';
import type { StackContext } from './context';
import { BufferSink, flatRecord } from './edge-common';

/** Runs a call the way the outbound listener would (route match, that rule's stack); undefined: no route. */
export type RouteCall = (call: MeshCall, sink: ResponseSink) => UpstreamCall | undefined;

/** Request headers a backend call carries from the client request (trace context; `forwardHeaders` add more). */
const TRACE = ['traceparent', 'tracestate', 'b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags', 'x-request-id'];

export function aggregateLayer(ctx: StackContext, spec: AggregateSpec, route: RouteCall): Layer {
  const r = compileAggregate(
    { ...spec, backends: spec.backends.map((b) => ({ ...b, rename: b.rename ? { ...b.rename } : undefined })) },
    'aggregate',
    { clock: ctx.clock },
  );
  if (!r.ok) throw new Error(`aggregate: ${r.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`); // validated by the parser already
  const agg = r.value;
  return () => (call, sink) => {
    let gone = false;
    const calls = new Set<UpstreamCall>();
    const q = call.path.indexOf('?');
    const carried = flatRecord(call.headers, new Set(TRACE));
    const backend: AggregateCall = (a) =>
      new Promise((resolve, reject) => {
        const path = a.path;
        const qi = path.indexOf('?');
        const headers: string[] = [];
        for (const [k, v] of Object.entries({ ...carried, ...a.headers })) for (const x of Array.isArray(v) ? v : [v]) headers.push(k, x);
        const view: RequestView = {
          method: a.method,
          path: qi < 0 ? path : path.slice(0, qi),
          query: qi < 0 ? '' : path.slice(qi + 1),
          authority: a.service,
          header: (n) => {
            const v = carried[n] ?? a.headers[n];
            return Array.isArray(v) ? v.join(', ') : v;
          },
        };
        const child = new MeshCall('outbound', 'http', 'http1', a.method, path, a.service, view, headers, null, '1.1');
        const bs = new BufferSink(resolve, reject, a.maxBodyBytes, 'stop');
        const up = route(child, bs);
        if (!up) return reject(new Error(`no route to ${a.service}`));
        bs.call = up;
        calls.add(up);
        const stop = (): void => {
          calls.delete(up);
          up.abort(new Error('aggregate backend timeout'));
        };
        if (a.signal.aborted) stop();
        else a.signal.addEventListener('abort', stop, { once: true });
      });
    const params = agg.config.pathTemplate ? (matchPathTemplate(agg.config.pathTemplate, q < 0 ? call.path : call.path.slice(0, q)) ?? {}) : {};
    void agg.run({ params, query: q < 0 ? '' : call.path.slice(q + 1), headers: flatRecord(call.headers) }, backend).then((res) => {
      calls.clear();
      if (gone) return;
      const flag = res.headers['x-meshlet-flags'];
      const headers: Record<string, string> = { ...res.headers };
      if (flag) {
        delete headers['x-meshlet-flags'];
        call.addFlag(flag);
      }
      headers['content-length'] = String(res.body.length);
      sink.onResponse(res.status, headers);
      sink.onData(res.body);
      sink.onEnd(undefined);
    });
    return {
      abort(reason?: Error) {
        if (gone) return;
        gone = true;
        for (const c of calls) c.abort(reason);
        calls.clear();
      },
      resume() {},
    };
  };
}

