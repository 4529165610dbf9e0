/**
 * The dashboard's short memory: every `intervalMs` the control plane asks each connected sidecar
 * for its `/stats` (the same call `meshlet stat` makes: sliding 60 s windows, responses by code
 * and flag, resilience state) and keeps, per series, one point a sample for `retentionMs`
 * (default 15 minutes, so at most retentionMs / intervalMs points a series). No Prometheus needed
 * for the live charts.
 *
 * A point is the trailing 60 s window at that moment (what `meshlet stat` would have printed
 * then): req/s, success rate, p50/p90/p99 exact over the merged hdr histograms. The response
 * breakdown is different: each point carries the requests counted *since the previous sample*
 * (per sidecar, counter resets tolerated), so summing a range gives that range's responses.
 *
 * Series (by `key`):
 *   service/S           what S's own sidecars served (inbound, every caller)
 *   caller/S/C          ... from caller C (`unknown`: callers outside the mesh)
 *   route/S/R           what callers' sidecars sent to S through route R (outbound)
 *   edge/C/S            what C's sidecars sent to S (outbound, every route)
 *
 * Sampling costs the sidecars what one `meshlet stat` costs (encoding a few hdr histograms); it is
 * never on their request path. A sidecar that does not answer within the timeout is skipped for
 * that sample and listed as unreachable.
 */
import type { Logger } from 'pino';
import { systemClock, type Clock, type Timer } from '../src/core/clock';
import { fetchSidecarStats, type SidecarWindow } from '../src/observability/mesh-stats';
import { WindowMerge } from '../src/observability/metrics';
import type { SidecarResilience } from '../src/observability/mesh-stats';

export interface SeriesPoint {
  /** Sample time, ms since the epoch. */
  t: number;
  /** Requests in the trailing window, req/s, success rate (null: none), latency quantiles (ms). */
  requests: number;
  rps: number;
  successRate: number | null;
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
  /** Requests since the previous sample, by `"CODE FLAG"` (`"200 -"`, `"503 UH"`); absent when none. */
  responses?: Record<string, number>;
}

/** One sidecar's `/stats` (sidecar/index.ts `SidecarStatsReport`), as read over HTTP. */
export interface StatsReport {
  id: string;
  service: string;
  version?: string | null;
  routes: (SidecarWindow & { responses?: Record<string, number> })[];
  resilience?: SidecarResilience;
  /** A gateway's HTTPS certificates (gateway/plane.ts `GatewayCertificate`). */
  certificates?: ReportedCertificate[];
}

/** A certificate a gateway listener serves, as its `/stats` reports it. */
export interface ReportedCertificate {
  listener: string;
  /** The file; for a certificate from the store, `TLSCertificate/NAME`. */
  file: string;
  /** The TLSCertificate it came from, when from the store. */
  secret?: string;
  subject: string;
  names: string[];
  serial?: string;
  notBefore: string;
  notAfter: string;
  loadedAt?: string;
}

/** A gateway's certificate as last sampled (`GET /v1/certificates`, `meshlet check` MC0017/MC0018). */
export interface CertificateRecord extends ReportedCertificate {
  /** The gateway replica (its id) and the Gateway it serves (its service name). */
  gateway: string;
  service: string;
  /** When the gateway last reported it (ISO 8601). */
  sampledAt: string;
}

export interface Sample {
  at: number;
  reports: StatsReport[];
  unreachable: { id: string; service: string; error: string }[];
}

export interface SidecarAddress {
  id: string;
  service: string;
  address: string;
  adminPort?: number;
}

export interface HistoryOptions {
  /** The sidecars to ask (connected ones, with an admin port). */
  sidecars: () => SidecarAddress[];
  /** Default 3000 ms; 0 turns sampling off (the graph then has no data). */
  intervalMs?: number;
  /** Default 15 minutes. */
  retentionMs?: number;
  /** Per-sidecar answer timeout (default 2000 ms). */
  timeoutMs?: number;
  clock?: Clock;
  logger?: Logger;
  /** Reads one sidecar's `/stats` (tests replace it). */
  fetch?: (s: SidecarAddress, timeoutMs: number) => Promise<StatsReport>;
}

const r3 = (v: number | null): number | null => (v === null ? null : Math.round(v * 1000) / 1000);

/** An endpoint some caller's outlier detection ejected within the retention (`meshlet check` MC0015/MC0016). */
export interface EjectionRecord {
  service: string;
  endpoint: string;
  /** Ejected at the latest sample: since the first sample of this unbroken run (ms since the epoch). */
  ejectedSince: number | null;
  /** How long it has been out without a sample seeing it back (0 when it is back). */
  ejectedForMs: number;
  /** Separate ejections seen within the retention (a run of samples it was out in counts once). */
  ejections: number;
  /** The sidecars whose outlier detection ejected it at the latest sample it was out in. */
  seenBy: string[];
}

