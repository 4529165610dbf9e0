/**
 * `meshlet check`'s analysis (like `istioctl analyze`): what is valid but probably wrong in a set
 * of resources, given the endpoints the mesh has and what the sidecars report. The validator
 * (parse.ts) refuses what cannot work (all-zero weights, unknown subsets...); this finds what
 * works differently from what its author likely meant. Pure: the CLI feeds it the stored state (and a file's resources over it).
 */
import { formatDuration } from './validate';
import type { Endpoint, Resource, RouteResource } from './types';

export type Severity = 'error' | 'warning' | 'info';

export interface Finding {
  /** Stable: documented in docs/operations.md, safe to grep for. */
  code: string;
  severity: Severity;
  /** `Kind/name`, or `sidecar/ID`. */
  resource: string;
  /** The field path within the resource, when there is one. */
  field?: string;
  message: string;
  fix?: string;
}

export interface SidecarReport {
  id: string;
  service: string;
  connected: boolean;
  ackedVersion?: string;
  ackedAt?: string;
  nackVersion?: string;
  nackedAt?: string;
  nackReason?: string;
}

/** An endpoint the callers' outlier detection ejected, as the control plane sampled it (`GET /v1/ejections`). */
export interface EjectionReport {
  service: string;
  endpoint: string;
  /** How long it has been out without a sample seeing it back (0: back now). */
  ejectedForMs: number;
  /** Separate ejections within the sampled window. */
  ejections: number;
  seenBy: string[];
}

/** A certificate a gateway's HTTPS listener serves, as the control plane sampled it (`GET /v1/certificates`). */
export interface CertificateReport {
  /** The gateway replica (id) and the Gateway resource it serves. */
  gateway: string;
  service: string;
  listener: string;
  /** The file; for a certificate from the store, `TLSCertificate/NAME`. */
  file: string;
  /** The TLSCertificate it came from, when from the store. */
  secret?: string;
  subject: string;
  names: string[];
  /** ISO 8601. */
  notBefore: string;
  notAfter: string;
}

/** A TLSCertificate in the store, its leaf described (the CLI reads it from the stored resource). */
export interface StoredCertificate {
  name: string;
  subject: string;
  names: string[];
  /** ISO 8601. */
  notBefore: string;
  notAfter: string;
}

/** AuthorizationPolicy decisions counted by the sidecars (`GET /v1/stats`, `authz`). */
export interface AuthzCount {
  service: string;
  policy: string;
  rule: string;
  result: string;
  count: number;
}

export interface AnalyzeInput {
  resources: readonly Resource[];
  endpoints: readonly Endpoint[];
  sidecars?: readonly SidecarReport[];
  ejections?: readonly EjectionReport[];
  /** An ejection longer than this is MC0015 (default 5 minutes). */
  ejectedForMs?: number;
  /** This many separate ejections within the sampled window is MC0016 (default 3). */
  repeatedEjections?: number;
  /** The window ejections were counted over (for the message; default 15 minutes). */
  ejectionWindowMs?: number;
  authz?: readonly AuthzCount[];
  certificates?: readonly CertificateReport[];
  /** The TLSCertificates in the store: checked even when no gateway serves them (yet). */
  storedCertificates?: readonly StoredCertificate[];
  /** A certificate expiring within this is MC0017 (default 14 days); expired is MC0018. */
  certExpiryMs?: number;
  /** Now, ms since the epoch (default Date.now()): what expiry is measured against. */
  now?: number;
}

export const DEFAULT_EJECTED_FOR_MS = 5 * 60_000;
export const DEFAULT_REPEATED_EJECTIONS = 3;
export const DEFAULT_CERT_EXPIRY_MS = 14 * 86_400_000;

