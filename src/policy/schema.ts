/**
 * The policy schema, written once. Every kind is declared here, in its *validated* (internal)
 * form, with TypeBox; the rest is derived:
 *
 * - the TypeScript types (`Static<...>`, re-exported by types.ts under their usual names);
 * - the *wire* schema (what users write in YAML/JSON) by `wireSchema()` in wire.ts, which renames
 *   the fields annotated below (`timeoutMs` <- `timeout: "5s"`, `methods` <- `method`...), makes a
 *   field with a default optional, and turns a duration into a duration string;
 * - the validator: TypeBox's TypeCompiler code for each wire schema, emitted at build time into
 *   checks.generated.ts (scripts/gen-policy.js), with a plain-data "plan" of each kind that
 *   toInternal() walks, so parsing a valid policy loads no TypeBox at all (measured: 0 TypeBox
 *   modules after a valid parse; the first invalid one loads it, ~200 modules, for errors.ts);
 * - the JSON Schema of every kind (deploy/schema/, `GET /v1/schema/{kind}`) and the field
 *   reference docs/policy-reference.md.
 *
 * Annotations live under the `x-meshlet` key of a schema (stripped from the published JSON
 * Schema). Cross-field rules ("set exactly one of..."), regex compilation, duplicates and "did you
 * mean" hints are hand-written in parse.ts; input bounds are in LIMITS.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';

export { API_VERSION, KINDS, LIMITS, META, meta } from './constants';
export type { Kind, Meta, RetryOn } from './constants';
import { API_VERSION, KINDS, LIMITS, META, meta, RETRY_ON, LB_TYPES, DESCRIPTOR_KEYS, type Kind, type Meta } from './constants';

type Opt = { description?: string; default?: unknown; meta?: Meta };
const o = (x: Opt & Record<string, unknown>): Record<string, unknown> => {
  const { meta: m, ...rest } = x;
  return m ? { ...rest, [META]: m } : rest;
};

const NAME = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
const NAME_TEXT = 'must be lower-case letters, digits, "-" and ".", starting and ending with a letter or digit';
const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const HEADER_VALUE = '^[\\t\\x20-\\x7e\\x80-\\xff]*$';
const HOST = '^(\\*|(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)(:\\d{1,5})?$';
const HOST_ANY_CASE = '^(\\*|(\\*\\.)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*)(:\\d{1,5})?$';
const LABEL_KEY = '^(?=.{1,316}$)([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$';
const SLASH = '^/';
const SLASH_TEXT = 'must start with "/"';

const Obj = <P extends Record<string, TSchema>>(props: P, description: string, extra: Record<string, unknown> = {}) =>
  Type.Object(props, { additionalProperties: false, description, ...extra });
/** A list; `readonly` in the derived type. */
const List = <T extends TSchema>(item: T, x: Opt & { minItems?: number; maxItems?: number } = {}) => Type.Unsafe<readonly Static<T>[]>(Type.Array(item, o(x)));
const Str = (x: Opt & { pattern?: string; patternMessage?: string; minLength?: number; maxLength?: number } = {}) => {
  const { patternMessage, meta: m, ...rest } = x;
  const mm = patternMessage ? { ...m, patternMessage } : m;
  return Type.String(o({ minLength: 1, ...rest, meta: mm }));
};
const Name = (description: string, maxLength = 253) => Str({ description, pattern: NAME, patternMessage: NAME_TEXT, maxLength });
const HeaderName = (description: string, x: Opt = {}) =>
  Str({ description, pattern: HEADER_NAME, patternMessage: 'must be a valid header name', maxLength: LIMITS.headerNameLength, ...x, meta: { lower: true, limit: 'headerNameLength', ...x.meta } });
const Int = (minimum: number, maximum: number, x: Opt = {}) => Type.Integer(o({ minimum, maximum, ...x }));
const Num = (minimum: number, maximum: number, x: Opt = {}) => Type.Number(o({ minimum, maximum, ...x }));
const Bool = (x: Opt = {}) => Type.Boolean(o(x));
const Enum = <const T extends readonly (string | number)[]>(values: T, x: Opt = {}) =>
  Type.Union(
    values.map((v) => Type.Literal(v)),
    o(x),
  ) as unknown as ReturnType<typeof Type.Unsafe<T[number]>>;
/** A duration: milliseconds inside, a string such as "250ms" or "2s" on the wire (field `wire`). */
const Dur = (wire: string, description: string, x: { minMs?: number; maxMs?: number; default?: number; optional?: boolean; defaultText?: string } = {}) =>
  Type.Number(
    o({
      description,
      ...(x.default !== undefined ? { default: x.default } : {}),
      meta: { wire, duration: { minMs: x.minMs ?? 1, maxMs: x.maxMs ?? 24 * 3_600_000 }, ...(x.optional ? { optional: true, defaultText: x.defaultText } : {}) },
    }),
  );
const StrMap = (description: string, keys?: { pattern: string; message: string }, value?: TSchema, extra: Opt & { maxProperties?: number } = {}) =>
  Type.Unsafe<Readonly<Record<string, string>>>(
    Type.Record(Type.String(), value ?? Type.String(), o({ description, ...extra, ...(keys ? { propertyNames: { pattern: keys.pattern } } : {}), meta: { ...extra.meta, ...(keys ? { keys } : {}) } })),
  );
const Labels = (description: string) => StrMap(description, { pattern: LABEL_KEY, message: 'invalid label key' });

// ---------------------------------------------------------------------------------- envelope

const MetadataSchema = Obj(
  {
    name: Name('The resource name, unique per kind.'),
    namespace: Type.Optional(Name('Namespace (informational).', 63)),
    labels: Type.Optional(Labels('Labels.')),
    annotations: Type.Optional(StrMap('Free-form annotations.')),
    resourceVersion: Type.Optional(
      Type.String({ description: 'Set by the control plane; send it back to update optimistically.', [META]: { hook: 'resourceVersion', wireSchema: Type.Union([Type.String({ minLength: 1 }), Type.Integer()], { description: 'Set by the control plane; send it back to update optimistically.' }) } }),
    ),
    creationTimestamp: Type.Optional(Str({ description: 'Set by the store: when the resource was first created (ISO 8601).' })),
  },
  'Name, labels and bookkeeping of a resource.',
);
export type Metadata = Static<typeof MetadataSchema>;

// ---------------------------------------------------------------------------------- Route

const PathMatchSchema = Obj(
  {
    exact: Type.Optional(Str({ description: 'The whole path equals this.', pattern: SLASH, patternMessage: SLASH_TEXT, maxLength: LIMITS.matchValueLength, meta: { limit: 'matchValueLength' } })),
    prefix: Type.Optional(Str({ description: 'The path starts with this.', pattern: SLASH, patternMessage: SLASH_TEXT, maxLength: LIMITS.matchValueLength, meta: { limit: 'matchValueLength' } })),
    regex: Type.Optional(Str({ description: 'The whole path matches this regular expression.', maxLength: LIMITS.matchValueLength, meta: { regex: true, limit: 'matchValueLength' } })),
  },
  'Exactly one of exact, prefix, regex.',
);

const keyValueMatch = (header: boolean) =>
  Obj(
    {
      name: header ? HeaderName('The header name.') : Str({ description: 'The query parameter name.', maxLength: LIMITS.headerNameLength, meta: { limit: 'headerNameLength' } }),
      exact: Type.Optional(Str({ description: 'The value equals this.', minLength: 0, maxLength: LIMITS.matchValueLength, meta: { limit: 'matchValueLength' } })),
      regex: Type.Optional(Str({ description: 'The value matches this regular expression.', maxLength: LIMITS.matchValueLength, meta: { regex: true, limit: 'matchValueLength' } })),
      present: Type.Optional(Bool({ description: 'The parameter is present (must be true; use invert for absence).' })),
      invert: Type.Optional(Bool({ description: 'Inverts the match.' })),
    },
    header ? 'A header condition: exactly one of exact, regex, present.' : 'A query-parameter condition: exactly one of exact, regex, present.',
  );