interface EjectionTrack {
  service: string;
  endpoint: string;
  since: number | undefined;
  starts: number[];
  seenBy: string[];
}

export class MeshHistory {
  readonly intervalMs: number;
  readonly retentionMs: number;
  private readonly series = new Map<string, SeriesPoint[]>();
  /** Ejected endpoints by `service endpoint`, from the sidecars' resilience reports. */
  private readonly ejected = new Map<string, EjectionTrack>();
  /**
   * Each gateway's certificates at the last sample that reached it. Kept while it stays connected
   * (a sample that misses it once does not make its certificates vanish from `meshlet check`).
   */
  private readonly certs = new Map<string, { service: string; at: number; certificates: ReportedCertificate[] }>();
  /** Per sidecar and label set, the cumulative responses at the previous sample. */
  private prev = new Map<string, Record<string, number>>();
  private last: Sample | undefined;
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly clock: Clock;
  private readonly fetch: (s: SidecarAddress, timeoutMs: number) => Promise<StatsReport>;

  constructor(private readonly opts: HistoryOptions) {
    this.intervalMs = opts.intervalMs ?? 3000;
    this.retentionMs = opts.retentionMs ?? 15 * 60_000;
    this.clock = opts.clock ?? systemClock;
    this.fetch = opts.fetch ?? ((s, timeoutMs) => fetchSidecarStats(s.address, s.adminPort as number, timeoutMs) as Promise<StatsReport>);
  }

