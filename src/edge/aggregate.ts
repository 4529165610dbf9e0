/**
 * Request aggregation: one client request fans out to several backends and the gateway answers
 * with one JSON document, the way a KrakenD endpoint with several backends does.
 *
 * Behaviour (KrakenD's where it has one):
 *  - Backends run concurrently, each with its own path template, method, timeout and optional
 *    `group` key. A template takes `{path.NAME}` (a path parameter of the matched route),
 *    `{query.NAME}` (a query parameter of the client request) and `{BACKEND.a.b}` (a field of an
 *    earlier backend's whole answer, before its filters): a backend that names another waits for it, so sequential steps
 *    follow from the templates (cycles are refused when the rule compiles). Values are
 *    URL-encoded where they are put in.
 *  - Each answer must be 2xx JSON within `maxBodyBytes`; `target` picks a sub-document, `allow`
 *    (dotted paths) / `deny` filter fields, `rename` renames top-level fields; the result is
 *    merged at the top level (in declaration order, not arrival order, so the body is
 *    deterministic) or put under its `group` key.
 *  - Partial failure: the parts that arrived, `x-meshlet-completed: false` and a per-backend
 *    error summary under `_errors` (KrakenD: `x-krakend-completed`). When a backend marked
 *    `required` (or every backend, with `requireAll`) fails, the client gets 502, or 504 when
 *    that failure was a timeout, and no partial body. All backends failing is the same.
 *  - At most MAX_BACKENDS backends per rule.
 *
 * How a backend is reached is injected (`AggregateCall`): later, a call through the mesh stack
 * (identity, retries, breakers, metrics, one child span per backend, named by `backend`).
 *
 * Entry point: `compileAggregate(raw, path, deps)` once per snapshot -> `Aggregator`, whose
 * `run(request, call)` the stack calls. `run` never throws.
 */
import type { Clock } from '../core/clock';
import { fail, ok, type Result } from '../core/result';
import { EdgeError, type EdgeErrorCode } from './errors';
import { Checker, HEADER_NAME, join, type Headers } from './validate';

export const MAX_BACKENDS = 16;
export const COMPLETED_HEADER = 'x-meshlet-completed';
export const ERRORS_KEY = '_errors';

type Piece = { lit: string } | { ref: 'path' | 'query'; name: string } | { ref: 'backend'; backend: string; field: string[] };

export interface AggregateBackend {
  name: string;
  /** The service (or host) the call goes to, passed to AggregateCall as is. */
  service: string;
  method: string;
  path: string;
  timeoutMs: number;
  group: string | undefined;
  target: string[] | undefined;
  allow: string[][];
  deny: string[][];
  rename: [string, string][];
  required: boolean;
  /** Compiled template and the backends it waits for. */
  pieces: Piece[];
  after: string[];
}

export interface AggregateConfig {
  backends: AggregateBackend[];
  requireAll: boolean;
  maxBodyBytes: number;
  /** Client request headers passed to every backend (lower-case). */
  forwardHeaders: string[];
  /** Put the per-backend error summary in the body (default true). */
  errorDetails: boolean;
  /** The client path as a template (`pathTemplate`), compiled: where `{path.NAME}` values come from. */
  pathTemplate?: PathSegment[];
}

/** One segment of a `pathTemplate`: literal, one-segment variable `{NAME}`, or the rest `{NAME=**}` (last only). */
export type PathSegment = { lit: string } | { name: string; rest: boolean };

/**
 * The path parameters of `path` (no query) under `template`: undefined when it does not match.
 * Values are percent-decoded (a malformed escape is kept as written).
 */
export function matchPathTemplate(template: readonly PathSegment[], path: string): Record<string, string> | undefined {
  const segs = path.split('/').slice(1);
  const out: Record<string, string> = {};
  for (let i = 0; i < template.length; i++) {
    const t = template[i] as PathSegment;
    if ('lit' in t) {
      if (segs[i] !== t.lit) return undefined;
      continue;
    }
    const v = t.rest ? segs.slice(i).join('/') : segs[i];
    if (v === undefined || v === '') return undefined;
    try {
      out[t.name] = decodeURIComponent(v);
    } catch {
      out[t.name] = v;
    }
    if (t.rest) return out;
  }
  return segs.length === template.length ? out : undefined;
}

