/**
 * Validated snapshot -> compiled snapshot, once per snapshot: regexes built, matchers composed
 * into closures, weighted-choice tables and pickers made. The request path only calls them.
 *
 * It lives here, not in src/policy, because it assembles runtime parts (pickers from src/lb,
 * transcoders from src/grpc) around the policy model, and src/policy stays a leaf that loads no
 * runtime module (dependency rules: .dependency-cruiser.js).
 */
import type { CompiledTranscoding } from '../grpc/transcode/compile';
import { buildPicker, cumulativeWeights, noStats, weightedIndex, type EndpointStats, type Picker } from '../lb';
import { compileRegex, type LinearRegex } from '../policy/regex';
import { fail, ok, type Result } from '../core/result';
import type {
  CompiledBackend,
  CompiledRule,
  CompiledService,
  CompiledSnapshot,
  EdgeRule,
  HeaderEditor,
  PeerAuthMode,
  RequestView,
  RouteTable,
} from '../policy/compiled';
import { PeerAuthentication, type PeerAuthenticationPolicy } from '../security/peer-auth';
import { parseSnapshot } from '../policy/snapshot';
import { withConsumers, type StoredApiKey } from '../edge/api-keys';
import type {
  DestinationPolicySpec,
  Endpoint,
  HeaderEdits,
  KeyValueMatch,
  RateLimitPolicySpec,
  RouteMatch,
  RouteResource,
  GatewaySpec,
  GrpcRouteOptions,
  CorsSpec,
  RouteRule,
  Snapshot,
  UpstreamProtocol,
  WireSnapshot,
} from '../policy/types';

export interface CompileOptions {
  stats?: EndpointStats;
  random?: () => number;
  now?: () => number;
}

/** `compileSnapshot` as a Result: a snapshot that does not compile is a NACK reason, not a throw. */
export function compileChecked(s: Snapshot, opts: CompileOptions = {}): Result<CompiledSnapshot> {
  try {
    return ok(compileSnapshot(s, opts));
  } catch (err) {
    return fail([{ path: '', message: `could not compile: ${(err as Error).message}` }]);
  }
}

/**
 * A data plane's two ways in for a snapshot: `apply` (the wire form from the control plane; the
 * version in force already is a no-op) and `applyValid` (parsed already, e.g. a local file). One
 * that does not parse or compile is refused, counted in `stats.nacks`, and never reaches
 * `install`, which may refuse it too (and counts that NACK itself).
 */
export function snapshotApplier(o: { version: () => string | undefined; stats: { nacks: number }; compile: CompileOptions; install: (c: CompiledSnapshot) => Result<void> }): {
  apply(w: WireSnapshot): Result<void>;
  applyValid(s: Snapshot): Result<void>;
} {
  const applyValid = (snapshot: Snapshot): Result<void> => {
    const c = compileChecked(snapshot, o.compile);
    if (!c.ok) {
      o.stats.nacks++;
      return c;
    }
    return o.install(c.value);
  };
  const apply = (w: WireSnapshot): Result<void> => {
    if (o.version() === w.version) return ok(undefined);
    const parsed = parseSnapshot(w);
    if (!parsed.ok) {
      o.stats.nacks++;
      return parsed;
    }
    return applyValid(parsed.value);
  };
  return { apply, applyValid };
}

