/**
 * `GET /explain?method=GET&url=http://catalog/items&header=x-canary:true` on the admin port
 * (reached by `meshlet explain` through the control plane): what this sidecar would do with an
 * outbound request, step by step, computed by the code the data path runs.
 *
 * - The answer ("this rule serves it") is the compiled snapshot's own `routes.match` on the
 *   request.
 * - "Why not the others" is answered by the same compiler: each rule (and each condition of a
 *   rule that does not match) is compiled alone into a probe route table and matched against the
 *   request, so the explanation cannot disagree with the matcher (no second implementation of
 *   path, header or query matching here).
 * - Endpoints come from the compiled services (subsets by the same `subsetEndpoints`), with the
 *   ejection state of this sidecar's outlier detection; limits come from the compiled rule and
 *   DestinationPolicy; rate limits from the destination's RateLimitPolicy, with each limit's
 *   bucket key computed by the limiter's own `compileKey`.
 * - The callee's AuthorizationPolicies are judged by the engine the callee's sidecar runs
 *   (src/security/authz.ts), with this sidecar's SPIFFE ID as the caller (none without a
 *   workload certificate: a plaintext caller has no identity).
 *
 * Rare and admin-only: compiling probes per call is fine here, never on the request path.
 */
import type { DecisionRing } from '../src/observability/decisions';
import { compileSnapshot, subsetEndpoints } from '../src/snapshot/compile';
import type { CompiledSnapshot, RequestView } from '../src/policy/compiled';
import { formatDuration } from '../src/policy/validate';
import type { Endpoint, KeyValueMatch, Resource, RouteMatch, RouteResource, RouteRule } from '../src/policy/types';
import { compileKey } from '../src/resilience/rate-limit/descriptors';
import { ROUTE_HEADER, SOURCE_HEADER } from '../src/resilience/rate-limit/identity';
import { Authorizer, type AuthzDecision, type RuleRef } from '../src/security/authz';
import { parseSpiffeId } from '../src/security/spiffe';

export interface ExplainState {
  /** Whether this sidecar's outlier detection has ejected the endpoint now. */
  isEjected?(service: string, e: Endpoint): boolean;
  /** This sidecar's SPIFFE ID, once it has a workload certificate (what an mTLS callee sees). */
  spiffeId?(): string | undefined;
}

export interface ExplainResult {
  status: number;
  body: unknown;
}

interface Step {
  step: string;
  result: string;
  details?: string[];
}

const PROBE_HOST = 'explain.probe.invalid';

function requestView(method: string, url: URL, headers: Map<string, string>, authority?: string): RequestView {
  return {
    method,
    path: url.pathname || '/',
    query: url.search.replace(/^\?/, ''),
    authority: (authority ?? url.host).toLowerCase(),
    header: (n) => headers.get(n.toLowerCase()),
  };
}

