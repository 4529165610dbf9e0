/**
 * Raw (YAML/JSON) policy documents -> validated, frozen resources. Every problem is reported
 * with its field path, e.g. `spec.rules[0].matches[1].path.regex: invalid regular expression`;
 * unknown fields are errors. The same messages reach the API's 400 body, `meshlet apply` and a
 * sidecar's NACK.
 */
import { fail, ok, type FieldError, type Result } from '../core/result';
import { Checker, formatDuration, join, type Obj } from './validate';
import {
  API_VERSION,
  DESCRIPTOR_KEYS,
  KINDS,
  LB_TYPES,
  RETRY_ON,
  type BackendRef,
  type CircuitBreaker,
  type FaultInjection,
  type HealthCheck,
  type Mirror,
  type RouteBreaker,
  type Descriptor,
  type DestinationPolicySpec,
  type GrpcTranscodingSpec,
  type ProtoFile,
  type GrpcRouteOptions,
  type HeaderEdits,
  type KeyValueMatch,
  type Kind,
  type LoadBalancer,
  type Metadata,
  type OutlierDetection,
  type PathMatch,
  type RateLimit,
  type RateLimitPolicySpec,
  type Redirect,
  type Resource,
  type RetryOn,
  type RetryPolicy,
  type RouteMatch,
  type RouteRule,
  type RouteSpec,
  type ServiceSpec,
  type StaticEndpoint,
  type Subset,
  type UpstreamProtocol,
} from './types';

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const NAME_TEXT = 'must be lower-case letters, digits, "-" and ".", starting and ending with a letter or digit';
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const METHOD = /^[A-Z]+$/;
const HOST = /^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)(:\d{1,5})?$/;
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const PROTOCOLS: readonly UpstreamProtocol[] = ['auto', 'http1', 'http2'];

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
  const c = new Checker();
  const r = parseInto(c, raw);
  if (c.errors.length > 0 || !r) return fail(c.errors);
  return ok(deepFreeze(r));
}

function parseInto(c: Checker, raw: unknown): Resource | undefined {
  const top = c.object(raw, '', ['apiVersion', 'kind', 'metadata', 'spec']);
  if (!top) return undefined;
  if (top.apiVersion === undefined) c.error('apiVersion', `is required (use "${API_VERSION}")`);
  else if (top.apiVersion !== API_VERSION) c.error('apiVersion', `must be "${API_VERSION}", got ${JSON.stringify(top.apiVersion)}`);
  const kind = top.kind === undefined ? c.error('kind', `is required (one of ${KINDS.join(', ')})`) : c.oneOf(top.kind, 'kind', KINDS);
  const metadata = top.metadata === undefined ? c.error('metadata', 'is required') : parseMetadata(c, top.metadata, 'metadata');
  if (top.spec === undefined) {
    c.error('spec', 'is required');
    return undefined;
  }
  if (!kind) return undefined;
  let spec: unknown;
  switch (kind) {
    case 'Route':
      spec = parseRouteSpec(c, top.spec, 'spec');
      break;
    case 'DestinationPolicy':
      spec = parseDestinationPolicySpec(c, top.spec, 'spec');
      break;
    case 'RateLimitPolicy':
      spec = parseRateLimitSpec(c, top.spec, 'spec');
      break;
    case 'Service':
      spec = parseServiceSpec(c, top.spec, 'spec');
      break;
    case 'GrpcTranscoding':
      spec = parseGrpcTranscodingSpec(c, top.spec, 'spec');
      break;
  }
  if (!metadata || !spec) return undefined;
  return { apiVersion: API_VERSION, kind, metadata, spec } as Resource;
}

function parseMetadata(c: Checker, v: unknown, path: string): Metadata | undefined {
  const o = c.object(v, path, ['name', 'namespace', 'labels', 'annotations', 'resourceVersion', 'creationTimestamp']);
  if (!o) return undefined;
  const name = o.name === undefined ? c.error(join(path, 'name'), 'is required') : c.string(o.name, join(path, 'name'), { pattern: NAME, patternText: NAME_TEXT, maxLength: 253 });
  const m: Metadata = { name: name ?? '' };
  if (o.namespace !== undefined) m.namespace = c.string(o.namespace, join(path, 'namespace'), { pattern: NAME, patternText: NAME_TEXT, maxLength: 63 });
  if (o.labels !== undefined) m.labels = parseLabels(c, o.labels, join(path, 'labels'));
  if (o.annotations !== undefined) m.annotations = c.stringMap(o.annotations, join(path, 'annotations'));
  if (o.resourceVersion !== undefined) {
    const rv = typeof o.resourceVersion === 'number' ? String(o.resourceVersion) : o.resourceVersion;
    m.resourceVersion = c.string(rv, join(path, 'resourceVersion'));
  }
  if (o.creationTimestamp !== undefined) m.creationTimestamp = c.string(o.creationTimestamp, join(path, 'creationTimestamp'));
  return name === undefined ? undefined : stripUndefined(m);
}

function parseLabels(c: Checker, v: unknown, path: string): Record<string, string> | undefined {
  return c.stringMap(v, path, (k, p) => {
    if (!LABEL_KEY.test(k) || k.length > 316) c.error(p, 'invalid label key');
  });
}

function serviceName(c: Checker, o: Obj, key: string, path: string): string | undefined {
  const v = c.required(o, key, path);
  if (v === undefined) return undefined;
  return c.string(v, join(path, key), { pattern: NAME, patternText: NAME_TEXT, maxLength: 253 });
}

// ---------------------------------------------------------------------------------------- Route

function parseRouteSpec(c: Checker, v: unknown, path: string): RouteSpec | undefined {
  const o = c.object(v, path, ['hosts', 'rules', 'grpc', 'websocket']);
  if (!o) return undefined;
  const hosts: string[] = [];
  const rawHosts = c.required(o, 'hosts', path);
  const hl = rawHosts === undefined ? undefined : c.array(rawHosts, join(path, 'hosts'), { min: 1 });
  hl?.forEach((h, i) => {
    const p = join(join(path, 'hosts'), i);
    const s = c.string(h, p);
    if (s === undefined) return;
    const lower = s.toLowerCase();
    if (!HOST.test(lower)) c.error(p, `invalid host ${JSON.stringify(s)}: use a DNS name, optionally with :port, or a "*." wildcard`);
    else if (hosts.includes(lower)) c.error(p, `duplicate host ${JSON.stringify(s)}`);
    else hosts.push(lower);
  });
  const rules: RouteRule[] = [];
  const rawRules = c.required(o, 'rules', path);
  const rl = rawRules === undefined ? undefined : c.array(rawRules, join(path, 'rules'), { min: 1 });
  const names = new Set<string>();
  rl?.forEach((r, i) => {
    const p = join(join(path, 'rules'), i);
    const rule = parseRule(c, r, p, i);
    if (!rule) return;
    if (names.has(rule.name)) c.error(join(p, 'name'), `duplicate rule name ${JSON.stringify(rule.name)}`);
    names.add(rule.name);
    rules.push(rule);
  });
  const spec: RouteSpec = { hosts, rules };
  if (o.grpc !== undefined) spec.grpc = parseGrpcOptions(c, o.grpc, join(path, 'grpc'));
  if (o.websocket !== undefined) {
    const ws = c.object(o.websocket, join(path, 'websocket'), ['idleTimeout']);
    if (ws) spec.websocket = ws.idleTimeout === undefined ? {} : { idleTimeoutMs: c.duration(ws.idleTimeout, join(join(path, 'websocket'), 'idleTimeout'), { minMs: 1, maxMs: 24 * 3_600_000 }) };
  }
  return spec;
}