export function compileSnapshot(s: Snapshot, opts: CompileOptions = {}): CompiledSnapshot {
  const stats = opts.stats ?? noStats;
  const random = opts.random ?? Math.random;
  const routes: RouteResource[] = [];
  const gateways = new Map<string, GatewaySpec>();
  const policies = new Map<string, DestinationPolicySpec>();
  const rateLimits = new Map<string, RateLimitPolicySpec>();
  const transcoders = new Map<string, CompiledTranscoding>();
  const peerPolicies: PeerAuthenticationPolicy[] = [];
  /** ApiConsumer name -> its hashed keys and their expiry (Routes' `apiKeys.consumerRefs`). */
  const apiConsumers = new Map<string, readonly StoredApiKey[]>();
  const endpointsByService = new Map<string, Endpoint[]>();
  const protocolByService = new Map<string, UpstreamProtocol>();
  const add = (e: Endpoint) => {
    let list = endpointsByService.get(e.service);
    if (!list) endpointsByService.set(e.service, (list = []));
    list.push(e);
  };
  for (const r of s.resources) {
    switch (r.kind) {
      case 'Route':
        routes.push(r);
        break;
      case 'DestinationPolicy':
        policies.set(r.spec.service, r.spec);
        break;
      case 'RateLimitPolicy':
        rateLimits.set(r.spec.service, r.spec);
        break;
      case 'PeerAuthentication':
        peerPolicies.push({ name: r.metadata.name, spec: r.spec });
        break;
      case 'GrpcTranscoding': {
        const sp = r.spec;
        // Validated by the parser already; the result is cached by content, so this is a lookup.
        // Loaded only when a GrpcTranscoding policy exists: protobufjs costs ~9 MB of RSS.
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const { compileTranscoder } = require('../grpc/transcode/compile') as typeof import('../grpc/transcode/compile');
        const tc = compileTranscoder({ protos: sp.protos, services: sp.services, ignoreUnknownQueryParameters: sp.ignoreUnknownQueryParameters, emitDefaults: sp.emitDefaults });
        if (!tc.ok) throw new Error(`GrpcTranscoding/${r.metadata.name}: ${tc.errors.map((e) => `spec.${e.path}: ${e.message}`).join('; ')}`);
        transcoders.set(sp.service, Object.freeze({ name: r.metadata.name, transcoder: tc.value, unknownMethods: sp.unknownMethods, maxRequestBytes: sp.maxRequestBytes, maxResponseBytes: sp.maxResponseBytes }));
        break;
      }
      case 'Gateway':
        gateways.set(r.metadata.name, r.spec);
        break;
      case 'ApiConsumer':
        apiConsumers.set(r.metadata.name, r.spec.keys);
        break;
      case 'Service':
        protocolByService.set(r.metadata.name, r.spec.protocol);
        if (!endpointsByService.has(r.metadata.name)) endpointsByService.set(r.metadata.name, []);
        for (const e of r.spec.endpoints)
          add(Object.freeze({ service: r.metadata.name, address: e.address, port: e.port, labels: e.labels, weight: e.weight, meshed: false }));
        break;
    }
  }
  // Rules naming ApiConsumers get their keys, as stored now, once per snapshot.
  for (const [i, r] of routes.entries()) if (r.spec.rules.some((x) => (x.apiKeys?.consumerRefs.length ?? 0) > 0)) routes[i] = withApiConsumers(r, apiConsumers);
  for (const e of s.endpoints) add(e);
  // Deterministic endpoint order, so that every sidecar builds the same ring and rotation.
  for (const list of endpointsByService.values()) list.sort((a, b) => (a.address + ':' + a.port < b.address + ':' + b.port ? -1 : 1));

  const names = new Set<string>([...endpointsByService.keys(), ...policies.keys()]);
  for (const r of routes)
    for (const rule of r.spec.rules) {
      for (const b of rule.backends ?? []) names.add(b.service);
      for (const b of rule.aggregate?.backends ?? []) names.add(b.service);
    }
  const peerAuth = new PeerAuthentication(peerPolicies);
  const services = new Map<string, CompiledService>();
  for (const name of names) {
    services.set(name, compileService(name, endpointsByService.get(name) ?? [], policies.get(name), protocolByService.get(name), stats, random, peerAuth.mode(name).mode));
  }
  // Istio's `gateways`: no list, the mesh only; a list, those gateways (and the mesh if it names `mesh`).
  const meshRoutes = routes.filter((r) => !r.spec.gateways || r.spec.gateways.includes('mesh'));
  const gatewayTables = new Map<string, RouteTable>();
  return Object.freeze({
    version: s.version,
    routes: compileRouteTable(meshRoutes, services, random),
    gateways,
    gatewayRoutes(name: string): RouteTable {
      // Compiled on first use: only a gateway process asks, and only for its own name.
      let t = gatewayTables.get(name);
      if (!t) {
        t = compileRouteTable(routes.filter((r) => r.spec.gateways?.includes(name)), services, random, false);
        gatewayTables.set(name, t);
      }
      return t;
    },
    services,
    rateLimits,
    transcoders,
    resources: s.resources,
    endpoints: s.endpoints,
    compiledAt: (opts.now ?? Date.now)(),
    peerAuth,
  });
}

