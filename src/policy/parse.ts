/**
 * Raw (YAML/JSON) policy documents -> validated, frozen resources. Every problem is reported
 * with its field path, e.g. `spec.rules[0].matches[1].path.regex: invalid regular expression`;
 * unknown fields are errors. The same messages reach the API's 400 body, `meshlet apply` and a
 * sidecar's NACK.
 */
import { fail, ok, type FieldError, type Result } from '../core/result';
import type { TSchema } from '@sinclair/typebox';
import type { Obj } from './validate';
import { CHECKS, PLANS } from './checks.generated';
import { KINDS, LIMITS } from './constants';
import { fromInternal, toInternal } from './wire';
import type { AuthorizationPolicySpec, DestinationPolicySpec, GatewaySpec, GrpcTranscodingSpec, Kind, RateLimit, RateLimitPolicySpec, Resource, RetryPolicy, RouteMatch, RouteRule, RouteSpec } from './types';

/** Lower-case plural and singular names accepted for a kind (URLs, `meshlet get`). */
export const KIND_ALIASES: Readonly<Record<string, Kind>> = Object.freeze({
  route: 'Route',
  routes: 'Route',
  destinationpolicy: 'DestinationPolicy',
  destinationpolicies: 'DestinationPolicy',
  dp: 'DestinationPolicy',
  ratelimitpolicy: 'RateLimitPolicy',
  ratelimitpolicies: 'RateLimitPolicy',
  rlp: 'RateLimitPolicy',
  service: 'Service',
  services: 'Service',
  svc: 'Service',
  grpctranscoding: 'GrpcTranscoding',
  grpctranscodings: 'GrpcTranscoding',
  gt: 'GrpcTranscoding',
  authorizationpolicy: 'AuthorizationPolicy',
  authorizationpolicies: 'AuthorizationPolicy',
  authz: 'AuthorizationPolicy',
  ap: 'AuthorizationPolicy',
  peerauthentication: 'PeerAuthentication',
  peerauthentications: 'PeerAuthentication',
  pa: 'PeerAuthentication',
  gateway: 'Gateway',
  gateways: 'Gateway',
  gw: 'Gateway',
  tlscertificate: 'TLSCertificate',
  tlscertificates: 'TLSCertificate',
  tlscert: 'TLSCertificate',
  apiconsumer: 'ApiConsumer',
  apiconsumers: 'ApiConsumer',
  consumer: 'ApiConsumer',
  consumers: 'ApiConsumer',
});

export function kindFromName(s: string): Kind | undefined {
  if ((KINDS as readonly string[]).includes(s)) return s as Kind;
  return KIND_ALIASES[s.toLowerCase()];
}

export function resourceKey(r: { kind: string; metadata: { name: string } }): string {
  return `${r.kind}/${r.metadata.name}`;
}

/** Splits YAML (multi-document, `---`) or JSON text into raw documents. A JSON array or a `List`
 * (`{ kind: List, items: [...] }`) gives its items. Errors name the document (`document[1]`). */
export function parseDocuments(text: string): Result<unknown[]> {
  const trimmed = text.trim();
  if (trimmed === '') return fail([{ path: '', message: 'no documents found' }]);
  const docs: unknown[] = [];
  const errors: FieldError[] = [];
  if (trimmed.startsWith('[') || trimmed.startsWith('{')) {
    try {
      docs.push(JSON.parse(trimmed));
    } catch {
      // Not JSON after all (YAML flow style is a superset); fall through to the YAML parser.
    }
  }
  if (docs.length === 0) {
    // Loaded only for YAML: snapshots and JSON files never pay its ~9 MB of memory.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { LineCounter, parseAllDocuments } = require('yaml') as typeof import('yaml');
    const lc = new LineCounter();
    const parsed = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: true, lineCounter: lc });
    const list = Array.isArray(parsed) ? parsed : [parsed];
    list.forEach((d, i) => {
      if (d.errors.length > 0) {
        const e = d.errors[0];
        const pos = lc.linePos(e.pos[0]);
        const line = ` (line ${pos.line}, column ${pos.col})`;
        errors.push({ path: `document[${i}]`, message: `invalid YAML${line}: ${e.message.split('\n')[0]}` });
        return;
      }
      const v = d.toJS({ maxAliasCount: 100 });
      if (v === null || v === undefined) return; // an empty document between separators
      docs.push(v);
    });
  }
  if (errors.length > 0) return fail(errors);
  const out: unknown[] = [];
  for (const d of docs) {
    if (Array.isArray(d)) out.push(...d);
    else if (d && typeof d === 'object' && (d as Obj).kind === 'List' && Array.isArray((d as Obj).items)) out.push(...((d as Obj).items as unknown[]));
    else out.push(d);
  }
  if (out.length === 0) return fail([{ path: '', message: 'no documents found' }]);
  return ok(out);
}