function parsePathTemplate(tpl: string, path: string, c: Checker): PathSegment[] {
  if (!tpl.startsWith('/')) {
    c.err(path, 'must start with /');
    return [];
  }
  const segs = tpl.split('/').slice(1);
  return segs.map((seg, i): PathSegment => {
    const m = /^\{([A-Za-z_][A-Za-z0-9_-]*)(=\*\*)?\}$/.exec(seg);
    if (m) {
      if (m[2] && i !== segs.length - 1) c.err(path, `{${m[1]}=**} must be the last segment`);
      return { name: m[1] as string, rest: m[2] !== undefined };
    }
    if (/[{}]/.test(seg)) c.err(path, `segment "${seg}": a variable is a whole segment, {NAME} or {NAME=**}`);
    return { lit: seg };
  });
}

export interface AggregateRequest {
  /** Path parameters of the matched route. */
  params: Readonly<Record<string, string>>;
  /** The client's query string (without `?`), or parsed. */
  query: string | URLSearchParams;
  headers: Headers;
}

export interface AggregateCallArgs {
  backend: string;
  service: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  signal: AbortSignal;
  /** The call may stop reading past this; longer bodies are refused anyway. */
  maxBodyBytes: number;
}

export type AggregateCall = (args: AggregateCallArgs) => Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }>;

export interface AggregatePart {
  backend: string;
  ok: boolean;
  ms: number;
  code?: EdgeErrorCode;
}

export interface AggregateResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** One row per backend, for metrics and spans. */
  parts: AggregatePart[];
}

const NAME = /^[A-Za-z][A-Za-z0-9_-]*$/;
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'];

function parseTemplate(tpl: string, path: string, c: Checker): Piece[] {
  const out: Piece[] = [];
  const re = /\{([^{}]*)\}/g;
  let last = 0;
  for (let m = re.exec(tpl); m; m = re.exec(tpl)) {
    if (m.index > last) out.push({ lit: tpl.slice(last, m.index) });
    last = m.index + m[0].length;
    const parts = m[1].split('.');
    if (parts.length < 2 || parts.some((p) => p === '')) {
      c.err(path, `{${m[1]}} must be {path.NAME}, {query.NAME} or {BACKEND.FIELD}`);
      continue;
    }
    if (parts[0] === 'path' || parts[0] === 'query') {
      if (parts.length !== 2) c.err(path, `{${m[1]}}: one name after ${parts[0]}.`);
      out.push({ ref: parts[0], name: parts[1] });
    } else out.push({ ref: 'backend', backend: parts[0], field: parts.slice(1) });
  }
  if (last < tpl.length) out.push({ lit: tpl.slice(last) });
  if (/[{}]/.test(out.map((p) => ('lit' in p ? p.lit : '')).join(''))) c.err(path, 'has an unbalanced { or }');
  return out;
}