function compileService(
  name: string,
  endpoints: readonly Endpoint[],
  policy: DestinationPolicySpec | undefined,
  staticProtocol: UpstreamProtocol | undefined,
  stats: EndpointStats,
  random: () => number,
  peerAuthMode: PeerAuthMode = 'PERMISSIVE',
): CompiledService {
  const lb = policy?.loadBalancer ?? { type: 'round-robin' as const };
  const all = buildPicker({ endpoints, config: lb, stats, random });
  const subsets = new Map<string, Picker>();
  for (const sub of policy?.subsets ?? []) subsets.set(sub.name, buildPicker({ endpoints: subsetEndpoints(endpoints, sub.labels), config: lb, stats, random }));
  let protocol: UpstreamProtocol = 'auto';
  if (policy && policy.protocol !== 'auto') protocol = policy.protocol;
  else if (staticProtocol) protocol = staticProtocol;
  return Object.freeze({
    name,
    protocol,
    endpoints,
    policy,
    picker: (subset?: string) => (subset === undefined ? all : subsets.get(subset)),
    peerAuthMode,
  });
}

/** The endpoints a subset selects by labels. */
export function subsetEndpoints(endpoints: readonly Endpoint[], labels: Readonly<Record<string, string>>): Endpoint[] {
  const entries = Object.entries(labels);
  return endpoints.filter((e) => entries.every(([k, v]) => e.labels[k] === v));
}

// ------------------------------------------------------------------------------------ route table

interface VirtualHost {
  rules: readonly CompiledRule[];
}

function compileRouteTable(routes: readonly RouteResource[], services: ReadonlyMap<string, CompiledService>, random: () => number, implicitRoutes = true): RouteTable {
  const exact = new Map<string, VirtualHost>();
  const wildcards: { suffix: string; vh: VirtualHost }[] = [];
  let catchAll: VirtualHost | undefined;
  for (const r of routes) {
    const vh: VirtualHost = { rules: r.spec.rules.map((rule) => compileRule(r.metadata.name, rule, random, r.spec.grpc, r.spec.websocket?.idleTimeoutMs, r.spec.cors)) };
    for (const h of r.spec.hosts) {
      if (h === '*') catchAll = vh;
      else if (h.startsWith('*.')) wildcards.push({ suffix: h.slice(1), vh });
      else exact.set(h, vh);
    }
  }
  // Longest wildcard suffix first: *.api.example.com wins over *.example.com.
  wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
  // A meshed service with no Route of its own is still reachable by its name (implicit route).
  // Not at a gateway: clients reach only what a Route attached to it names.
  const implicit = new Map<string, VirtualHost>();
  if (implicitRoutes) for (const name of services.keys()) {
    const rule = implicitRule(name);
    implicit.set(name, { rules: [rule] });
  }
  const lookupCache = new Map<string, VirtualHost | null>();

  const resolve = (authority: string): VirtualHost | undefined => {
    const hit = exact.get(authority);
    if (hit) return hit;
    const host = stripPort(authority);
    const candidates = [host];
    const short = shortServiceName(host);
    if (short !== host) candidates.push(short);
    for (const c of candidates) {
      const v = exact.get(c);
      if (v) return v;
    }
    for (const w of wildcards) if (host.endsWith(w.suffix)) return w.vh;
    if (catchAll) return catchAll;
    for (const c of candidates) {
      const v = implicit.get(c);
      if (v) return v;
    }
    return undefined;
  };

  return {
    match(req: RequestView): CompiledRule | undefined {
      let vh = lookupCache.get(req.authority);
      if (vh === undefined) {
        vh = resolve(req.authority) ?? null;
        // Bounded: a client sending random Host headers cannot grow it without limit.
        if (lookupCache.size < 10_000) lookupCache.set(req.authority, vh);
      }
      if (vh === null) return undefined;
      const rules = vh.rules;
      for (let i = 0; i < rules.length; i++) if (rules[i].matches(req)) return rules[i];
      return undefined;
    },
  };
}