/** Validates one resource on its own (references to other resources: `validateReferences`). */
export function parseResource(raw: unknown): Result<Resource> {
  let size: number;
  try {
    size = Buffer.byteLength(JSON.stringify(raw) ?? '');
  } catch (e) {
    return fail([{ path: '', message: `must be JSON data: ${(e as Error).message}` }]);
  }
  if (size > LIMITS.resourceBytes) return fail([{ path: '', message: `is ${size} bytes as JSON; at most ${LIMITS.resourceBytes} (limit resourceBytes)` }]);
  const kind = raw !== null && typeof raw === 'object' && (KINDS as readonly unknown[]).includes((raw as Obj).kind) ? ((raw as Obj).kind as Kind) : undefined;
  if (kind === undefined) return fail(wire.errors(wire.envelope(), raw));
  const errors: FieldError[] = [];
  const r = toInternal(PLANS[kind] as TSchema, raw, '', errors) as Resource;
  if (!CHECKS[kind](raw)) {
    const all = wire.errors(wire.resource(kind), raw);
    for (const e of errors) if (!all.some((x) => x.path === e.path)) all.push(e);
    return fail(all);
  }
  SEMANTICS[kind](r as never, errors);
  if (errors.length > 0) return fail(errors);
  return ok(deepFreeze(r));
}

/**
 * Error reporting, loaded on the first invalid document: the wire schemas (derived with TypeBox)
 * and the error walker. A process that only ever parses valid policies never loads TypeBox.
 */
const wire = {
  cache: new Map<string, TSchema>(),
  errors(schema: TSchema, raw: unknown): FieldError[] {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('./errors') as typeof import('./errors')).schemaErrors(schema, raw);
  },
  derive(key: string, make: (s: typeof import('./schema')) => TSchema): TSchema {
    let s = this.cache.get(key);
    if (!s) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { wireSchema } = require('./wire-schema') as typeof import('./wire-schema');
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      this.cache.set(key, (s = wireSchema(make(require('./schema') as typeof import('./schema')))));
    }
    return s;
  },
  resource(kind: Kind): TSchema {
    return this.derive(kind, (m) => m.resourceSchema(kind));
  },
  envelope(): TSchema {
    return this.derive('', (m) => m.EnvelopeSchema);
  },
};

// ----------------------------------------------------------------- cross-field rules, by kind
//
// What a schema cannot say (or says badly): "exactly one of", fields that go together, defaults
// computed from other fields, duplicates. The value is valid per the schema and already in its
// internal form; paths are the wire paths users wrote.

type Errs = FieldError[];
const err = (errs: Errs, path: string, message: string) => void errs.push({ path, message });

const SEMANTICS: { [K in Kind]: (r: Extract<Resource, { kind: K }>, errs: Errs) => void } = {
  Route: (r, errs) => checkRoute(r.spec as Mutable<RouteSpec>, errs),
  DestinationPolicy: (r, errs) => checkDestinationPolicy(r.spec, errs),
  RateLimitPolicy: (r, errs) => checkRateLimit(r.spec as Mutable<RateLimitPolicySpec>, errs),
  Service: (r, errs) => {
    if (r.spec.endpoints.length === 0 && r.spec.dependencies === undefined)
      err(errs, 'spec', 'set endpoints (a service outside the mesh) or dependencies (the services its sidecars call), or both');
    r.spec.endpoints.forEach((e, i) => {
      if (r.spec.endpoints.findIndex((x) => x.address === e.address && x.port === e.port) < i) err(errs, `spec.endpoints[${i}]`, `duplicate endpoint ${e.address}:${e.port}`);
    });
  },
  GrpcTranscoding: (r, errs) => checkGrpcTranscoding(r.spec, errs),
  AuthorizationPolicy: (r, errs) => checkAuthorizationPolicy(r.spec, errs),
  PeerAuthentication: () => undefined,
  Gateway: (r, errs) => checkGateway(r.metadata.name, r.spec, errs),
  TLSCertificate: (r, errs) => {
    // Loaded only when such a resource exists (node:crypto's X.509 parser).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const c = (require('../security/tls-material') as typeof import('../security/tls-material')).checkTlsMaterial(r.spec.certificate, r.spec.privateKey);
    if (!c.ok) for (const e of c.errors) errs.push({ path: `spec.${e.field}`, message: e.message, code: e.code });
  },
  ApiConsumer: (r, errs) =>
    r.spec.keys.forEach((k, i) => {
      if (r.spec.keys.findIndex((x) => x.hash === k.hash) < i) err(errs, `spec.keys[${i}]`, 'duplicate key');
    }),
};