const KeyValueMatchSchema = keyValueMatch(true);
/** Header and query-parameter matches: exactly one of exact, regex, present. */
export type KeyValueMatch = Static<typeof KeyValueMatchSchema>;

const METHOD = Str({ pattern: '^[A-Z]+$', patternMessage: 'must be an upper-case HTTP method such as GET', maxLength: 32 });
const RouteMatchSchema = Obj(
  {
    path: Type.Optional(PathMatchSchema),
    methods: Type.Optional(
      List(Type.String(), {
        description: 'Upper-case HTTP methods; any of them matches. One method or a list.',
        meta: { wire: 'method', hook: 'method', wireSchema: Type.Union([METHOD, Type.Array(METHOD, { minItems: 1, maxItems: 16 })], { description: 'Upper-case HTTP methods; any of them matches. One method or a list.' }) },
      }),
    ),
    headers: Type.Optional(List(KeyValueMatchSchema, { description: 'Header conditions, all must hold.', maxItems: LIMITS.conditionsPerMatch, meta: { limit: 'conditionsPerMatch' } })),
    queryParams: Type.Optional(List(keyValueMatch(false), { description: 'Query-parameter conditions, all must hold.', maxItems: LIMITS.conditionsPerMatch, meta: { limit: 'conditionsPerMatch' } })),
  },
  'Conditions on a request; all must hold.',
);
export type RouteMatch = Static<typeof RouteMatchSchema>;

const BackendRefSchema = Obj(
  {
    service: Name('The destination service.'),
    subset: Type.Optional(Name('A subset defined by the service\u2019s DestinationPolicy.', 63)),
    weight: Int(0, 1_000_000, { default: 1, description: 'Relative weight; 0 sends nothing.' }),
  },
  'A weighted destination.',
);

const HeaderEditsSchema = Obj(
  {
    set: Type.Optional(StrMap('Headers to set (replacing).', { pattern: HEADER_NAME, message: 'invalid header name' }, HeaderValue(), { maxProperties: LIMITS.headerEdits, meta: { lowerKeys: true, limit: 'headerEdits' } })),
    add: Type.Optional(StrMap('Headers to add (appending).', { pattern: HEADER_NAME, message: 'invalid header name' }, HeaderValue(), { maxProperties: LIMITS.headerEdits, meta: { lowerKeys: true, limit: 'headerEdits' } })),
    remove: Type.Optional(List(HeaderName('A header to remove.'), { description: 'Headers to remove.', maxItems: LIMITS.headerEdits, meta: { limit: 'headerEdits' } })),
  },
  'Header edits.',
);
function HeaderValue(): TSchema {
  return Type.String({ pattern: HEADER_VALUE, [META]: { patternMessage: 'invalid header value (control characters are not allowed)' } });
}
export type HeaderEdits = Static<typeof HeaderEditsSchema>;

const RedirectSchema = Obj(
  {
    scheme: Type.Optional(Enum(['http', 'https'] as const, { description: 'The new scheme.' })),
    host: Type.Optional(Str({ description: 'The new host.', pattern: '^[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?$', patternMessage: 'must be a DNS name or IP address', maxLength: LIMITS.hostLength })),
    port: Type.Optional(Int(1, 65535, { description: 'The new port.' })),
    path: Type.Optional(Str({ description: 'Replaces the whole path.', pattern: SLASH, patternMessage: SLASH_TEXT, maxLength: LIMITS.matchValueLength })),
    pathPrefix: Type.Optional(Str({ description: 'Replaces the matched path prefix (needs a path.prefix match).', pattern: SLASH, patternMessage: SLASH_TEXT, maxLength: LIMITS.matchValueLength })),
    statusCode: Enum([301, 302, 303, 307, 308] as const, { default: 302, description: 'The redirect status.' }),
  },
  'Answer with a redirect instead of forwarding.',
);

const RETRY_ON_LIST = `^\\s*(${RETRY_ON.join('|')})\\s*(,\\s*(${RETRY_ON.join('|')})\\s*)*$`;

const RetryPolicySchema = Obj(
  {
    attempts: Int(0, 10, { description: 'Retries after the first try.' }),
    perTryTimeoutMs: Type.Optional(Dur('perTryTimeout', 'Timeout of each try.')),
    retryOn: List(Enum(RETRY_ON), {
      default: ['connect-failure', 'reset', '5xx'],
      description: 'What is retried: a list, or a comma-separated string.',
      meta: {
        hook: 'retryOn',
        wireSchema: Type.Union([Type.String({ pattern: RETRY_ON_LIST, [META]: { patternMessage: `must be one of ${RETRY_ON.join(', ')}; got {value}` } }), Type.Array(Enum(RETRY_ON), { minItems: 1 })], {
          description: 'What is retried: a list, or a comma-separated string.',
          default: ['connect-failure', 'reset', '5xx'],
        }),
      },
    }),
    retriableStatusCodes: Type.Optional(List(Int(100, 599), { description: 'HTTP statuses retried with retriable-status-codes.', minItems: 1, maxItems: 100 })),
    backoff: Type.Optional(
      Obj(
        {
          baseIntervalMs: Dur('baseInterval', 'First backoff interval (jittered, doubling).', { default: 25 }),
          maxIntervalMs: Dur('maxInterval', 'Largest backoff interval.', { optional: true, defaultText: '10 x baseInterval' }),
        },
        'Exponential backoff between tries.',
      ),
    ),
    budget: Obj(
      {
        percent: Num(0, 1000, { default: 20, description: 'Retries allowed as a % of the requests in flight to the destination.' }),
        minRetriesPerSecond: Int(0, 100_000, { default: 10, description: 'Retries per second always allowed.' }),
      },
      'Retries allowed on top of requests (Linkerd\u2019s retryBudget); always in force.',
      { default: {} },
    ),
    bufferLimitBytes: Int(0, 64 * 1024 * 1024, { default: 64 * 1024, description: 'Request bodies up to this size are kept for a retry; above, no retry.' }),
  },
  'Retries of failed tries.',
);
export type RetryPolicy = Static<typeof RetryPolicySchema>;

const RouteBreakerSchema = Obj(
  {
    failureRateThreshold: Int(1, 100, { description: 'Open when at least this % of the calls in the window failed.' }),
    slowCallRateThreshold: Type.Optional(Int(1, 100, { description: 'Open when at least this % of the calls were slower than slowCallDuration.' })),
    slowCallDurationMs: Type.Optional(Dur('slowCallDuration', 'A call slower than this is slow.')),
    minimumCalls: Int(1, 100_000, { default: 10, description: 'Calls needed in the window before a rate is judged.' }),
    windowMs: Dur('window', 'The sliding time window.', { minMs: 100, maxMs: 3_600_000, default: 10_000 }),
    openDurationMs: Dur('openDuration', 'How long it stays open before trial calls.', { default: 30_000 }),
    halfOpenCalls: Int(1, 1000, { default: 3, description: 'Trial calls in half-open; all must succeed to close.' }),
  },
  'A per-route breaker with closed / open / half-open states.',
);
export type RouteBreaker = Static<typeof RouteBreakerSchema>;

