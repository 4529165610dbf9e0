/** What a load-balancing algorithm gives: the runtime side of a DestinationPolicy's `loadBalancer` (its config shape is policy: src/policy/schema.ts). */
import type { RequestView } from '../policy/request-view';
import type { Endpoint } from '../policy/types';

/** Immutable; replaced whenever the endpoints or the policy change (see grpc-js's Picker). */
export interface Picker {
  /** An endpoint for this request, or undefined when there is none. */
  pick(req: RequestView): Endpoint | undefined;
}

/** Live per-endpoint counters shared by pickers across snapshots (least-request reads them). */
export interface EndpointStats {
  active(ep: Endpoint): number;
}
