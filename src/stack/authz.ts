/**
 * Authorization (inbound): the AuthorizationPolicies that apply to this sidecar's service judge
 * every request before the app sees it. It sits after observe (so a denied request is counted in
 * `meshlet_requests_total` with its RBAC flag and has its access-log line) and before deadline and
 * retry:
 *
 *   rate limit -> observe -> authz -> deadline -> retry -> dispatcher (the app)
 *
 * - The caller is `call.peer`, the identity its verified TLS certificate proves (undefined for a
 *   plaintext caller: a rule on SPIFFE IDs, services or namespaces never matches it; the
 *   `x-meshlet-source` header is never read here).
 * - Denied: `403` with `x-meshlet-flags: RBAC`; gRPC and gRPC-Web: trailers-only
 *   PERMISSION_DENIED (7). The front adapters write it (LocalReply); the message names the
 *   policy and rule.
 * - Every decision is counted in `meshlet_authz_requests_total{policy,rule,action,result}`
 *   (result: allow, deny, would_deny, audit), bound when the snapshot compiles; deny, would_deny
 *   and audit are logged (at most LOG_PER_SECOND lines a second, the rest counted as suppressed)
 *   and the access-log line carries `authz_policy`, `authz_rule`, `authz_result`.
 * - `dryRun` policies (and AUDIT rules) deny nothing: their would-be denials are counted and
 *   logged as `would_deny` (`audit`).
 *
 * With no policy for the service, the layer costs one property read per request.
 */
import { LocalReply, type Layer, type MeshCall } from '../core/layer';
import type { Clock } from '../core/clock';
import type { Logger } from 'pino';
import type { Resource } from '../policy/types';
import { Authorizer, deniedMessage, GRPC_PERMISSION_DENIED, RBAC_FLAG, type AuthzDecision, type AuthzRequest, type RuleRef, type ServiceAuthorizer } from '../security/authz';
import type { Handler, ResponseSink, UpstreamCall } from '../core/layer';
import { isGrpcKind } from './profile';

export type AuthzResult = 'allow' | 'deny' | 'would_deny' | 'audit';

/** The metric family the layer counts on (src/observability/metrics.ts `Counter`). */
export interface CounterFamily {
  labels(...values: string[]): { inc(n?: number): void; readonly value: number };
}

export const AUTHZ_METRIC = 'meshlet_authz_requests_total';
export const AUTHZ_METRIC_HELP = 'Inbound requests judged by AuthorizationPolicies, by policy, rule (or defaultAction), action and result: allow, deny, would_deny (dryRun), audit (AUDIT rule matched).';
export const AUTHZ_METRIC_LABELS = ['policy', 'rule', 'action', 'result'] as const;

/** Log lines a second at most (denials, would-be denials, audits); the rest are counted. */
export const LOG_PER_SECOND = 10;

interface Bound {
  counters: Partial<Record<AuthzResult, { inc(n?: number): void }>>;
  /** `,"authz_policy":...,"authz_rule":...,"authz_result":...` per result, encoded once. */
  log: Partial<Record<AuthzResult, Buffer>>;
}

/** The compiled authorization of one snapshot for this sidecar's service. */
export class CompiledAuthz {
  private readonly bound = new Map<RuleRef, Bound>();
  constructor(
    readonly engine: ServiceAuthorizer,
    bind: (ref: RuleRef, result: AuthzResult) => { inc(n?: number): void },
  ) {
    for (const ref of engine.refs()) {
      const b: Bound = { counters: {}, log: {} };
      for (const result of resultsOf(ref, engine)) {
        b.counters[result] = bind(ref, result);
        b.log[result] = Buffer.from(`,"authz_policy":${JSON.stringify(ref.policy)},"authz_rule":${JSON.stringify(ref.rule)},"authz_result":"${result}"`);
      }
      this.bound.set(ref, b);
    }
  }

  count(ref: RuleRef, result: AuthzResult, call: MeshCall | undefined): void {
    const b = this.bound.get(ref);
    b?.counters[result]?.inc();
    if (call?.obs) call.obs.authzLog = b?.log[result];
  }
}

/** The results a rule (or the default) can have, so that only those series exist. */
function resultsOf(ref: RuleRef, e: ServiceAuthorizer): AuthzResult[] {
  switch (ref.action) {
    case 'ALLOW':
      return ['allow'];
    case 'AUDIT':
      return ['audit'];
    case 'DENY':
      return [e.isDryRun(ref.policy) ? 'would_deny' : 'deny'];
    default:
      return e.defaultDenies ? (e.defaultDryRun ? ['would_deny', 'allow'] : ['deny']) : ['allow'];
  }
}

/**
 * Authorization state of a sidecar: compiled per snapshot for its own service (`apply`), read by
 * the layer (`current`), with the counters of every decision so far (`decisions`, for stats).
 */
export class InboundAuthz {
  current: CompiledAuthz | undefined;
  private readonly children = new Map<string, { policy: string; rule: string; action: string; result: AuthzResult; child: { readonly value: number } }>();
  private windowStart = 0;
  private logged = 0;
  private suppressed = 0;