const Percent = (d: string) => Num(0, 100, { default: 100, description: d });
const FaultInjectionSchema = Obj(
  {
    delay: Type.Optional(Obj({ fixedMs: Dur('fixed', 'The delay.', { maxMs: 600_000 }), percent: Percent('% of requests delayed.') }, 'Delay requests.')),
    abort: Type.Optional(
      Obj(
        {
          httpStatus: Type.Optional(Int(200, 599, { description: 'HTTP status answered.' })),
          grpcStatus: Type.Optional(Int(1, 16, { description: 'gRPC status answered.' })),
          percent: Percent('% of requests aborted.'),
        },
        'Abort requests.',
      ),
    ),
    header: Type.Optional(HeaderName('Only requests carrying this header are subject to the fault.')),
  },
  'Chaos testing: delay or abort a percentage of requests.',
);
export type FaultInjection = Static<typeof FaultInjectionSchema>;

const MirrorSchema = Obj(
  {
    service: Name('The service that receives copies.'),
    subset: Type.Optional(Name('A subset of it.', 63)),
    percent: Percent('% of requests copied.'),
  },
  'Copies a percentage of requests to another backend; responses are discarded.',
);
export type Mirror = Static<typeof MirrorSchema>;

// ------------------------------------------------------------------ Route: edge features
// The blocks below are compiled by the modules in src/edge (parse*Config there re-checks the
// cross-field rules: exactly one of jwksUri / jwks, `*` with credentials, aggregate references
// and cycles), once per snapshot; see docs/gateway.md.

const JwkSchema = Type.Unsafe<Readonly<Record<string, unknown>>>(
  Type.Record(Type.String(), Type.Unknown(), { description: 'A public JSON Web Key (RFC 7517): kty RSA, EC or OKP; no private parts.' }),
);

const JwtIssuerSchema = Obj(
  {
    issuer: Str({ description: 'The `iss` value tokens must carry.', maxLength: 2048 }),
    jwksUri: Type.Optional(Str({ description: 'Where the issuer publishes its keys (http or https); cached, refreshed on an unknown kid.', pattern: '^[hH][tT][tT][pP][sS]?://', patternMessage: 'must be an http(s) URL', maxLength: 2048 })),
    jwks: Type.Optional(Obj({ keys: List(JwkSchema, { description: 'The public keys.', minItems: 1, maxItems: LIMITS.jwksKeys, meta: { limit: 'jwksKeys' } }) }, 'Keys given inline.')),
    audiences: List(Str({ maxLength: 2048 }), { default: [], description: 'Accepted `aud` values (any one); empty: not checked.', maxItems: 100 }),
    algorithms: Type.Optional(List(Enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const), { description: 'Accepted algorithms (default: every asymmetric one; none and HMAC are never accepted).', minItems: 1 })),
  },
  'A token issuer: exactly one of jwksUri, jwks.',
);

const JwtSchema = Obj(
  {
    issuers: List(JwtIssuerSchema, { description: 'Accepted issuers.', minItems: 1, maxItems: LIMITS.jwtIssuers, meta: { limit: 'jwtIssuers' } }),
    required: Bool({ default: true, description: 'false: requests without a token pass (a token that is present must still be good).' }),
    header: HeaderName('Where the token is read (`Bearer <token>`).', { default: 'authorization' }),
    clockSkewSeconds: Int(0, 3600, { default: 60, description: 'Leeway for exp, nbf and iat.' }),
    requireExpiry: Bool({ default: true, description: 'Tokens without exp are refused.' }),
    requiredClaims: List(Str({ maxLength: 256 }), { default: [], description: 'Claims that must be present.', maxItems: 64 }),
    scopes: List(Str({ maxLength: 256 }), { default: [], description: 'Scopes the rule requires, all of them (from `scope` or `scp`); missing: 403.', maxItems: 64 }),
    claimHeaders: List(Obj({ claim: Str({ description: 'Claim name or dotted path (`realm_access.roles`).', maxLength: 256 }), header: HeaderName('The request header it is forwarded in.') }, 'A claim forwarded as a header.'), {
      default: [],
      description: 'Claims forwarded to the service as headers (client-sent copies are always removed).',
      maxItems: LIMITS.jwtClaimHeaders,
      meta: { limit: 'jwtClaimHeaders' },
    }),
    forwardAuthorization: Bool({ default: false, description: 'Keep the token header when forwarding (default: stripped).' }),
    tokenCacheSize: Int(0, 1_000_000, { default: 10_000, description: 'Verified tokens kept, by SHA-256, until they expire (0: off).' }),
  },
  'JWT bearer authentication (RFC 7519 / RFC 6750): 401 invalid_token, 403 insufficient_scope.',
);
export type JwtSpec = Static<typeof JwtSchema>;

const API_KEY_HASH = '^sha256:[0-9a-f]{64}$';
const ApiKeyHash = () =>
  Str({ pattern: API_KEY_HASH, patternMessage: 'must be a hash, sha256:<64 hex digits> (never the key itself: `meshlet apikey create` makes a key and stores its hash; by hand, `printf %s KEY | sha256sum`)' });
const RFC3339 = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?(Z|[+-]\\d{2}:\\d{2})$';
const ApiKeyEntry = () =>
  Obj(
    {
      hash: ApiKeyHash(),
      expiresAt: Type.Optional(Str({ pattern: RFC3339, patternMessage: 'must be an RFC 3339 time such as 2027-01-31T00:00:00Z', maxLength: 40, description: 'When the key stops being accepted (RFC 3339); absent: never.' })),
    },
    'A hashed key, and when it expires.',
  );
/**
 * A list of hashed keys: on the wire each one is the hash alone or `{hash, expiresAt}`; inside,
 * always `{hash, expiresAt?}` (wire.ts `apiKeys`).
 */
const ApiKeyList = (description: string, x: { minItems?: number; default?: readonly never[] } = {}) =>
  List(ApiKeyEntry(), {
    ...x,
    description,
    maxItems: LIMITS.apiKeysPerConsumer,
    meta: {
      limit: 'apiKeysPerConsumer',
      hook: 'apiKeys',
      wireSchema: Type.Array(Type.Union([ApiKeyHash(), ApiKeyEntry()]), { description, maxItems: LIMITS.apiKeysPerConsumer, ...x }),
    },
  });
const ApiKeysSchema = Obj(
  {
    consumers: List(
      Obj(
        {
          name: Str({ description: 'The consumer, forwarded to the service and usable as the rate-limit descriptor `consumer`.', pattern: '^[A-Za-z0-9._@-]+$', patternMessage: 'must be letters, digits, . _ @ or -', maxLength: 128 }),
          keys: ApiKeyList('The consumer\u2019s keys, hashed: `sha256:<hex>`, or `{hash, expiresAt}` for a key that expires.', { minItems: 1 }),
        },
        'A client allowed on this rule, with its hashed keys.',
      ),
      { default: [], description: 'Consumers allowed, written here (at least one of consumers, consumerRefs).', maxItems: LIMITS.apiKeyConsumers, meta: { limit: 'apiKeyConsumers' } },
    ),
    consumerRefs: List(Name('An ApiConsumer\u2019s name.'), {
      default: [],
      description:
        'ApiConsumers (resources) allowed, by name: their keys as they are stored now (`meshlet apikey create` adds one; removing it or deleting the consumer refuses its keys at once). A name with no ApiConsumer allows nobody (`meshlet check` MC0019).',
      maxItems: LIMITS.apiKeyConsumers,
      meta: { limit: 'apiKeyConsumers' },
    }),
    from: List(Obj({ header: Type.Optional(HeaderName('A request header.')), query: Type.Optional(Str({ description: 'A query parameter.', maxLength: 256 })) }, 'Exactly one of header, query.'), {
      default: [{ header: 'x-api-key' }],
      description: 'Where the key is read, tried in order.',
      minItems: 1,
      maxItems: 4,
    }),
    consumerHeader: HeaderName('The header the consumer\u2019s name is forwarded in.', { default: 'x-meshlet-consumer' }),
    hideCredentials: Bool({ default: true, description: 'Remove the key before forwarding.' }),
    required: Bool({ default: true, description: 'false: requests without a key pass anonymously (a key that is present must be valid).' }),
  },
  'API-key authentication: 401 with `WWW-Authenticate: ApiKey` for a missing or unknown key.',
);
export type ApiKeysSpec = Static<typeof ApiKeysSchema>;