/** Every code with its meaning, for the docs and `meshlet check --codes`. */
export const CODES: Readonly<Record<string, { severity: Severity; title: string }>> = {
  MC0001: { severity: 'warning', title: 'a Route sends traffic to a service that has no endpoints (503 UH)' },
  MC0002: { severity: 'error', title: 'a Route sends traffic to a subset that selects no endpoint of its service (503 UH)' },
  MC0003: { severity: 'warning', title: 'a rule is never reached: an earlier rule of the same Route matches every request' },
  MC0005: { severity: 'warning', title: 'retries can take longer than the rule timeout: the last tries never happen' },
  MC0006: { severity: 'info', title: 'retries without any timeout: a hung upstream is never retried' },
  MC0007: { severity: 'error', title: 'a rate limit names a route or rule that does not exist: it never applies' },
  MC0008: { severity: 'error', title: 'a sidecar refused (NACKed) the current policy and runs an older one' },
  MC0009: { severity: 'warning', title: 'a mirror sends copies to a service that has no endpoints' },
  MC0010: { severity: 'warning', title: 'two Routes claim the same host: only the one stored last serves it' },
  MC0011: { severity: 'warning', title: 'an AuthorizationPolicy is for a service that does not exist: it applies to nothing' },
  MC0012: { severity: 'warning', title: 'an ALLOW rule names a caller service that does not exist: that source never matches' },
  MC0013: { severity: 'warning', title: 'an AuthorizationPolicy denies every request to a service that has callers' },
  MC0014: { severity: 'info', title: 'a dryRun AuthorizationPolicy would have denied requests: read them before enforcing it' },
  MC0015: { severity: 'warning', title: 'an endpoint has been ejected by outlier detection for a long time (default: over 5 minutes)' },
  MC0016: { severity: 'warning', title: 'an endpoint keeps being ejected by outlier detection (default: 3 times or more in the sampled window)' },
  MC0017: { severity: 'warning', title: 'a certificate a Gateway listener serves (a file, or a TLSCertificate in the store) expires soon (default: within 14 days)' },
  MC0018: { severity: 'error', title: 'a certificate a Gateway listener serves (a file, or a TLSCertificate in the store) has expired (or is not valid yet): clients refuse it' },
  MC0019: { severity: 'warning', title: 'a Route\'s apiKeys.consumerRefs names an ApiConsumer that does not exist: nobody authenticates as it' },
};

function f(code: keyof typeof CODES & string, resource: string, field: string | undefined, message: string, fix?: string): Finding {
  return { code, severity: (CODES[code] as { severity: Severity }).severity, resource, ...(field ? { field } : {}), message, ...(fix ? { fix } : {}) };
}

const ms = (v: number): string => formatDuration(v);