/** The name a Route's `gateways` uses for the sidecars; no Gateway may take it. */
export const MESH_GATEWAY = 'mesh';

function checkGateway(name: string, spec: GatewaySpec, errs: Errs): void {
  if (name === MESH_GATEWAY) err(errs, 'metadata.name', `"${MESH_GATEWAY}" is reserved: in a Route's spec.gateways it names the sidecars`);
  spec.listeners.forEach((l, i) => {
    const p = `spec.listeners[${i}]`;
    if (spec.listeners.findIndex((x) => x.name === l.name) < i) err(errs, `${p}.name`, `duplicate listener name ${JSON.stringify(l.name)}`);
    if (spec.listeners.findIndex((x) => x.port === l.port) < i) err(errs, `${p}.port`, `port ${l.port} is already used by listener ${JSON.stringify(spec.listeners.find((x) => x.port === l.port)?.name)}`);
    if (l.protocol === 'HTTPS' && !l.tls) err(errs, `${p}.tls`, 'is required for protocol HTTPS (certificates to terminate TLS with)');
    if (l.protocol === 'HTTP' && l.tls) err(errs, `${p}.tls`, 'is for HTTPS listeners; this one is HTTP');
    if (l.protocol === 'HTTPS' && l.httpsRedirect) err(errs, `${p}.httpsRedirect`, 'is for HTTP listeners; this one is HTTPS already');
    if (l.httpsRedirect && !spec.listeners.some((x) => x.protocol === 'HTTPS')) err(errs, `${p}.httpsRedirect`, 'needs an HTTPS listener on the same Gateway to redirect to');
    l.tls?.certificates.forEach((c, j) => {
      const q = `${p}.tls.certificates[${j}]`;
      if (c.secret !== undefined && (c.certFile !== undefined || c.keyFile !== undefined)) err(errs, q, 'set either secret (a TLSCertificate in the store) or certFile and keyFile (files on the gateway\'s host), not both');
      else if (c.secret === undefined && (c.certFile === undefined || c.keyFile === undefined))
        err(errs, q, c.certFile === undefined && c.keyFile === undefined ? 'set secret (a TLSCertificate in the store), or certFile and keyFile (files on the gateway\'s host)' : `set ${c.certFile === undefined ? 'certFile' : 'keyFile'} too: certFile and keyFile go together`);
      if (c.secret !== undefined && l.tls?.certificates.findIndex((x) => x.secret === c.secret) !== j) err(errs, `${q}.secret`, `TLSCertificate ${JSON.stringify(c.secret)} is listed twice`);
    });
  });
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function checkRoute(spec: Mutable<RouteSpec>, errs: Errs): void {
  if (spec.cors) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const c = (require('../edge/cors') as typeof import('../edge/cors')).parseCorsConfig(spec.cors, 'spec.cors');
    if (!c.ok) errs.push(...c.errors);
  }
  spec.gateways?.forEach((g, i) => {
    if (spec.gateways?.indexOf(g) !== i) err(errs, `spec.gateways[${i}]`, `duplicate gateway ${JSON.stringify(g)}`);
  });
  spec.hosts.forEach((h, i) => {
    if (spec.hosts.indexOf(h) < i) err(errs, `spec.hosts[${i}]`, `duplicate host ${JSON.stringify(h)}`);
  });
  const names = new Set<string>();
  spec.rules.forEach((rule, i) => {
    const p = `spec.rules[${i}]`;
    const r = rule as Mutable<RouteRule> & { name?: string };
    if (r.name === undefined) r.name = `rule-${i}`;
    else if (names.has(r.name)) err(errs, `${p}.name`, `duplicate rule name ${JSON.stringify(r.name)}`);
    names.add(r.name);
    checkRule(r, p, errs);
  });
}

