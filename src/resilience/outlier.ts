/**
 * Outlier detection for one service: passive (consecutive 5xx, consecutive gateway failures,
 * failure percentage per interval) and active (health checks mark endpoints down through
 * `setHealthy`). An ejection lasts `baseEjectionTime` x the number of times the endpoint has been
 * ejected; an endpoint that stays healthy for an interval has that multiplier decreased.
 * `maxEjectionPercent` caps how many are out at once (at least one may always go), and below
 * `panicThreshold`% healthy endpoints the filter gives up and uses all of them.
 *
 * It does not pick: `filter()` returns the endpoints to balance over, and its `version` changes
 * whenever that set may have changed, so the caller rebuilds its (immutable) pickers only then.
 */
import type { Clock, Timer } from '../core/clock';
import type { Endpoint, OutlierDetection } from '../policy/types';

export type Outcome = 'success' | 'http-5xx' | 'gateway';

interface HostState {
  consecutive5xx: number;
  consecutiveGateway: number;
  requests: number;
  failures: number;
  ejections: number;
  ejectedUntil: number;
  /** Set false by active health checking. */
  healthy: boolean;
}

export class OutlierDetector {
  private readonly hosts = new Map<string, HostState>();
  private cfg: OutlierDetection | undefined;
  private timer: Timer | undefined;
  private keys: readonly string[] = [];
  /** Changes whenever the set of usable endpoints may have changed. */
  version = 0;
  /** Ejections so far, for metrics. */
  ejectionsTotal = 0;

  constructor(
    private readonly clock: Clock,
    private readonly onEject?: (key: string, reason: string) => void,
  ) {}

  configure(cfg: OutlierDetection | undefined, endpointKeys: readonly string[]): void {
    this.cfg = cfg;
    this.keys = endpointKeys;
    const keep = new Set(endpointKeys);
    for (const k of [...this.hosts.keys()]) if (!keep.has(k)) this.hosts.delete(k);
    for (const k of endpointKeys) if (!this.hosts.has(k)) this.hosts.set(k, newHost());
    this.timer?.cancel();
    this.timer = undefined;
    if (cfg) this.schedule();
    this.version++;
  }

  close(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** The outcome of one request to `key`. */
  report(key: string, outcome: Outcome): void {
    const cfg = this.cfg;
    if (!cfg) return;
    const h = this.hosts.get(key);
    if (!h) return;
    h.requests++;
    if (outcome === 'success') {
      h.consecutive5xx = 0;
      h.consecutiveGateway = 0;
      return;
    }
    h.failures++;
    h.consecutive5xx++;
    if (outcome === 'gateway') h.consecutiveGateway++;
    if (cfg.consecutive5xx !== undefined && h.consecutive5xx >= cfg.consecutive5xx) this.eject(key, h, 'consecutive-5xx');
    else if (cfg.consecutiveGatewayErrors !== undefined && h.consecutiveGateway >= cfg.consecutiveGatewayErrors) this.eject(key, h, 'consecutive-gateway-errors');
  }

  /** Active health checking's verdict. */
  setHealthy(key: string, healthy: boolean): void {
    const h = this.hosts.get(key);
    if (!h || h.healthy === healthy) return;
    h.healthy = healthy;
    this.version++;
  }

  isEjected(key: string): boolean {
    const h = this.hosts.get(key);
    return !!h && (!h.healthy || h.ejectedUntil > this.clock.monotonic());
  }

  /** The endpoints to balance over: the usable ones, or all of them in panic mode. */
  filter(endpoints: readonly Endpoint[], keyOf: (e: Endpoint) => string): readonly Endpoint[] {
    const now = this.clock.monotonic();
    const usable = endpoints.filter((e) => {
      const h = this.hosts.get(keyOf(e));
      return !h || (h.healthy && h.ejectedUntil <= now);
    });
    if (usable.length === endpoints.length) return endpoints;
    const panic = this.cfg?.panicThreshold ?? 50;
    if (usable.length === 0 || (usable.length * 100) / endpoints.length < panic) return endpoints;
    return usable;
  }

  private eject(key: string, h: HostState, reason: string): void {
    const cfg = this.cfg as OutlierDetection;
    const now = this.clock.monotonic();
    if (h.ejectedUntil > now) return;
    let out = 0;
    for (const x of this.hosts.values()) if (x.ejectedUntil > now) out++;
    const max = Math.max(1, Math.floor((this.keys.length * cfg.maxEjectionPercent) / 100));
    if (cfg.maxEjectionPercent === 0 || out + 1 > max) return;
    h.ejections++;
    h.ejectedUntil = now + cfg.baseEjectionTimeMs * h.ejections;
    h.consecutive5xx = 0;
    h.consecutiveGateway = 0;
    this.ejectionsTotal++;
    this.version++;
    this.onEject?.(key, reason);
    // Come back on time even if no interval tick falls there.
    this.clock.setTimeout(() => this.version++, cfg.baseEjectionTimeMs * h.ejections);
  }

  private schedule(): void {
    const cfg = this.cfg as OutlierDetection;
    this.timer = this.clock.setTimeout(() => {
      this.tick();
      if (this.cfg) this.schedule();
    }, cfg.intervalMs);
  }

  /** Once per interval: failure-percentage ejection, and healthy hosts earn their multiplier down. */
  tick(): void {
    const cfg = this.cfg;
    if (!cfg) return;
    const now = this.clock.monotonic();
    const fp = cfg.failurePercentage;
    if (fp) {
      const eligible = [...this.hosts].filter(([, h]) => h.requests >= fp.requestVolume);
      if (eligible.length >= fp.minimumHosts)
        for (const [k, h] of eligible) if ((h.failures * 100) / h.requests >= fp.threshold) this.eject(k, h, 'failure-percentage');
    }
    for (const h of this.hosts.values()) {
      if (h.ejectedUntil <= now && h.ejections > 0 && h.failures === 0) h.ejections--;
      h.requests = 0;
      h.failures = 0;
    }
    this.version++;
  }
}

function newHost(): HostState {
  return { consecutive5xx: 0, consecutiveGateway: 0, requests: 0, failures: 0, ejections: 0, ejectedUntil: 0, healthy: true };
}