export function analyze(input: AnalyzeInput): Finding[] {
  const out: Finding[] = [];
  const byService = new Map<string, Endpoint[]>();
  const addEp = (e: Endpoint): void => {
    let l = byService.get(e.service);
    if (!l) byService.set(e.service, (l = []));
    l.push(e);
  };
  for (const e of input.endpoints) addEp(e);
  const policies = new Map<string, Extract<Resource, { kind: 'DestinationPolicy' }>>();
  const routes: RouteResource[] = [];
  for (const r of input.resources) {
    if (r.kind === 'Service') for (const e of r.spec.endpoints) addEp({ service: r.metadata.name, address: e.address, port: e.port, labels: e.labels, weight: e.weight, meshed: false });
    else if (r.kind === 'DestinationPolicy') policies.set(r.spec.service, r);
    else if (r.kind === 'Route') routes.push(r);
  }
  const endpointsOf = (svc: string): Endpoint[] => byService.get(svc) ?? [];

  const hostOwner = new Map<string, string>();
  for (const route of routes) {
    const key = `Route/${route.metadata.name}`;
    route.spec.hosts.forEach((h, i) => {
      const other = hostOwner.get(h);
      if (other) out.push(f('MC0010', key, `spec.hosts[${i}]`, `host ${JSON.stringify(h)} is also served by ${other}`, `keep each host in one Route (merge the rules into one of them)`));
      else hostOwner.set(h, key);
    });
    let catchAll: string | undefined;
    const seen = new Set<string>();
    route.spec.rules.forEach((rule, i) => {
      const at = `spec.rules[${i}]`;
      if (catchAll !== undefined)
        out.push(f('MC0003', key, at, `rule ${JSON.stringify(rule.name)} is never used: rule ${JSON.stringify(catchAll)} before it matches every request`, `move rule ${JSON.stringify(rule.name)} above ${JSON.stringify(catchAll)}, or give ${JSON.stringify(catchAll)} matches`));
      if (catchAll === undefined && rule.matches.length === 0) catchAll = rule.name;
      const backends = rule.backends ?? [];
      backends.forEach((b, j) => {
        if (b.weight === 0) return;
        const eps = endpointsOf(b.service);
        if (eps.length === 0) {
          if (!seen.has(b.service))
            out.push(f('MC0001', key, `${at}.backends[${j}].service`, `service ${JSON.stringify(b.service)} has no endpoints: requests get 503 UH`, `start a sidecar with --service ${b.service}, or define a Service ${b.service} with static endpoints`));
          seen.add(b.service);
        } else if (b.subset) {
          const sub = policies.get(b.service)?.spec.subsets.find((s) => s.name === b.subset);
          if (sub) {
            const entries = Object.entries(sub.labels);
            const n = eps.filter((e) => entries.every(([k, v]) => e.labels[k] === v)).length;
            if (n === 0)
              out.push(
                f(
                  'MC0002',
                  key,
                  `${at}.backends[${j}].subset`,
                  `subset ${JSON.stringify(b.subset)} (${entries.map(([k, v]) => `${k}=${v}`).join(',')}) selects none of the ${eps.length} endpoint(s) of ${b.service}: its share of requests gets 503 UH`,
                  `label an endpoint ${entries.map(([k, v]) => `${k}=${v}`).join(',')} (sidecar --labels), or fix the subset's labels in DestinationPolicy/${policies.get(b.service)?.metadata.name}`,
                ),
              );
          }
        }
      });
      if (rule.mirror && endpointsOf(rule.mirror.service).length === 0)
        out.push(f('MC0009', key, `${at}.mirror.service`, `mirror service ${JSON.stringify(rule.mirror.service)} has no endpoints: every copy fails`, `start ${rule.mirror.service}, or remove the mirror`));
      const rt = rule.retries;
      if (rt && rt.attempts > 0) {
        if (rule.timeoutMs !== undefined && rt.perTryTimeoutMs !== undefined && (rt.attempts + 1) * rt.perTryTimeoutMs > rule.timeoutMs)
          out.push(
            f(
              'MC0005',
              key,
              `${at}.retries`,
              `1 try + ${rt.attempts} retries of up to ${ms(rt.perTryTimeoutMs)} each can take ${ms((rt.attempts + 1) * rt.perTryTimeoutMs)}, more than the rule timeout ${ms(rule.timeoutMs)}: when tries time out, the last ones never happen`,
              `raise timeout to at least ${ms((rt.attempts + 1) * rt.perTryTimeoutMs)}, or lower perTryTimeout to ${ms(Math.floor(rule.timeoutMs / (rt.attempts + 1)))} or attempts`,
            ),
          );
        if (rule.timeoutMs === undefined && rt.perTryTimeoutMs === undefined)
          out.push(f('MC0006', key, `${at}.retries`, 'retries without timeout or perTryTimeout: a try that hangs is waited for forever, and never retried', 'set retries.perTryTimeout (and a rule timeout)'));
      }
    });
  }

  // Rate limits that name a route or rule that does not exist.
  const ruleNames = new Map(routes.map((r) => [r.metadata.name, new Set(r.spec.rules.map((x) => x.name))]));
  for (const r of input.resources) {
    if (r.kind !== 'RateLimitPolicy') continue;
    r.spec.limits.forEach((l, i) =>
      (l.routes ?? []).forEach((ref, j) => {
        const [route, rule] = ref.split('/') as [string, string | undefined];
        const rules = ruleNames.get(route);
        const missing = !rules ? `Route ${JSON.stringify(route)} does not exist` : rule !== undefined && !rules.has(rule) ? `Route ${JSON.stringify(route)} has no rule ${JSON.stringify(rule)} (it has ${[...rules].join(', ')})` : undefined;
        if (missing) out.push(f('MC0007', `RateLimitPolicy/${r.metadata.name}`, `spec.limits[${i}].routes[${j}]`, `${missing}: limit ${JSON.stringify(l.name)} never applies to it`, 'name an existing route (or route/rule), or remove it'));
      }),
    );
  }

  analyzeAuthz(input, routes, (svc) => endpointsOf(svc).length > 0, out);

  for (const s of input.sidecars ?? []) {
    if (!s.connected) continue;
    const nackNewer = s.nackVersion && (!s.ackedAt || (s.nackedAt ?? '') > s.ackedAt);
    if (nackNewer)
      out.push(
        f('MC0008', `sidecar/${s.id}`, undefined, `sidecar of ${s.service} NACKed policy ${s.nackVersion}${s.ackedVersion ? ` and still runs ${s.ackedVersion}` : ''}: ${(s.nackReason ?? '').split('\n').join('; ')}`, 'fix the resource the reason names; `meshlet status` shows every sidecar'),
      );
  }
  const longMs = input.ejectedForMs ?? DEFAULT_EJECTED_FOR_MS;
  const repeated = input.repeatedEjections ?? DEFAULT_REPEATED_EJECTIONS;
  const window = ms(input.ejectionWindowMs ?? 15 * 60_000);
  for (const e of input.ejections ?? []) {
    const dp = policies.get(e.service);
    const resource = dp ? `DestinationPolicy/${dp.metadata.name}` : `service/${e.service}`;
    const field = dp ? 'spec.outlierDetection' : undefined;
    const by = e.seenBy.length ? ` (by ${e.seenBy.join(', ')})` : '';
    const fix = `look at ${e.endpoint} itself (\`meshlet logs ${e.service}\`, its /ready): outlier detection keeps it out while it fails; if it is gone for good, remove it (its sidecar, or the Service entry)`;
    if (e.ejectedForMs > longMs) out.push(f('MC0015', resource, field, `endpoint ${e.endpoint} of ${e.service} has been ejected for ${ms(Math.round(e.ejectedForMs / 1000) * 1000)}${by}`, fix));
    else if (e.ejections >= repeated) out.push(f('MC0016', resource, field, `endpoint ${e.endpoint} of ${e.service} was ejected ${e.ejections} times in the last ${window}${by}`, fix));
  }
  analyzeCertificates(input, out);
  const apiConsumers = new Set(input.resources.filter((r) => r.kind === 'ApiConsumer').map((r) => r.metadata.name));
  for (const r of routes)
    r.spec.rules.forEach((rule, i) =>
      rule.apiKeys?.consumerRefs.forEach((name, j) => {
        if (!apiConsumers.has(name))
          out.push(f('MC0019', `Route/${r.metadata.name}`, `spec.rules[${i}].apiKeys.consumerRefs[${j}]`, `ApiConsumer ${JSON.stringify(name)} does not exist: no key authenticates as it (it may have been deleted on purpose)`, `create it (\`meshlet apply -f\`, then \`meshlet apikey create --consumer ${name}\`), or remove the name`));
      }),
    );
  const rank: Record<Severity, number> = { error: 0, warning: 1, info: 2 };
  return out.sort((a, b) => rank[a.severity] - rank[b.severity] || a.resource.localeCompare(b.resource) || (a.field ?? '').localeCompare(b.field ?? ''));
}

