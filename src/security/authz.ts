/**
 * Authorization: who may call what. AuthorizationPolicy resources (docs/security.md has the
 * spec) are compiled once per snapshot into matchers; a request is then judged with lookups
 * and precompiled regexes only.
 *
 * Order, per callee service (the mesh-wide policies, those without `service`, apply to all):
 *   1. AUDIT rules: every match is reported (`decision.audits`), nothing is denied.
 *   2. DENY rules: the first match denies. In a `dryRun` policy it is reported as
 *      `decision.dryRun` (would deny) and evaluation goes on.
 *   3. ALLOW rules: the first match allows.
 *   4. Nothing matched: `defaultAction` (the service's policy's, else the mesh-wide one's);
 *      without one, DENY if any ALLOW rule applies to the service (an allow-list), else ALLOW.
 *      A dryRun policy's default DENY is also only reported.
 *
 * A rule matches when one of its `from` sources matches (none: any caller) and every condition
 * of `to` matches (none: any request). Within a list, one entry matching is enough.
 */
import { fail, ok, type FieldError, type Result } from '../core/result';
import { parseSpiffeId } from './spiffe';

export type AuthzAction = 'ALLOW' | 'DENY' | 'AUDIT';

export interface StringMatch {
  exact?: string;
  prefix?: string;
  regex?: string;
}

export interface SourceSpec {
  /** SPIFFE IDs; `*` matches any characters (`spiffe://td/ns/shop/*`). */
  spiffeIds?: string[];
  /** Services (from `.../svc/NAME` or the service account `.../sa/NAME`); `*` wildcards. */
  services?: string[];
  /** Kubernetes namespaces (from `.../ns/NS/...`); `*` wildcards. */
  namespaces?: string[];
  /** true: only callers without a verified certificate (plaintext); false: only verified ones. */
  unauthenticated?: boolean;
}

export interface RequestSpec {
  methods?: string[];
  paths?: StringMatch[];
  headers?: (StringMatch & { name: string; present?: boolean })[];
  ports?: number[];
}

export interface AuthzRuleSpec {
  name?: string;
  action: AuthzAction;
  from?: SourceSpec[];
  to?: RequestSpec;
}

export interface AuthorizationPolicySpec {
  /** The callee service; absent: every service (mesh-wide). */
  service?: string;
  defaultAction?: 'ALLOW' | 'DENY';
  /** Report what DENY rules and a DENY default would deny, without denying. */
  dryRun?: boolean;
  rules: AuthzRuleSpec[];
}

export interface AuthorizationPolicy {
  name: string;
  spec: AuthorizationPolicySpec;
}

/** What the request layer gives the engine. */
export interface AuthzRequest {
  /** The verified peer's SPIFFE ID; undefined for a plaintext or unverified caller. */
  spiffeId?: string;
  method: string;
  path: string;
  /** Lowercase names. */
  headers: Record<string, string | string[] | undefined>;
  port: number;
}

export interface RuleRef {
  policy: string;
  /** The rule's name, else `rules[i]`; `defaultAction` for the default. */
  rule: string;
}

export interface AuthzDecision {
  allowed: boolean;
  /** What decided: a rule, the default, or no policy at all. */
  by: RuleRef | 'no-policy';
  /** AUDIT rules that matched. */
  audits: RuleRef[];
  /** A dryRun policy would have denied here (by this rule or default). */
  dryRun?: RuleRef;
}

type Pred = (r: AuthzRequest, src: Source) => boolean;

interface Source {
  id?: string;
  service?: string;
  namespace?: string;
}

interface CompiledRule {
  ref: RuleRef;
  action: AuthzAction;
  dryRun: boolean;
  match: Pred;
}

interface ServiceEngine {
  audits: CompiledRule[];
  denies: CompiledRule[];
  allows: CompiledRule[];
  defaultAllow: boolean;
  defaultRef: RuleRef | 'no-policy';
  defaultDryRun: boolean;
}

/** The compiled policies of one snapshot. `decide` memoises one engine per callee service. */
export class Authorizer {
  private readonly meshWide: AuthorizationPolicy[];
  private readonly byService = new Map<string, AuthorizationPolicy[]>();
  private readonly engines = new Map<string, ServiceEngine>();
  private readonly compiled = new Map<AuthorizationPolicy, CompiledRule[]>();