const ORIGIN = /^(\*|https?:\/\/[a-z0-9.-]+(:\d{1,5})?)$/i;

function parseGrpcOptions(c: Checker, v: unknown, path: string): GrpcRouteOptions | undefined {
  const o = c.object(v, path, ['maxMessageBytes', 'allowOrigins']);
  if (!o) return undefined;
  const out: GrpcRouteOptions = {};
  if (o.maxMessageBytes !== undefined) out.maxMessageBytes = c.integer(o.maxMessageBytes, join(path, 'maxMessageBytes'), 1, 0xffffffff);
  if (o.allowOrigins !== undefined) {
    const origins: string[] = [];
    c.array(o.allowOrigins, join(path, 'allowOrigins'), { min: 1 })?.forEach((x, i) => {
      const s = c.string(x, join(join(path, 'allowOrigins'), i), { pattern: ORIGIN, patternText: 'must be "*" or an origin such as "https://app.example.com" (scheme, host, optional port; no path)' });
      if (s !== undefined) origins.push(s.toLowerCase());
    });
    out.allowOrigins = origins;
  }
  return stripUndefined(out);
}

const RULE_FIELDS = ['name', 'matches', 'backends', 'redirect', 'requestHeaders', 'responseHeaders', 'rewrite', 'timeout', 'retries', 'breaker', 'fault', 'mirror', 'tracing'];