/** Validates a raw `aggregate` block with field paths: names, templates, references, cycles, bounds. */
export function parseAggregateConfig(raw: unknown, path = 'aggregate'): Result<AggregateConfig> {
  const c = new Checker();
  const o = c.obj(raw, path);
  if (!o) return fail(c.errors);
  c.known(o, path, ['backends', 'requireAll', 'maxBodyBytes', 'forwardHeaders', 'errorDetails', 'pathTemplate']);
  const bp = join(path, 'backends');
  const rawBackends = c.list(o.backends, bp, { min: 1, max: MAX_BACKENDS });
  const backends: AggregateBackend[] = [];
  const names = new Set<string>();
  rawBackends.forEach((rb, i) => {
    const p = `${bp}[${i}]`;
    const b = c.obj(rb, p);
    if (!b) return;
    c.known(b, p, ['name', 'service', 'method', 'path', 'timeoutMs', 'group', 'target', 'allow', 'deny', 'rename', 'required']);
    const name = c.str(b.name, join(p, 'name')) ?? `#${i}`;
    if (!NAME.test(name) || name === 'path' || name === 'query') c.err(join(p, 'name'), 'must be a letter then letters, digits, _ or -, and not "path" or "query"');
    if (names.has(name)) c.err(join(p, 'name'), `duplicate backend name ${JSON.stringify(name)}`);
    names.add(name);
    const service = c.str(b.service, join(p, 'service')) ?? '';
    const method = ((c.str(b.method, join(p, 'method'), { optional: true }) ?? 'GET') as string).toUpperCase();
    if (!METHODS.includes(method)) c.err(join(p, 'method'), `must be one of ${METHODS.join(', ')}`);
    const tpl = c.str(b.path, join(p, 'path')) ?? '/';
    if (!tpl.startsWith('/')) c.err(join(p, 'path'), 'must start with /');
    const pieces = parseTemplate(tpl, join(p, 'path'), c);
    const after = [...new Set(pieces.flatMap((x) => ('ref' in x && x.ref === 'backend' ? [x.backend] : [])))];
    let rename: [string, string][] = [];
    if (b.rename !== undefined) {
      const ro = c.obj(b.rename, join(p, 'rename'));
      if (ro) {
        rename = Object.entries(ro).flatMap(([k, v]) => {
          if (typeof v !== 'string' || v === '') {
            c.err(join(join(p, 'rename'), k), 'must be the new field name');
            return [];
          }
          return [[k, v] as [string, string]];
        });
      }
    }
    const group = c.str(b.group, join(p, 'group'), { optional: true });
    if (group === ERRORS_KEY) c.err(join(p, 'group'), `${ERRORS_KEY} is reserved for the error summary`);
    const target = c.str(b.target, join(p, 'target'), { optional: true });
    backends.push({
      name,
      service,
      method,
      path: tpl,
      timeoutMs: c.int(b.timeoutMs, join(p, 'timeoutMs'), 3000, 1, 300_000),
      group,
      target: target?.split('.'),
      allow: c.strList(b.allow, join(p, 'allow')).map((f) => f.split('.')),
      deny: c.strList(b.deny, join(p, 'deny')).map((f) => f.split('.')),
      rename,
      required: c.bool(b.required, join(p, 'required'), false),
      pieces,
      after,
    });
  });
  // References: known backends, not itself, no cycles.
  const byName = new Map(backends.map((b) => [b.name, b]));
  backends.forEach((b, i) => {
    for (const a of b.after) {
      if (a === b.name) c.err(`${bp}[${i}].path`, `{${a}.…} refers to the backend itself`);
      else if (!byName.has(a)) c.err(`${bp}[${i}].path`, `{${a}.…} names no backend of this rule`);
    }
  });
  if (c.errors.length === 0) {
    const state = new Map<string, 1 | 2>();
    const visit = (n: string, trail: string[]): boolean => {
      if (state.get(n) === 2) return true;
      if (state.get(n) === 1) {
        c.err(bp, `backends wait for each other in a cycle: ${[...trail, n].join(' -> ')}`);
        return false;
      }
      state.set(n, 1);
      for (const a of byName.get(n)!.after) if (!visit(a, [...trail, n])) return false;
      state.set(n, 2);
      return true;
    };
    for (const b of backends) if (!visit(b.name, [])) break;
  }
  const forwardHeaders = c.strList(o.forwardHeaders, join(path, 'forwardHeaders')).map((h) => h.toLowerCase());
  forwardHeaders.forEach((h, i) => {
    if (!HEADER_NAME.test(h)) c.err(`${join(path, 'forwardHeaders')}[${i}]`, 'must be a header name');
  });
  const tplRaw = o.pathTemplate === undefined ? undefined : c.str(o.pathTemplate, join(path, 'pathTemplate'), { optional: true });
  const pathTemplate = tplRaw === undefined ? undefined : parsePathTemplate(tplRaw, join(path, 'pathTemplate'), c);
  if (pathTemplate) {
    const names = new Set(pathTemplate.flatMap((s) => ('name' in s ? [s.name] : [])));
    backends.forEach((b, i) => {
      for (const p of b.pieces) if ('ref' in p && p.ref === 'path' && !names.has(p.name)) c.err(join(join(path, `backends[${i}]`), 'path'), `{path.${p.name}}: pathTemplate has no {${p.name}}`);
    });
  }
  const cfg: AggregateConfig = {
    ...(pathTemplate ? { pathTemplate } : {}),
    backends,
    requireAll: c.bool(o.requireAll, join(path, 'requireAll'), false),
    maxBodyBytes: c.int(o.maxBodyBytes, join(path, 'maxBodyBytes'), 1 << 20, 1, 64 << 20),
    forwardHeaders,
    errorDetails: c.bool(o.errorDetails, join(path, 'errorDetails'), true),
  };
  return c.errors.length ? fail(c.errors) : ok(cfg);
}