  constructor(policies: readonly AuthorizationPolicy[]) {
    this.meshWide = policies.filter((p) => p.spec.service === undefined);
    for (const p of policies) {
      if (p.spec.service === undefined) continue;
      const list = this.byService.get(p.spec.service) ?? [];
      list.push(p);
      this.byService.set(p.spec.service, list);
    }
    for (const p of policies) this.compiled.set(p, p.spec.rules.map((r, i) => compileRule(p, r, i)));
  }

  /** Whether any policy applies to `service` (none: every request is allowed, no work per request). */
  applies(service: string): boolean {
    return this.meshWide.length > 0 || this.byService.has(service);
  }

  decide(service: string, req: AuthzRequest): AuthzDecision {
    const e = this.engine(service);
    const src = sourceOf(req.spiffeId);
    let audits: RuleRef[] | undefined;
    for (const r of e.audits) if (r.match(req, src)) (audits ??= []).push(r.ref);
    let dryRun: RuleRef | undefined;
    for (const r of e.denies) {
      if (!r.match(req, src)) continue;
      if (!r.dryRun) return { allowed: false, by: r.ref, audits: audits ?? [], ...(dryRun ? { dryRun } : {}) };
      dryRun ??= r.ref;
    }
    for (const r of e.allows) if (r.match(req, src)) return { allowed: true, by: r.ref, audits: audits ?? [], ...(dryRun ? { dryRun } : {}) };
    if (!e.defaultAllow && e.defaultDryRun) return { allowed: true, by: e.defaultRef, audits: audits ?? [], dryRun: dryRun ?? (e.defaultRef as RuleRef) };
    return { allowed: e.defaultAllow, by: e.defaultRef, audits: audits ?? [], ...(dryRun ? { dryRun } : {}) };
  }

  private engine(service: string): ServiceEngine {
    let e = this.engines.get(service);
    if (e) return e;
    const own = this.byService.get(service) ?? [];
    const all = [...this.meshWide, ...own];
    const rules = all.flatMap((p) => this.compiled.get(p) as CompiledRule[]);
    const withDefault = [...own].reverse().find((p) => p.spec.defaultAction) ?? [...this.meshWide].reverse().find((p) => p.spec.defaultAction);
    const allows = rules.filter((r) => r.action === 'ALLOW');
    const defaultAllow = withDefault ? withDefault.spec.defaultAction === 'ALLOW' : allows.length === 0;
    e = {
      audits: rules.filter((r) => r.action === 'AUDIT'),
      denies: rules.filter((r) => r.action === 'DENY'),
      allows,
      defaultAllow,
      defaultRef: all.length === 0 ? 'no-policy' : { policy: (withDefault ?? own[0] ?? all[0])?.name as string, rule: 'defaultAction' },
      // An implicit allow-list default belongs to the policies with ALLOW rules: dry-run only if all of them are.
      defaultDryRun: withDefault ? withDefault.spec.dryRun === true : allows.length > 0 && allows.every((r) => r.dryRun),
    };
    this.engines.set(service, e);
    return e;
  }
}

function sourceOf(id: string | undefined): Source {
  if (!id) return {};
  const p = parseSpiffeId(id);
  if (!p.ok) return { id };
  return { id, service: p.value.service ?? p.value.serviceAccount, namespace: p.value.namespace };
}

function compileRule(p: AuthorizationPolicy, r: AuthzRuleSpec, i: number): CompiledRule {
  const preds: Pred[] = [];
  if (r.from && r.from.length > 0) {
    const sources = r.from.map(compileSource);
    preds.push((req, src) => sources.some((s) => s(req, src)));
  }
  const to = r.to ?? {};
  if (to.methods?.length) {
    const methods = new Set(to.methods.map((m) => m.toUpperCase()));
    preds.push((req) => methods.has(req.method.toUpperCase()));
  }
  if (to.paths?.length) {
    const paths = to.paths.map(compileString);
    // The path without its query string.
    preds.push((req) => {
      const q = req.path.indexOf('?');
      const path = q < 0 ? req.path : req.path.slice(0, q);
      return paths.some((m) => m(path));
    });
  }
  if (to.ports?.length) {
    const ports = new Set(to.ports);
    preds.push((req) => ports.has(req.port));
  }
  for (const h of to.headers ?? []) {
    const name = h.name.toLowerCase();
    const m = h.exact !== undefined || h.prefix !== undefined || h.regex !== undefined ? compileString(h) : undefined;
    const present = h.present ?? true;
    preds.push((req) => {
      const v = req.headers[name];
      if (v === undefined) return !present;
      if (!present) return false;
      return m ? (Array.isArray(v) ? v.some(m) : m(v)) : true;
    });
  }
  return {
    ref: { policy: p.name, rule: r.name ?? `rules[${i}]` },
    action: r.action,
    dryRun: p.spec.dryRun === true,
    match: preds.length === 0 ? () => true : preds.length === 1 ? (preds[0] as Pred) : (req, src) => preds.every((f) => f(req, src)),
  };
}

