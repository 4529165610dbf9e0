/**
 * Who called, and through which route: the caller's sidecar stamps these on the outbound path so
 * that the callee's sidecar (where limits are enforced, on its inbound path) can key limits by
 * `source-service` and `route`.
 *
 * Trust model (until mTLS): the outbound sidecar always removes any copies the app sent and sets
 * its own, so an app inside a meshed pod cannot claim another service's identity or route. The
 * inbound side believes the headers as far as it believes the network: any peer that can reach a
 * sidecar's inbound port directly (bypassing its own sidecar) can set them. With mTLS the source
 * service will come from the peer certificate's identity instead, and the header only carries the
 * route (whose value cannot raise anyone's limit: a request without one simply does not match
 * route-scoped limits, and route-less limits still apply).
 *
 * They are stamped towards every destination, meshed or not (like Envoy's `x-envoy-*` request
 * headers): a service name and a route name are not secrets, and a static `Service` may well be
 * another mesh's sidecar.
 */

export const SOURCE_HEADER = 'x-meshlet-source';
export const ROUTE_HEADER = 'x-meshlet-route';
/**
 * The API-key consumer (src/stack/api-key.ts sets it after checking the key): the `consumer`
 * rate-limit descriptor. Removed from what the app sends, like the two above.
 */
export const CONSUMER_HEADER = 'x-meshlet-consumer';

/**
 * Edits a flat `[name, value, ...]` header list (lower-case names) in place: removes any identity headers,
 * then appends this hop's own: `source` service and `route` (`<route>/<rule>`). Without `source`
 * (a destination outside the mesh, which has no use for them) the headers are only removed.
 */
export function stampIdentity(flat: string[], source: string | undefined, route: string | undefined): string[] {
  // In place: the list is the request's own forwarded copy.
  let w = 0;
  for (let i = 0; i < flat.length; i += 2) {
    const n = flat[i] as string;
    if (n === SOURCE_HEADER || n === ROUTE_HEADER || n === CONSUMER_HEADER) continue;
    if (w !== i) {
      flat[w] = n;
      flat[w + 1] = flat[i + 1] as string;
    }
    w += 2;
  }
  // Nothing removed (the usual case): no length store, which V8 makes through a runtime call.
  if (w !== flat.length) flat.length = w;
  if (source === undefined) return flat;
  flat.push(SOURCE_HEADER, source);
  if (route) flat.push(ROUTE_HEADER, route);
  return flat;
}
