/**
 * The sidecar's metrics, as the proxy and the listeners see them: the method names stay
 * (`record`, `refused`, `render`, `acks`, `nacks`, ...), the storage is the pre-bound registry
 * of `src/observability` (golden metrics per direction/source/destination/route, hdr quantiles,
 * process metrics). `record(direction, status, flag, route?)` counts a request the mesh answered
 * itself; forwarded requests are recorded through `observer.begin(...).end(...)`.
 */
import type { Clock } from '../core/clock';
import { MeshMetrics, type Direction, type RouteHandle } from './mesh-metrics';
import type { Format } from './metrics';
import { Observer, type ObserverOptions } from './observer';
import { registerProcessMetrics, type ProcessMetrics } from './process';

export interface ProxyStatsOptions extends Omit<ObserverOptions, 'metrics'> {
  service?: string;
  clock?: Clock;
  /** Process metrics (CPU, RSS, event-loop lag, GC); default on. */
  processMetrics?: boolean;
}

export class ProxyStats {
  readonly metrics: MeshMetrics;
  readonly observer: Observer;
  private readonly upstream = { http1: 0, http2: 0 };
  private proc?: ProcessMetrics;
  private version = '';
  private appliedAt = 0;

  constructor(opts: ProxyStatsOptions = {}) {
    this.metrics = new MeshMetrics({ service: opts.service ?? 'unknown', clock: opts.clock });
    this.observer = new Observer({ ...opts, metrics: this.metrics });
    this.metrics.upstreamPools.onCollect((g) => {
      g.labels('http1').set(this.upstream.http1);
      g.labels('http2').set(this.upstream.http2);
    });
    if (opts.processMetrics !== false) this.proc = registerProcessMetrics(this.metrics.registry);
  }

  /** Counts a request (status, response flag) on its route's handle, or the direction's default. */
  record(direction: Direction, status: number, flag?: string, route?: RouteHandle): void {
    (route ?? this.metrics.unrouted(direction)).count(status, flag);
  }

  /** The pre-bound handle for a route to a destination service. */
  route(direction: Direction, destination: string, route: string): RouteHandle {
    return this.metrics.handle(direction, destination, route);
  }

  refused(reason: string): void {
    this.metrics.refusals.labels(reason).inc();
  }

  /** Requests counted so far, optionally for one direction. */
  total(direction?: Direction): number {
    let n = 0;
    for (const h of this.metrics.allHandles()) if (!direction || h.direction === direction) n += h.total;
    return n;
  }

  /** WebSocket (upgraded) connections open now, and ever opened (src/http/websocket.ts). */
  get websocketsOpen(): number {
    return this.metrics.websocketsOpen.labels().value;
  }
  set websocketsOpen(v: number) {
    this.metrics.websocketsOpen.labels().value = v;
  }
  get websocketsTotal(): number {
    return this.metrics.websocketsTotal.labels().value;
  }
  set websocketsTotal(v: number) {
    this.metrics.websocketsTotal.labels().value = v;
  }

  get acks(): number {
    return this.metrics.acks.labels().value;
  }
  set acks(v: number) {
    this.metrics.acks.labels().value = v;
  }
  get nacks(): number {
    return this.metrics.nacks.labels().value;
  }
  set nacks(v: number) {
    this.metrics.nacks.labels().value = v;
  }
  get snapshotVersion(): string {
    return this.version;
  }
  set snapshotVersion(v: string) {
    this.version = v;
    this.metrics.setPolicy(v, this.appliedAt);
  }
  get snapshotAppliedAt(): number {
    return this.appliedAt;
  }
  set snapshotAppliedAt(ms: number) {
    this.appliedAt = ms;
    this.metrics.setPolicy(this.version, ms);
  }

  render(
    extra: { upstreamHttp1Pools: number; upstreamHttp2Sessions: number; breakers?: readonly { route: string; state: 'closed' | 'open' | 'half-open' }[] },
    format: Format = 'prometheus',
  ): string {
    this.upstream.http1 = extra.upstreamHttp1Pools;
    this.upstream.http2 = extra.upstreamHttp2Sessions;
    // Breakers move open -> half-open with time, not on a call: read their state at scrape time.
    for (const b of extra.breakers ?? []) this.metrics.breaker(b.route, b.state);
    return this.metrics.registry.render(format);
  }

  close(): void {
    this.proc?.stop();
  }
}
