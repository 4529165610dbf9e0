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
import { Flags } from '../core/errors';
import type { AuthorizationPolicySpec, AuthzRule } from '../policy/types';
import { compileRegex } from '../policy/regex';
import type { SpiffeId } from './spiffe';

type AuthzAction = AuthzRule['action'];

/** A validated AuthorizationPolicy (parsed by src/policy: `parseResource`). */
export interface AuthorizationPolicy {
  name: string;
  spec: AuthorizationPolicySpec;
}

/** What the request layer gives the engine: nothing is parsed per request. */
export interface AuthzRequest {
  /** The verified peer's identity (`MeshCall.peer`); undefined for a plaintext or unverified caller. */
  peer?: SpiffeId;
  method: string;
  /** Path, with or without its query string (ignored). */
  path: string;
  /** A request header's value by lower-case name (repeated headers joined by ", "). */
  header(name: string): string | undefined;
  /** The application port the request is for. */
  port: number;
}

export interface RuleRef {
  policy: string;
  /** The rule's name, else `rules[i]`; `defaultAction` for the default. */
  rule: string;
  /** ALLOW / DENY / AUDIT for a rule; `default` for the default. */
  action: AuthzAction | 'default';
}

export interface AuthzDecision {
  allowed: boolean;
  /** What decided: a rule, the default, or no policy at all. */
  by: RuleRef | 'no-policy';
  /** AUDIT rules that matched. */
  audits: readonly RuleRef[];
  /** A dryRun policy would have denied here (by this rule or default). */
  dryRun?: RuleRef;
}

type Pred = (r: AuthzRequest, src: SpiffeId | undefined) => boolean;

interface CompiledRule {
  ref: RuleRef;
  action: AuthzAction;
  dryRun: boolean;
  match: Pred;
  /** The decision when this rule decides with nothing else to report (no allocation per request). */
  plain: AuthzDecision;
}

const NO_AUDITS: readonly RuleRef[] = Object.freeze([]);
const NO_POLICY: AuthzDecision = Object.freeze({ allowed: true, by: 'no-policy' as const, audits: NO_AUDITS });

/**
 * The compiled rules for one callee service: `decide` is a few predicate calls. Built once per
 * snapshot (`Authorizer.forService`).
 */
export class ServiceAuthorizer {
  constructor(
    readonly service: string,
    /** The policies that apply (mesh-wide first), by name. */
    readonly policies: readonly string[],
    private readonly audits: readonly CompiledRule[],
    private readonly denies: readonly CompiledRule[],
    private readonly allows: readonly CompiledRule[],
    readonly defaultRef: RuleRef,
    private readonly defaultAllow: boolean,
    /** The default DENY is only reported (its policy is in dryRun). */
    readonly defaultDryRun: boolean,
    private readonly dryRunPolicies: ReadonlySet<string>,
  ) {
    this.defaultPlain = Object.freeze({ allowed: defaultAllow || defaultDryRun, by: defaultRef, audits: NO_AUDITS, ...(!defaultAllow && defaultDryRun ? { dryRun: defaultRef } : {}) });
  }
  private readonly defaultPlain: AuthzDecision;

  /** Every rule (and the default) that can decide or report, for pre-bound metrics. */
  refs(): RuleRef[] {
    return [...this.audits, ...this.denies, ...this.allows].map((r) => r.ref).concat(this.defaultRef);
  }

  /** Whether a policy that applies here is in dryRun. */
  isDryRun(policy: string): boolean {
    return this.dryRunPolicies.has(policy);
  }

  /** Whether the default (no rule matched) denies or would deny. */
  get defaultDenies(): boolean {
    return !this.defaultAllow;
  }