const CIDR = Str({ pattern: '^[0-9A-Fa-f:.]+(/\\d{1,3})?$', patternMessage: 'must be an IPv4/IPv6 address or CIDR such as 10.0.0.0/8', maxLength: 64 });
const IpFilterSchema = Obj(
  {
    allow: List(CIDR, { default: [], description: 'Non-empty: every other client address is refused (403).', maxItems: LIMITS.ipFilterCidrs, meta: { limit: 'ipFilterCidrs' } }),
    deny: List(CIDR, { default: [], description: 'Refused client addresses (wins over allow).', maxItems: LIMITS.ipFilterCidrs, meta: { limit: 'ipFilterCidrs' } }),
  },
  'Client address allow / deny lists by CIDR.',
);
export type IpFilterSpec = Static<typeof IpFilterSchema>;

const CorsSchema = Obj(
  {
    allowOrigins: List(Str({ maxLength: LIMITS.hostLength + 16 }), { description: 'Allowed origins: exact, `*`, or `https://*.example.com`.', minItems: 1, maxItems: 100 }),
    allowMethods: List(Str({ pattern: '^[A-Za-z]+$', patternMessage: 'must be a method name', maxLength: 32 }), { default: ['GET', 'HEAD', 'POST'], description: 'Methods a preflight may ask for.', minItems: 1, maxItems: 32 }),
    allowHeaders: List(Str({ maxLength: LIMITS.headerNameLength }), { default: [], description: 'Request headers a preflight may ask for (`*`: any).', maxItems: 100 }),
    exposeHeaders: List(Str({ maxLength: LIMITS.headerNameLength }), { default: [], description: 'Response headers scripts may read.', maxItems: 100 }),
    allowCredentials: Bool({ default: false, description: 'Allow cookies and credentials (not with origin `*`).' }),
    maxAgeSeconds: Int(0, 86400, { default: 600, description: 'How long browsers keep a preflight answer.' }),
  },
  'CORS: preflights answered by the mesh (204, or 403 naming what was refused); CORS headers on allowed answers.',
);
export type CorsSpec = Static<typeof CorsSchema>;

const CacheSchema = Obj(
  {
    maxEntryBytes: Int(1, 1 << 30, { default: 1 << 20, description: 'Larger responses pass through unstored.' }),
    defaultTtlSeconds: Int(0, 365 * 86400, { default: 0, description: 'Freshness for cacheable responses that give none (0: only explicit freshness).' }),
    hitForPassSeconds: Int(0, 3600, { default: 10, description: 'A key whose response was not storable skips request coalescing this long.' }),
    key: Obj(
      {
        host: Bool({ default: true, description: 'The Host takes part in the key.' }),
        query: Type.Union([Enum(['all', 'none'] as const), Type.Array(Str({ maxLength: 256 }), { maxItems: LIMITS.cacheKeyParts })], {
          default: 'all',
          description: 'Query parameters in the key: `all`, `none`, or a list of names (order-insensitive).',
        }),
        headers: List(HeaderName('A request header.'), { default: [], description: 'Request headers that split entries (beyond Vary).', maxItems: LIMITS.cacheKeyParts, meta: { limit: 'cacheKeyParts' } }),
      },
      'What a cache entry is keyed by (always with the method and path).',
      { default: {} },
    ),
  },
  'An RFC 9111 shared cache for this rule\u2019s GET/HEAD answers; the total size is the process\u2019s --cache-max-bytes.',
);
export type CacheSpec = Static<typeof CacheSchema>;

const AggregateBackendSchema = Obj(
  {
    name: Str({ description: 'The backend\u2019s name (in templates, errors and spans).', pattern: '^[A-Za-z][A-Za-z0-9_-]*$', patternMessage: 'must be a letter, then letters, digits, _ or -', maxLength: 63 }),
    service: Name('The mesh service (or Route host) called.'),
    method: Enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'] as const, { default: 'GET', description: 'The method.' }),
    path: Str({ description: 'Path template: `{path.NAME}`, `{query.NAME}` (the client request), `{BACKEND.field}` (waits for that backend).', pattern: SLASH, patternMessage: SLASH_TEXT, maxLength: LIMITS.matchValueLength }),
    timeoutMs: Dur('timeout', 'This backend\u2019s timeout.', { maxMs: 300_000, default: 3000 }),
    group: Type.Optional(Str({ description: 'Put the answer under this key (else merged at the top level).', maxLength: 128 })),
    target: Type.Optional(Str({ description: 'Take this dotted part of the answer.', maxLength: 256 })),
    allow: List(Str({ maxLength: 256 }), { default: [], description: 'Keep only these (dotted) fields.', maxItems: 100 }),
    deny: List(Str({ maxLength: 256 }), { default: [], description: 'Drop these (dotted) fields.', maxItems: 100 }),
    rename: Type.Optional(StrMap('Rename top-level fields: `{ old: new }`.', undefined, undefined, { maxProperties: 100 })),
    required: Bool({ default: false, description: 'Its failure fails the whole answer (502, or 504 for a timeout).' }),
  },
  'One backend of an aggregation.',
);
const AggregateSchema = Obj(
  {
    backends: List(AggregateBackendSchema, { description: 'Called concurrently (or after the backends their path names).', minItems: 1, maxItems: LIMITS.aggregateBackends, meta: { limit: 'aggregateBackends' } }),
    requireAll: Bool({ default: false, description: 'Every backend is required.' }),
    maxBodyBytes: Int(1, 64 << 20, { default: 1 << 20, description: 'Largest answer per backend.' }),
    forwardHeaders: List(HeaderName('A request header.'), { default: [], description: 'Client request headers passed to every backend.', maxItems: 32 }),
    errorDetails: Bool({ default: true, description: 'Put the per-backend error summary (`_errors`) in the body.' }),
    pathTemplate: Type.Optional(
      Str({
        description: 'The client path as a template, e.g. `/users/{id}` or `/files/{rest=**}`: each `{NAME}` is one whole segment (`{NAME=**}`, last, the rest of the path), and is `{path.NAME}` in backend paths. A path that does not fit leaves them empty.',
        pattern: SLASH,
        patternMessage: SLASH_TEXT,
        maxLength: LIMITS.matchValueLength,
      }),
    ),
  },
  'Answer with one JSON document merged from several backends (instead of backends/redirect).',
);
export type AggregateSpec = Static<typeof AggregateSchema>;