export function compileAggregate(raw: unknown, path: string, deps: { clock: Clock }): Result<Aggregator> {
  const r = parseAggregateConfig(raw, path);
  return r.ok ? ok(new Aggregator(r.value, deps)) : r;
}

/** `raw`: the backend's whole answer, which later steps read (filters shape only what the client sees). */
type Outcome = { ok: true; value: unknown; raw: unknown; ms: number } | { ok: false; error: EdgeError; ms: number };

function at(v: unknown, path: readonly string[]): unknown {
  let cur = v;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function pick(v: Record<string, unknown>, paths: string[][]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const p of paths) {
    const val = at(v, p);
    if (val === undefined) continue;
    let dst = out;
    for (const k of p.slice(0, -1)) dst = (isObject(dst[k]) ? dst[k] : (dst[k] = {})) as Record<string, unknown>;
    dst[p[p.length - 1]] = val;
  }
  return out;
}

function drop(v: Record<string, unknown>, paths: string[][]): Record<string, unknown> {
  const out = structuredClone(v);
  for (const p of paths) {
    const parent = at(out, p.slice(0, -1));
    if (isObject(parent)) delete parent[p[p.length - 1]];
  }
  return out;
}

export class Aggregator {
  constructor(
    readonly config: AggregateConfig,
    private readonly deps: { clock: Clock },
  ) {}

  async run(req: AggregateRequest, call: AggregateCall): Promise<AggregateResponse> {
    const query = typeof req.query === 'string' ? new URLSearchParams(req.query) : req.query;
    const headers: Record<string, string> = { accept: 'application/json' };
    for (const h of this.config.forwardHeaders) {
      const v = req.headers[h];
      if (v !== undefined) headers[h] = Array.isArray(v) ? v.join(', ') : v;
    }
    const started = new Map<string, Promise<Outcome>>();
    const start = (b: AggregateBackend): Promise<Outcome> => {
      let p = started.get(b.name);
      if (!p) {
        p = this.one(b, req, query, headers, call, started, start);
        started.set(b.name, p);
      }
      return p;
    };
    const outcomes = await Promise.all(this.config.backends.map(start));
    return this.merge(outcomes);
  }

  private async one(
    b: AggregateBackend,
    req: AggregateRequest,
    query: URLSearchParams,
    headers: Record<string, string>,
    call: AggregateCall,
    started: Map<string, Promise<Outcome>>,
    start: (b: AggregateBackend) => Promise<Outcome>,
  ): Promise<Outcome> {
    const byName = (n: string) => this.config.backends.find((x) => x.name === n)!;
    const earlier = new Map<string, Outcome>();
    for (const a of b.after) earlier.set(a, await (started.get(a) ?? start(byName(a))));
    const t0 = this.deps.clock.monotonic();
    const failed = (code: EdgeErrorCode, msg: string): Outcome => ({ ok: false, error: new EdgeError(code, msg), ms: this.deps.clock.monotonic() - t0 });
    for (const [a, o] of earlier) if (!o.ok) return failed('EDGE_AGG_DEPENDENCY_FAILED', `not called: ${a} failed`);
    let path = '';
    for (const p of b.pieces) {
      if ('lit' in p) path += p.lit;
      else if (p.ref !== 'backend') path += encodeURIComponent((p.ref === 'path' ? req.params[p.name] : query.get(p.name)) ?? '');
      else {
        const v = at((earlier.get(p.backend) as { raw: unknown }).raw, p.field);
        if (v === undefined || v === null || typeof v === 'object') return failed('EDGE_AGG_MISSING_VALUE', `${p.backend}.${p.field.join('.')} is not in ${p.backend}'s answer`);
        path += encodeURIComponent(String(v));
      }
    }
    const ac = new AbortController();
    let timer: { cancel(): void } | undefined;
    const timeout = new Promise<Outcome>((resolve) => {
      timer = this.deps.clock.setTimeout(() => {
        resolve(failed('EDGE_AGG_TIMEOUT', `no answer within ${b.timeoutMs} ms`));
        ac.abort(new Error('aggregate backend timeout'));
      }, b.timeoutMs);
    });
    const attempt = (async (): Promise<Outcome> => {
      let res: Awaited<ReturnType<AggregateCall>>;
      try {
        res = await call({ backend: b.name, service: b.service, method: b.method, path, headers, signal: ac.signal, maxBodyBytes: this.config.maxBodyBytes });
      } catch (err) {
        return failed('EDGE_AGG_CALL_FAILED', `call failed: ${(err as Error)?.message ?? String(err)}`);
      }
      if (res.status < 200 || res.status > 299) return failed('EDGE_AGG_UPSTREAM_STATUS', `answered ${res.status}`);
      if (res.body.length > this.config.maxBodyBytes) return failed('EDGE_AGG_BODY_TOO_LARGE', `answered ${res.body.length} bytes, more than ${this.config.maxBodyBytes}`);
      let value: unknown;
      try {
        value = JSON.parse(res.body.toString('utf8'));
      } catch {
        const ct = res.headers['content-type'];
        return failed('EDGE_AGG_NOT_JSON', `answered ${ct ? String(ct) : 'a body'} that is not JSON`);
      }
      const raw = value;
      if (b.target) value = at(value, b.target);
      if (b.allow.length || b.deny.length || b.rename.length || !b.group) {
        if (!isObject(value)) return failed('EDGE_AGG_NOT_OBJECT', b.target ? `${b.target.join('.')} is not a JSON object` : 'answered JSON that is not an object (give it a group to keep it)');
        if (b.allow.length) value = pick(value, b.allow);
        if (b.deny.length) value = drop(value as Record<string, unknown>, b.deny);
        for (const [from, to] of b.rename) {
          const o = value as Record<string, unknown>;
          if (from in o) {
            o[to] = o[from];
            delete o[from];
          }
        }
      }
      return { ok: true, value, raw, ms: this.deps.clock.monotonic() - t0 };
    })();
    const out = await Promise.race([attempt, timeout]);
    timer?.cancel();
    return out;
  }