  constructor(
    private readonly opts: {
      service: string;
      counters: CounterFamily;
      logger: Logger;
      clock: Clock;
    },
  ) {}

  get service(): string {
    return this.opts.service;
  }

  /** Compiles the AuthorizationPolicies of a snapshot that apply to this service. */
  apply(resources: readonly Resource[]): void {
    const policies = [];
    // Only the policies for this service and the mesh-wide ones: others' rules are never compiled here.
    for (const r of resources) if (r.kind === 'AuthorizationPolicy' && (r.spec.service === undefined || r.spec.service === this.opts.service)) policies.push({ name: r.metadata.name, spec: r.spec });
    const engine = policies.length ? new Authorizer(policies).forService(this.opts.service) : undefined;
    this.current = engine ? new CompiledAuthz(engine, (ref, result) => this.bind(ref, result)) : undefined;
  }

  private bind(ref: RuleRef, result: AuthzResult): { inc(n?: number): void } {
    const key = `${ref.policy}\u0001${ref.rule}\u0001${ref.action}\u0001${result}`;
    let e = this.children.get(key);
    if (!e) {
      const child = this.opts.counters.labels(ref.policy, ref.rule, ref.action, result);
      e = { policy: ref.policy, rule: ref.rule, action: ref.action, result, child };
      this.children.set(key, e);
    }
    return e.child as unknown as { inc(n?: number): void };
  }

  /** Every (policy, rule, result) counted so far with its count (sidecar `/stats`, `meshlet stat`). */
  decisions(): { policy: string; rule: string; action: string; result: AuthzResult; count: number }[] {
    return [...this.children.values()].filter((e) => e.child.value > 0).map((e) => ({ policy: e.policy, rule: e.rule, action: e.action, result: e.result, count: e.child.value }));
  }

  /** A decision worth a log line (deny, would_deny, audit), rate-limited. */
  log(call: MeshCall, result: AuthzResult, ref: RuleRef): void {
    const now = this.opts.clock.monotonic();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.logged = 0;
    }
    if (this.logged >= LOG_PER_SECOND) {
      this.suppressed++;
      return;
    }
    this.logged++;
    const suppressed = this.suppressed;
    this.suppressed = 0;
    const q = call.path.indexOf('?');
    const fields = {
      authz: result,
      policy: ref.policy,
      rule: ref.rule,
      source: call.peer?.uri ?? null,
      method: call.method,
      path: q < 0 ? call.path : call.path.slice(0, q),
      ...(suppressed ? { suppressed } : {}),
    };
    const msg = result === 'deny' ? 'request denied by AuthorizationPolicy' : result === 'would_deny' ? 'request would be denied by AuthorizationPolicy (dryRun)' : 'request matched an AUDIT rule';
    if (result === 'audit') this.opts.logger.info(fields, msg);
    else this.opts.logger.warn(fields, msg);
  }
}

/** What the engine reads of a call; built per request without copying anything. */
class CallView implements AuthzRequest {
  constructor(private readonly call: MeshCall) {}
  get peer() {
    return this.call.peer;
  }
  get method() {
    return this.call.method;
  }
  get path() {
    return this.call.path;
  }
  get port() {
    return this.call.target?.port ?? 0;
  }
  header(name: string): string | undefined {
    return this.call.view ? this.call.view.header(name) : this.call.header(name);
  }
}

export function authzLayer(state: () => InboundAuthz | undefined): Layer {
  return (next) => (call, sink) => {
    const s = state();
    const a = s?.current;
    if (a === undefined) return next(call, sink);
    return judge(s as InboundAuthz, a, call, sink, next);
  };
}

function judge(s: InboundAuthz, a: CompiledAuthz, call: MeshCall, sink: ResponseSink, next: Handler): UpstreamCall {
  const d: AuthzDecision = a.engine.decide(new CallView(call));
  for (const ref of d.audits) {
    a.count(ref, 'audit', call);
    s.log(call, 'audit', ref);
  }
  if (d.dryRun) {
    a.count(d.dryRun, 'would_deny', call);
    s.log(call, 'would_deny', d.dryRun);
  }
  const by = d.by as RuleRef;
  if (d.allowed) {
    // The access log shows the most telling result: would_deny / audit over allow.
    const obs = call.obs;
    const keep = obs?.authzLog;
    a.count(by, 'allow', call);
    if (obs && keep && (d.dryRun || d.audits.length)) obs.authzLog = keep;
    return next(call, sink);
  }
  a.count(by, 'deny', call);
  s.log(call, 'deny', by);
  const reply = new LocalReply(403, RBAC_FLAG, deniedMessage(d), isGrpcKind(call.kind) ? { grpcStatus: GRPC_PERMISSION_DENIED } : undefined);
  // Answered after the parser's callback returns (as the rate limit does), so an HTTP/1.1
  // connection sees the request complete and stays open.
  let gone = false;
  queueMicrotask(() => {
    if (!gone) sink.onError(reply, false);
  });
  return {
    abort() {
      gone = true;
    },
    resume() {},
  };
}
