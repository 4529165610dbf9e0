/**
 * The policy model. These are the *validated* shapes: the parser (`parse.ts`) turns raw YAML/JSON
 * into them, converting durations to milliseconds, filling defaults and freezing the result. The
 * wire and YAML forms are the same fields with durations written as strings ("250ms", "2s").
 */

export const API_VERSION = 'meshlet.dev/v1';

export const KINDS = ['Route', 'DestinationPolicy', 'RateLimitPolicy', 'Service', 'GrpcTranscoding'] as const;
export type Kind = (typeof KINDS)[number];

export interface Metadata {
  name: string;
  namespace?: string;
  labels?: Readonly<Record<string, string>>;
  annotations?: Readonly<Record<string, string>>;
  /** Set by the control plane's store; a client sends it back to update optimistically. */
  resourceVersion?: string;
  /** Set by the store: when the resource was first created (ISO 8601). */
  creationTimestamp?: string;
}

// ---------------------------------------------------------------------------------------- Route

export type StringMatch = { exact: string } | { prefix: string } | { regex: string };

export interface PathMatch {
  exact?: string;
  prefix?: string;
  regex?: string;
}

/** Header and query-parameter matches: exactly one of exact, regex, present. */
export interface KeyValueMatch {
  name: string;
  exact?: string;
  regex?: string;
  present?: boolean;
  /** Inverts the match. */
  invert?: boolean;
}

export interface RouteMatch {
  path?: PathMatch;
  /** Upper-case HTTP methods; any of them matches. */
  methods?: readonly string[];
  headers?: readonly KeyValueMatch[];
  queryParams?: readonly KeyValueMatch[];
}

export interface BackendRef {
  service: string;
  subset?: string;
  /** Relative weight; defaults to 1. 0 sends nothing. */
  weight: number;
}

export interface HeaderEdits {
  set?: Readonly<Record<string, string>>;
  add?: Readonly<Record<string, string>>;
  remove?: readonly string[];
}

export interface Redirect {
  scheme?: 'http' | 'https';
  host?: string;
  port?: number;
  /** Replaces the whole path. */
  path?: string;
  /** Replaces the matched path prefix (needs a `path.prefix` match). */
  pathPrefix?: string;
  statusCode: 301 | 302 | 303 | 307 | 308;
}

export const RETRY_ON = [
  '5xx',
  'gateway-error',
  'reset',
  'connect-failure',
  'retriable-status-codes',
  // gRPC statuses, matched on grpc-status of the response.
  'cancelled',
  'deadline-exceeded',
  'internal',
  'resource-exhausted',
  'unavailable',
] as const;
export type RetryOn = (typeof RETRY_ON)[number];

export interface RetryPolicy {
  attempts: number;
  perTryTimeoutMs?: number;
  retryOn: readonly RetryOn[];
  retriableStatusCodes?: readonly number[];
  backoff?: { baseIntervalMs: number; maxIntervalMs: number };
  /**
   * Retries allowed on top of requests: at most `percent`% of the requests in flight to the
   * destination, plus `minRetriesPerSecond` (Linkerd's retryBudget, Envoy's retry_budget).
   * Always in force; defaults 20% + 10/s.
   */
  budget: { percent: number; minRetriesPerSecond: number };
  /** Request bodies up to this many bytes are kept for a retry (default 64 KiB); above, no retry. */
  bufferLimitBytes: number;
}

/** A per-route breaker with closed / open / half-open states (like Resilience4j's). */
export interface RouteBreaker {
  /** Open when at least this % of the calls in the window failed (5xx, reset, connect failure, timeout). */
  failureRateThreshold: number;
  /** Open when at least this % of the calls in the window were slower than `slowCallDurationMs`. */
  slowCallRateThreshold?: number;
  slowCallDurationMs?: number;
  /** Calls needed in the window before a rate is judged (default 10). */
  minimumCalls: number;
  /** The sliding time window (default 10 s). */
  windowMs: number;
  /** How long it stays open before letting trial calls through (default 30 s). */
  openDurationMs: number;
  /** Trial calls allowed in half-open; all must succeed to close (default 3). */
  halfOpenCalls: number;
}