  start(): void {
    if (this.intervalMs <= 0 || this.timer || this.stopped) return;
    const tick = (): void => {
      this.timer = this.clock.setTimeout(() => {
        void this.sample().finally(() => {
          if (!this.stopped) tick();
        });
      }, this.intervalMs);
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
    await this.running;
  }

  /** The latest sample (the graph's "last minute"), if any was taken. */
  latest(): Sample | undefined {
    return this.last;
  }

  /** Takes one sample now (the timer calls it; tests and the first page load may too). */
  sample(): Promise<void> {
    return (this.running ??= this.doSample().finally(() => (this.running = undefined)));
  }

  private async doSample(): Promise<void> {
    const timeoutMs = this.opts.timeoutMs ?? 2000;
    const unreachable: Sample['unreachable'] = [];
    const reports: StatsReport[] = [];
    const asked = this.opts.sidecars();
    await Promise.all(
      asked.map(async (s) => {
        if (!s.adminPort) return void unreachable.push({ id: s.id, service: s.service, error: 'no admin port registered' });
        try {
          const r = await this.fetch(s, timeoutMs);
          reports.push({ ...r, id: s.id, service: s.service });
        } catch (err) {
          unreachable.push({ id: s.id, service: s.service, error: (err as Error).message });
        }
      }),
    );
    reports.sort((a, b) => a.id.localeCompare(b.id));
    unreachable.sort((a, b) => a.id.localeCompare(b.id));
    const connected = new Set(asked.map((s) => s.id));
    for (const id of this.certs.keys()) if (!connected.has(id)) this.certs.delete(id);
    this.record({ at: this.clock.now(), reports, unreachable });
  }

  /** Adds a sample: one point to each series it has data for; drops points older than the retention. */
  record(s: Sample): void {
    this.last = s;
    const merges = new Map<string, { m: WindowMerge; responses: Record<string, number> }>();
    const add = (key: string, w: SidecarWindow, delta: Record<string, number> | undefined): void => {
      let e = merges.get(key);
      if (!e) merges.set(key, (e = { m: new WindowMerge(), responses: {} }));
      e.m.add(w);
      if (delta) for (const k in delta) e.responses[k] = (e.responses[k] ?? 0) + (delta[k] as number);
    };
    const prev = new Map<string, Record<string, number>>();
    for (const r of s.reports) {
      for (const w of r.routes) {
        const id = `${r.id}\u0001${w.direction}\u0001${w.source}\u0001${w.destination}\u0001${w.route}`;
        // Cluster-mode sidecars list each worker's windows: sum the counters of a label set first.
        const cur = { ...(prev.get(id) ?? {}) };
        for (const k in w.responses ?? {}) cur[k] = (cur[k] ?? 0) + (w.responses![k] as number);
        prev.set(id, cur);
      }
    }
    const deltas = new Map<string, Record<string, number>>();
    for (const [id, cur] of prev) {
      const before = this.prev.get(id);
      const d: Record<string, number> = {};
      for (const k in cur) {
        const now = cur[k] as number;
        const was = before?.[k] ?? 0;
        // A counter that went down: the sidecar restarted; everything now counted is new.
        const n = now >= was ? now - was : now;
        if (n > 0) d[k] = n;
      }
      deltas.set(id, d);
    }
    const seen = new Set<string>();
    for (const r of s.reports) {
      for (const w of r.routes) {
        const id = `${r.id}\u0001${w.direction}\u0001${w.source}\u0001${w.destination}\u0001${w.route}`;
        // Each label set's delta once, even when several workers listed it.
        const delta = seen.has(id) ? undefined : deltas.get(id);
        seen.add(id);
        if (w.direction === 'inbound') {
          add(`service/${r.service}`, w, delta);
          add(`caller/${r.service}/${w.source}`, w, delta);
        } else {
          add(`route/${w.destination}/${w.route}`, w, delta);
          add(`edge/${w.source}/${w.destination}`, w, delta);
        }
      }
    }
    this.prev = prev;
    for (const [key, e] of merges) {
      const m = e.m;
      const p: SeriesPoint = {
        t: s.at,
        requests: m.count,
        rps: Math.round(m.rps * 100) / 100,
        successRate: r3(m.successRate()),
        p50Ms: r3(m.quantileMs(0.5)),
        p90Ms: r3(m.quantileMs(0.9)),
        p99Ms: r3(m.quantileMs(0.99)),
      };
      if (Object.keys(e.responses).length) p.responses = e.responses;
      let list = this.series.get(key);
      if (!list) this.series.set(key, (list = []));
      list.push(p);
    }
    const cutoff = s.at - this.retentionMs;
    this.trackEjections(s, cutoff);
    for (const r of s.reports) if (Array.isArray(r.certificates)) this.certs.set(r.id, { service: r.service, at: s.at, certificates: r.certificates });
    for (const [key, list] of this.series) {
      let drop = 0;
      while (drop < list.length && (list[drop] as SeriesPoint).t < cutoff) drop++;
      if (drop) list.splice(0, drop);
      if (list.length === 0) this.series.delete(key);
    }
  }

  /**
   * Ejections across samples: an endpoint listed as ejected by any sidecar starts a run (one
   * ejection) at the first sample that lists it, and the run lasts while every sample lists it.
   * The sample interval is the resolution (an ejection shorter than it may go unseen).
   */
  private trackEjections(s: Sample, cutoff: number): void {
    const now = new Map<string, string[]>();
    for (const r of s.reports)
      for (const e of r.resilience?.ejected ?? [])
        for (const ep of e.endpoints) {
          const k = `${e.service} ${ep}`;
          const by = now.get(k);
          if (by) by.push(r.id);
          else now.set(k, [r.id]);
        }
    for (const [k, by] of now) {
      let tr = this.ejected.get(k);
      if (!tr) {
        const i = k.indexOf(' ');
        this.ejected.set(k, (tr = { service: k.slice(0, i), endpoint: k.slice(i + 1), since: undefined, starts: [], seenBy: [] }));
      }
      if (tr.since === undefined) {
        tr.since = s.at;
        tr.starts.push(s.at);
      }
      tr.seenBy = by;
    }
    for (const [k, tr] of this.ejected) {
      if (!now.has(k)) tr.since = undefined;
      while (tr.starts.length && (tr.starts[0] as number) < cutoff && tr.since !== tr.starts[0]) tr.starts.shift();
      if (tr.since === undefined && tr.starts.length === 0) this.ejected.delete(k);
    }
  }

  /** Endpoints ejected now or within the retention, longest out first. */
  ejections(): EjectionRecord[] {
    const at = this.last?.at ?? this.clock.now();
    return [...this.ejected.values()]
      .map((tr) => ({
        service: tr.service,
        endpoint: tr.endpoint,
        ejectedSince: tr.since ?? null,
        ejectedForMs: tr.since === undefined ? 0 : at - tr.since,
        ejections: tr.starts.length,
        seenBy: [...tr.seenBy].sort(),
      }))
      .sort((a, b) => b.ejectedForMs - a.ejectedForMs || b.ejections - a.ejections || a.endpoint.localeCompare(b.endpoint));
  }

  /** The certificates the connected gateways serve, as last sampled, soonest to expire first. */
  certificates(): CertificateRecord[] {
    const out: CertificateRecord[] = [];
    for (const [gateway, e] of this.certs) for (const c of e.certificates) out.push({ ...c, gateway, service: e.service, sampledAt: new Date(e.at).toISOString() });
    return out.sort((a, b) => Date.parse(a.notAfter) - Date.parse(b.notAfter) || a.gateway.localeCompare(b.gateway) || a.listener.localeCompare(b.listener) || a.file.localeCompare(b.file));
  }

  /** The points of one series (oldest first), or [] when it has none in the retention. */
  points(key: string): readonly SeriesPoint[] {
    return this.series.get(key) ?? [];
  }

  /** Series keys starting with `prefix` (e.g. `route/catalog/`). */
  keys(prefix: string): string[] {
    return [...this.series.keys()].filter((k) => k.startsWith(prefix)).sort();
  }

  /** Series count (for tests and the bound). */
  get size(): number {
    return this.series.size;
  }
}

/** Sums the response breakdown of a range of points. */
export function sumResponses(points: readonly SeriesPoint[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of points) for (const k in p.responses ?? {}) out[k] = (out[k] ?? 0) + (p.responses![k] as number);
  return out;
}
