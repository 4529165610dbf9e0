/**
 * The policy model: the *validated* shapes the parser (`parse.ts`) gives. The kinds are declared
 * once, in schema.ts, and their types derived from it; this module names them for the rest of the
 * code. The wire and YAML forms are the same fields with durations written as strings ("250ms",
 * "2s") and a few renames (see wire.ts).
 */
import type { Kind } from './constants';
import type {
  AuthorizationPolicySpec,
  DestinationPolicySpec,
  GatewaySpec,
  GrpcTranscodingSpec,
  Metadata,
  PeerAuthenticationSpec,
  RateLimitPolicySpec,
  RouteSpec,
  ServiceSpec,
  TLSCertificateSpec,
  ApiConsumerSpec,
} from './schema';

export { API_VERSION, KINDS, LIMITS } from './constants';
export type {
  Kind,
  KeyValueMatch,
  RouteMatch,
  HeaderEdits,
  RetryOn,
  RetryPolicy,
  RouteBreaker,
  FaultInjection,
  Mirror,
  RouteRule,
  RouteSpec,
  GrpcRouteOptions,
  LoadBalancer,
  OutlierDetection,
  HealthCheck,
  UpstreamProtocol,
  DestinationPolicySpec,
  Descriptor,
  RateLimit,
  RateLimitPolicySpec,
  GrpcTranscodingSpec,
  AuthorizationPolicySpec,
  AuthzRule,
  JwtSpec,
  ApiKeysSpec,
  IpFilterSpec,
  CorsSpec,
  CacheSpec,
  AggregateSpec,
  PeerAuthenticationSpec,
  GatewaySpec,
  GatewayListener,
  TLSCertificateSpec,
  ApiConsumerSpec,
} from './schema';

// -------------------------------------------------------------------------------- the resources

interface ResourceBase<K extends Kind, S> {
  apiVersion: 'meshlet.dev/v1';
  kind: K;
  metadata: Metadata;
  spec: S;
}

export type RouteResource = ResourceBase<'Route', RouteSpec>;
type DestinationPolicyResource = ResourceBase<'DestinationPolicy', DestinationPolicySpec>;
type RateLimitPolicyResource = ResourceBase<'RateLimitPolicy', RateLimitPolicySpec>;
type ServiceResource = ResourceBase<'Service', ServiceSpec>;
export type GrpcTranscodingResource = ResourceBase<'GrpcTranscoding', GrpcTranscodingSpec>;
export type AuthorizationPolicyResource = ResourceBase<'AuthorizationPolicy', AuthorizationPolicySpec>;
export type PeerAuthenticationResource = ResourceBase<'PeerAuthentication', PeerAuthenticationSpec>;
export type GatewayResource = ResourceBase<'Gateway', GatewaySpec>;
export type TLSCertificateResource = ResourceBase<'TLSCertificate', TLSCertificateSpec>;
export type ApiConsumerResource = ResourceBase<'ApiConsumer', ApiConsumerSpec>;
export type Resource = RouteResource | DestinationPolicyResource | RateLimitPolicyResource | ServiceResource | GrpcTranscodingResource | AuthorizationPolicyResource | PeerAuthenticationResource | GatewayResource | TLSCertificateResource | ApiConsumerResource;

// ------------------------------------------------------------------------------------ snapshots

/** A mesh endpoint: a sidecar's inbound listener (or a static Service address). */
export interface Endpoint {
  service: string;
  address: string;
  port: number;
  labels: Readonly<Record<string, string>>;
  weight: number;
  /** Whether a meshlet sidecar answers at this address (true for registered sidecars). */
  meshed: boolean;
  /** The sidecar id that registered it, when meshed. */
  id?: string;
  /**
   * The SPIFFE ID the control plane issued this endpoint's sidecar a certificate for: callers
   * with a certificate of their own dial it over mTLS and require exactly this identity. Absent
   * (no sidecar, no credential, identity disabled): plaintext.
   */
  identity?: string;
}

/**
 * What the control plane pushes: every resource, plus the endpoints of every registered
 * sidecar. Resources travel in their wire form (durations as strings) so that the sidecar
 * validates them with the very same parser, and reports the very same errors in its NACK.
 */
export interface WireSnapshot {
  version: string;
  resources: unknown[];
  endpoints: Endpoint[];
}

export interface Snapshot {
  version: string;
  resources: readonly Resource[];
  endpoints: readonly Endpoint[];
}