/** Chaos testing: delay or abort a percentage of requests, optionally only when a header is present. */
export interface FaultInjection {
  delay?: { fixedMs: number; percent: number };
  abort?: { httpStatus?: number; grpcStatus?: number; percent: number };
  /** Only requests carrying this header are subject to the fault. */
  header?: string;
}

/** Copies a percentage of requests to another backend; responses are discarded. */
export interface Mirror {
  service: string;
  subset?: string;
  percent: number;
}

export interface RouteRule {
  /** Optional rule name, used in metrics and by RateLimitPolicy; defaults to `rule-<index>`. */
  name: string;
  /** Any match selects the rule (OR). Within a match all conditions must hold (AND). Empty: all. */
  matches: readonly RouteMatch[];
  backends?: readonly BackendRef[];
  redirect?: Redirect;
  requestHeaders?: HeaderEdits;
  responseHeaders?: HeaderEdits;
  rewrite?: { pathPrefix?: string; host?: string };
  timeoutMs?: number;
  retries?: RetryPolicy;
  breaker?: RouteBreaker;
  fault?: FaultInjection;
  mirror?: Mirror;
  /** Percent of new traces started on this rule that are sampled (overrides the sidecar's --trace-sampling). */
  traceSamplingPercent?: number;
}

export interface RouteSpec {
  /** Hostnames (optionally host:port) this route serves; `*.example.com` wildcards allowed. */
  hosts: readonly string[];
  rules: readonly RouteRule[];
  /** gRPC and gRPC-Web calls on this route. */
  grpc?: GrpcRouteOptions;
  /** WebSocket (HTTP/1.1 Upgrade) connections on this route. */
  websocket?: { idleTimeoutMs?: number };
}

export interface GrpcRouteOptions {
  /** Largest gRPC message, either way, in bytes (default 4 MiB); larger: RESOURCE_EXHAUSTED. */
  maxMessageBytes?: number;
  /** gRPC-Web: browser origins (`https://app.example.com`, or `*`) allowed by CORS. */
  allowOrigins?: readonly string[];
}

// ---------------------------------------------------------------------------- DestinationPolicy

export const LB_TYPES = ['round-robin', 'least-request', 'random', 'ring-hash'] as const;
export type LoadBalancerType = (typeof LB_TYPES)[number];

export interface LoadBalancer {
  type: LoadBalancerType;
  /** ring-hash only: the request header whose value is hashed. */
  hashHeader?: string;
  /** ring-hash only: virtual nodes on the ring per unit of endpoint weight (default 128). */
  ringSize?: number;
  /** least-request only: how many random endpoints to compare (default 2). */
  choiceCount?: number;
}

export interface Subset {
  name: string;
  labels: Readonly<Record<string, string>>;
}

export interface CircuitBreaker {
  maxConnections?: number;
  maxPendingRequests?: number;
  maxRequests?: number;
  maxRetries?: number;
}

export interface OutlierDetection {
  consecutive5xx?: number;
  consecutiveGatewayErrors?: number;
  failurePercentage?: { threshold: number; minimumHosts: number; requestVolume: number };
  intervalMs: number;
  baseEjectionTimeMs: number;
  maxEjectionPercent: number;
  /** Below this % of healthy endpoints, ejection is ignored and all endpoints are used (default 50). */
  panicThreshold: number;
}

/** Active health checking of every endpoint of the service. */
export interface HealthCheck {
  /** An HTTP GET to this path; 2xx is healthy. */
  httpPath?: string;
  /** The gRPC health protocol (grpc.health.v1.Health/Check) for this service name ('' = server). */
  grpcService?: string;
  intervalMs: number;
  timeoutMs: number;
  unhealthyThreshold: number;
  healthyThreshold: number;
}

export type UpstreamProtocol = 'auto' | 'http1' | 'http2';