function stripPort(authority: string): string {
  if (authority.startsWith('[')) {
    const end = authority.indexOf(']');
    return end > 0 ? authority.slice(0, end + 1) : authority;
  }
  const i = authority.lastIndexOf(':');
  return i > 0 && authority.indexOf(':') === i ? authority.slice(0, i) : authority;
}

/** `catalog.default.svc.cluster.local` / `catalog.default.svc` / `catalog.default` -> `catalog`. */
function shortServiceName(host: string): string {
  const m = /^([a-z0-9-]+)\.[a-z0-9-]+(\.svc(\.cluster\.local)?)?$/.exec(host);
  return m ? m[1] : host;
}

function implicitRule(service: string): CompiledRule {
  const backend: CompiledBackend = { service, weight: 1 };
  return {
    statName: `${service}/default`,
    routeName: service,
    ruleName: 'default',
    matches: () => true,
    pickBackend: () => backend,
  };
}

// ------------------------------------------------------------------------------------------ rules

function compileRule(routeName: string, rule: RouteRule, random: () => number, grpc?: GrpcRouteOptions, wsIdleMs?: number, cors?: CorsSpec): CompiledRule {
  const matchers = rule.matches.map(compileMatch);
  const matches: (req: RequestView) => boolean =
    matchers.length === 0 ? () => true : matchers.length === 1 ? matchers[0] : (req) => matchers.some((m) => m(req));
  const out: CompiledRule = {
    statName: `${routeName}/${rule.name}`,
    routeName,
    ruleName: rule.name,
    matches,
    pickBackend: () => undefined,
  };
  if (rule.backends) {
    const backends: CompiledBackend[] = rule.backends.filter((b) => b.weight > 0).map((b) => Object.freeze({ service: b.service, subset: b.subset, weight: b.weight }));
    if (backends.length === 1) {
      const only = backends[0];
      out.pickBackend = () => only;
    } else {
      const cum = cumulativeWeights(backends.map((b) => b.weight));
      out.pickBackend = () => backends[weightedIndex(cum, random())];
    }
  }
  const prefixes = rule.matches.map((m) => m.path?.prefix).filter((p): p is string => p !== undefined);
  if (rule.redirect) {
    const rd = rule.redirect;
    out.redirect = (req) => {
      const scheme = rd.scheme ?? req.header('x-forwarded-proto') ?? 'http';
      const host = rd.host ?? stripPort(req.authority);
      const origPort = req.authority.length > stripPort(req.authority).length ? req.authority.slice(stripPort(req.authority).length + 1) : '';
      const port = rd.port !== undefined ? String(rd.port) : rd.host !== undefined || rd.scheme !== undefined ? '' : origPort;
      let path = req.path;
      if (rd.path !== undefined) path = rd.path;
      else if (rd.pathPrefix !== undefined) path = replacePrefix(req.path, prefixes, rd.pathPrefix);
      const q = req.query ? `?${req.query}` : '';
      return { status: rd.statusCode, location: `${scheme}://${host}${port ? ':' + port : ''}${path}${q}` };
    };
  }
  if (rule.rewrite?.pathPrefix !== undefined) {
    const to = rule.rewrite.pathPrefix;
    out.rewritePath = (req) => replacePrefix(req.path, prefixes, to) + (req.query ? `?${req.query}` : '');
  }
  if (rule.rewrite?.host) out.rewriteHost = rule.rewrite.host;
  if (rule.requestHeaders) out.requestHeaders = compileHeaderEdits(rule.requestHeaders);
  if (rule.responseHeaders) out.responseHeaders = compileHeaderEdits(rule.responseHeaders);
  if (rule.timeoutMs !== undefined) out.timeoutMs = rule.timeoutMs;
  if (rule.retries) out.retries = rule.retries;
  if (rule.breaker) out.breaker = rule.breaker;
  if (rule.fault) out.fault = rule.fault;
  if (rule.mirror) out.mirror = rule.mirror;
  if (rule.traceSamplingPercent !== undefined) out.traceSamplingPercent = rule.traceSamplingPercent;
  if (grpc) out.grpc = grpc;
  if (wsIdleMs !== undefined) out.websocketIdleTimeoutMs = wsIdleMs;
  if (cors || rule.ipFilter || rule.jwt || rule.apiKeys || rule.cache || rule.aggregate) {
    const edge: EdgeRule = {};
    if (cors) edge.cors = cors;
    if (rule.ipFilter) edge.ipFilter = rule.ipFilter;
    if (rule.jwt) edge.jwt = rule.jwt;
    if (rule.apiKeys) edge.apiKeys = rule.apiKeys;
    if (rule.cache) edge.cache = rule.cache;
    if (rule.aggregate) edge.aggregate = rule.aggregate;
    out.edge = Object.freeze(edge);
  }
  return Object.freeze(out);
}

