/**
 * The bottom of the stack: hands the call to the connection pools (`UpstreamPools.send`), with the
 * headers of this try (the HTTP/1.1 multiplexing mark, the grpc-timeout left), in HTTP/1.1 to an
 * automatic endpoint known to refuse HTTP/2. An upgrade (WebSocket) gets a dedicated connection
 * instead (src/http/websocket.ts).
 */
import type { Handler } from '../core/layer';
import { formatGrpcTimeout } from '../grpc/timeout';
import { ORIG_PROTO_HEADER } from '../http/multiplex';
import type { UpstreamTarget } from '../http/upstream-types';
import { sendUpgrade } from '../http/websocket';
import { withProtocol } from './auto-protocol';
import type { StackContext } from './context';

export function dispatcher(ctx: Pick<StackContext, 'pools' | 'clock'>): Handler {
  return (call, sink) => {
    const t = call.target as UpstreamTarget;
    // Inbound calls have a fixed target (the app), not picked: the access log and tap name it too.
    if (call.obs) call.obs.upstream = t.key;
    const up = call.upgrade;
    if (up) {
      return sendUpgrade(t, { method: call.method, path: call.path, headers: call.headers, protocol: up.protocol, acceptStatus: up.acceptStatus }, sink, (u, head, status) => up.onHead(u, head, status, () => sink.onEnd(undefined)), ctx.clock, undefined, ctx.pools.tlsOptions?.(t));
    }
    let headers = call.headers;
    if (call.mux) headers = [...headers, ORIG_PROTO_HEADER, `HTTP/${call.version}`];
    if (call.grpcTimeoutAt >= 0 && call.deadline > 0) {
      headers = headers.slice();
      headers[call.grpcTimeoutAt] = formatGrpcTimeout(Math.max(1, call.deadline - ctx.clock.monotonic()));
    }
    return ctx.pools.send(withProtocol(t, ctx.clock), { method: call.method, path: call.path, authority: call.authority, headers, body: call.body }, sink);
  };
}