function checkRule(r: RouteRule, p: string, errs: Errs): void {
  r.matches.forEach((m, i) => checkMatch(m, `${p}.matches[${i}]`, errs));
  const targets = [r.backends, r.redirect, r.aggregate].filter((x) => x !== undefined).length;
  if (targets > 1) err(errs, p, 'set only one of backends, redirect or aggregate (not both)');
  else if (targets === 0) err(errs, `${p}.backends`, 'is required (or a redirect, or an aggregate)');
  checkEdge(r, p, errs);
  if (r.backends?.every((b) => b.weight === 0)) err(errs, `${p}.backends`, 'at least one backend needs a weight above 0');
  const prefixOnly = r.matches.length > 0 && r.matches.every((m) => m.path?.prefix !== undefined);
  if (r.redirect) {
    if (r.redirect.path !== undefined && r.redirect.pathPrefix !== undefined) err(errs, `${p}.redirect`, 'set either path or pathPrefix, not both');
    if (r.redirect.pathPrefix !== undefined && !prefixOnly) err(errs, `${p}.redirect.pathPrefix`, 'needs every match of the rule to have a path.prefix');
    for (const [k, v] of [['timeout', r.timeoutMs], ['retries', r.retries], ['breaker', r.breaker], ['mirror', r.mirror]] as const)
      if (v !== undefined) err(errs, `${p}.${k}`, 'does not apply to a redirect rule');
  }
  if (r.rewrite) {
    if (r.rewrite.pathPrefix !== undefined && !prefixOnly) err(errs, `${p}.rewrite.pathPrefix`, 'needs every match of the rule to have a path.prefix');
    if (r.rewrite.pathPrefix === undefined && r.rewrite.host === undefined) err(errs, `${p}.rewrite`, 'set pathPrefix or host');
    if (r.redirect) err(errs, `${p}.rewrite`, 'cannot be combined with redirect');
  }
  const rt = r.retries as Mutable<RetryPolicy> | undefined;
  if (rt) {
    if (rt.retryOn.includes('retriable-status-codes') && !rt.retriableStatusCodes) err(errs, `${p}.retries.retriableStatusCodes`, 'is required when retryOn includes retriable-status-codes');
    const b = rt.backoff as { baseIntervalMs: number; maxIntervalMs?: number } | undefined;
    if (b) {
      if (b.maxIntervalMs === undefined) b.maxIntervalMs = b.baseIntervalMs * 10;
      else if (b.maxIntervalMs < b.baseIntervalMs) err(errs, `${p}.retries.backoff.maxInterval`, 'must not be less than baseInterval');
    }
  }
  const br = r.breaker;
  if (br && (br.slowCallRateThreshold === undefined) !== (br.slowCallDurationMs === undefined))
    err(errs, `${p}.breaker.${br.slowCallDurationMs === undefined ? 'slowCallDuration' : 'slowCallRateThreshold'}`, 'slowCallRateThreshold and slowCallDuration go together');
  const f = r.fault;
  if (f) {
    if (f.abort && f.abort.httpStatus === undefined && f.abort.grpcStatus === undefined) err(errs, `${p}.fault.abort`, 'set httpStatus or grpcStatus');
    if (!f.delay && !f.abort) err(errs, `${p}.fault`, 'set delay or abort');
  }
}

/**
 * The edge blocks' cross-field rules (exactly one of jwksUri / jwks, CIDRs that parse, aggregate
 * references and cycles): the edge modules' own parsers, loaded only when a rule has such a block.
 */
