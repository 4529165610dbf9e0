/**
 * Caller identity, outbound: any `x-meshlet-source` / `x-meshlet-route` the app sent is removed and
 * this sidecar's own are stamped (rate-limit/identity.ts), on every protocol, so a callee counts
 * and limits the real caller.
 */
import type { Layer } from '../core/layer';
import { stampIdentity } from '../resilience/rate-limit';

export function identityLayer(source: string, route: string): Layer {
  // One object for every call of the route (read, never changed): not one a request.
  const identity: { readonly source: string | undefined; readonly route: string } = { source, route };
  return (next) => (call, sink) => {
    call.identity = identity;
    call.headers = stampIdentity(call.headers, source, route);
    return next(call, sink);
  };
}