export interface DestinationPolicySpec {
  service: string;
  loadBalancer: LoadBalancer;
  subsets: readonly Subset[];
  circuitBreaker?: CircuitBreaker;
  outlierDetection?: OutlierDetection;
  healthCheck?: HealthCheck;
  /** Protocol towards the endpoints. `auto` keeps the downstream's protocol. */
  protocol: UpstreamProtocol;
  connectTimeoutMs?: number;
  /** Idle upstream connections are closed after this long (default 60 s). */
  idleTimeoutMs?: number;
  /**
   * HTTP/1.1 requests to meshed endpoints travel multiplexed over one HTTP/2 connection between
   * the sidecars (default true); false keeps them HTTP/1.1 on the wire.
   */
  http2Upgrade?: boolean;
}

// ------------------------------------------------------------------------------ RateLimitPolicy

export const DESCRIPTOR_KEYS = ['source-service', 'destination-service', 'route', 'remote-address', 'path'] as const;
export type DescriptorKey = (typeof DESCRIPTOR_KEYS)[number];
/** What a limit is keyed by: a built-in key, or a request header's value. */
export type Descriptor = { key: DescriptorKey } | { header: string };

export interface RateLimit {
  name: string;
  /** Limits apply to requests on these Route rules (`route-name/rule-name` or `route-name`); empty: all. */
  routes?: readonly string[];
  descriptors: readonly Descriptor[];
  requests: number;
  periodMs: number;
  /** Extra requests allowed in a burst above the steady rate (local token bucket size - requests). */
  burst: number;
  scope: 'local' | 'global';
}

export interface RateLimitPolicySpec {
  /** The destination service whose inbound traffic this policy limits. */
  service: string;
  failureMode: 'open' | 'closed';
  limits: readonly RateLimit[];
  redis?: { address: string; timeoutMs: number };
}

// -------------------------------------------------------------------------------------- Service

export interface StaticEndpoint {
  address: string;
  port: number;
  labels: Readonly<Record<string, string>>;
  weight: number;
}

export interface ServiceSpec {
  /** Endpoints outside the mesh, reached directly (no sidecar at the far end). */
  endpoints: readonly StaticEndpoint[];
  protocol: UpstreamProtocol;
}

// ------------------------------------------------------------------------------ GrpcTranscoding

/** One .proto file, its text embedded (`meshlet apply`, `meshlet up` and `--config` read `file:`). */
export interface ProtoFile {
  /** The name other protos import it by, e.g. `pricing/v1/pricing.proto`. */
  name: string;
  source: string;
}

/** HTTP/JSON -> gRPC transcoding for one destination service (src/grpc/transcode/). */
export interface GrpcTranscodingSpec {
  /** The mesh service whose outbound requests are transcoded. */
  service: string;
  protos: readonly ProtoFile[];
  /** Fully-qualified gRPC services to expose, e.g. `demo.pricing.v1.Pricing`. */
  services: readonly string[];
  /** A non-gRPC request no binding matches: `reject` (404 JSON, default) or `passthrough`. */
  unknownMethods: 'reject' | 'passthrough';
  ignoreUnknownQueryParameters: boolean;
  /** Print fields at their default value in responses (proto3 JSON omits them by default). */
  emitDefaults: boolean;
  maxRequestBytes: number;
  maxResponseBytes: number;
}

// -------------------------------------------------------------------------------- the resources

interface ResourceBase<K extends Kind, S> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: Metadata;
  spec: S;
}

export type RouteResource = ResourceBase<'Route', RouteSpec>;
export type DestinationPolicyResource = ResourceBase<'DestinationPolicy', DestinationPolicySpec>;
export type RateLimitPolicyResource = ResourceBase<'RateLimitPolicy', RateLimitPolicySpec>;
export type ServiceResource = ResourceBase<'Service', ServiceSpec>;
export type GrpcTranscodingResource = ResourceBase<'GrpcTranscoding', GrpcTranscodingSpec>;
export type Resource = RouteResource | DestinationPolicyResource | RateLimitPolicyResource | ServiceResource | GrpcTranscodingResource;

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