function checkEdge(r: RouteRule, p: string, errs: Errs): void {
  const add = (res: { ok: boolean; errors?: FieldError[] }): void => {
    if (!res.ok) for (const e of res.errors ?? []) if (!errs.some((x) => x.path === e.path && x.message === e.message)) errs.push(e);
  };
  /* eslint-disable @typescript-eslint/no-require-imports */
  if (r.jwt) add((require('../edge/jwt-config') as typeof import('../edge/jwt-config')).parseJwtConfig(r.jwt, `${p}.jwt`));
  if (r.apiKeys) add((require('../edge/api-keys') as typeof import('../edge/api-keys')).parseApiKeyConfig(r.apiKeys, `${p}.apiKeys`));
  if (r.ipFilter) add((require('../edge/ip-filter') as typeof import('../edge/ip-filter')).parseIpFilterConfig(r.ipFilter, `${p}.ipFilter`));
  if (r.aggregate) add((require('../edge/aggregate') as typeof import('../edge/aggregate')).parseAggregateConfig(r.aggregate, `${p}.aggregate`));
  /* eslint-enable @typescript-eslint/no-require-imports */
  if (r.aggregate && r.redirect === undefined)
    for (const [k, v] of [['retries', r.retries], ['mirror', r.mirror], ['cache', r.cache]] as const)
      if (v !== undefined) err(errs, `${p}.${k}`, 'does not apply to an aggregate rule (each backend call has its own route)');
}

function checkMatch(m: RouteMatch, p: string, errs: Errs): void {
  if (m.path && Object.keys(m.path).length !== 1) err(errs, `${p}.path`, 'set exactly one of exact, prefix, regex');
  for (const key of ['headers', 'queryParams'] as const)
    m[key]?.forEach((kv, i) => {
      const kp = `${p}.${key}[${i}]`;
      if ([kv.exact, kv.regex, kv.present].filter((x) => x !== undefined).length !== 1) err(errs, kp, 'set exactly one of exact, regex, present');
      if (kv.present === false) err(errs, `${kp}.present`, 'must be true (use invert: true to match absence)');
    });
}

function checkDestinationPolicy(spec: DestinationPolicySpec, errs: Errs): void {
  const lb = spec.loadBalancer;
  const p = 'spec.loadBalancer';
  if (lb.hashHeader !== undefined) {
    if (lb.type !== 'ring-hash') err(errs, `${p}.hashHeader`, 'only applies to type ring-hash');
  } else if (lb.type === 'ring-hash') err(errs, `${p}.hashHeader`, 'is required for type ring-hash');
  if (lb.ringSize !== undefined && lb.type !== 'ring-hash') err(errs, `${p}.ringSize`, 'only applies to type ring-hash');
  if (lb.choiceCount !== undefined && lb.type !== 'least-request') err(errs, `${p}.choiceCount`, 'only applies to type least-request');
  spec.subsets.forEach((s, i) => {
    if (Object.keys(s.labels).length === 0) err(errs, `spec.subsets[${i}].labels`, 'must select at least one label');
    if (spec.subsets.findIndex((x) => x.name === s.name) < i) err(errs, `spec.subsets[${i}].name`, `duplicate subset name ${JSON.stringify(s.name)}`);
  });
  const od = spec.outlierDetection;
  if (od && od.consecutive5xx === undefined && od.consecutiveGatewayErrors === undefined && od.failurePercentage === undefined)
    err(errs, 'spec.outlierDetection', 'set at least one trigger: consecutive5xx, consecutiveGatewayErrors or failurePercentage');
  const hc = spec.healthCheck;
  if (hc && (hc.httpPath === undefined) === (hc.grpcService === undefined)) err(errs, 'spec.healthCheck', 'set exactly one of httpPath or grpcService');
}

function checkRateLimit(spec: Mutable<RateLimitPolicySpec>, errs: Errs): void {
  spec.limits.forEach((limit, i) => {
    const l = limit as Mutable<RateLimit> & { name?: string };
    if (l.name === undefined) l.name = `limit-${i}`;
    else if (spec.limits.findIndex((x) => x.name === l.name) < i) err(errs, `spec.limits[${i}].name`, `duplicate limit name ${JSON.stringify(l.name)}`);
  });
  if (!spec.redis && spec.limits.some((l) => l.scope === 'global')) err(errs, 'spec.redis', 'is required when a limit has scope global');
}