const RouteRuleSchema = Obj(
  {
    name: Name('Rule name, used in metrics and by RateLimitPolicy.', 63),
    matches: List(RouteMatchSchema, { default: [], description: 'Any match selects the rule; empty: every request.', maxItems: LIMITS.matchesPerRule, meta: { limit: 'matchesPerRule' } }),
    backends: Type.Optional(List(BackendRefSchema, { description: 'Where requests go.', minItems: 1, maxItems: LIMITS.backendsPerRule, meta: { limit: 'backendsPerRule' } })),
    redirect: Type.Optional(RedirectSchema),
    requestHeaders: Type.Optional(HeaderEditsSchema),
    responseHeaders: Type.Optional(HeaderEditsSchema),
    rewrite: Type.Optional(
      Obj(
        {
          pathPrefix: Type.Optional(Str({ description: 'Replaces the matched path prefix.', pattern: SLASH, patternMessage: SLASH_TEXT, maxLength: LIMITS.matchValueLength })),
          host: Type.Optional(Str({ description: 'Replaces the Host.', pattern: HOST, patternMessage: 'must be a DNS name, optionally with :port', maxLength: LIMITS.hostLength })),
        },
        'Rewrites before forwarding.',
      ),
    ),
    timeoutMs: Type.Optional(Dur('timeout', 'Route timeout, retries included.')),
    retries: Type.Optional(RetryPolicySchema),
    breaker: Type.Optional(RouteBreakerSchema),
    fault: Type.Optional(FaultInjectionSchema),
    mirror: Type.Optional(MirrorSchema),
    aggregate: Type.Optional(AggregateSchema),
    ipFilter: Type.Optional(IpFilterSchema),
    jwt: Type.Optional(JwtSchema),
    apiKeys: Type.Optional(ApiKeysSchema),
    cache: Type.Optional(CacheSchema),
    traceSamplingPercent: Type.Optional(
      Num(0, 100, {
        meta: {
          wire: 'tracing',
          hook: 'tracing',
          wireSchema: Obj({ samplingPercent: Num(0, 100, { description: '% of new traces started on this rule that are sampled.' }) }, 'Tracing of this rule.'),
        },
      }),
    ),
  },
  'A rule: matches, and what to do with the requests they select.',
);
RouteRuleSchema.properties.name[META] = { ...meta(RouteRuleSchema.properties.name), optional: true, defaultText: 'rule-<index>' };
export type RouteRule = Static<typeof RouteRuleSchema>;

const GrpcRouteOptionsSchema = Obj(
  {
    maxMessageBytes: Type.Optional(Int(1, 0xffffffff, { description: 'Largest gRPC message, either way (default 4 MiB).' })),
    allowOrigins: Type.Optional(
      List(
        Str({
          pattern: '^(\\*|[hH][tT][tT][pP][sS]?:\\/\\/[a-zA-Z0-9.-]+(:\\d{1,5})?)$',
          patternMessage: 'must be "*" or an origin such as "https://app.example.com" (scheme, host, optional port; no path)',
          maxLength: LIMITS.hostLength + 16,
          meta: { lower: true },
        }),
        { description: 'gRPC-Web: browser origins allowed by CORS.', minItems: 1, maxItems: 100 },
      ),
    ),
  },
  'gRPC and gRPC-Web calls on this route.',
);
export type GrpcRouteOptions = Static<typeof GrpcRouteOptionsSchema>;

const RouteSpecSchema = Obj(
  {
    hosts: List(
      Str({
        pattern: HOST_ANY_CASE,
        patternMessage: 'invalid host {value}: use a DNS name, optionally with :port, or a "*." wildcard',
        maxLength: LIMITS.hostLength,
        meta: { lower: true, limit: 'hostLength' },
      }),
      { description: 'Hostnames (optionally host:port) this route serves; `*.example.com` wildcards allowed.', minItems: 1, maxItems: LIMITS.hostsPerRoute, meta: { limit: 'hostsPerRoute' } },
    ),
    rules: List(RouteRuleSchema, { description: 'Rules, first match wins.', minItems: 1, maxItems: LIMITS.rulesPerRoute, meta: { limit: 'rulesPerRoute' } }),
    grpc: Type.Optional(GrpcRouteOptionsSchema),
    cors: Type.Optional(CorsSchema),
    websocket: Type.Optional(Obj({ idleTimeoutMs: Type.Optional(Dur('idleTimeout', 'A tunnel idle this long is closed.')) }, 'WebSocket (HTTP/1.1 Upgrade) connections on this route.')),
    gateways: Type.Optional(
      List(Name('A Gateway name, or `mesh` (the sidecars).', 63), {
        description:
          'Where the route applies (Istio\u2019s `gateways`): absent, in the mesh only (every sidecar\u2019s outbound side); a list of Gateway names, at those gateways only; add the reserved name `mesh` to apply in the mesh as well.',
        minItems: 1,
        maxItems: 16,
      }),
    ),
  },
  'Routes requests for some hosts to backends.',
);
export type RouteSpec = Static<typeof RouteSpecSchema>;

// ------------------------------------------------------------------------ DestinationPolicy


const LoadBalancerSchema = Obj(
  {
    type: Enum(LB_TYPES, { description: 'The algorithm.' }),
    hashHeader: Type.Optional(HeaderName('ring-hash only: the request header whose value is hashed.')),
    ringSize: Type.Optional(Int(1, 4096, { description: 'ring-hash only: virtual nodes per unit of endpoint weight (default 128).' })),
    choiceCount: Type.Optional(Int(2, 10, { description: 'least-request only: how many random endpoints to compare (default 2).' })),
  },
  'How an endpoint is picked.',
  { default: { type: 'round-robin' } },
);
export type LoadBalancer = Static<typeof LoadBalancerSchema>;

const SubsetSchema = Obj({ name: Name('The subset name.', 63), labels: Labels('Endpoint labels that select it.') }, 'A named set of endpoints.');

const CircuitBreakerSchema = Obj(
  {
    maxConnections: Type.Optional(Int(0, 10_000_000, { description: 'Connections to the service.' })),
    maxPendingRequests: Type.Optional(Int(0, 10_000_000, { description: 'Requests waiting for a connection.' })),
    maxRequests: Type.Optional(Int(0, 10_000_000, { description: 'Requests in flight.' })),
    maxRetries: Type.Optional(Int(0, 10_000_000, { description: 'Retries in flight.' })),
  },
  'Limits towards the service.',
);

const OutlierDetectionSchema = Obj(
  {
    consecutive5xx: Type.Optional(Int(1, 1000, { description: 'Eject after this many 5xx in a row.' })),
    consecutiveGatewayErrors: Type.Optional(Int(1, 1000, { description: 'Eject after this many 502/503/504 in a row.' })),
    failurePercentage: Type.Optional(
      Obj(
        {
          threshold: Int(1, 100, { description: 'Eject an endpoint whose failure % is at least this.' }),
          minimumHosts: Int(1, 10_000, { default: 5, description: 'Endpoints needed to judge.' }),
          requestVolume: Int(1, 1_000_000, { default: 50, description: 'Requests an endpoint needs in the interval to be judged.' }),
        },
        'Failure-percentage ejection.',
      ),
    ),
    intervalMs: Dur('interval', 'How often ejection is evaluated.', { minMs: 10, default: 10_000 }),
    baseEjectionTimeMs: Dur('baseEjectionTime', 'Ejection time (multiplied by the times ejected).', { default: 30_000 }),
    maxEjectionPercent: Int(0, 100, { default: 10, description: 'At most this % of endpoints ejected.' }),
    panicThreshold: Int(0, 100, { default: 50, description: 'Below this % of healthy endpoints, ejection is ignored.' }),
  },
  'Passive health: eject failing endpoints for a while.',
);
export type OutlierDetection = Static<typeof OutlierDetectionSchema>;

const HealthCheckSchema = Obj(
  {
    httpPath: Type.Optional(Str({ description: 'An HTTP GET to this path; 2xx is healthy.', pattern: '^\\/[\\x21-\\x7e]*$', patternMessage: 'must be a path starting with "/"', maxLength: LIMITS.matchValueLength })),
    grpcService: Type.Optional(Str({ description: "The gRPC health protocol for this service name ('' = server).", minLength: 0, pattern: '^[\\w.]*$', patternMessage: 'must be a gRPC service name', maxLength: 256 })),
    intervalMs: Dur('interval', 'Time between checks.', { minMs: 10, default: 5_000 }),
    timeoutMs: Dur('timeout', 'Timeout of a check.', { minMs: 1, default: 1_000 }),
    unhealthyThreshold: Int(1, 100, { default: 2, description: 'Failed checks in a row to mark unhealthy.' }),
    healthyThreshold: Int(1, 100, { default: 1, description: 'Passed checks in a row to mark healthy.' }),
  },
  'Active health checking of every endpoint; exactly one of httpPath, grpcService.',
);
export type HealthCheck = Static<typeof HealthCheckSchema>;

