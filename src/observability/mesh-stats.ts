/**
 * The mesh-wide view behind `meshlet stat` and `meshlet top`: the control plane fetches each
 * connected sidecar's `/stats` (per-route sliding windows, hdr histograms encoded) and merges
 * them. Latency quantiles are exact over the merged histograms, not averages of quantiles.
 *
 * Per service: what the service's own sidecars saw inbound (requests it served). Per route: what
 * callers' sidecars saw outbound, by destination service and route.
 */
import * as http from 'node:http';
import { WindowMerge } from './metrics';

export interface SidecarWindow {
  direction: 'inbound' | 'outbound';
  source: string;
  destination: string;
  route: string;
  count: number;
  errors: number;
  seconds: number;
  histogram: string;
}

/** An AuthorizationPolicy decision count of a sidecar (since it started), as `/stats` reports it. */
export interface AuthzDecisionCount {
  policy: string;
  rule: string;
  action: string;
  result: string;
  count: number;
}

export interface SidecarReport {
  id: string;
  service: string;
  routes: SidecarWindow[];
  authz?: AuthzDecisionCount[];
}

/** AuthorizationPolicy decisions of a service's sidecars, summed (counts since each sidecar started). */
export interface AuthzRow extends AuthzDecisionCount {
  service: string;
  sidecars: number;
}

export interface StatRow {
  /** The service (for per-service rows) or the destination service (per-route rows). */
  service: string;
  route?: string;
  /** Sidecars that contributed. */
  sidecars: number;
  requests: number;
  successRate: number | null;
  rps: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface MeshStats {
  at: string;
  services: StatRow[];
  routes: StatRow[];
  /** AuthorizationPolicy decisions per service, policy, rule and result (absent from older control planes). */
  authz?: AuthzRow[];
  /** Sidecars that could not be asked, with why. */
  unreachable: { id: string; service: string; error: string }[];
}

function row(service: string, route: string | undefined, m: WindowMerge, sidecars: number): StatRow {
  const r3 = (v: number | null): number | null => (v === null ? null : Math.round(v * 1000) / 1000);
  return {
    service,
    ...(route !== undefined ? { route } : {}),
    sidecars,
    requests: m.count,
    successRate: r3(m.successRate()),
    rps: Math.round(m.rps * 100) / 100,
    p50Ms: r3(m.quantileMs(0.5)),
    p99Ms: r3(m.quantileMs(0.99)),
  };
}

/** Merges sidecar reports into per-service and per-route rows, sorted by name. */
export function aggregate(reports: SidecarReport[], unreachable: MeshStats['unreachable'] = [], now = new Date()): MeshStats {
  const services = new Map<string, { m: WindowMerge; ids: Set<string> }>();
  const routes = new Map<string, { service: string; route: string; m: WindowMerge; ids: Set<string> }>();
  for (const r of reports) {
    for (const w of r.routes) {
      if (w.direction === 'inbound') {
        let s = services.get(r.service);
        if (!s) services.set(r.service, (s = { m: new WindowMerge(), ids: new Set() }));
        s.m.add(w);
        s.ids.add(r.id);
      } else {
        const k = `${w.destination}\u0001${w.route}`;
        let s = routes.get(k);
        if (!s) routes.set(k, (s = { service: w.destination, route: w.route, m: new WindowMerge(), ids: new Set() }));
        s.m.add(w);
        s.ids.add(r.id);
      }
    }
  }
  const authz = new Map<string, AuthzRow & { ids: Set<string> }>();
  for (const r of reports)
    for (const d of Array.isArray(r.authz) ? r.authz : []) {
      const k = [r.service, d.policy, d.rule, d.action, d.result].join('\u0001');
      let a = authz.get(k);
      if (!a) authz.set(k, (a = { service: r.service, policy: d.policy, rule: d.rule, action: d.action, result: d.result, count: 0, sidecars: 0, ids: new Set() }));
      a.count += Number(d.count) || 0;
      a.ids.add(r.id);
    }
  const byName = (a: StatRow, b: StatRow): number => (a.service + '\u0001' + (a.route ?? '')).localeCompare(b.service + '\u0001' + (b.route ?? ''));
  return {
    at: now.toISOString(),
    services: [...services].map(([name, s]) => row(name, undefined, s.m, s.ids.size)).sort(byName),
    routes: [...routes.values()].map((s) => row(s.service, s.route, s.m, s.ids.size)).sort(byName),
    authz: [...authz.values()]
      .map(({ ids, ...a }) => ({ ...a, sidecars: ids.size }))
      .sort((a, b) => [a.service, a.policy, a.rule, a.result].join('\u0001').localeCompare([b.service, b.policy, b.rule, b.result].join('\u0001'))),
    unreachable,
  };
}

/** GETs a sidecar's `/stats` (JSON), bounded by `timeoutMs`. */
export function fetchSidecarStats(host: string, port: number, timeoutMs = 2000): Promise<SidecarReport> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: '/stats', timeout: timeoutMs, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`/stats answered ${res.statusCode}`));
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as SidecarReport;
          if (!Array.isArray(body.routes)) return reject(new Error('/stats: no routes array'));
          resolve(body);
        } catch (err) {
          reject(new Error(`/stats: invalid JSON: ${(err as Error).message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** Asks every sidecar in parallel; the unreachable are listed, never fatal. */
export async function collectMeshStats(sidecars: { id: string; service: string; address: string; adminPort?: number }[], timeoutMs = 2000): Promise<MeshStats> {
  const unreachable: MeshStats['unreachable'] = [];
  const reports: SidecarReport[] = [];
  await Promise.all(
    sidecars.map(async (s) => {
      if (!s.adminPort) {
        unreachable.push({ id: s.id, service: s.service, error: 'no admin port registered' });
        return;
      }
      try {
        const r = await fetchSidecarStats(s.address, s.adminPort, timeoutMs);
        reports.push({ ...r, id: s.id, service: s.service });
      } catch (err) {
        unreachable.push({ id: s.id, service: s.service, error: (err as Error).message });
      }
    }),
  );
  unreachable.sort((a, b) => a.id.localeCompare(b.id));
  return aggregate(reports, unreachable);
}

/** A sidecar's resilience state as its `/stats` reports it (sidecar/index.ts), read by the dashboard's history. */
export interface SidecarResilience {
  breakers: { route: string; state: 'closed' | 'open' | 'half-open' }[];
  ejected: { service: string; endpoints: string[] }[];
  rateLimits: { limit: string; scope: 'local' | 'global'; allowed: number; limited: number; failedOpen: number; failedClosed: number }[];
}