function checkGrpcTranscoding(spec: GrpcTranscodingSpec, errs: Errs): void {
  spec.protos.forEach((f, i) => {
    if (spec.protos.findIndex((x) => x.name === f.name) < i) err(errs, `spec.protos[${i}].name`, `duplicate proto ${JSON.stringify(f.name)}`);
  });
  // The protos themselves: syntax, imports, the services named, every google.api.http binding.
  if (errs.length === 0) {
    // Loaded only when a GrpcTranscoding policy exists: protobufjs costs ~9 MB of RSS.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { compileTranscoder } = require('../grpc/transcode/compile') as typeof import('../grpc/transcode/compile');
    const compiled = compileTranscoder({ protos: spec.protos, services: spec.services, ignoreUnknownQueryParameters: spec.ignoreUnknownQueryParameters, emitDefaults: spec.emitDefaults });
    if (!compiled.ok) for (const e of compiled.errors) err(errs, `spec.${e.path}`, e.message);
  }
}

function checkAuthorizationPolicy(spec: AuthorizationPolicySpec, errs: Errs): void {
  const names = new Map<string, number>();
  spec.rules.forEach((r, i) => {
    const p = `spec.rules[${i}]`;
    if (r.name !== undefined) {
      if (names.has(r.name)) err(errs, `${p}.name`, `duplicate rule name ${JSON.stringify(r.name)}`);
      names.set(r.name, i);
    }
    r.from?.forEach((s, j) => {
      if (s.spiffeIds === undefined && s.services === undefined && s.namespaces === undefined && s.unauthenticated === undefined)
        err(errs, `${p}.from[${j}]`, 'set at least one of spiffeIds, services, namespaces, unauthenticated');
      else if (s.unauthenticated === true && (s.spiffeIds || s.services || s.namespaces))
        err(errs, `${p}.from[${j}].unauthenticated`, 'a plaintext caller has no identity: unauthenticated: true never matches together with spiffeIds, services or namespaces');
      s.spiffeIds?.forEach((id, k) => {
        if (!id.startsWith('spiffe://') && id !== '*') err(errs, `${p}.from[${j}].spiffeIds[${k}]`, `must be a SPIFFE ID such as "spiffe://cluster.local/ns/shop/sa/frontend" (\`*\` wildcards allowed); got ${JSON.stringify(id)}`);
      });
    });
    const to = r.to;
    if (to && to.methods === undefined && to.paths === undefined && to.headers === undefined && to.ports === undefined) err(errs, `${p}.to`, 'set at least one of methods, paths, headers, ports (or leave out to)');
    to?.paths?.forEach((m, j) => {
      if (Object.keys(m).length !== 1) err(errs, `${p}.to.paths[${j}]`, 'set exactly one of exact, prefix, regex');
    });
    to?.headers?.forEach((h, j) => {
      const values = [h.exact !== undefined && 'exact', h.prefix !== undefined && 'prefix', h.regex !== undefined && 'regex'].filter((x): x is string => x !== false);
      if (values.length > 1) err(errs, `${p}.to.headers[${j}]`, `set at most one of exact, prefix, regex; got ${values.join(' and ')}`);
      if (h.present === false && values.length > 0) err(errs, `${p}.to.headers[${j}].present`, `present: false (the header is absent) cannot go with ${values[0]}`);
    });
  });
}

// ------------------------------------------------------------------------------- cross-references

/**
 * Checks references between resources: a subset nobody defines, two DestinationPolicies (or
 * RateLimitPolicies) for one service, two Routes serving one host, a rate limit naming a route
 * that does not exist, a Gateway naming a TLSCertificate that does not exist. Paths are prefixed
 * with the resource: `Route/web: spec.rules[0]...`.
 */