const PROTOCOL = Enum(['auto', 'http1', 'http2'] as const, { default: 'auto', description: 'Protocol towards the endpoints; `auto` keeps the downstream\u2019s protocol.' });
export type UpstreamProtocol = 'auto' | 'http1' | 'http2';

const DestinationPolicySpecSchema = Obj(
  {
    service: Name('The destination service.'),
    loadBalancer: LoadBalancerSchema,
    subsets: List(SubsetSchema, { default: [], description: 'Named subsets of endpoints, by labels.', maxItems: 100 }),
    circuitBreaker: Type.Optional(CircuitBreakerSchema),
    outlierDetection: Type.Optional(OutlierDetectionSchema),
    healthCheck: Type.Optional(HealthCheckSchema),
    protocol: PROTOCOL,
    connectTimeoutMs: Type.Optional(Dur('connectTimeout', 'Connect timeout.', { maxMs: 600_000 })),
    idleTimeoutMs: Type.Optional(Dur('idleTimeout', 'Idle upstream connections are closed after this long (default 60 s).', { minMs: 100 })),
    http2Upgrade: Type.Optional(Bool({ description: 'HTTP/1.1 requests to meshed endpoints travel multiplexed over one HTTP/2 connection between sidecars (default false: opt-in until more measurements confirm that it costs no more CPU per request, and no more latency, than HTTP/1.1 between them; see docs/performance.md).' })),
  },
  'How traffic to a service is balanced and protected.',
);
export type DestinationPolicySpec = Static<typeof DestinationPolicySpecSchema>;

// -------------------------------------------------------------------------- RateLimitPolicy

const DescriptorSchema = Type.Union([Obj({ key: Enum(DESCRIPTOR_KEYS) }, 'A built-in key.'), Obj({ header: HeaderName('A request header.') }, 'A request header\u2019s value.')]);
/** What a limit is keyed by: a built-in key, or a request header's value. */
export type Descriptor = Static<typeof DescriptorSchema>;

const RateLimitSchema = Obj(
  {
    name: Name('Limit name.', 63),
    routes: Type.Optional(
      List(Str({ pattern: '^[a-z0-9][-a-z0-9.]*(\\/[a-z0-9][-a-z0-9]*)?$', patternMessage: 'must be "route" or "route/rule"', maxLength: 320 }), {
        description: 'Applies to requests on these Route rules (`route/rule` or `route`); empty: all.',
        minItems: 1,
        maxItems: 100,
      }),
    ),
    descriptors: List(DescriptorSchema, {
      default: [],
      description: 'What the limit is keyed by: built-in keys (a string) or `{ header: name }`.',
      meta: {
        hook: 'descriptor',
        wireSchema: Type.Array(
          Type.Union([
            Enum(DESCRIPTOR_KEYS),
            Obj({ key: Type.Optional(Enum(DESCRIPTOR_KEYS)), header: Type.Optional(HeaderName('A request header.')) }, 'Exactly one of key, header.'),
          ]),
          { description: 'What the limit is keyed by: built-in keys (a string) or `{ header: name }`.', default: [], maxItems: 16 },
        ),
      },
    }),
    requests: Int(1, 1_000_000_000, { description: 'Requests allowed per period.' }),
    periodMs: Dur('per', 'The period.', { minMs: 1, maxMs: 24 * 3_600_000 }),
    burst: Int(0, 1_000_000_000, { default: 0, description: 'Extra requests allowed in a burst above the steady rate.' }),
    scope: Enum(['local', 'global'] as const, { default: 'local', description: 'Per sidecar, or shared through redis.' }),
  },
  'A limit.',
);
RateLimitSchema.properties.name[META] = { ...meta(RateLimitSchema.properties.name), optional: true, defaultText: 'limit-<index>' };
export type RateLimit = Static<typeof RateLimitSchema>;

const RateLimitPolicySpecSchema = Obj(
  {
    service: Name('The destination service whose inbound traffic this policy limits.'),
    failureMode: Enum(['open', 'closed'] as const, { default: 'open', description: 'When redis fails: allow (open) or refuse (closed).' }),
    limits: List(RateLimitSchema, { description: 'The limits.', minItems: 1, maxItems: 100 }),
    redis: Type.Optional(
      Obj(
        {
          address: Str({ description: 'host:port of redis.', pattern: '^[A-Za-z0-9.\\-\\[\\]:]+:\\d{1,5}$', patternMessage: 'must be host:port', maxLength: 300 }),
          timeoutMs: Dur('timeout', 'Timeout of a redis call.', { minMs: 1, maxMs: 10_000, default: 5 }),
        },
        'Shared counters for scope global.',
      ),
    ),
  },
  'Rate limits on a service\u2019s inbound traffic.',
);
export type RateLimitPolicySpec = Static<typeof RateLimitPolicySpecSchema>;

// ---------------------------------------------------------------------------------- Service

const StaticEndpointSchema = Obj(
  {
    address: Str({ description: 'IP address or DNS name.', pattern: '^[A-Za-z0-9.\\-:]+$', patternMessage: 'must be an IP address or DNS name', maxLength: LIMITS.hostLength }),
    port: Int(1, 65535, { description: 'Port.' }),
    labels: Labels('Labels (for subsets).'),
    weight: Int(1, 1000, { default: 1, description: 'Relative weight.' }),
  },
  'An endpoint outside the mesh.',
);
StaticEndpointSchema.properties.labels.default = {};

const ServiceSpecSchema = Obj(
  {
    endpoints: List(StaticEndpointSchema, { default: [], description: 'Endpoints outside the mesh, reached directly (no sidecar at the far end); none for a meshed service.', maxItems: 1000 }),
    protocol: PROTOCOL,
    dependencies: Type.Optional(
      List(
        Str({
          pattern: HOST,
          patternMessage: 'must be a service name, a host (optionally host:port), a "*." wildcard, or "*" (the whole mesh)',
          maxLength: LIMITS.hostLength,
          meta: { limit: 'hostLength' },
        }),
        {
          description:
            'The services (or hosts) this service\u2019s sidecars call. Set: each of its sidecars is pushed only the Routes for these hosts, the backends they name, and the policies and endpoints of those services and its own (docs/scale.md). `*`: the whole mesh. Unset: the whole mesh.',
          maxItems: LIMITS.hostsPerRoute,
          meta: { limit: 'hostsPerRoute' },
        },
      ),
    ),
  },
  'A service: its endpoints outside the mesh, and which services its sidecars call.',
);
export type ServiceSpec = Static<typeof ServiceSpecSchema>;

// -------------------------------------------------------------------------- GrpcTranscoding

const ProtoFileSchema = Obj(
  {
    name: Str({ description: 'The name other protos import it by, e.g. `pricing/v1/pricing.proto`.', pattern: '^[A-Za-z0-9_.\\-/]+\\.proto$', patternMessage: 'must be a relative .proto path such as "pricing/v1/pricing.proto"', maxLength: 512 }),
    source: Str({ description: 'The .proto text (`meshlet apply -f` embeds `file:`).', maxLength: LIMITS.resourceBytes }),
  },
  'One .proto file, its text embedded.',
);
ProtoFileSchema[META] = {
  refused: {
    file: (p: Record<string, unknown>) =>
      p.source === undefined
        ? 'is read and embedded as source by `meshlet apply -f`, `meshlet up` and `meshlet sidecar --config`; the API and the push stream take the text in source'
        : 'set file or source, not both',
  },
};