/** Parses the query; answers 400 on bad input. */
export function explain(snap: CompiledSnapshot | undefined, service: string, query: URLSearchParams, state: ExplainState = {}): ExplainResult {
  if (!snap) return { status: 503, body: { code: 'no_snapshot', message: 'this sidecar has no policy snapshot yet' } };
  const method = (query.get('method') ?? 'GET').toUpperCase();
  if (!/^[A-Z]+$/.test(method)) return { status: 400, body: { code: 'bad_request', message: `not a method: ${JSON.stringify(method)}` } };
  const rawUrl = query.get('url');
  if (!rawUrl) return { status: 400, body: { code: 'bad_request', message: 'url is required, e.g. url=http://catalog/items' } };
  let url: URL;
  try {
    url = new URL(/^[a-z]+:\/\//i.test(rawUrl) ? rawUrl : `http://${rawUrl}`);
  } catch {
    return { status: 400, body: { code: 'bad_request', message: `not a URL: ${JSON.stringify(rawUrl)}` } };
  }
  const headers = new Map<string, string>();
  for (const h of query.getAll('header')) {
    const i = h.indexOf(':');
    if (i <= 0) return { status: 400, body: { code: 'bad_request', message: `header must be NAME:VALUE, got ${JSON.stringify(h)}` } };
    const k = h.slice(0, i).trim().toLowerCase();
    const v = h.slice(i + 1).trim();
    headers.set(k, headers.has(k) ? `${headers.get(k)}, ${v}` : v);
  }
  const req = requestView(method, url, headers);
  const steps: Step[] = [];
  const routes = snap.resources.filter((r): r is RouteResource => r.kind === 'Route');

  // 1. Which virtual host (Route) serves the authority: every rule made a catch-all, so the
  //    first rule of the winning host answers, whatever the request's path and headers.
  const hostProbe = compileSnapshot(
    { version: 'probe', resources: [...routes.map((r) => withRules(r, r.spec.rules.map((x) => ({ ...x, matches: [] })))), ...snap.resources.filter((r) => r.kind === 'DestinationPolicy' || r.kind === 'Service')], endpoints: snap.endpoints },
    { random: () => 0 },
  ).routes.match(req);
  const route = hostProbe ? routes.find((r) => r.metadata.name === hostProbe.routeName && hostProbe.ruleName === r.spec.rules[0]?.name) : undefined;
  const matched = snap.routes.match(req);
  if (!hostProbe) {
    steps.push({ step: 'host', result: `no Route serves ${JSON.stringify(req.authority)}, and no service of that name is known: 404 NR`, details: routes.length ? [`Routes' hosts: ${routes.flatMap((r) => r.spec.hosts).join(', ')}`] : ['no Routes'] });
    return done(snap, service, method, url, headers, steps, { flag: 'NR', status: 404 });
  }
  if (!route) {
    steps.push({ step: 'host', result: `no Route names ${JSON.stringify(req.authority)}: the implicit route to service ${JSON.stringify(hostProbe.routeName)} (every request, to all its endpoints)` });
  } else {
    steps.push({ step: 'host', result: `Route ${JSON.stringify(route.metadata.name)} serves ${JSON.stringify(req.authority)} (hosts: ${route.spec.hosts.join(', ')})` });
    // 2. Each rule, in order, compiled alone.
    const details: string[] = [];
    for (const rule of route.spec.rules) {
      const ok = probe(route, [rule], req);
      if (ok) {
        details.push(`rule ${JSON.stringify(rule.name)}: matches (${rule.matches.length === 0 ? 'no conditions: every request' : rule.matches.map(describeMatch).join(' OR ')})`);
        break;
      }
      details.push(`rule ${JSON.stringify(rule.name)}: no match: ${rule.matches.map((m) => whyNot(route, rule, m, req)).join('; OR ')}`);
    }
    steps.push({ step: 'rules', result: matched ? `rule ${JSON.stringify(matched.ruleName)} matches` : 'no rule matches: 404 NR', details });
  }
  if (!matched) return done(snap, service, method, url, headers, steps, { flag: 'NR', status: 404 });
  const rule = route?.spec.rules.find((r) => r.name === matched.ruleName);

  if (matched.redirect) {
    const rd = matched.redirect(req);
    steps.push({ step: 'redirect', result: `answered by the sidecar: ${rd.status} Location: ${rd.location}` });
    return done(snap, service, method, url, headers, steps, { route: matched.statName, status: rd.status });
  }

  // 3. Edits, fault, breaker, mirror, deadline, retries: what the compiled rule carries.
  const policy: string[] = [];
  if (matched.rewritePath) policy.push(`path rewritten to ${matched.rewritePath(req)}`);
  if (matched.rewriteHost) policy.push(`host rewritten to ${matched.rewriteHost}`);
  if (matched.requestHeaders) policy.push(`request headers edited (${describeEdits(rule?.requestHeaders)})`);
  if (matched.responseHeaders) policy.push(`response headers edited (${describeEdits(rule?.responseHeaders)})`);
  if (matched.fault) {
    const f = matched.fault;
    const applies = f.header === undefined || headers.has(f.header.toLowerCase());
    if (f.delay) policy.push(`fault: ${f.delay.percent}% delayed ${formatDuration(f.delay.fixedMs)} (DI)${applies ? '' : ` - not this request: no ${f.header} header`}`);
    if (f.abort) policy.push(`fault: ${f.abort.percent}% aborted with ${f.abort.httpStatus ?? `grpc-status ${f.abort.grpcStatus}`} (FI)${applies ? '' : ` - not this request: no ${f.header} header`}`);
  }
  if (matched.breaker) policy.push(`route breaker: opens at ${matched.breaker.failureRateThreshold}% failures over ${formatDuration(matched.breaker.windowMs)} (min ${matched.breaker.minimumCalls} calls), 503 CO while open`);
  if (matched.mirror) policy.push(`mirror: ${matched.mirror.percent}% copied to ${matched.mirror.service}${matched.mirror.subset ? `:${matched.mirror.subset}` : ''}`);
  policy.push(matched.timeoutMs !== undefined ? `timeout ${formatDuration(matched.timeoutMs)} for the whole request (504 UT)` : 'no request timeout');
  const rt = matched.retries;
  if (rt && rt.attempts > 0)
    policy.push(
      `retries: up to ${rt.attempts} on ${rt.retryOn.join(', ')}${rt.perTryTimeoutMs !== undefined ? `, ${formatDuration(rt.perTryTimeoutMs)} per try` : ''}${rt.backoff ? `, backoff ${formatDuration(rt.backoff.baseIntervalMs)}..${formatDuration(rt.backoff.maxIntervalMs)}` : ''}; budget ${rt.budget.percent}% + ${rt.budget.minRetriesPerSecond}/s; bodies up to ${rt.bufferLimitBytes} bytes replayed`,
    );
  else policy.push('no retries (a stream refused unseen is still sent again)');
  steps.push({ step: 'policy', result: `${matched.statName}`, details: policy });

  // 4. Backends and their endpoints.
  const backends = rule ? (rule.backends ?? []).filter((b) => b.weight > 0) : [{ service: hostProbe.routeName, subset: undefined, weight: 1 }];
  const total = backends.reduce((s, b) => s + b.weight, 0);
  const bdetails: string[] = [];
  let usable = 0;
  for (const b of backends) {
    const svc = snap.services.get(b.service);
    const share = backends.length > 1 ? ` ${((b.weight / total) * 100).toFixed(b.weight * 100 % total === 0 ? 0 : 1)}%` : '';
    if (!svc) {
      bdetails.push(`${b.service}${share}: unknown service: 503 UH`);
      continue;
    }
    let eps: readonly Endpoint[] = svc.endpoints;
    let subsetNote = '';
    if (b.subset) {
      const def = svc.policy?.subsets.find((s) => s.name === b.subset);
      eps = def ? subsetEndpoints(svc.endpoints, def.labels) : [];
      subsetNote = def ? ` subset ${b.subset} (${Object.entries(def.labels).map(([k, v]) => `${k}=${v}`).join(',')})` : ` subset ${b.subset} (not defined)`;
    }
    const ejected = eps.filter((e) => state.isEjected?.(b.service, e));
    usable += eps.length - ejected.length;
    const lb = svc.policy?.loadBalancer?.type ?? 'round-robin';
    const cb = svc.policy?.circuitBreaker;
    const list = eps.map((e) => `${e.address}:${e.port}${e.id ? ` (${e.id})` : ''}${ejected.includes(e) ? ' EJECTED' : ''}${e.meshed ? '' : ' (not meshed)'}`);
    bdetails.push(
      `${b.service}${subsetNote}${share}: ${eps.length === 0 ? 'no endpoints: 503 UH' : `${eps.length} endpoint(s), ${lb}: ${list.join(', ')}`}` +
        (snap.transcoders.has(b.service) ? '; HTTP/JSON is transcoded to gRPC (GrpcTranscoding)' : '') +
        (cb ? `; limits ${Object.entries(cb).map(([k, v]) => `${k}=${v}`).join(' ')}` : '') +
        (svc.policy?.outlierDetection ? '; outlier detection on' : ''),
    );
  }
  steps.push({ step: 'backends', result: backends.map((b) => `${b.service}${b.subset ? ':' + b.subset : ''}`).join(', ') || 'none', details: bdetails });

  // 5. The callee's inbound side: its RateLimitPolicy (enforced by its own sidecars).
  const rl: string[] = [];
  for (const b of backends) {
    const pol = snap.rateLimits.get(b.service);
    if (!pol) continue;
    const lreq = {
      path: req.path,
      remoteAddress: undefined as string | undefined,
      header: (n: string) => (n === SOURCE_HEADER ? service : n === ROUTE_HEADER ? matched.statName : headers.get(n)),
    };
    for (const l of pol.limits) {
      const needsAddr = l.descriptors.some((d) => !('header' in d) && d.key === 'remote-address');
      const key = compileKey(l, b.service)({ ...lreq, remoteAddress: needsAddr ? '<caller address>' : undefined });
      const what = `${l.requests} per ${formatDuration(l.periodMs)}${l.burst ? ` (+${l.burst} burst)` : ''}, ${l.scope}`;
      rl.push(key === undefined ? `${b.service} limit ${JSON.stringify(l.name)} (${what}): does not apply (${l.routes?.length ? `routes ${l.routes.join(', ')}` : 'a descriptor value is missing'})` : `${b.service} limit ${JSON.stringify(l.name)} (${what}): counts against bucket ${JSON.stringify(key || '(one for all requests)')}; over it: 429 RL`);
    }
    rl.push(`${b.service} failureMode ${pol.failureMode} (Redis down or slow: ${pol.failureMode === 'open' ? 'allowed' : 'denied'})`);
  }
  steps.push({ step: 'inbound', result: rl.length ? `the callee's sidecars enforce its RateLimitPolicy` : 'the callee has no RateLimitPolicy: its sidecar hands the request to the app', details: rl });

  // 6. The callee's inbound side: its AuthorizationPolicies (enforced by its own sidecars).
  const authz = authorization(snap, backends.map((b) => b.service), state.spiffeId?.(), { method, path: matched.rewritePath ? matched.rewritePath(req) : url.pathname || '/', headers });
  if (authz) steps.push(authz.step);
  const denied = authz?.denied;
  return done(snap, service, method, url, headers, steps, { route: matched.statName, status: usable > 0 ? (denied ? 403 : undefined) : 503, flag: usable > 0 ? (denied ? 'RBAC' : undefined) : 'UH' });
}

/** The callee services' AuthorizationPolicy decisions on the request; undefined when there are no policies at all. */
function authorization(
  snap: CompiledSnapshot,
  services: string[],
  caller: string | undefined,
  req: { method: string; path: string; headers: Map<string, string> },
): { step: Step; denied: boolean } | undefined {
  const policies = snap.resources.flatMap((r) => (r.kind === 'AuthorizationPolicy' ? [{ name: r.metadata.name, spec: r.spec }] : []));
  if (policies.length === 0) return undefined;
  const authorizer = new Authorizer(policies);
  const parsed = caller ? parseSpiffeId(caller) : undefined;
  const peer = parsed?.ok ? parsed.value : undefined;
  const who = peer ? `caller ${peer.uri} (proven over mTLS)` : 'a caller without a workload certificate (plaintext: no identity)';
  const details: string[] = [`judged as ${who}; port conditions use the callee's app port, not known here`];
  let denied = 0;
  const unique = [...new Set(services)];
  for (const svc of unique) {
    const e = authorizer.forService(svc);
    if (!e) {
      details.push(`${svc}: no AuthorizationPolicy applies: every caller is allowed`);
      continue;
    }
    const d: AuthzDecision = e.decide({ peer, method: req.method, path: req.path, port: 0, header: (n) => req.headers.get(n) });
    const ref = (r: RuleRef | 'no-policy') => (r === 'no-policy' ? 'no policy' : `AuthorizationPolicy ${r.policy} rule ${r.rule}`);
    let line = `${svc} (policies ${e.policies.join(', ')}): ${d.allowed ? `allowed by ${ref(d.by)}` : `denied by ${ref(d.by)}: 403 RBAC (gRPC PERMISSION_DENIED)`}`;
    if (d.dryRun) line += `; would be denied by ${ref(d.dryRun)} (dryRun: counted as would_deny, not denied)`;
    if (d.audits.length) line += `; AUDIT rules matching: ${d.audits.map(ref).join(', ')}`;
    if (!d.allowed) denied++;
    details.push(line);
  }
  const result = denied === 0 ? 'the callee allows this request' : denied === unique.length ? 'the callee denies this request: 403 RBAC' : `denied by ${denied} of ${unique.length} backend services (their share gets 403 RBAC)`;
  return { step: { step: 'authorization', result, details }, denied: denied === unique.length };
}

function done(snap: CompiledSnapshot, service: string, method: string, url: URL, headers: Map<string, string>, steps: Step[], outcome: { route?: string; status?: number; flag?: string }): ExplainResult {
  return {
    status: 200,
    body: { service, version: snap.version, request: { method, url: url.toString(), headers: Object.fromEntries(headers) }, steps, outcome },
  };
}

function withRules(r: RouteResource, rules: readonly RouteRule[], hosts?: readonly string[]): Resource {
  return { ...r, spec: { ...r.spec, hosts: hosts ?? r.spec.hosts, rules } } as Resource;
}

/** Whether `rules` (compiled alone, on a probe host) match the request. */
function probe(route: RouteResource, rules: readonly RouteRule[], req: RequestView): boolean {
  const table = compileSnapshot({ version: 'probe', resources: [withRules(route, rules, [PROBE_HOST])], endpoints: [] }, { random: () => 0 }).routes;
  return table.match({ ...req, authority: PROBE_HOST }) !== undefined;
}

/** The conditions of one match entry that this request fails, each tested alone. */
function whyNot(route: RouteResource, rule: RouteRule, m: RouteMatch, req: RequestView): string {
  const conds: [string, RouteMatch][] = [];
  if (m.path) conds.push([describeMatch({ path: m.path }), { path: m.path }]);
  if (m.methods) conds.push([describeMatch({ methods: m.methods }), { methods: m.methods }]);
  for (const h of m.headers ?? []) conds.push([describeMatch({ headers: [h] }), { headers: [h] }]);
  for (const q of m.queryParams ?? []) conds.push([describeMatch({ queryParams: [q] }), { queryParams: [q] }]);
  const failing = conds.filter(([, c]) => !probe(route, [{ ...rule, matches: [c] }], req)).map(([d]) => d);
  return failing.length ? `${failing.join(' and ')} does not hold` : `(${describeMatch(m)})`;
}

function kv(kind: string, x: KeyValueMatch): string {
  const v = x.exact !== undefined ? `=${JSON.stringify(x.exact)}` : x.regex !== undefined ? ` ~ /${x.regex}/` : ' present';
  return `${x.invert ? 'not ' : ''}${kind} ${x.name}${v}`;
}

export function describeMatch(m: RouteMatch): string {
  const parts: string[] = [];
  if (m.path) parts.push(m.path.exact !== undefined ? `path = ${m.path.exact}` : m.path.prefix !== undefined ? `path prefix ${m.path.prefix}` : `path ~ /${m.path.regex}/`);
  if (m.methods) parts.push(`method ${m.methods.join('|')}`);
  for (const h of m.headers ?? []) parts.push(kv('header', h));
  for (const q of m.queryParams ?? []) parts.push(kv('query', q));
  return parts.join(' and ') || 'every request';
}

function describeEdits(e: { set?: Readonly<Record<string, string>>; add?: Readonly<Record<string, string>>; remove?: readonly string[] } | undefined): string {
  if (!e) return '';
  const out: string[] = [];
  if (e.set) out.push(`set ${Object.keys(e.set).join(', ')}`);
  if (e.add) out.push(`add ${Object.keys(e.add).join(', ')}`);
  if (e.remove) out.push(`remove ${e.remove.join(', ')}`);
  return out.join('; ');
}

/** Most requests `GET /decisions?recent=N` lists. */
const MAX_RECENT = 100;

/**
 * `GET /decisions?id=REQUEST_ID` on the admin port (`meshlet explain --last`): what this sidecar
 * did with the requests carrying that `x-request-id`, from its ring of recent decisions;
 * `?recent=N`: the newest N requests (to find an id). Formatting happens here, on request.
 */
export function recentDecisions(ring: DecisionRing, sidecar: string, service: string, query: URLSearchParams): ExplainResult {
  const id = query.get('id');
  const recent = query.get('recent');
  if (id) return { status: 200, body: { kept: ring.size, decisions: ring.find(id).map((d) => d.toJSON(sidecar, service)) } };
  if (recent !== null) {
    const n = Number(recent);
    if (!Number.isInteger(n) || n < 1 || n > MAX_RECENT) return { status: 400, body: { code: 'bad_request', message: `recent must be 1..${MAX_RECENT}` } };
    return { status: 200, body: { kept: ring.size, decisions: ring.recent(n).map((d) => d.toJSON(sidecar, service)) } };
  }
  return { status: 400, body: { code: 'bad_request', message: 'give id=REQUEST_ID (or recent=N)' } };
}
