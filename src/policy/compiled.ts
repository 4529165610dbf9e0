/**
 * The compiled form of a snapshot: what the sidecar's hot path uses. Built once per snapshot by
 * `compileSnapshot` (src/snapshot/compile.ts, outside src/policy because it builds the runtime
 * parts: pickers from src/lb, transcoders from src/grpc); the data path only does lookups and
 * calls on it. Only *types* of those runtime parts are named here (erased at compile time), so
 * src/policy loads no runtime module.
 */
import type { CompiledTranscoding } from '../grpc/transcode/compile';
import type { Picker } from '../lb/picker';
import type {
  DestinationPolicySpec,
  Endpoint,
  GatewaySpec,
  GrpcRouteOptions,
  RateLimitPolicySpec,
  Resource,
  FaultInjection,
  Mirror,
  JwtSpec,
  ApiKeysSpec,
  IpFilterSpec,
  CorsSpec,
  CacheSpec,
  AggregateSpec,
  RetryPolicy,
  RouteBreaker,
  UpstreamProtocol,
} from './types';

import type { RequestView } from './request-view';
export type { RequestView } from './request-view';

// Where they lived before src/lb had them; kept so importers compile unchanged.
export type { Picker, EndpointStats } from '../lb/picker';

export interface CompiledService {
  name: string;
  protocol: UpstreamProtocol;
  endpoints: readonly Endpoint[];
  /** The DestinationPolicy in force for this service, if any. */
  policy?: DestinationPolicySpec;
  /** A picker over all endpoints, or over one subset's. Unknown subsets get undefined. */
  picker(subset?: string): Picker | undefined;
  /** The PeerAuthentication mode of this service's sidecars: callers dial mTLS unless it is DISABLE. */
  peerAuthMode: PeerAuthMode;
}

export type PeerAuthMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE';

export interface CompiledBackend {
  service: string;
  subset?: string;
  weight: number;
}

export interface HeaderEditor {
  /** Applies the edits to a plain header object (lower-case keys) in place. */
  apply(headers: Record<string, string | string[] | undefined>): void;
}

export interface CompiledRule {
  /** `<route>/<rule>`: bounded, used as a metric label. */
  statName: string;
  routeName: string;
  ruleName: string;
  matches(req: RequestView): boolean;
  /** Weighted choice among the backends; undefined for redirect rules. */
  pickBackend(): CompiledBackend | undefined;
  /** For redirect rules: the status and Location to answer with. */
  redirect?(req: RequestView): { status: number; location: string };
  requestHeaders?: HeaderEditor;
  responseHeaders?: HeaderEditor;
  /** Returns the upstream path (with query) after a prefix rewrite, given the request. */
  rewritePath?(req: RequestView): string;
  rewriteHost?: string;
  timeoutMs?: number;
  retries?: RetryPolicy;
  breaker?: RouteBreaker;
  fault?: FaultInjection;
  mirror?: Mirror;
  traceSamplingPercent?: number;
  /** The route's gRPC options (message size limit, gRPC-Web CORS origins). */
  grpc?: GrpcRouteOptions;
  /** WebSocket connections: closed after this long without a byte either way. */
  websocketIdleTimeoutMs?: number;
  /** The edge blocks (validated); their layers (src/stack/{ip-filter,jwt,api-key,cache,aggregate}.ts) compile them once per rule stack. */
  edge?: EdgeRule;
}

export interface EdgeRule {
  /** The Route's CORS (applies to each of its rules). */
  cors?: CorsSpec;
  ipFilter?: IpFilterSpec;
  jwt?: JwtSpec;
  apiKeys?: ApiKeysSpec;
  cache?: CacheSpec;
  aggregate?: AggregateSpec;
}

export interface RouteTable {
  /** The first matching rule of the virtual host serving this authority, or undefined (NR). */
  match(req: RequestView): CompiledRule | undefined;
}

export interface CompiledSnapshot {
  version: string;
  /** The mesh's routes (Routes without `gateways`, or naming `mesh`), with implicit ones per service. */
  routes: RouteTable;
  /** Gateway resources by name. */
  gateways: ReadonlyMap<string, GatewaySpec>;
  /** The routes attached to a gateway (`spec.gateways` names it); no implicit routes. */
  gatewayRoutes(name: string): RouteTable;
  services: ReadonlyMap<string, CompiledService>;
  rateLimits: ReadonlyMap<string, RateLimitPolicySpec>;
  /** HTTP/JSON -> gRPC transcoders by destination service (GrpcTranscoding policies). */
  transcoders: ReadonlyMap<string, CompiledTranscoding>;
  /** The validated resources, for /config_dump. */
  resources: readonly Resource[];
  endpoints: readonly Endpoint[];
  /** When this snapshot was compiled (ms since epoch). */
  compiledAt: number;
  /** PeerAuthentication: the mode of a service's inbound port, and the policy that set it (none: the mesh default). */
  peerAuth: { mode(service: string): { mode: PeerAuthMode; policy?: string } };
}