function parseRule(c: Checker, v: unknown, path: string, index: number): RouteRule | undefined {
  const o = c.object(v, path, RULE_FIELDS);
  if (!o) return undefined;
  const name = o.name === undefined ? `rule-${index}` : c.string(o.name, join(path, 'name'), { pattern: NAME, patternText: NAME_TEXT, maxLength: 63 });
  const matches: RouteMatch[] = [];
  if (o.matches !== undefined) {
    c.array(o.matches, join(path, 'matches'))?.forEach((m, i) => {
      const r = parseMatch(c, m, join(join(path, 'matches'), i));
      if (r) matches.push(r);
    });
  }
  const rule: RouteRule = { name: name ?? '', matches };
  if (o.backends !== undefined && o.redirect !== undefined) c.error(path, 'set either backends or redirect, not both');
  else if (o.backends === undefined && o.redirect === undefined) c.error(join(path, 'backends'), 'is required (or a redirect)');
  if (o.backends !== undefined) {
    const bp = join(path, 'backends');
    const list = c.array(o.backends, bp, { min: 1 });
    const backends: BackendRef[] = [];
    list?.forEach((b, i) => {
      const r = parseBackend(c, b, join(bp, i));
      if (r) backends.push(r);
    });
    if (list && backends.length === list.length && backends.every((b) => b.weight === 0)) c.error(bp, 'at least one backend needs a weight above 0');
    rule.backends = backends;
  }
  const prefixOnly = matches.length > 0 && matches.every((m) => m.path?.prefix !== undefined);
  if (o.redirect !== undefined) {
    rule.redirect = parseRedirect(c, o.redirect, join(path, 'redirect'));
    if (rule.redirect?.pathPrefix !== undefined && !prefixOnly) c.error(join(join(path, 'redirect'), 'pathPrefix'), 'needs every match of the rule to have a path.prefix');
  }
  if (o.requestHeaders !== undefined) rule.requestHeaders = parseHeaderEdits(c, o.requestHeaders, join(path, 'requestHeaders'));
  if (o.responseHeaders !== undefined) rule.responseHeaders = parseHeaderEdits(c, o.responseHeaders, join(path, 'responseHeaders'));
  if (o.rewrite !== undefined) {
    const rp = join(path, 'rewrite');
    const rw = c.object(o.rewrite, rp, ['pathPrefix', 'host']);
    if (rw) {
      rule.rewrite = {};
      if (rw.pathPrefix !== undefined) {
        rule.rewrite.pathPrefix = c.string(rw.pathPrefix, join(rp, 'pathPrefix'), { pattern: /^\//, patternText: 'must start with "/"' });
        if (!prefixOnly) c.error(join(rp, 'pathPrefix'), 'needs every match of the rule to have a path.prefix');
      }
      if (rw.host !== undefined) rule.rewrite.host = c.string(rw.host, join(rp, 'host'), { pattern: HOST, patternText: 'must be a DNS name, optionally with :port' });
      if (rw.pathPrefix === undefined && rw.host === undefined) c.error(rp, 'set pathPrefix or host');
    }
    if (o.redirect !== undefined) c.error(rp, 'cannot be combined with redirect');
  }
  if (o.timeout !== undefined) rule.timeoutMs = c.duration(o.timeout, join(path, 'timeout'));
  if (o.retries !== undefined) rule.retries = parseRetries(c, o.retries, join(path, 'retries'));
  if (o.breaker !== undefined) rule.breaker = parseBreaker(c, o.breaker, join(path, 'breaker'));
  if (o.fault !== undefined) rule.fault = parseFault(c, o.fault, join(path, 'fault'));
  if (o.mirror !== undefined) rule.mirror = parseMirror(c, o.mirror, join(path, 'mirror'));
  if (o.tracing !== undefined) {
    const tp = join(path, 'tracing');
    const tr = c.object(o.tracing, tp, ['samplingPercent']);
    if (tr) {
      const sv = c.required(tr, 'samplingPercent', tp);
      if (sv !== undefined) rule.traceSamplingPercent = c.number(sv, join(tp, 'samplingPercent'), 0, 100);
    }
  }
  if (o.redirect !== undefined) for (const k of ['timeout', 'retries', 'breaker', 'mirror']) if (o[k] !== undefined) c.error(join(path, k), 'does not apply to a redirect rule');
  return stripUndefined(rule);
}

function parseBreaker(c: Checker, v: unknown, path: string): RouteBreaker | undefined {
  const o = c.object(v, path, ['failureRateThreshold', 'slowCallRateThreshold', 'slowCallDuration', 'minimumCalls', 'window', 'openDuration', 'halfOpenCalls']);
  if (!o) return undefined;
  const fv = c.required(o, 'failureRateThreshold', path);
  const b: RouteBreaker = { failureRateThreshold: 50, minimumCalls: 10, windowMs: 10_000, openDurationMs: 30_000, halfOpenCalls: 3 };
  if (fv !== undefined) b.failureRateThreshold = c.integer(fv, join(path, 'failureRateThreshold'), 1, 100) ?? 50;
  if (o.slowCallRateThreshold !== undefined) b.slowCallRateThreshold = c.integer(o.slowCallRateThreshold, join(path, 'slowCallRateThreshold'), 1, 100);
  if (o.slowCallDuration !== undefined) b.slowCallDurationMs = c.duration(o.slowCallDuration, join(path, 'slowCallDuration'));
  if ((o.slowCallRateThreshold === undefined) !== (o.slowCallDuration === undefined))
    c.error(join(path, o.slowCallDuration === undefined ? 'slowCallDuration' : 'slowCallRateThreshold'), 'slowCallRateThreshold and slowCallDuration go together');
  if (o.minimumCalls !== undefined) b.minimumCalls = c.integer(o.minimumCalls, join(path, 'minimumCalls'), 1, 100_000) ?? b.minimumCalls;
  if (o.window !== undefined) b.windowMs = c.duration(o.window, join(path, 'window'), { minMs: 100, maxMs: 3600_000 }) ?? b.windowMs;
  if (o.openDuration !== undefined) b.openDurationMs = c.duration(o.openDuration, join(path, 'openDuration')) ?? b.openDurationMs;
  if (o.halfOpenCalls !== undefined) b.halfOpenCalls = c.integer(o.halfOpenCalls, join(path, 'halfOpenCalls'), 1, 1000) ?? b.halfOpenCalls;
  return stripUndefined(b);
}

function parsePercent(c: Checker, o: Obj, path: string): number {
  if (o.percent === undefined) return 100;
  return c.number(o.percent, join(path, 'percent'), 0, 100) ?? 100;
}

function parseFault(c: Checker, v: unknown, path: string): FaultInjection | undefined {
  const o = c.object(v, path, ['delay', 'abort', 'header']);
  if (!o) return undefined;
  const f: FaultInjection = {};
  if (o.delay !== undefined) {
    const dp = join(path, 'delay');
    const d = c.object(o.delay, dp, ['fixed', 'percent']);
    if (d) {
      const fv = c.required(d, 'fixed', dp);
      const fixedMs = fv === undefined ? undefined : c.duration(fv, join(dp, 'fixed'), { maxMs: 600_000 });
      if (fixedMs !== undefined) f.delay = { fixedMs, percent: parsePercent(c, d, dp) };
    }
  }
  if (o.abort !== undefined) {
    const ap = join(path, 'abort');
    const a = c.object(o.abort, ap, ['httpStatus', 'grpcStatus', 'percent']);
    if (a) {
      const abort: NonNullable<FaultInjection['abort']> = { percent: parsePercent(c, a, ap) };
      if (a.httpStatus !== undefined) abort.httpStatus = c.integer(a.httpStatus, join(ap, 'httpStatus'), 200, 599);
      if (a.grpcStatus !== undefined) abort.grpcStatus = c.integer(a.grpcStatus, join(ap, 'grpcStatus'), 1, 16);
      if (a.httpStatus === undefined && a.grpcStatus === undefined) c.error(ap, 'set httpStatus or grpcStatus');
      f.abort = stripUndefined(abort);
    }
  }
  if (o.header !== undefined) f.header = c.string(o.header, join(path, 'header'), { pattern: HEADER_NAME, patternText: 'must be a valid header name' })?.toLowerCase();
  if (o.delay === undefined && o.abort === undefined) c.error(path, 'set delay or abort');
  return stripUndefined(f);
}

function parseMirror(c: Checker, v: unknown, path: string): Mirror | undefined {
  const o = c.object(v, path, ['service', 'subset', 'percent']);
  if (!o) return undefined;
  const service = serviceName(c, o, 'service', path);
  const m: Mirror = { service: service ?? '', percent: parsePercent(c, o, path) };
  if (o.subset !== undefined) m.subset = c.string(o.subset, join(path, 'subset'), { pattern: NAME, patternText: NAME_TEXT, maxLength: 63 });
  return stripUndefined(m);
}

function parseMatch(c: Checker, v: unknown, path: string): RouteMatch | undefined {
  const o = c.object(v, path, ['path', 'method', 'headers', 'queryParams']);
  if (!o) return undefined;
  const m: RouteMatch = {};
  if (o.path !== undefined) {
    const pp = join(path, 'path');
    const po = c.object(o.path, pp, ['exact', 'prefix', 'regex']);
    if (po) {
      const set = ['exact', 'prefix', 'regex'].filter((k) => po[k] !== undefined);
      if (set.length !== 1) c.error(pp, 'set exactly one of exact, prefix, regex');
      const pm: PathMatch = {};
      if (po.exact !== undefined) pm.exact = c.string(po.exact, join(pp, 'exact'), { pattern: /^\//, patternText: 'must start with "/"' });
      if (po.prefix !== undefined) pm.prefix = c.string(po.prefix, join(pp, 'prefix'), { pattern: /^\//, patternText: 'must start with "/"' });
      if (po.regex !== undefined) pm.regex = c.regex(po.regex, join(pp, 'regex'));
      m.path = stripUndefined(pm);
    }
  }
  if (o.method !== undefined) {
    const mp = join(path, 'method');
    const list = Array.isArray(o.method) ? o.method : [o.method];
    if (list.length === 0) c.error(mp, 'must name at least one method');
    const methods: string[] = [];
    list.forEach((x, i) => {
      const s = c.string(x, Array.isArray(o.method) ? join(mp, i) : mp, { pattern: METHOD, patternText: 'must be an upper-case HTTP method such as GET' });
      if (s) methods.push(s);
    });
    m.methods = methods;
  }
  if (o.headers !== undefined) m.headers = parseKeyValueMatches(c, o.headers, join(path, 'headers'), true);
  if (o.queryParams !== undefined) m.queryParams = parseKeyValueMatches(c, o.queryParams, join(path, 'queryParams'), false);
  return m;
}

function parseKeyValueMatches(c: Checker, v: unknown, path: string, isHeader: boolean): KeyValueMatch[] {
  const out: KeyValueMatch[] = [];
  c.array(v, path)?.forEach((x, i) => {
    const p = join(path, i);
    const o = c.object(x, p, ['name', 'exact', 'regex', 'present', 'invert']);
    if (!o) return;
    const nameV = c.required(o, 'name', p);
    const name = nameV === undefined ? undefined : isHeader ? c.string(nameV, join(p, 'name'), { pattern: HEADER_NAME, patternText: 'must be a valid header name' }) : c.string(nameV, join(p, 'name'));
    const set = ['exact', 'regex', 'present'].filter((k) => o[k] !== undefined);
    if (set.length !== 1) c.error(p, 'set exactly one of exact, regex, present');
    const m: KeyValueMatch = { name: isHeader ? (name ?? '').toLowerCase() : name ?? '' };
    if (o.exact !== undefined) m.exact = c.string(o.exact, join(p, 'exact'), { nonEmpty: false });
    if (o.regex !== undefined) m.regex = c.regex(o.regex, join(p, 'regex'));
    if (o.present !== undefined) {
      m.present = c.boolean(o.present, join(p, 'present'));
      if (m.present === false) c.error(join(p, 'present'), 'must be true (use invert: true to match absence)');
    }
    if (o.invert !== undefined) m.invert = c.boolean(o.invert, join(p, 'invert'));
    out.push(stripUndefined(m));
  });
  return out;
}

function parseBackend(c: Checker, v: unknown, path: string): BackendRef | undefined {
  const o = c.object(v, path, ['service', 'subset', 'weight']);
  if (!o) return undefined;
  const service = serviceName(c, o, 'service', path);
  const b: BackendRef = { service: service ?? '', weight: 1 };
  if (o.subset !== undefined) b.subset = c.string(o.subset, join(path, 'subset'), { pattern: NAME, patternText: NAME_TEXT, maxLength: 63 });
  if (o.weight !== undefined) b.weight = c.integer(o.weight, join(path, 'weight'), 0, 1_000_000) ?? 1;
  return service === undefined ? undefined : stripUndefined(b);
}

function parseRedirect(c: Checker, v: unknown, path: string): Redirect | undefined {
  const o = c.object(v, path, ['scheme', 'host', 'port', 'path', 'pathPrefix', 'statusCode']);
  if (!o) return undefined;
  const r: Redirect = { statusCode: 302 };
  if (o.scheme !== undefined) r.scheme = c.oneOf(o.scheme, join(path, 'scheme'), ['http', 'https'] as const);
  if (o.host !== undefined) r.host = c.string(o.host, join(path, 'host'), { pattern: /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/i, patternText: 'must be a DNS name or IP address' });
  if (o.port !== undefined) r.port = c.integer(o.port, join(path, 'port'), 1, 65535);
  if (o.path !== undefined) r.path = c.string(o.path, join(path, 'path'), { pattern: /^\//, patternText: 'must start with "/"' });
  if (o.pathPrefix !== undefined) r.pathPrefix = c.string(o.pathPrefix, join(path, 'pathPrefix'), { pattern: /^\//, patternText: 'must start with "/"' });
  if (o.path !== undefined && o.pathPrefix !== undefined) c.error(path, 'set either path or pathPrefix, not both');
  if (o.statusCode !== undefined) {
    const s = c.integer(o.statusCode, join(path, 'statusCode'), 300, 399);
    if (s !== undefined && ![301, 302, 303, 307, 308].includes(s)) c.error(join(path, 'statusCode'), 'must be one of 301, 302, 303, 307, 308');
    else if (s !== undefined) r.statusCode = s as Redirect['statusCode'];
  }
  return stripUndefined(r);
}

function parseHeaderEdits(c: Checker, v: unknown, path: string): HeaderEdits | undefined {
  const o = c.object(v, path, ['set', 'add', 'remove']);
  if (!o) return undefined;
  const e: HeaderEdits = {};
  const checkMap = (key: 'set' | 'add') => {
    if (o[key] === undefined) return;
    const m = c.stringMap(o[key], join(path, key), (k, p) => {
      if (!HEADER_NAME.test(k)) c.error(p, 'invalid header name');
    });
    if (!m) return;
    const lower: Record<string, string> = {};
    for (const [k, val] of Object.entries(m)) {
      if (!HEADER_VALUE.test(val)) c.error(join(join(path, key), k), 'invalid header value (control characters are not allowed)');
      lower[k.toLowerCase()] = val;
    }
    e[key] = lower;
  };
  checkMap('set');
  checkMap('add');
  if (o.remove !== undefined) {
    const list: string[] = [];
    c.array(o.remove, join(path, 'remove'))?.forEach((x, i) => {
      const s = c.string(x, join(join(path, 'remove'), i), { pattern: HEADER_NAME, patternText: 'must be a valid header name' });
      if (s) list.push(s.toLowerCase());
    });
    e.remove = list;
  }
  return e;
}

function parseRetries(c: Checker, v: unknown, path: string): RetryPolicy | undefined {
  const o = c.object(v, path, ['attempts', 'perTryTimeout', 'retryOn', 'retriableStatusCodes', 'backoff', 'budget', 'bufferLimitBytes']);
  if (!o) return undefined;
  const attemptsV = c.required(o, 'attempts', path);
  const attempts = attemptsV === undefined ? undefined : c.integer(attemptsV, join(path, 'attempts'), 0, 10);
  const r: RetryPolicy = {
    attempts: attempts ?? 0,
    retryOn: ['connect-failure', 'reset', '5xx'],
    budget: { percent: 20, minRetriesPerSecond: 10 },
    bufferLimitBytes: 64 * 1024,
  };
  if (o.budget !== undefined) {
    const bp = join(path, 'budget');
    const b = c.object(o.budget, bp, ['percent', 'minRetriesPerSecond']);
    if (b) {
      if (b.percent !== undefined) r.budget.percent = c.number(b.percent, join(bp, 'percent'), 0, 1000) ?? r.budget.percent;
      if (b.minRetriesPerSecond !== undefined) r.budget.minRetriesPerSecond = c.integer(b.minRetriesPerSecond, join(bp, 'minRetriesPerSecond'), 0, 100_000) ?? r.budget.minRetriesPerSecond;
    }
  }
  if (o.bufferLimitBytes !== undefined) r.bufferLimitBytes = c.integer(o.bufferLimitBytes, join(path, 'bufferLimitBytes'), 0, 64 * 1024 * 1024) ?? r.bufferLimitBytes;
  if (o.perTryTimeout !== undefined) r.perTryTimeoutMs = c.duration(o.perTryTimeout, join(path, 'perTryTimeout'));
  if (o.retryOn !== undefined) {
    const rp = join(path, 'retryOn');
    const list = typeof o.retryOn === 'string' ? o.retryOn.split(',').map((s) => s.trim()) : c.array(o.retryOn, rp, { min: 1 });
    const on: RetryOn[] = [];
    list?.forEach((x, i) => {
      const s = c.oneOf(x, typeof o.retryOn === 'string' ? rp : join(rp, i), RETRY_ON);
      if (s) on.push(s);
    });
    r.retryOn = on;
  }
  if (o.retriableStatusCodes !== undefined) {
    const codes: number[] = [];
    c.array(o.retriableStatusCodes, join(path, 'retriableStatusCodes'), { min: 1 })?.forEach((x, i) => {
      const n = c.integer(x, join(join(path, 'retriableStatusCodes'), i), 100, 599);
      if (n !== undefined) codes.push(n);
    });
    r.retriableStatusCodes = codes;
  }
  if (r.retryOn.includes('retriable-status-codes') && !r.retriableStatusCodes) c.error(join(path, 'retriableStatusCodes'), 'is required when retryOn includes retriable-status-codes');
  if (o.backoff !== undefined) {
    const bp = join(path, 'backoff');
    const b = c.object(o.backoff, bp, ['baseInterval', 'maxInterval']);
    if (b) {
      const base = b.baseInterval === undefined ? 25 : c.duration(b.baseInterval, join(bp, 'baseInterval'));
      const max = b.maxInterval === undefined ? (base ?? 25) * 10 : c.duration(b.maxInterval, join(bp, 'maxInterval'));
      if (base !== undefined && max !== undefined) {
        if (max < base) c.error(join(bp, 'maxInterval'), 'must not be less than baseInterval');
        r.backoff = { baseIntervalMs: base, maxIntervalMs: max };
      }
    }
  }
  return stripUndefined(r);
}

// ---------------------------------------------------------------------------- DestinationPolicy

function parseDestinationPolicySpec(c: Checker, v: unknown, path: string): DestinationPolicySpec | undefined {
  const o = c.object(v, path, ['service', 'loadBalancer', 'subsets', 'circuitBreaker', 'outlierDetection', 'healthCheck', 'protocol', 'connectTimeout', 'idleTimeout', 'http2Upgrade']);
  if (!o) return undefined;
  const service = serviceName(c, o, 'service', path);
  const spec: DestinationPolicySpec = { service: service ?? '', loadBalancer: { type: 'round-robin' }, subsets: [], protocol: 'auto' };
  if (o.loadBalancer !== undefined) spec.loadBalancer = parseLoadBalancer(c, o.loadBalancer, join(path, 'loadBalancer')) ?? spec.loadBalancer;
  if (o.subsets !== undefined) {
    const sp = join(path, 'subsets');
    const subsets: Subset[] = [];
    c.array(o.subsets, sp)?.forEach((x, i) => {
      const p = join(sp, i);
      const so = c.object(x, p, ['name', 'labels']);
      if (!so) return;
      const nv = c.required(so, 'name', p);
      const name = nv === undefined ? undefined : c.string(nv, join(p, 'name'), { pattern: NAME, patternText: NAME_TEXT, maxLength: 63 });
      const lv = c.required(so, 'labels', p);
      const labels = lv === undefined ? undefined : parseLabels(c, lv, join(p, 'labels'));
      if (labels && Object.keys(labels).length === 0) c.error(join(p, 'labels'), 'must select at least one label');
      if (name && subsets.some((s) => s.name === name)) c.error(join(p, 'name'), `duplicate subset name ${JSON.stringify(name)}`);
      if (name && labels) subsets.push({ name, labels });
    });
    spec.subsets = subsets;
  }
  if (o.circuitBreaker !== undefined) {
    const bp = join(path, 'circuitBreaker');
    const b = c.object(o.circuitBreaker, bp, ['maxConnections', 'maxPendingRequests', 'maxRequests', 'maxRetries']);
    if (b) {
      const cb: CircuitBreaker = {};
      for (const k of ['maxConnections', 'maxPendingRequests', 'maxRequests', 'maxRetries'] as const) {
        if (b[k] !== undefined) cb[k] = c.integer(b[k], join(bp, k), 0, 10_000_000);
      }
      spec.circuitBreaker = stripUndefined(cb);
    }
  }
  if (o.outlierDetection !== undefined) spec.outlierDetection = parseOutlier(c, o.outlierDetection, join(path, 'outlierDetection'));
  if (o.protocol !== undefined) spec.protocol = c.oneOf(o.protocol, join(path, 'protocol'), PROTOCOLS) ?? 'auto';
  if (o.connectTimeout !== undefined) spec.connectTimeoutMs = c.duration(o.connectTimeout, join(path, 'connectTimeout'), { maxMs: 600_000 });
  if (o.idleTimeout !== undefined) spec.idleTimeoutMs = c.duration(o.idleTimeout, join(path, 'idleTimeout'), { minMs: 100 });
  if (o.healthCheck !== undefined) spec.healthCheck = parseHealthCheck(c, o.healthCheck, join(path, 'healthCheck'));
  if (o.http2Upgrade !== undefined) spec.http2Upgrade = c.boolean(o.http2Upgrade, join(path, 'http2Upgrade'));
  return stripUndefined(spec);
}

function parseHealthCheck(c: Checker, v: unknown, path: string): HealthCheck | undefined {
  const o = c.object(v, path, ['httpPath', 'grpcService', 'interval', 'timeout', 'unhealthyThreshold', 'healthyThreshold']);
  if (!o) return undefined;
  const h: HealthCheck = { intervalMs: 5_000, timeoutMs: 1_000, unhealthyThreshold: 2, healthyThreshold: 1 };
  if (o.httpPath !== undefined) h.httpPath = c.string(o.httpPath, join(path, 'httpPath'), { pattern: /^\/[\x21-\x7e]*$/, patternText: 'must be a path starting with "/"' });
  if (o.grpcService !== undefined) h.grpcService = c.string(o.grpcService, join(path, 'grpcService'), { nonEmpty: false, pattern: /^[\w.]*$/, patternText: 'must be a gRPC service name' });
  if ((o.httpPath === undefined) === (o.grpcService === undefined)) c.error(path, 'set exactly one of httpPath or grpcService');
  if (o.interval !== undefined) h.intervalMs = c.duration(o.interval, join(path, 'interval'), { minMs: 10 }) ?? h.intervalMs;
  if (o.timeout !== undefined) h.timeoutMs = c.duration(o.timeout, join(path, 'timeout'), { minMs: 1 }) ?? h.timeoutMs;
  if (o.unhealthyThreshold !== undefined) h.unhealthyThreshold = c.integer(o.unhealthyThreshold, join(path, 'unhealthyThreshold'), 1, 100) ?? h.unhealthyThreshold;
  if (o.healthyThreshold !== undefined) h.healthyThreshold = c.integer(o.healthyThreshold, join(path, 'healthyThreshold'), 1, 100) ?? h.healthyThreshold;
  return stripUndefined(h);
}

function parseLoadBalancer(c: Checker, v: unknown, path: string): LoadBalancer | undefined {
  const o = c.object(v, path, ['type', 'hashHeader', 'ringSize', 'choiceCount']);
  if (!o) return undefined;
  const tv = c.required(o, 'type', path);
  const type = tv === undefined ? undefined : c.oneOf(tv, join(path, 'type'), LB_TYPES);
  if (!type) return undefined;
  const lb: LoadBalancer = { type };
  if (o.hashHeader !== undefined) {
    const h = c.string(o.hashHeader, join(path, 'hashHeader'), { pattern: HEADER_NAME, patternText: 'must be a valid header name' });
    lb.hashHeader = h?.toLowerCase();
    if (type !== 'ring-hash') c.error(join(path, 'hashHeader'), 'only applies to type ring-hash');
  } else if (type === 'ring-hash') c.error(join(path, 'hashHeader'), 'is required for type ring-hash');
  if (o.ringSize !== undefined) {
    lb.ringSize = c.integer(o.ringSize, join(path, 'ringSize'), 1, 4096);
    if (type !== 'ring-hash') c.error(join(path, 'ringSize'), 'only applies to type ring-hash');
  }
  if (o.choiceCount !== undefined) {
    lb.choiceCount = c.integer(o.choiceCount, join(path, 'choiceCount'), 2, 10);
    if (type !== 'least-request') c.error(join(path, 'choiceCount'), 'only applies to type least-request');
  }
  return stripUndefined(lb);
}

function parseOutlier(c: Checker, v: unknown, path: string): OutlierDetection | undefined {
  const o = c.object(v, path, ['consecutive5xx', 'consecutiveGatewayErrors', 'failurePercentage', 'interval', 'baseEjectionTime', 'maxEjectionPercent', 'panicThreshold']);
  if (!o) return undefined;
  const od: OutlierDetection = { intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10, panicThreshold: 50 };
  if (o.panicThreshold !== undefined) od.panicThreshold = c.integer(o.panicThreshold, join(path, 'panicThreshold'), 0, 100) ?? od.panicThreshold;
  if (o.consecutive5xx !== undefined) od.consecutive5xx = c.integer(o.consecutive5xx, join(path, 'consecutive5xx'), 1, 1000);
  if (o.consecutiveGatewayErrors !== undefined) od.consecutiveGatewayErrors = c.integer(o.consecutiveGatewayErrors, join(path, 'consecutiveGatewayErrors'), 1, 1000);
  if (o.failurePercentage !== undefined) {
    const fp = join(path, 'failurePercentage');
    const f = c.object(o.failurePercentage, fp, ['threshold', 'minimumHosts', 'requestVolume']);
    if (f) {
      const tv = c.required(f, 'threshold', fp);
      const threshold = tv === undefined ? undefined : c.integer(tv, join(fp, 'threshold'), 1, 100);
      const minimumHosts = f.minimumHosts === undefined ? 5 : c.integer(f.minimumHosts, join(fp, 'minimumHosts'), 1, 10_000);
      const requestVolume = f.requestVolume === undefined ? 50 : c.integer(f.requestVolume, join(fp, 'requestVolume'), 1, 1_000_000);
      if (threshold !== undefined && minimumHosts !== undefined && requestVolume !== undefined) od.failurePercentage = { threshold, minimumHosts, requestVolume };
    }
  }
  if (o.interval !== undefined) od.intervalMs = c.duration(o.interval, join(path, 'interval'), { minMs: 10 }) ?? od.intervalMs;
  if (o.baseEjectionTime !== undefined) od.baseEjectionTimeMs = c.duration(o.baseEjectionTime, join(path, 'baseEjectionTime')) ?? od.baseEjectionTimeMs;
  if (o.maxEjectionPercent !== undefined) od.maxEjectionPercent = c.integer(o.maxEjectionPercent, join(path, 'maxEjectionPercent'), 0, 100) ?? od.maxEjectionPercent;
  if (od.consecutive5xx === undefined && od.consecutiveGatewayErrors === undefined && od.failurePercentage === undefined)
    c.error(path, 'set at least one trigger: consecutive5xx, consecutiveGatewayErrors or failurePercentage');
  return stripUndefined(od);
}

// ------------------------------------------------------------------------------ RateLimitPolicy

function parseRateLimitSpec(c: Checker, v: unknown, path: string): RateLimitPolicySpec | undefined {
  const o = c.object(v, path, ['service', 'failureMode', 'limits', 'redis']);
  if (!o) return undefined;
  const service = serviceName(c, o, 'service', path);
  const spec: RateLimitPolicySpec = { service: service ?? '', failureMode: 'open', limits: [] };
  if (o.failureMode !== undefined) spec.failureMode = c.oneOf(o.failureMode, join(path, 'failureMode'), ['open', 'closed'] as const) ?? 'open';
  const lv = c.required(o, 'limits', path);
  const lp = join(path, 'limits');
  const limits: RateLimit[] = [];
  (lv === undefined ? undefined : c.array(lv, lp, { min: 1 }))?.forEach((x, i) => {
    const p = join(lp, i);
    const l = parseLimit(c, x, p, i);
    if (!l) return;
    if (limits.some((y) => y.name === l.name)) c.error(join(p, 'name'), `duplicate limit name ${JSON.stringify(l.name)}`);
    limits.push(l);
  });
  spec.limits = limits;
  if (o.redis !== undefined) {
    const rp = join(path, 'redis');
    const r = c.object(o.redis, rp, ['address', 'timeout']);
    if (r) {
      const av = c.required(r, 'address', rp);
      const address = av === undefined ? undefined : c.string(av, join(rp, 'address'), { pattern: /^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$/, patternText: 'must be host:port' });
      const timeoutMs = r.timeout === undefined ? 5 : c.duration(r.timeout, join(rp, 'timeout'), { minMs: 1, maxMs: 10_000 });
      if (address && timeoutMs !== undefined) spec.redis = { address, timeoutMs };
    }
  } else if (limits.some((l) => l.scope === 'global')) c.error(join(path, 'redis'), 'is required when a limit has scope global');
  return stripUndefined(spec);
}

function parseLimit(c: Checker, v: unknown, path: string, index: number): RateLimit | undefined {
  const o = c.object(v, path, ['name', 'routes', 'descriptors', 'requests', 'per', 'burst', 'scope']);
  if (!o) return undefined;
  const name = o.name === undefined ? `limit-${index}` : c.string(o.name, join(path, 'name'), { pattern: NAME, patternText: NAME_TEXT, maxLength: 63 });
  const rv = c.required(o, 'requests', path);
  const requests = rv === undefined ? undefined : c.integer(rv, join(path, 'requests'), 1, 1_000_000_000);
  const pv = c.required(o, 'per', path);
  const periodMs = pv === undefined ? undefined : c.duration(pv, join(path, 'per'), { minMs: 1, maxMs: 24 * 3600_000 });
  const burst = o.burst === undefined ? 0 : c.integer(o.burst, join(path, 'burst'), 0, 1_000_000_000);
  const scope = o.scope === undefined ? 'local' : c.oneOf(o.scope, join(path, 'scope'), ['local', 'global'] as const);
  const descriptors: Descriptor[] = [];
  if (o.descriptors !== undefined) {
    const dp = join(path, 'descriptors');
    c.array(o.descriptors, dp)?.forEach((x, i) => {
      const p = join(dp, i);
      if (typeof x === 'string') {
        const k = c.oneOf(x, p, DESCRIPTOR_KEYS);
        if (k) descriptors.push({ key: k });
        return;
      }
      const d = c.object(x, p, ['key', 'header']);
      if (!d) return;
      if ((d.key === undefined) === (d.header === undefined)) c.error(p, 'set exactly one of key, header');
      else if (d.key !== undefined) {
        const k = c.oneOf(d.key, join(p, 'key'), DESCRIPTOR_KEYS);
        if (k) descriptors.push({ key: k });
      } else {
        const h = c.string(d.header, join(p, 'header'), { pattern: HEADER_NAME, patternText: 'must be a valid header name' });
        if (h) descriptors.push({ header: h.toLowerCase() });
      }
    });
  }
  const l: RateLimit = { name: name ?? '', descriptors, requests: requests ?? 0, periodMs: periodMs ?? 0, burst: burst ?? 0, scope: scope ?? 'local' };
  if (o.routes !== undefined) {
    const routes: string[] = [];
    c.array(o.routes, join(path, 'routes'), { min: 1 })?.forEach((x, i) => {
      const s = c.string(x, join(join(path, 'routes'), i), { pattern: /^[a-z0-9][-a-z0-9.]*(\/[a-z0-9][-a-z0-9]*)?$/, patternText: 'must be "route" or "route/rule"' });
      if (s) routes.push(s);
    });
    l.routes = routes;
  }
  return name === undefined || requests === undefined || periodMs === undefined ? undefined : l;
}

// -------------------------------------------------------------------------------------- Service

function parseServiceSpec(c: Checker, v: unknown, path: string): ServiceSpec | undefined {
  const o = c.object(v, path, ['endpoints', 'protocol']);
  if (!o) return undefined;
  const spec: ServiceSpec = { endpoints: [], protocol: 'auto' };
  const ev = c.required(o, 'endpoints', path);
  const ep = join(path, 'endpoints');
  const eps: StaticEndpoint[] = [];
  (ev === undefined ? undefined : c.array(ev, ep, { min: 1 }))?.forEach((x, i) => {
    const p = join(ep, i);
    const e = c.object(x, p, ['address', 'port', 'labels', 'weight']);
    if (!e) return;
    const av = c.required(e, 'address', p);
    const address = av === undefined ? undefined : c.string(av, join(p, 'address'), { pattern: /^[A-Za-z0-9.\-:]+$/, patternText: 'must be an IP address or DNS name' });
    const pv = c.required(e, 'port', p);
    const port = pv === undefined ? undefined : c.integer(pv, join(p, 'port'), 1, 65535);
    const labels = e.labels === undefined ? {} : parseLabels(c, e.labels, join(p, 'labels'));
    const weight = e.weight === undefined ? 1 : c.integer(e.weight, join(p, 'weight'), 1, 1000);
    if (address && port && labels && weight) {
      if (eps.some((x) => x.address === address && x.port === port)) c.error(p, `duplicate endpoint ${address}:${port}`);
      eps.push({ address, port, labels, weight });
    }
  });
  spec.endpoints = eps;
  if (o.protocol !== undefined) spec.protocol = c.oneOf(o.protocol, join(path, 'protocol'), PROTOCOLS) ?? 'auto';
  return spec;
}

// ------------------------------------------------------------------------------ GrpcTranscoding

function parseGrpcTranscodingSpec(c: Checker, v: unknown, path: string): GrpcTranscodingSpec | undefined {
  const o = c.object(v, path, ['service', 'protos', 'services', 'unknownMethods', 'ignoreUnknownQueryParameters', 'emitDefaults', 'maxRequestBytes', 'maxResponseBytes']);
  if (!o) return undefined;
  const service = serviceName(c, o, 'service', path);
  const pp = join(path, 'protos');
  const pv = c.required(o, 'protos', path);
  const protos: ProtoFile[] = [];
  (pv === undefined ? undefined : c.array(pv, pp, { min: 1, max: 100 }))?.forEach((x, i) => {
    const p = join(pp, i);
    const f = c.object(x, p, ['name', 'source', 'file']);
    if (!f) return;
    if (f.file !== undefined && f.source === undefined) {
      c.error(join(p, 'file'), 'is read and embedded as source by `meshlet apply -f`, `meshlet up` and `meshlet sidecar --config`; the API and the push stream take the text in source');
      return;
    }
    if (f.file !== undefined) c.error(join(p, 'file'), 'set file or source, not both');
    const nv = c.required(f, 'name', p);
    const name = nv === undefined ? undefined : c.string(nv, join(p, 'name'), { pattern: /^[A-Za-z0-9_.\-/]+\.proto$/, patternText: 'must be a relative .proto path such as "pricing/v1/pricing.proto"' });
    const sv = c.required(f, 'source', p);
    const source = sv === undefined ? undefined : c.string(sv, join(p, 'source'), { maxLength: 4 * 1024 * 1024 });
    if (name && protos.some((y) => y.name === name)) c.error(join(p, 'name'), `duplicate proto ${JSON.stringify(name)}`);
    if (name && source !== undefined) protos.push({ name, source });
  });
  const sp = join(path, 'services');
  const sv = c.required(o, 'services', path);
  const services: string[] = [];
  (sv === undefined ? undefined : c.array(sv, sp, { min: 1 }))?.forEach((x, i) => {
    const s = c.string(x, join(sp, i), { pattern: /^\.?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/, patternText: 'must be a fully-qualified gRPC service name such as "demo.pricing.v1.Pricing"' });
    if (s) services.push(s);
  });
  const spec: GrpcTranscodingSpec = {
    service: service ?? '',
    protos,
    services,
    unknownMethods: o.unknownMethods === undefined ? 'reject' : c.oneOf(o.unknownMethods, join(path, 'unknownMethods'), ['reject', 'passthrough'] as const) ?? 'reject',
    ignoreUnknownQueryParameters: o.ignoreUnknownQueryParameters === undefined ? false : c.boolean(o.ignoreUnknownQueryParameters, join(path, 'ignoreUnknownQueryParameters')) ?? false,
    emitDefaults: o.emitDefaults === undefined ? false : c.boolean(o.emitDefaults, join(path, 'emitDefaults')) ?? false,
    maxRequestBytes: o.maxRequestBytes === undefined ? 4 * 1024 * 1024 : c.integer(o.maxRequestBytes, join(path, 'maxRequestBytes'), 1, 64 * 1024 * 1024) ?? 0,
    maxResponseBytes: o.maxResponseBytes === undefined ? 4 * 1024 * 1024 : c.integer(o.maxResponseBytes, join(path, 'maxResponseBytes'), 1, 64 * 1024 * 1024) ?? 0,
  };
  // The protos themselves: syntax, imports, the services named, every google.api.http binding.
  if (c.errors.length === 0 && protos.length > 0 && services.length > 0) {
    // Loaded only when a GrpcTranscoding policy exists: protobufjs costs ~9 MB of RSS.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { compileTranscoder } = require('../grpc/transcode/compile') as typeof import('../grpc/transcode/compile');
    const compiled = compileTranscoder({ protos, services, ignoreUnknownQueryParameters: spec.ignoreUnknownQueryParameters, emitDefaults: spec.emitDefaults });
    if (!compiled.ok) for (const e of compiled.errors) c.error(`${path}.${e.path}`, e.message);
  }
  return spec;
}

// ------------------------------------------------------------------------------- cross-references

/**
 * Checks references between resources: a subset nobody defines, two DestinationPolicies (or
 * RateLimitPolicies) for one service, two Routes serving one host, a rate limit naming a route
 * that does not exist. Paths are prefixed with the resource: `Route/web: spec.rules[0]...`.
 */
export function validateReferences(resources: readonly Resource[]): FieldError[] {
  const errors: FieldError[] = [];
  const at = (r: Resource, path: string, message: string) => errors.push({ path: `${resourceKey(r)}: ${path}`, message });
  const seen = new Set<string>();
  const dpByService = new Map<string, Resource & { kind: 'DestinationPolicy' }>();
  const rlByService = new Map<string, Resource>();
  const gtByService = new Map<string, Resource>();
  const hostOwner = new Map<string, string>();
  const routes = new Map<string, Set<string>>();
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
    } else if (r.kind === 'GrpcTranscoding') {
      const prev = gtByService.get(r.spec.service);
      if (prev) at(r, 'spec.service', `service ${JSON.stringify(r.spec.service)} already has GrpcTranscoding ${JSON.stringify(prev.metadata.name)}`);
      else gtByService.set(r.spec.service, r);
    } else if (r.kind === 'Route') {
      routes.set(r.metadata.name, new Set(r.spec.rules.map((x) => x.name)));
      r.spec.hosts.forEach((h, i) => {
        const owner = hostOwner.get(h);
        if (owner !== undefined && owner !== r.metadata.name) at(r, `spec.hosts[${i}]`, `host ${JSON.stringify(h)} is already served by Route ${JSON.stringify(owner)}`);
        else hostOwner.set(h, r.metadata.name);
      });
    }
  }
  for (const r of resources) {
    if (r.kind === 'Route') {
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
    else errors.push(...r.errors.map((e) => ({ path: `${describeRaw(raw, i)}: ${e.path}`, message: e.message })));
  });
  return errors.length > 0 ? fail(errors) : ok(out);
}

/** Parses raw documents (`parseEach`) and checks their references among themselves. */
export function parseAll(raws: readonly unknown[]): Result<Resource[]> {
  const each = parseEach(raws);
  if (!each.ok) return each;
  const refs = validateReferences(each.value);
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
  const spec = JSON.parse(JSON.stringify(r.spec)) as Obj;
  return { apiVersion: r.apiVersion, kind: r.kind, metadata: { ...r.metadata }, spec: wireSpec(r.kind, spec) };
}

function wireSpec(kind: Kind, s: Obj): Obj {
  const d = (o: Obj | undefined, from: string, to: string) => {
    if (o && typeof o[from] === 'number') {
      o[to] = formatDuration(o[from] as number);
      delete o[from];
    }
  };
  switch (kind) {
    case 'Route':
      d(s.websocket as Obj | undefined, 'idleTimeoutMs', 'idleTimeout');
      for (const rule of s.rules as Obj[]) {
        d(rule, 'timeoutMs', 'timeout');
        for (const m of (rule.matches as Obj[]) ?? []) {
          if (m.methods) {
            const ms = m.methods as string[];
            m.method = ms.length === 1 ? ms[0] : ms;
            delete m.methods;
          }
        }
        const retries = rule.retries as Obj | undefined;
        if (retries) {
          d(retries, 'perTryTimeoutMs', 'perTryTimeout');
          const b = retries.backoff as Obj | undefined;
          d(b, 'baseIntervalMs', 'baseInterval');
          d(b, 'maxIntervalMs', 'maxInterval');
        }
        const br = rule.breaker as Obj | undefined;
        d(br, 'slowCallDurationMs', 'slowCallDuration');
        d(br, 'windowMs', 'window');
        d(br, 'openDurationMs', 'openDuration');
        d((rule.fault as Obj | undefined)?.delay as Obj | undefined, 'fixedMs', 'fixed');
        if (typeof rule.traceSamplingPercent === 'number') {
          rule.tracing = { samplingPercent: rule.traceSamplingPercent };
          delete rule.traceSamplingPercent;
        }
      }
      return s;
    case 'DestinationPolicy': {
      d(s, 'connectTimeoutMs', 'connectTimeout');
      d(s, 'idleTimeoutMs', 'idleTimeout');
      const hc = s.healthCheck as Obj | undefined;
      d(hc, 'intervalMs', 'interval');
      d(hc, 'timeoutMs', 'timeout');
      const od = s.outlierDetection as Obj | undefined;
      d(od, 'intervalMs', 'interval');
      d(od, 'baseEjectionTimeMs', 'baseEjectionTime');
      return s;
    }
    case 'RateLimitPolicy':
      for (const l of s.limits as Obj[]) {
        d(l, 'periodMs', 'per');
        l.descriptors = (l.descriptors as Obj[]).map((x) => (x.key !== undefined ? x.key : x));
      }
      d(s.redis as Obj | undefined, 'timeoutMs', 'timeout');
      return s;
    case 'Service':
    case 'GrpcTranscoding':
      return s;
  }
}

// ---------------------------------------------------------------------------------------- utils

function stripUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

export function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