/** `3d 4h`, `5h 12m`, `40s`: a time to expiry, to the two largest units. */
export function formatSpan(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const parts: [number, string][] = [
    [Math.floor(s / 86_400), 'd'],
    [Math.floor((s % 86_400) / 3600), 'h'],
    [Math.floor((s % 3600) / 60), 'm'],
    [s % 60, 's'],
  ];
  const first = parts.findIndex(([v]) => v > 0);
  if (first < 0) return '0s';
  return parts
    .slice(first, first + 2)
    .filter(([v]) => v > 0)
    .map(([v, u]) => `${v}${u}`)
    .join(' ');
}

/**
 * Gateway certificates (read by each gateway from its own files, reported in its `/stats`):
 * expired or not yet valid is an error (handshakes with clients that check fail), expiring within
 * the threshold a warning. One finding per Gateway listener and file, whichever replicas report it
 * (replicas usually mount the same Secret); replicas that serve different copies are named.
 */
function analyzeCertificates(input: AnalyzeInput, out: Finding[]): void {
  const certs = input.certificates ?? [];
  const stored = input.storedCertificates ?? [];
  if (certs.length === 0 && stored.length === 0) return;
  const now = input.now ?? Date.now();
  const within = input.certExpiryMs ?? DEFAULT_CERT_EXPIRY_MS;
  const gateways = new Map<string, Extract<Resource, { kind: 'Gateway' }>>();
  for (const r of input.resources) if (r.kind === 'Gateway') gateways.set(r.metadata.name, r);
  const groups = new Map<string, { c: CertificateReport; by: Set<string>; notAfter: number; notBefore: number }>();
  for (const c of certs) {
    const notAfter = Date.parse(c.notAfter);
    const notBefore = Date.parse(c.notBefore);
    const key = `${c.service}\u0001${c.listener}\u0001${c.file}\u0001${c.notAfter}`;
    const g = groups.get(key);
    if (g) g.by.add(c.gateway);
    else groups.set(key, { c, by: new Set([c.gateway]), notAfter, notBefore });
  }
  for (const { c, by, notAfter, notBefore } of groups.values()) {
    const gw = gateways.get(c.service);
    const li = gw ? gw.spec.listeners.findIndex((l) => l.name === c.listener) : -1;
    const listener = li >= 0 ? gw!.spec.listeners[li] : undefined;
    const ci = listener?.tls ? listener.tls.certificates.findIndex((x) => (c.secret !== undefined ? x.secret === c.secret : x.certFile === c.file)) : -1;
    // A stored certificate is the TLSCertificate's finding (renewing it is one apply); a file's, the Gateway's.
    const resource = c.secret !== undefined ? `TLSCertificate/${c.secret}` : gw ? `Gateway/${c.service}` : `gateway/${[...by].sort()[0]}`;
    const field = c.secret !== undefined ? 'spec.certificate' : li < 0 ? undefined : ci < 0 ? `spec.listeners[${li}].tls` : `spec.listeners[${li}].tls.certificates[${ci}].certFile`;
    const what = `certificate ${c.file} (${c.names.length ? c.names.join(', ') : c.subject}) of listener ${c.listener}${c.secret !== undefined ? ` of Gateway ${c.service}` : ''}`;
    const replicas = ` (served by ${[...by].sort().join(', ')})`;
    const fix = c.secret !== undefined ? storedFix(c.secret) : `renew ${c.file} (and its key) in place: the gateway reloads changed files without a restart; \`openssl x509 -noout -enddate -in ${c.file}\` on the gateway's host shows what it reads`;
    if (!Number.isFinite(notAfter)) continue;
    if (notAfter <= now) out.push(f('MC0018', resource, field, `${what} expired ${formatSpan(now - notAfter)} ago, at ${c.notAfter}: clients refuse the handshake${replicas}`, fix));
    else if (Number.isFinite(notBefore) && notBefore > now) out.push(f('MC0018', resource, field, `${what} is not valid until ${c.notBefore} (in ${formatSpan(notBefore - now)}): clients refuse the handshake${replicas}`, `check the clock of the host that issued it, or serve the previous certificate until then`));
    else if (notAfter - now <= within) out.push(f('MC0017', resource, field, `${what} expires in ${formatSpan(notAfter - now)}, at ${c.notAfter}${replicas}`, fix));
  }
  // Stored certificates no gateway reported (none serves it yet, sampling is off, or it was
  // replaced since the last sample): judged from the store itself.
  const reported = new Set(certs.filter((c) => c.secret !== undefined).map((c) => `${c.secret}\u0001${c.notAfter}`));
  for (const c of stored) {
    if (reported.has(`${c.name}\u0001${c.notAfter}`)) continue;
    const notAfter = Date.parse(c.notAfter);
    const notBefore = Date.parse(c.notBefore);
    if (!Number.isFinite(notAfter)) continue;
    const resource = `TLSCertificate/${c.name}`;
    const what = `certificate of TLSCertificate ${c.name} (${c.names.length ? c.names.join(', ') : c.subject})`;
    if (notAfter <= now) out.push(f('MC0018', resource, 'spec.certificate', `${what} expired ${formatSpan(now - notAfter)} ago, at ${c.notAfter}: clients refuse the handshake`, storedFix(c.name)));
    else if (Number.isFinite(notBefore) && notBefore > now) out.push(f('MC0018', resource, 'spec.certificate', `${what} is not valid until ${c.notBefore} (in ${formatSpan(notBefore - now)}): clients refuse the handshake`, `check the clock of the host that issued it`));
    else if (notAfter - now <= within) out.push(f('MC0017', resource, 'spec.certificate', `${what} expires in ${formatSpan(notAfter - now)}, at ${c.notAfter}`, storedFix(c.name)));
  }
}