  decide(req: AuthzRequest): AuthzDecision {
    const src = req.peer;
    let audits: RuleRef[] | undefined;
    for (const r of this.audits) if (r.match(req, src)) (audits ??= []).push(r.ref);
    let dryRun: RuleRef | undefined;
    for (const r of this.denies) {
      if (!r.match(req, src)) continue;
      if (!r.dryRun) return audits || dryRun ? { allowed: false, by: r.ref, audits: audits ?? NO_AUDITS, ...(dryRun ? { dryRun } : {}) } : r.plain;
      dryRun ??= r.ref;
    }
    for (const r of this.allows) if (r.match(req, src)) return audits || dryRun ? { allowed: true, by: r.ref, audits: audits ?? NO_AUDITS, ...(dryRun ? { dryRun } : {}) } : r.plain;
    if (!audits && !dryRun) return this.defaultPlain;
    if (!this.defaultAllow && this.defaultDryRun) return { allowed: true, by: this.defaultRef, audits: audits ?? NO_AUDITS, dryRun: dryRun ?? this.defaultRef };
    return { allowed: this.defaultAllow, by: this.defaultRef, audits: audits ?? NO_AUDITS, ...(dryRun ? { dryRun } : {}) };
  }
}

/** The compiled policies of one snapshot: one `ServiceAuthorizer` per callee service, memoised. */
export class Authorizer {
  private readonly meshWide: AuthorizationPolicy[];
  private readonly byService = new Map<string, AuthorizationPolicy[]>();
  private readonly engines = new Map<string, ServiceAuthorizer | undefined>();
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
    return this.forService(service)?.decide(req) ?? NO_POLICY;
  }

  /** The compiled rules for `service`, or undefined when no policy applies to it. */
  forService(service: string): ServiceAuthorizer | undefined {
    if (this.engines.has(service)) return this.engines.get(service);
    const own = this.byService.get(service) ?? [];
    const all = [...this.meshWide, ...own];
    let e: ServiceAuthorizer | undefined;
    if (all.length > 0) {
      const rules = all.flatMap((p) => this.compiled.get(p) as CompiledRule[]);
      const withDefault = [...own].reverse().find((p) => p.spec.defaultAction) ?? [...this.meshWide].reverse().find((p) => p.spec.defaultAction);
      const allows = rules.filter((r) => r.action === 'ALLOW');
      const defaultAllow = withDefault ? withDefault.spec.defaultAction === 'ALLOW' : allows.length === 0;
      // An implicit allow-list default belongs to the policies with ALLOW rules: dry-run only if all of them are.
      const defaultDryRun = withDefault ? withDefault.spec.dryRun === true : allows.length > 0 && allows.every((r) => r.dryRun);
      const owner = withDefault ?? (allows.length > 0 ? all.find((p) => p.name === allows[0]?.ref.policy) : undefined) ?? own[0] ?? all[0];
      e = new ServiceAuthorizer(
        service,
        all.map((p) => p.name),
        rules.filter((r) => r.action === 'AUDIT'),
        rules.filter((r) => r.action === 'DENY'),
        allows,
        { policy: (owner as AuthorizationPolicy).name, rule: 'defaultAction', action: 'default' },
        defaultAllow,
        defaultDryRun,
        new Set(all.filter((p) => p.spec.dryRun).map((p) => p.name)),
      );
    }
    this.engines.set(service, e);
    return e;
  }
}

