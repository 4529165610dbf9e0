/**
 * The policy constants and the annotation type of the schema, with no runtime imports: what the
 * data plane needs of the schema at run time (with the generated checks and plans) without
 * loading TypeBox's type builder.
 */
import type { TSchema } from '@sinclair/typebox';

export const API_VERSION = 'meshlet.dev/v1';
export const KINDS = ['Route', 'DestinationPolicy', 'RateLimitPolicy', 'Service', 'GrpcTranscoding', 'AuthorizationPolicy', 'PeerAuthentication', 'Gateway', 'TLSCertificate', 'ApiConsumer'] as const;
export type Kind = (typeof KINDS)[number];

/**
 * Bounds on policy input, each refused at validation with a field-path error naming the limit
 * (and listed in docs/policy-reference.md). They keep one bad or hostile document from costing a
 * sidecar unbounded memory or matching time.
 */
export const LIMITS = Object.freeze({
  /** A whole resource, as JSON (the parser checks it first). etcd's default request limit is 1.5 MiB. */
  resourceBytes: 1024 * 1024,
  /** A host name in `spec.hosts` (RFC 1035: 253). */
  hostLength: 253,
  /** A path match (`exact`, `prefix`, `regex`) or a header / query-parameter match value. */
  matchValueLength: 1024,
  /** A header name anywhere in a policy. */
  headerNameLength: 256,
  /** Hosts of one Route. */
  hostsPerRoute: 100,
  /** Rules of one Route. */
  rulesPerRoute: 200,
  /** Matches of one rule. */
  matchesPerRule: 50,
  /** Header / query-parameter conditions of one match. */
  conditionsPerMatch: 50,
  /** Backends of one rule. */
  backendsPerRule: 64,
  /** Header edits of one `requestHeaders` / `responseHeaders` block (set + add + remove). */
  headerEdits: 100,
  /** Rules of one AuthorizationPolicy. */
  authzRules: 200,
  /** Sources of one AuthorizationPolicy rule, and names (SPIFFE IDs, services, namespaces) of one source. */
  authzValuesPerList: 100,
  /** Backends of one rule's `aggregate` (each is a concurrent upstream call per request). */
  aggregateBackends: 16,
  /** JWT issuers of one rule. */
  jwtIssuers: 32,
  /** Keys of one inline JWKS. */
  jwksKeys: 64,
  /** Claims forwarded as headers by one rule (`jwt.claimHeaders`). */
  jwtClaimHeaders: 64,
  /** API-key consumers of one rule. */
  apiKeyConsumers: 1000,
  /** Keys of one API-key consumer (rotation: old and new side by side). */
  apiKeysPerConsumer: 16,
  /** CIDRs of one `ipFilter` list (allow or deny). */
  ipFilterCidrs: 1000,
  /** A TLSCertificate's PEM certificate chain. */
  certificatePemBytes: 64 * 1024,
  /** A TLSCertificate's PEM private key. */
  privateKeyPemBytes: 16 * 1024,
  /** Query parameters or headers of one cache key. */
  cacheKeyParts: 32,
});

// ------------------------------------------------------------------------------- annotations

/** Our annotations on a schema node (never part of the published JSON Schema). */
export interface Meta {
  /** The field's name on the wire, when it differs. */
  wire?: string;
  /** The schema of the field on the wire, when it is not derived (used with `hook`). */
  wireSchema?: TSchema;
  /** A named wire -> internal conversion in wire.ts. */
  hook?: 'method' | 'tracing' | 'retryOn' | 'descriptor' | 'resourceVersion' | 'apiKeys';
  /** A duration in ms, a duration string on the wire, within these bounds. */
  duration?: { minMs: number; maxMs: number };
  /** Optional on the wire although required inside (its default is computed in parse.ts). */
  optional?: boolean;
  /** The default as the docs print it, when computed. */
  defaultText?: string;
  /** Lower-cased after validation (header names, hosts, origins). */
  lower?: boolean;
  /** Lower-case the keys of a map. */
  lowerKeys?: boolean;
  /** A regular expression, checked by validateRegex. */
  regex?: boolean;
  /** A map's keys must match this pattern; else this message. */
  keys?: { pattern: string; message: string };
  /** Message for a value that does not match `pattern`; `{value}` is replaced by the JSON value. */
  patternMessage?: string;
  /** Message for a missing required field. */
  required?: string;
  /** Fields refused with their own message (given the object holding them) rather than "unknown field". */
  refused?: Record<string, (parent: Record<string, unknown>) => string>;
  /** This limit's name in LIMITS, named in the error. */
  limit?: keyof typeof LIMITS;
}
export const META = 'x-meshlet';
export const meta = (s: TSchema): Meta => ((s as Record<string, unknown>)[META] as Meta | undefined) ?? {};


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

export const LB_TYPES = ['round-robin', 'least-request', 'random', 'ring-hash'] as const;

export const DESCRIPTOR_KEYS = ['source-service', 'source-identity', 'destination-service', 'route', 'remote-address', 'path', 'consumer'] as const;