function storedFix(name: string): string {
  return `apply a renewed certificate and its key to TLSCertificate ${name} (\`meshlet apply -f\`, admin role): the gateways that use it swap it without a restart, open connections keep theirs`;
}

type AuthzResource = Extract<Resource, { kind: 'AuthorizationPolicy' }>;

/** AuthorizationPolicies: unknown services, allow rules that cannot match, deny-all, would-deny counts. */
function analyzeAuthz(input: AnalyzeInput, routes: readonly RouteResource[], hasEndpoints: (svc: string) => boolean, out: Finding[]): void {
  const policies = input.resources.filter((r): r is AuthzResource => r.kind === 'AuthorizationPolicy');
  if (policies.length === 0) return;
  const called = new Map<string, string>();
  for (const r of routes) for (const rule of r.spec.rules) for (const b of rule.backends ?? []) if (b.weight > 0 && !called.has(b.service)) called.set(b.service, `Route/${r.metadata.name}`);
  const known = (svc: string): boolean => hasEndpoints(svc) || called.has(svc) || input.resources.some((r) => r.kind === 'Service' && r.metadata.name === svc);
  const meshWide = policies.filter((p) => p.spec.service === undefined);
  for (const p of policies) {
    const key = `AuthorizationPolicy/${p.metadata.name}`;
    const svc = p.spec.service;
    if (svc !== undefined && !known(svc))
      out.push(f('MC0011', key, 'spec.service', `no sidecar serves ${JSON.stringify(svc)} and no Route or Service names it: the policy applies to nothing`, 'check the service name (sidecar --service), or delete the policy'));
    p.spec.rules.forEach((rule, i) => {
      if (rule.action !== 'ALLOW') return;
      rule.from?.forEach((src, j) =>
        src.services?.forEach((name, k) => {
          if (!name.includes('*') && !known(name))
            out.push(f('MC0012', key, `spec.rules[${i}].from[${j}].services[${k}]`, `no sidecar serves ${JSON.stringify(name)} and no Route or Service names it: this source never matches`, 'check the caller service name (its sidecar --service, or service account on Kubernetes)'));
        }),
      );
    });
  }
  // Deny-all: the default DENY (not dryRun) and no ALLOW rule for a service that a Route sends to.
  for (const [svc, via] of called) {
    const own = policies.filter((p) => p.spec.service === svc);
    const all = [...meshWide, ...own];
    if (all.length === 0) continue;
    const withDefault = own.find((p) => p.spec.defaultAction) ?? meshWide.find((p) => p.spec.defaultAction);
    const allows = all.some((p) => p.spec.rules.some((r) => r.action === 'ALLOW'));
    if (withDefault?.spec.defaultAction === 'DENY' && !withDefault.spec.dryRun && !allows)
      out.push(
        f('MC0013', `AuthorizationPolicy/${withDefault.metadata.name}`, 'spec.defaultAction', `every request to ${JSON.stringify(svc)} is denied (defaultAction DENY and no ALLOW rule), yet ${via} sends it traffic: callers get 403 RBAC`, `add ALLOW rules for ${svc}'s callers, or try it with dryRun: true first`),
      );
  }
  // dryRun policies that have been denying (counted by the sidecars since they started).
  const dry = new Set(policies.filter((p) => p.spec.dryRun).map((p) => p.metadata.name));
  const would = new Map<string, { n: number; rules: Set<string>; services: Set<string> }>();
  for (const c of input.authz ?? []) {
    if (c.result !== 'would_deny' || c.count <= 0 || !dry.has(c.policy)) continue;
    let w = would.get(c.policy);
    if (!w) would.set(c.policy, (w = { n: 0, rules: new Set(), services: new Set() }));
    w.n += c.count;
    w.rules.add(c.rule);
    w.services.add(c.service);
  }
  for (const [name, w] of would)
    out.push(
      f('MC0014', `AuthorizationPolicy/${name}`, 'spec.dryRun', `would have denied ${w.n} request(s) to ${[...w.services].join(', ')} (by ${[...w.rules].join(', ')}) since the sidecars started`, 'read the sidecars\' "would be denied" log lines; fix the policy until it would deny nothing you want, then remove dryRun'),
    );
}