function compileSource(s: SourceSpec): Pred {
  const preds: Pred[] = [];
  if (s.unauthenticated !== undefined) preds.push((_r, src) => (src.id === undefined) === s.unauthenticated);
  if (s.spiffeIds?.length) {
    const m = globs(s.spiffeIds);
    preds.push((_r, src) => src.id !== undefined && m(src.id));
  }
  if (s.services?.length) {
    const m = globs(s.services);
    preds.push((_r, src) => src.service !== undefined && m(src.service));
  }
  if (s.namespaces?.length) {
    const m = globs(s.namespaces);
    preds.push((_r, src) => src.namespace !== undefined && m(src.namespace));
  }
  return (req, src) => preds.every((f) => f(req, src));
}

/** Exact names in a Set, `*` patterns as one anchored regex. */
function globs(patterns: string[]): (s: string) => boolean {
  const exact = new Set(patterns.filter((p) => !p.includes('*')));
  const wild = patterns.filter((p) => p.includes('*'));
  if (wild.includes('*')) return () => true;
  const re = wild.length ? new RegExp(`^(?:${wild.map((w) => w.split('*').map(escapeRe).join('.*')).join('|')})$`) : undefined;
  return (s) => exact.has(s) || (re !== undefined && re.test(s));
}

function compileString(m: StringMatch): (s: string) => boolean {
  if (m.exact !== undefined) {
    const x = m.exact;
    return (s) => s === x;
  }
  if (m.prefix !== undefined) {
    const x = m.prefix;
    return (s) => s.startsWith(x);
  }
  const re = new RegExp(`^(?:${m.regex})$`);
  return (s) => re.test(s);
}

function escapeRe(s: string): string {
  return s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}

// ------------------------------------------------------------------------------------ validate

/**
 * Checks an AuthorizationPolicy's spec (until the policy model carries the kind), with field
 * paths: `spec.rules[0].to.paths[1].regex: invalid regular expression: ...`.
 */