export function validateReferences(resources: readonly Resource[], opts: ReferenceOptions = {}): FieldError[] {
  const errors: FieldError[] = [];
  const at = (r: Resource, path: string, message: string) => errors.push({ path: `${resourceKey(r)}: ${path}`, message });
  const seen = new Set<string>();
  const dpByService = new Map<string, Resource & { kind: 'DestinationPolicy' }>();
  const rlByService = new Map<string, Resource>();
  const gtByService = new Map<string, Resource>();
  const paByService = new Map<string, Resource>();
  const hostOwner = new Map<string, string>();
  const routes = new Map<string, Set<string>>();
  const authzDefault = new Map<string, Resource>();
  for (const r of resources) {
    const key = resourceKey(r);
    if (seen.has(key)) at(r, 'metadata.name', `duplicate ${r.kind} ${JSON.stringify(r.metadata.name)}`);
    seen.add(key);
    if (r.kind === 'DestinationPolicy') {
      const prev = dpByService.get(r.spec.service);
      if (prev) at(r, 'spec.service', `service ${JSON.stringify(r.spec.service)} already has DestinationPolicy ${JSON.stringify(prev.metadata.name)}`);
      else dpByService.set(r.spec.service, r);
    } else if (r.kind === 'RateLimitPolicy') {
      const prev = rlByService.get(r.spec.service);
      if (prev) at(r, 'spec.service', `service ${JSON.stringify(r.spec.service)} already has RateLimitPolicy ${JSON.stringify(prev.metadata.name)}`);
      else rlByService.set(r.spec.service, r);
    } else if (r.kind === 'PeerAuthentication') {
      const k = r.spec.service ?? '';
      const prev = paByService.get(k);
      if (prev) at(r, 'spec.service', r.spec.service === undefined ? `the mesh already has a mesh-wide PeerAuthentication (${JSON.stringify(prev.metadata.name)}); one is allowed` : `service ${JSON.stringify(r.spec.service)} already has PeerAuthentication ${JSON.stringify(prev.metadata.name)}`);
      else paByService.set(k, r);
    } else if (r.kind === 'GrpcTranscoding') {
      const prev = gtByService.get(r.spec.service);
      if (prev) at(r, 'spec.service', `service ${JSON.stringify(r.spec.service)} already has GrpcTranscoding ${JSON.stringify(prev.metadata.name)}`);
      else gtByService.set(r.spec.service, r);
    } else if (r.kind === 'AuthorizationPolicy') {
      if (r.spec.defaultAction !== undefined) {
        const key = r.spec.service ?? '';
        const prev = authzDefault.get(key);
        const what = r.spec.service === undefined ? 'the mesh-wide default' : `service ${JSON.stringify(r.spec.service)}`;
        if (prev) at(r, 'spec.defaultAction', `${what} already has a defaultAction, in AuthorizationPolicy ${JSON.stringify(prev.metadata.name)}: set it in one policy only`);
        else authzDefault.set(key, r);
      }
    } else if (r.kind === 'Route') {
      routes.set(r.metadata.name, new Set(r.spec.rules.map((x) => x.name)));
      // A host has one owner per place a route applies (the mesh, each gateway).
      for (const scope of r.spec.gateways ?? [MESH_GATEWAY])
        r.spec.hosts.forEach((h, i) => {
          const owner = hostOwner.get(`${scope}\0${h}`);
          if (owner !== undefined && owner !== r.metadata.name)
            at(r, `spec.hosts[${i}]`, `host ${JSON.stringify(h)} is already served by Route ${JSON.stringify(owner)}${scope === MESH_GATEWAY ? '' : ` at gateway ${JSON.stringify(scope)}`}`);
          else hostOwner.set(`${scope}\0${h}`, r.metadata.name);
        });
    }
  }
  const tlsCertificates = new Set(resources.filter((r) => r.kind === 'TLSCertificate').map((r) => r.metadata.name));
  // An API key belongs to one consumer: ApiConsumers, and the inline consumers of each rule that names them.
  const keyOwner = new Map<string, string>();
  for (const r of resources) {
    if (r.kind !== 'ApiConsumer') continue;
    r.spec.keys.forEach(({ hash }, i) => {
      const owner = keyOwner.get(hash);
      if (owner !== undefined && owner !== r.metadata.name) at(r, `spec.keys[${i}]`, `the same key is already ApiConsumer ${JSON.stringify(owner)}'s`);
      else keyOwner.set(hash, r.metadata.name);
    });
  }
  for (const r of resources) {
    if (r.kind !== 'Route') continue;
    r.spec.rules.forEach((rule, i) => {
      const ak = rule.apiKeys;
      if (!ak || ak.consumerRefs.length === 0) return;
      ak.consumers.forEach((c, j) => {
        if (ak.consumerRefs.includes(c.name)) at(r, `spec.rules[${i}].apiKeys.consumers[${j}].name`, `consumer ${JSON.stringify(c.name)} is also in consumerRefs: name it once`);
        c.keys.forEach(({ hash }, ki) => {
          const owner = keyOwner.get(hash);
          if (owner !== undefined && ak.consumerRefs.includes(owner)) at(r, `spec.rules[${i}].apiKeys.consumers[${j}].keys[${ki}]`, `the same key is ApiConsumer ${JSON.stringify(owner)}'s, which this rule names too`);
        });
      });
    });
  }
  for (const r of resources) {
    if (r.kind === 'Gateway') {
      r.spec.listeners.forEach((l, i) =>
        l.tls?.certificates.forEach((c, j) => {
          if (c.secret !== undefined && !opts.secretsWithheld && !tlsCertificates.has(c.secret))
            at(r, `spec.listeners[${i}].tls.certificates[${j}].secret`, `names TLSCertificate ${JSON.stringify(c.secret)}, which does not exist (apply it before, or with, the Gateway)`);
        }),
      );
    } else if (r.kind === 'Route') {
      const checkSubset = (b: { service: string; subset?: string }, path: string) => {
        if (b.subset === undefined) return;
        const dp = dpByService.get(b.service);
        if (!dp) at(r, path, `subset ${JSON.stringify(b.subset)} needs a DestinationPolicy for service ${JSON.stringify(b.service)} that defines it; there is none`);
        else if (!dp.spec.subsets.some((s) => s.name === b.subset))
          at(r, path, `subset ${JSON.stringify(b.subset)} is not defined by DestinationPolicy ${JSON.stringify(dp.metadata.name)} for service ${JSON.stringify(b.service)}`);
      };
      r.spec.rules.forEach((rule, i) => {
        rule.backends?.forEach((b, j) => checkSubset(b, `spec.rules[${i}].backends[${j}].subset`));
        if (rule.mirror) checkSubset(rule.mirror, `spec.rules[${i}].mirror.subset`);
      });
    } else if (r.kind === 'RateLimitPolicy') {
      r.spec.limits.forEach((l, i) =>
        l.routes?.forEach((ref, j) => {
          const [route, rule] = ref.split('/');
          const rules = routes.get(route);
          if (!rules) at(r, `spec.limits[${i}].routes[${j}]`, `Route ${JSON.stringify(route)} does not exist`);
          else if (rule !== undefined && !rules.has(rule)) at(r, `spec.limits[${i}].routes[${j}]`, `Route ${JSON.stringify(route)} has no rule ${JSON.stringify(rule)}`);
        }),
      );
    }
  }
  return errors;
}