  private merge(outcomes: Outcome[]): AggregateResponse {
    const bs = this.config.backends;
    const parts: AggregatePart[] = outcomes.map((o, i) => ({ backend: bs[i].name, ok: o.ok, ms: o.ms, ...(o.ok ? {} : { code: o.error.code }) }));
    const errors: Record<string, { code: string; message: string }> = {};
    let requiredFailed: { b: AggregateBackend; e: EdgeError } | undefined;
    outcomes.forEach((o, i) => {
      if (o.ok) return;
      errors[bs[i].name] = { code: o.error.code, message: `${bs[i].name}: ${o.error.message}` };
      if ((this.config.requireAll || bs[i].required) && !requiredFailed) requiredFailed = { b: bs[i], e: o.error };
    });
    const allFailed = outcomes.every((o) => !o.ok);
    if (requiredFailed || allFailed) {
      const timeouts = requiredFailed ? requiredFailed.e.code === 'EDGE_AGG_TIMEOUT' : outcomes.every((o) => !o.ok && o.error.code === 'EDGE_AGG_TIMEOUT');
      const code: EdgeErrorCode = timeouts ? 'EDGE_AGG_REQUIRED_TIMEOUT' : 'EDGE_AGG_REQUIRED_FAILED';
      const err = new EdgeError(code, requiredFailed ? `required backend ${requiredFailed.b.name} failed: ${requiredFailed.e.message}` : 'every backend failed');
      const body: Record<string, unknown> = { error: code, message: err.message };
      if (this.config.errorDetails) body[ERRORS_KEY] = errors;
      return {
        status: err.status,
        headers: { 'content-type': 'application/json', [COMPLETED_HEADER]: 'false', 'x-meshlet-flags': err.flag },
        body: Buffer.from(JSON.stringify(body)),
        parts,
      };
    }
    const merged: Record<string, unknown> = {};
    outcomes.forEach((o, i) => {
      if (!o.ok) return;
      const g = bs[i].group;
      if (g) merged[g] = o.value;
      else Object.assign(merged, o.value as Record<string, unknown>);
    });
    const complete = Object.keys(errors).length === 0;
    if (!complete && this.config.errorDetails) merged[ERRORS_KEY] = errors;
    return {
      status: 200,
      headers: { 'content-type': 'application/json', [COMPLETED_HEADER]: complete ? 'true' : 'false' },
      body: Buffer.from(JSON.stringify(merged)),
      parts,
    };
  }
}