export function validateAuthorizationPolicy(name: string, raw: unknown): Result<AuthorizationPolicy> {
  const errors: FieldError[] = [];
  const err = (path: string, message: string): void => void errors.push({ path: `spec${path}`, message });
  const spec = raw as Record<string, unknown>;
  if (!spec || typeof spec !== 'object' || Array.isArray(spec)) return fail([{ path: 'spec', message: 'must be an object' }]);
  const known = new Set(['service', 'defaultAction', 'dryRun', 'rules']);
  for (const k of Object.keys(spec)) if (!known.has(k)) err(`.${k}`, `unknown field (expected ${[...known].join(', ')})`);
  if (spec.service !== undefined && (typeof spec.service !== 'string' || spec.service === '')) err('.service', 'must be a service name');
  if (spec.defaultAction !== undefined && spec.defaultAction !== 'ALLOW' && spec.defaultAction !== 'DENY') err('.defaultAction', `must be ALLOW or DENY, got ${JSON.stringify(spec.defaultAction)}`);
  if (spec.dryRun !== undefined && typeof spec.dryRun !== 'boolean') err('.dryRun', 'must be true or false');
  const rules = spec.rules ?? [];
  if (!Array.isArray(rules)) err('.rules', 'must be a list');
  else
    rules.forEach((r: Record<string, unknown>, i) => {
      const at = `.rules[${i}]`;
      if (!r || typeof r !== 'object') return err(at, 'must be an object');
      for (const k of Object.keys(r)) if (!['name', 'action', 'from', 'to'].includes(k)) err(`${at}.${k}`, 'unknown field (expected name, action, from, to)');
      if (r.action !== 'ALLOW' && r.action !== 'DENY' && r.action !== 'AUDIT') err(`${at}.action`, `must be ALLOW, DENY or AUDIT, got ${JSON.stringify(r.action)}`);
      if (r.from !== undefined) {
        if (!Array.isArray(r.from)) err(`${at}.from`, 'must be a list of sources');
        else
          r.from.forEach((s: Record<string, unknown>, j: number) => {
            const sat = `${at}.from[${j}]`;
            if (!s || typeof s !== 'object') return err(sat, 'must be an object');
            for (const k of Object.keys(s)) if (!['spiffeIds', 'services', 'namespaces', 'unauthenticated'].includes(k)) err(`${sat}.${k}`, 'unknown field (expected spiffeIds, services, namespaces, unauthenticated)');
            for (const k of ['spiffeIds', 'services', 'namespaces'])
              if (s[k] !== undefined && (!Array.isArray(s[k]) || (s[k] as unknown[]).some((x) => typeof x !== 'string' || x === ''))) err(`${sat}.${k}`, 'must be a list of non-empty strings');
            if (s.unauthenticated !== undefined && typeof s.unauthenticated !== 'boolean') err(`${sat}.unauthenticated`, 'must be true or false');
          });
      }
      const to = r.to as Record<string, unknown> | undefined;
      if (to !== undefined) {
        if (!to || typeof to !== 'object') return err(`${at}.to`, 'must be an object');
        for (const k of Object.keys(to)) if (!['methods', 'paths', 'headers', 'ports'].includes(k)) err(`${at}.to.${k}`, 'unknown field (expected methods, paths, headers, ports)');
        if (to.methods !== undefined && (!Array.isArray(to.methods) || to.methods.some((m) => typeof m !== 'string' || !/^[A-Za-z]+$/.test(m)))) err(`${at}.to.methods`, 'must be a list of HTTP methods');
        if (to.ports !== undefined && (!Array.isArray(to.ports) || to.ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535))) err(`${at}.to.ports`, 'must be a list of ports (1-65535)');
        const checkMatch = (m: Record<string, unknown>, path: string, allowPresent: boolean) => {
          const kinds = ['exact', 'prefix', 'regex'].filter((k) => m[k] !== undefined);
          if (kinds.length > 1) err(path, `one of exact, prefix, regex; got ${kinds.join(' and ')}`);
          if (kinds.length === 0 && !allowPresent) err(path, 'needs exact, prefix or regex');
          for (const k of kinds) if (typeof m[k] !== 'string') err(`${path}.${k}`, 'must be a string');
          if (typeof m.regex === 'string')
            try {
              new RegExp(m.regex);
            } catch (e) {
              err(`${path}.regex`, `invalid regular expression: ${(e as Error).message}`);
            }
        };
        if (to.paths !== undefined) {
          if (!Array.isArray(to.paths)) err(`${at}.to.paths`, 'must be a list');
          else to.paths.forEach((p: Record<string, unknown>, j: number) => (p && typeof p === 'object' ? checkMatch(p, `${at}.to.paths[${j}]`, false) : err(`${at}.to.paths[${j}]`, 'must be an object')));
        }
        if (to.headers !== undefined) {
          if (!Array.isArray(to.headers)) err(`${at}.to.headers`, 'must be a list');
          else
            to.headers.forEach((h: Record<string, unknown>, j: number) => {
              const hat = `${at}.to.headers[${j}]`;
              if (!h || typeof h !== 'object') return err(hat, 'must be an object');
              if (typeof h.name !== 'string' || h.name === '') err(`${hat}.name`, 'must be a header name');
              if (h.present !== undefined && typeof h.present !== 'boolean') err(`${hat}.present`, 'must be true or false');
              checkMatch(h, hat, true);
            });
        }
      }
    });
  if (errors.length) return fail(errors);
  return ok({ name, spec: spec as unknown as AuthorizationPolicySpec });
}

// ------------------------------------------------------------------------ the denied response

/** The response flag on a request denied by an AuthorizationPolicy (Envoy's RBAC flag is `RBAC_ACCESS_DENIED`, shown `RBAC`). */
export const RBAC_FLAG = 'RBAC';

/**
 * What the request layer answers a denied request with: 403 and `x-meshlet-flags: RBAC`, or for
 * gRPC a Trailers-Only 200 with grpc-status 7 (PERMISSION_DENIED). The message names the rule.
 */
export function deniedResponse(d: AuthzDecision, grpc: boolean): { status: number; headers: Record<string, string>; body: string } {
  const by = d.by === 'no-policy' ? 'no policy' : `${d.by.policy} ${d.by.rule}`;
  const message = `denied by AuthorizationPolicy ${by}`;
  if (grpc) return { status: 200, headers: { 'content-type': 'application/grpc', 'grpc-status': '7', 'grpc-message': encodeURIComponent(message), 'x-meshlet-flags': RBAC_FLAG }, body: '' };
  return { status: 403, headers: { 'content-type': 'text/plain', 'x-meshlet-flags': RBAC_FLAG }, body: `${message}\n` };
}