const GrpcTranscodingSpecSchema = Obj(
  {
    service: Name('The mesh service whose outbound requests are transcoded.'),
    protos: List(ProtoFileSchema, { description: 'The .proto files.', minItems: 1, maxItems: 100 }),
    services: List(Str({ pattern: '^\\.?[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*$', patternMessage: 'must be a fully-qualified gRPC service name such as "demo.pricing.v1.Pricing"', maxLength: 512 }), {
      description: 'Fully-qualified gRPC services to expose, e.g. `demo.pricing.v1.Pricing`.',
      minItems: 1,
      maxItems: 100,
    }),
    unknownMethods: Enum(['reject', 'passthrough'] as const, { default: 'reject', description: 'A request no binding matches: `reject` (404 JSON) or `passthrough`.' }),
    ignoreUnknownQueryParameters: Bool({ default: false, description: 'Ignore query parameters that name no field.' }),
    emitDefaults: Bool({ default: false, description: 'Print fields at their default value in responses.' }),
    maxRequestBytes: Int(1, 64 * 1024 * 1024, { default: 4 * 1024 * 1024, description: 'Largest JSON request body.' }),
    maxResponseBytes: Int(1, 64 * 1024 * 1024, { default: 4 * 1024 * 1024, description: 'Largest JSON response body.' }),
  },
  'HTTP/JSON -> gRPC transcoding for one destination service.',
);
export type GrpcTranscodingSpec = Static<typeof GrpcTranscodingSpecSchema>;

// ---------------------------------------------------------------------- AuthorizationPolicy

const Glob = (description: string) =>
  Str({ description, pattern: '^[\\x21-\\x7e]+$', patternMessage: 'must be printable ASCII without spaces; `*` matches any characters', maxLength: LIMITS.matchValueLength, meta: { limit: 'matchValueLength' } });
const GlobList = (description: string) => List(Glob('A name or pattern.'), { description, minItems: 1, maxItems: LIMITS.authzValuesPerList, meta: { limit: 'authzValuesPerList' } });

const AuthzSourceSchema = Obj(
  {
    spiffeIds: Type.Optional(GlobList('SPIFFE IDs of the verified caller certificate; `*` matches any characters (`spiffe://td/ns/shop/*`).')),
    services: Type.Optional(GlobList('Caller services: the `NAME` of `.../svc/NAME`, or the service account of `.../sa/NAME`; `*` wildcards.')),
    namespaces: Type.Optional(GlobList('Caller namespaces (`.../ns/NS/...`); `*` wildcards.')),
    unauthenticated: Type.Optional(Bool({ description: 'true: only callers without a verified certificate (plaintext); false: only verified ones.' })),
  },
  'A caller: all the fields set must hold (at least one).',
);

const AuthzHeaderSchema = Obj(
  {
    name: HeaderName('The header name.'),
    exact: Type.Optional(Str({ description: 'The value equals this.', minLength: 0, maxLength: LIMITS.matchValueLength, meta: { limit: 'matchValueLength' } })),
    prefix: Type.Optional(Str({ description: 'The value starts with this.', maxLength: LIMITS.matchValueLength, meta: { limit: 'matchValueLength' } })),
    regex: Type.Optional(Str({ description: 'The whole value matches this regular expression.', maxLength: LIMITS.matchValueLength, meta: { regex: true, limit: 'matchValueLength' } })),
    present: Type.Optional(Bool({ description: 'true: the header is present (the default when no value match is set); false: it is absent.' })),
  },
  'A header condition: at most one of exact, prefix, regex; or present.',
);

const AuthzRequestSchema = Obj(
  {
    methods: Type.Optional(List(METHOD, { description: 'Upper-case HTTP methods (gRPC calls are POST).', minItems: 1, maxItems: 16 })),
    paths: Type.Optional(List(PathMatchSchema, { description: 'Paths (the query string ignored); any of them matches. gRPC: `/package.Service/Method`.', minItems: 1, maxItems: LIMITS.conditionsPerMatch, meta: { limit: 'conditionsPerMatch' } })),
    headers: Type.Optional(List(AuthzHeaderSchema, { description: 'Header conditions, all must hold.', minItems: 1, maxItems: LIMITS.conditionsPerMatch, meta: { limit: 'conditionsPerMatch' } })),
    ports: Type.Optional(List(Int(1, 65535), { description: 'Application ports the request is for (the sidecar\u2019s app port).', minItems: 1, maxItems: 64 })),
  },
  'Conditions on the request; all the fields set must hold.',
);

const AuthzRuleSchema = Obj(
  {
    name: Type.Optional(Name('The rule name, shown in metrics, logs, explain and denied answers.', 63)),
    action: Enum(['ALLOW', 'DENY', 'AUDIT'] as const, { description: 'ALLOW or DENY matching requests; AUDIT only logs and counts them.' }),
    from: Type.Optional(List(AuthzSourceSchema, { description: 'Callers; any of them matches (absent: any caller).', minItems: 1, maxItems: LIMITS.authzValuesPerList, meta: { limit: 'authzValuesPerList' } })),
    to: Type.Optional(AuthzRequestSchema),
  },
  'A rule: matches when one `from` source and every `to` condition hold.',
);
AuthzRuleSchema.properties.name[META] = { ...meta(AuthzRuleSchema.properties.name), defaultText: 'rules[<index>]' };
export type AuthzRule = Static<typeof AuthzRuleSchema>;

const AuthorizationPolicySpecSchema = Obj(
  {
    service: Type.Optional(Name('The callee service whose inbound requests this policy judges; absent: every service (a mesh-wide default).')),
    defaultAction: Type.Optional(Enum(['ALLOW', 'DENY'] as const, { description: 'When no rule matches. Absent: the mesh-wide policy\u2019s; else DENY if any ALLOW rule applies to the service (an allow-list), else ALLOW.' })),
    dryRun: Bool({ default: false, description: 'Log and count what the DENY rules and a DENY default would deny (`would_deny`), without denying. Start here.' }),
    rules: List(AuthzRuleSchema, { default: [], description: 'The rules; DENY rules are evaluated before ALLOW rules.', maxItems: LIMITS.authzRules, meta: { limit: 'authzRules' } }),
  },
  'Who may call a service, and what: ALLOW / DENY / AUDIT rules on the caller\u2019s identity and the request.',
);
export type AuthorizationPolicySpec = Static<typeof AuthorizationPolicySpecSchema>;
// ----------------------------------------------------------------------- PeerAuthentication

const PeerAuthenticationSpecSchema = Obj(
  {
    service: Type.Optional(Name('The service whose inbound port this applies to; omitted: the whole mesh (name that policy `default`).')),
    mode: Enum(['STRICT', 'PERMISSIVE', 'DISABLE'] as const, {
      description: 'STRICT: mTLS only, plaintext connections are closed. PERMISSIVE: mTLS and plaintext on the same port (for migration and callers outside the mesh). DISABLE: plaintext only; callers do not dial mTLS.',
    }),
  },
  'Whether a service\u2019s sidecar takes mTLS, plaintext, or both (without any: PERMISSIVE, and sidecars with certificates talk mTLS).',
);
export type PeerAuthenticationSpec = Static<typeof PeerAuthenticationSpecSchema>;
// ---------------------------------------------------------------------------------- Gateway

const CertificateSchema = Obj(
  {
    certFile: Type.Optional(Str({ description: 'PEM certificate chain file on the gateway\u2019s host (leaf first); watched and reloaded when it changes. With keyFile; or use secret.', maxLength: 4096 })),
    keyFile: Type.Optional(Str({ description: 'PEM private key file on the gateway\u2019s host; watched and reloaded with the certificate.', maxLength: 4096 })),
    secret: Type.Optional(
      Name('A TLSCertificate in the control plane\u2019s store (instead of certFile / keyFile): pushed only to the gateways whose Gateway names it, swapped without a restart when it is updated.', 253),
    ),
  },
  'A certificate and its key: from files on the gateway\u2019s host (certFile and keyFile; a Kubernetes Secret mounted as a volume is such a pair), or from the store (secret).',
);