/** Parses each raw document on its own; errors are prefixed `Kind/name: ` (or `document[i]: ` when
 * the document has no usable name). References between them are not checked. */
export function parseEach(raws: readonly unknown[]): Result<Resource[]> {
  const errors: FieldError[] = [];
  const out: Resource[] = [];
  raws.forEach((raw, i) => {
    const r = parseResource(raw);
    if (r.ok) out.push(r.value);
    else errors.push(...r.errors.map((e) => ({ ...e, path: `${describeRaw(raw, i)}: ${e.path}` })));
  });
  return errors.length > 0 ? fail(errors) : ok(out);
}

export interface ReferenceOptions {
  /**
   * TLSCertificates may be absent (a pushed snapshot: the control plane sends them only to the
   * gateways that use them, and checked the references when they were applied).
   */
  secretsWithheld?: boolean;
}

/** Parses raw documents (`parseEach`) and checks their references among themselves. */
export function parseAll(raws: readonly unknown[], opts: ReferenceOptions = {}): Result<Resource[]> {
  const each = parseEach(raws);
  if (!each.ok) return each;
  const refs = validateReferences(each.value, opts);
  return refs.length > 0 ? fail(refs) : each;
}

/** `Route/web` when a raw document names its kind and name, else `document[i]`. */
export function describeRaw(raw: unknown, i: number): string {
  const o = raw as { kind?: unknown; metadata?: { name?: unknown } } | null;
  if (o && typeof o === 'object' && typeof o.kind === 'string' && o.metadata && typeof o.metadata === 'object' && typeof o.metadata.name === 'string' && o.metadata.name)
    return `${o.kind}/${o.metadata.name}`;
  return `document[${i}]`;
}

// ------------------------------------------------------------------------------------- wire form

/** Back to the wire/YAML form: durations as strings, defaults kept explicit. `parseResource` of the
 * result gives an equal resource. */
export function toWire(r: Resource): Record<string, unknown> {
  return { apiVersion: r.apiVersion, kind: r.kind, metadata: { ...r.metadata }, spec: fromInternal((PLANS[r.kind].properties as Record<string, TSchema>).spec, r.spec) };
}

// ---------------------------------------------------------------------------------------- utils

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
