/**
 * Inbound rate limits (RateLimitPolicy for this service, local token buckets and/or the global
 * redis limiter): a request over its limit is answered 429 RL with the limit's headers. A local
 * denial is decided synchronously, inside the parser's callback; answering after it returns lets
 * the HTTP/1.1 server see the request complete and keep the connection alive.
 */
import { Flags } from '../core/errors';
import { LocalReply, type Layer } from '../core/layer';
import type { UpstreamCall } from '../http/upstream-types';
import type { RateLimitLayer } from '../resilience/rate-limit';
import type { StackContext } from './context';

export function rateLimitLayer(ctx: StackContext, limits: () => RateLimitLayer | undefined): Layer {
  return (next) => (call, sink) => {
    const rl = limits();
    if (!rl?.active) return next(call, sink);
    const q = call.path.indexOf('?');
    const view = call.view;
    const req = { path: q < 0 ? call.path : call.path.slice(0, q), remoteAddress: call.downstream?.socket?.remoteAddress, header: (n: string) => view?.header(n), peer: call.peer?.uri };
    let inner: UpstreamCall | undefined;
    let gone = false;
    let answered = false;
    rl.admit(
      req,
      () => {
        if (gone) return;
        inner = next(call, sink);
      },
      (headers, reason) =>
        queueMicrotask(() => {
          if (gone) return;
          answered = true;
          sink.onError(new LocalReply(429, Flags.RateLimited, `rate limited: ${reason}`, { headers }), false);
        }),
      call.decision,
      call.decisionSeq,
    );
    return {
      abort(reason?: Error) {
        if (gone) return;
        gone = true;
        if (inner) inner.abort(reason);
        else if (!answered) {
          ctx.stats.record(call.direction, 499, Flags.DownstreamClosed);
          call.decision?.finish(call.decisionSeq, 499, Flags.DownstreamClosed, undefined);
        }
      },
      resume() {
        inner?.resume();
      },
    };
  };
}