const GatewayListenerSchema = Obj(
  {
    name: Name('Listener name, used in metrics and logs.', 63),
    port: Int(1, 65535, { description: 'The port clients connect to.' }),
    protocol: Enum(['HTTP', 'HTTPS'] as const, { description: 'HTTP (plaintext HTTP/1.1 and h2c) or HTTPS (TLS 1.2+, HTTP/2 by ALPN).' }),
    hostnames: Type.Optional(
      List(
        Str({ pattern: HOST_ANY_CASE, patternMessage: 'invalid hostname {value}: use a DNS name or a "*." wildcard', maxLength: LIMITS.hostLength, meta: { lower: true, limit: 'hostLength' } }),
        { description: 'Host names served; other Host headers get 404 (flag NR). Absent: any.', minItems: 1, maxItems: LIMITS.hostsPerRoute, meta: { limit: 'hostsPerRoute' } },
      ),
    ),
    tls: Type.Optional(
      Obj(
        {
          certificates: List(CertificateSchema, { description: 'Certificates, chosen by the client\u2019s SNI against their DNS names; the first one when none matches (or no SNI).', minItems: 1, maxItems: 100 }),
          minVersion: Enum(['TLSv1.2', 'TLSv1.3'] as const, { default: 'TLSv1.2', description: 'Oldest TLS version accepted (never below 1.2).' }),
        },
        'TLS termination (HTTPS listeners).',
      ),
    ),
    httpsRedirect: Bool({ default: false, description: 'HTTP listeners: answer every request with 301 to the same URL on https (the port of the gateway\u2019s first HTTPS listener; omitted when 443).' }),
    limits: Obj(
      {
        maxRequestBodyBytes: Int(0, 1024 * 1024 * 1024, { default: 10 * 1024 * 1024, description: 'Largest request body; more answers 413 (0: no limit).' }),
        maxHeaderBytes: Int(1024, 1024 * 1024, { default: 64 * 1024, description: 'Request header bytes allowed; more answers 431.' }),
        requestHeadersTimeoutMs: Dur('requestHeadersTimeout', 'A client must send its request headers (and finish the TLS handshake) within this time; else 408.', { minMs: 100, maxMs: 600_000, default: 10_000 }),
        requestBodyIdleTimeoutMs: Dur('requestBodyIdleTimeout', 'A request body receiving nothing for this long is answered 408 (flag SI).', { minMs: 100, maxMs: 3_600_000, default: 30_000 }),
        idleTimeoutMs: Dur('idleTimeout', 'Idle keep-alive connections are closed after this long.', { minMs: 100, maxMs: 3_600_000, default: 60_000 }),
        maxConnectionsPerClient: Int(0, 1_000_000, { default: 256, description: 'Connections open at once from one client IP address; more are refused (0: no limit).' }),
      },
      'Client-facing limits.',
      { default: {} },
    ),
    keepMeshHeaders: List(Str({ pattern: '^x-meshlet-[a-z0-9-]+$', patternMessage: 'must be an x-meshlet-* header name in lower case', maxLength: 64 }), {
      default: [],
      description: 'Response headers named x-meshlet-* are removed on the way to clients, except these (e.g. `x-meshlet-flags`, to tell the gateway\u2019s 503 from the app\u2019s while debugging).',
      maxItems: 16,
    }),
  },
  'A client-facing listener.',
);
export type GatewayListener = Static<typeof GatewayListenerSchema>;

const GatewaySpecSchema = Obj(
  {
    listeners: List(GatewayListenerSchema, { description: 'The listeners (unique names and ports).', minItems: 1, maxItems: 64 }),
    trustedHops: Int(0, 10, {
      default: 0,
      description:
        'Proxies in front of the gateway (load balancers) whose `x-forwarded-for` entries are trusted: the client address is the one this many entries from the right; 0 replaces what the client sent with the address the gateway sees.',
    }),
  },
  'An edge gateway (`meshlet gateway --name NAME` serves the Gateway of that name); Routes attach to it by `spec.gateways`.',
);
export type GatewaySpec = Static<typeof GatewaySpecSchema>;

// --------------------------------------------------------------------------- TLSCertificate

const TLSCertificateSpecSchema = Obj(
  {
    certificate: Str({
      description: 'The PEM certificate chain, leaf first (intermediates after it). Checked when applied: it parses, and the leaf is valid now.',
      maxLength: LIMITS.certificatePemBytes,
      meta: { limit: 'certificatePemBytes' },
    }),
    privateKey: Str({
      description:
        'The leaf\u2019s PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1). Checked when applied: it matches the leaf. Never returned by the API (read back as `(redacted)`); pushed only to the gateways that reference it, over the TLS push port.',
      maxLength: LIMITS.privateKeyPemBytes,
      meta: { limit: 'privateKeyPemBytes' },
    }),
  },
  'A certificate and its private key kept in the control plane\u2019s store, for Gateway listeners (`tls.certificates[].secret`). Only the admin API role may write or read it.',
);
export type TLSCertificateSpec = Static<typeof TLSCertificateSpecSchema>;

// ------------------------------------------------------------------------------ ApiConsumer

const ApiConsumerSpecSchema = Obj(
  {
    keys: ApiKeyList(
      'Its API keys, hashed (`sha256:<hex>`), or `{hash, expiresAt}` for a key refused from that time on: `meshlet apikey create --consumer NAME [--ttl 90d]` adds one and prints the key once; `meshlet apikey revoke` removes one.',
      { default: [] },
    ),
  },
  'A client of API-key routes (Kong\u2019s consumer), defined once and named by Routes\u2019 `apiKeys.consumerRefs`; its name is forwarded to services and is the rate-limit descriptor `consumer`.',
);
export type ApiConsumerSpec = Static<typeof ApiConsumerSpecSchema>;

// ------------------------------------------------------------------------------- the kinds

const SPEC_SCHEMAS = {
  Route: RouteSpecSchema,
  DestinationPolicy: DestinationPolicySpecSchema,
  RateLimitPolicy: RateLimitPolicySpecSchema,
  Service: ServiceSpecSchema,
  GrpcTranscoding: GrpcTranscodingSpecSchema,
  AuthorizationPolicy: AuthorizationPolicySpecSchema,
  PeerAuthentication: PeerAuthenticationSpecSchema,
  Gateway: GatewaySpecSchema,
  TLSCertificate: TLSCertificateSpecSchema,
  ApiConsumer: ApiConsumerSpecSchema,
} as const satisfies Record<Kind, TSchema>;

/** The resource of one kind: the shared envelope around its spec (internal form). */
export function resourceSchema<K extends Kind>(kind: K) {
  return Obj(
    {
      apiVersion: Type.Literal(API_VERSION, { description: 'Always meshlet.dev/v1.', [META]: { required: `is required (use "${API_VERSION}")` } }),
      kind: Type.Literal(kind, { description: `Always ${kind}.` }),
      metadata: MetadataSchema,
      spec: SPEC_SCHEMAS[kind] as (typeof SPEC_SCHEMAS)[K],
    },
    `A meshlet ${kind}.`,
  );
}

/** The envelope alone (used to report errors when `kind` itself is wrong). */
export const EnvelopeSchema = Obj(
  {
    apiVersion: Type.Literal(API_VERSION, { [META]: { required: `is required (use "${API_VERSION}")` } }),
    kind: Type.Union(
      KINDS.map((k) => Type.Literal(k)),
      { [META]: { required: `is required (one of ${KINDS.join(', ')})` } },
    ),
    metadata: MetadataSchema,
    spec: Type.Unknown(),
  },
  'A meshlet resource.',
);
