/**
 * IP allow/deny lists (src/edge/ip-filter.ts): a client address the rule's `ipFilter` refuses is
 * answered 403 UAEX (`EDGE_IP_DENIED`) before any credential is looked at. The address is the client's as the
 * forwarded layer vouches for it (`call.clientAddress`: trusted x-forwarded-for hops), else the connection's peer.
 */
import { NOOP_CALL, type Layer } from '../core/layer';
import { compileIpFilter } from '../edge/ip-filter';
import type { IpFilterSpec } from '../policy/types';
import { edgeReply } from './edge-common';

export function ipFilterLayer(spec: IpFilterSpec): Layer {
  const r = compileIpFilter(spec, 'ipFilter');
  if (!r.ok) throw new Error(`ipFilter: ${r.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`); // validated by the parser already
  const filter = r.value;
  return (next) => (call, sink) => {
    const denied = filter.check(call.clientAddress ?? call.downstream?.socket?.remoteAddress);
    if (!denied) return next(call, sink);
    sink.onError(edgeReply(denied), false);
    return NOOP_CALL;
  };
}