function compileRule(p: AuthorizationPolicy, r: AuthzRule, i: number): CompiledRule {
  const preds: Pred[] = [];
  if (r.from && r.from.length > 0) {
    const sources = r.from.map(compileSource);
    preds.push(sources.length === 1 ? (sources[0] as Pred) : anyOf(sources));
  }
  const to = r.to ?? {};
  if (to.methods?.length) {
    const methods = new Set(to.methods.map((m) => m.toUpperCase()));
    preds.push((req) => methods.has(req.method) || methods.has(req.method.toUpperCase()));
  }
  if (to.paths?.length) {
    const paths = to.paths.map(compileString);
    // The path without its query string.
    preds.push((req) => {
      const q = req.path.indexOf('?');
      const path = q < 0 ? req.path : req.path.slice(0, q);
      for (let i = 0; i < paths.length; i++) if ((paths[i] as (s: string) => boolean)(path)) return true;
      return false;
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
      const v = req.header(name);
      if (v === undefined) return !present;
      if (!present) return false;
      return m ? m(v) || (v.includes(', ') && v.split(', ').some(m)) : true;
    });
  }
  const ref: RuleRef = Object.freeze({ policy: p.name, rule: r.name ?? `rules[${i}]`, action: r.action });
  return {
    ref,
    action: r.action,
    dryRun: p.spec.dryRun === true,
    match: preds.length === 0 ? () => true : preds.length === 1 ? (preds[0] as Pred) : allOf(preds),
    plain: Object.freeze({ allowed: r.action !== 'DENY', by: ref, audits: NO_AUDITS }),
  };
}

function compileSource(s: NonNullable<AuthzRule['from']>[number]): Pred {
  const preds: Pred[] = [];
  if (s.unauthenticated !== undefined) preds.push((_r, src) => (src === undefined) === s.unauthenticated);
  if (s.spiffeIds?.length) {
    const m = globs(s.spiffeIds);
    preds.push((_r, src) => src !== undefined && m(src.uri));
  }
  if (s.services?.length) {
    const m = globs(s.services);
    preds.push((_r, src) => {
      const svc = src?.service ?? src?.serviceAccount;
      return svc !== undefined && m(svc);
    });
  }
  if (s.namespaces?.length) {
    const m = globs(s.namespaces);
    preds.push((_r, src) => src?.namespace !== undefined && m(src.namespace));
  }
  return preds.length === 1 ? (preds[0] as Pred) : allOf(preds);
}

/** Loops, not `every`/`some` with a closure: nothing is allocated per request. */
function allOf(preds: readonly Pred[]): Pred {
  return (req, src) => {
    for (let i = 0; i < preds.length; i++) if (!(preds[i] as Pred)(req, src)) return false;
    return true;
  };
}

function anyOf(preds: readonly Pred[]): Pred {
  return (req, src) => {
    for (let i = 0; i < preds.length; i++) if ((preds[i] as Pred)(req, src)) return true;
    return false;
  };
}

/** Exact names in a Set, `*` patterns as one anchored linear-time regex. */
function globs(patterns: readonly string[]): (s: string) => boolean {
  const exact = new Set(patterns.filter((p) => !p.includes('*')));
  const wild = patterns.filter((p) => p.includes('*'));
  if (wild.includes('*')) return () => true;
  if (wild.length === 0) return (s) => exact.has(s);
  const re = compileRegex(wild.map((w) => w.split('*').map(escapeRe).join('.*')).join('|'));
  return (s) => exact.has(s) || re.test(s);
}

function compileString(m: { exact?: string; prefix?: string; regex?: string }): (s: string) => boolean {
  if (m.exact !== undefined) {
    const x = m.exact;
    return (s) => s === x;
  }
  if (m.prefix !== undefined) {
    const x = m.prefix;
    return (s) => s.startsWith(x);
  }
  const re = compileRegex(m.regex as string);
  return (s) => re.test(s);
}

function escapeRe(s: string): string {
  return s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}

// ------------------------------------------------------------------------ the denied response

/** The response flag on a request denied by an AuthorizationPolicy (Envoy's RBAC flag is `RBAC_ACCESS_DENIED`, shown `RBAC`). */
export const RBAC_FLAG = Flags.AccessDenied;
/** gRPC status PERMISSION_DENIED. */
export const GRPC_PERMISSION_DENIED = 7;

/** The message of a denied answer: it names the policy and rule. */
export function deniedMessage(d: AuthzDecision): string {
  return `denied by AuthorizationPolicy ${d.by === 'no-policy' ? '(none)' : `${d.by.policy} rule ${d.by.rule}`}`;
}