function withApiConsumers(r: RouteResource, apiConsumers: ReadonlyMap<string, readonly StoredApiKey[]>): RouteResource {
  return { ...r, spec: { ...r.spec, rules: r.spec.rules.map((x) => (x.apiKeys && x.apiKeys.consumerRefs.length > 0 ? { ...x, apiKeys: withConsumers(x.apiKeys, apiConsumers) } : x)) } };
}

function replacePrefix(path: string, prefixes: readonly string[], to: string): string {
  let best = '';
  for (const p of prefixes) if (path.startsWith(p) && p.length > best.length) best = p;
  const rest = path.slice(best.length);
  if (to.endsWith('/') && rest.startsWith('/')) return to + rest.slice(1);
  if (!to.endsWith('/') && rest !== '' && !rest.startsWith('/') && best.endsWith('/')) return `${to}/${rest}`;
  return (to + rest) || '/';
}

/** Full-string match in linear time (src/policy/regex.ts), as Envoy's safe_regex and Istio do: `/v[0-9]+` does not match `/v1/x`. */
function fullRegex(src: string): LinearRegex {
  return compileRegex(src);
}

function compileMatch(m: RouteMatch): (req: RequestView) => boolean {
  const checks: ((req: RequestView) => boolean)[] = [];
  if (m.path?.exact !== undefined) {
    const p = m.path.exact;
    checks.push((req) => req.path === p);
  } else if (m.path?.prefix !== undefined) {
    const p = m.path.prefix;
    // A prefix matches whole segments when it has no trailing slash: /api matches /api and /api/x, not /apix.
    if (p.endsWith('/')) checks.push((req) => req.path.startsWith(p));
    else checks.push((req) => req.path === p || req.path.startsWith(p + '/'));
  } else if (m.path?.regex !== undefined) {
    const re = fullRegex(m.path.regex);
    checks.push((req) => re.test(req.path));
  }
  if (m.methods) {
    const set = new Set(m.methods);
    checks.push((req) => set.has(req.method));
  }
  for (const h of m.headers ?? []) checks.push(compileKeyValue(h, (req, name) => req.header(name)));
  for (const q of m.queryParams ?? []) checks.push(compileKeyValue(q, queryParam));
  if (checks.length === 1) return checks[0];
  return (req) => {
    for (let i = 0; i < checks.length; i++) if (!checks[i](req)) return false;
    return true;
  };
}

function queryParam(req: RequestView, name: string): string | undefined {
  if (!req.query) return undefined;
  const v = new URLSearchParams(req.query).get(name);
  return v === null ? undefined : v;
}

function compileKeyValue(m: KeyValueMatch, get: (req: RequestView, name: string) => string | undefined): (req: RequestView) => boolean {
  const name = m.name;
  let test: (v: string | undefined) => boolean;
  if (m.exact !== undefined) {
    const want = m.exact;
    test = (v) => v === want;
  } else if (m.regex !== undefined) {
    const re = fullRegex(m.regex);
    test = (v) => v !== undefined && re.test(v);
  } else test = (v) => v !== undefined;
  if (m.invert) return (req) => !test(get(req, name));
  return (req) => test(get(req, name));
}

function compileHeaderEdits(e: HeaderEdits): HeaderEditor {
  const remove = e.remove ?? [];
  const set = Object.entries(e.set ?? {});
  const add = Object.entries(e.add ?? {});
  return {
    apply(headers) {
      for (const k of remove) delete headers[k];
      for (const [k, v] of set) headers[k] = v;
      for (const [k, v] of add) {
        const cur = headers[k];
        if (cur === undefined) headers[k] = v;
        else if (Array.isArray(cur)) headers[k] = [...cur, v];
        else headers[k] = [cur, v];
      }
    },
  };
}
