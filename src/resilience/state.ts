/**
 * The resilience state that outlives snapshots: per destination service (requests in flight,
 * retry budget, connection limits, outlier detector, health checker, the ejection-aware pickers)
 * and per route rule (the circuit breaker). `apply()` reconfigures it for each new snapshot,
 * keeping counters and breaker states of what is still there.
 */
import type { Clock } from '../core/clock';
import type { ConnectionLimits } from '../http/upstream-types';
import { buildPicker, endpointKey } from '../lb';
import { subsetEndpoints } from '../snapshot/compile';
import { type CompiledRule, type CompiledService, type CompiledSnapshot, type EndpointStats, type Picker } from '../policy';
import { CircuitBreaker, type BreakerState } from './breaker';
import { HealthChecker } from './health-check';
import { OutlierDetector } from './outlier';
import { RetryBudget } from './retry';

export interface ResilienceEvents {
  breaker?(route: string, from: BreakerState, to: BreakerState): void;
  ejected?(service: string, endpoint: string, reason: string): void;
}

export class ServiceState {
  /** Requests (tries included) in flight to this service. */
  active = 0;
  /** Retries in flight. */
  activeRetries = 0;
  readonly budget: RetryBudget;
  maxRequests: number | undefined;
  maxRetries: number | undefined;
  /** Undefined when the policy sets no connection limits. */
  limits: ConnectionLimits | undefined;
  idleMs: number | undefined;
  private svc!: CompiledService;
  private outlier: OutlierDetector | undefined;
  private health: HealthChecker | undefined;
  private pickers = new Map<string, Picker | undefined>();
  private pickerVersion = -1;
  private readonly pending = { n: 0 };

  constructor(
    readonly name: string,
    private readonly clock: Clock,
    private readonly stats: EndpointStats,
    private readonly random: () => number,
    private readonly events: ResilienceEvents,
  ) {
    this.budget = new RetryBudget(clock);
  }

  configure(svc: CompiledService): void {
    this.svc = svc;
    const p = svc.policy;
    const cb = p?.circuitBreaker;
    this.maxRequests = cb?.maxRequests;
    this.maxRetries = cb?.maxRetries;
    this.limits =
      cb && (cb.maxConnections !== undefined || cb.maxPendingRequests !== undefined)
        ? { maxConnections: cb.maxConnections, maxPendingRequests: cb.maxPendingRequests, pending: this.pending }
        : undefined;
    this.idleMs = p?.idleTimeoutMs;
    const keys = svc.endpoints.map(endpointKey);
    if (p?.outlierDetection || p?.healthCheck) {
      this.outlier ??= new OutlierDetector(this.clock, (ep, reason) => this.events.ejected?.(this.name, ep, reason));
      this.outlier.configure(p.outlierDetection, keys);
    } else {
      this.outlier?.close();
      this.outlier = undefined;
    }
    if (p?.healthCheck) {
      const od = this.outlier as OutlierDetector;
      this.health ??= new HealthChecker(p.healthCheck, this.clock, (k, healthy) => od.setHealthy(k, healthy));
      this.health.configure(
        p.healthCheck,
        svc.endpoints.map((e) => ({ key: endpointKey(e), address: e.address, port: e.port })),
      );
    } else {
      this.health?.close();
      this.health = undefined;
    }
    this.pickers.clear();
    this.pickerVersion = -1;
  }

  /** The picker for a subset, over the endpoints not ejected (all of them in panic mode). */
  picker(subset: string | undefined): Picker | undefined {
    const od = this.outlier;
    if (!od) return this.svc.picker(subset);
    if (od.version !== this.pickerVersion) {
      this.pickers.clear();
      this.pickerVersion = od.version;
    }
    const k = subset ?? '';
    if (this.pickers.has(k)) return this.pickers.get(k);
    const svc = this.svc;
    let eps = svc.endpoints;
    if (subset !== undefined) {
      const def = svc.policy?.subsets.find((s) => s.name === subset);
      if (!def) {
        this.pickers.set(k, undefined);
        return undefined;
      }
      eps = subsetEndpoints(eps, def.labels);
    }
    const p = buildPicker({ endpoints: od.filter(eps, endpointKey), config: svc.policy?.loadBalancer ?? { type: 'round-robin' }, stats: this.stats, random: this.random });
    this.pickers.set(k, p);
    return p;
  }

  /** The outcome of one try at `key`, for outlier detection. */
  report(key: string, outcome: 'success' | 'http-5xx' | 'gateway'): void {
    this.outlier?.report(key, outcome);
  }

  isEjected(key: string): boolean {
    return this.outlier?.isEjected(key) ?? false;
  }

  /** The endpoints (`address:port`) ejected now, by outlier detection or a failing health check. */
  ejected(): string[] {
    const od = this.outlier;
    if (!od) return [];
    return this.svc.endpoints.map(endpointKey).filter((k) => od.isEjected(k));
  }

  close(): void {
    this.outlier?.close();
    this.health?.close();
  }
}

export class ResilienceState {
  private readonly services = new Map<string, ServiceState>();
  private readonly breakers = new Map<string, CircuitBreaker>();
  private readonly boundBreakers = new WeakMap<CompiledRule, CircuitBreaker>();

  constructor(
    private readonly clock: Clock,
    private readonly stats: EndpointStats,
    private readonly random: () => number = Math.random,
    private readonly events: ResilienceEvents = {},
  ) {}

  apply(snap: CompiledSnapshot): void {
    for (const [name, svc] of snap.services) {
      let st = this.services.get(name);
      if (!st) this.services.set(name, (st = new ServiceState(name, this.clock, this.stats, this.random, this.events)));
      st.configure(svc);
    }
    for (const [name, st] of this.services)
      if (!snap.services.has(name)) {
        st.close();
        this.services.delete(name);
      }
  }

  service(name: string): ServiceState | undefined {
    return this.services.get(name);
  }

  /**
   * The breaker of a route rule that has one: created on first use, kept across snapshots (by
   * the rule's name), and bound to each compiled rule once, so a request does one WeakMap lookup.
   */
  breaker(rule: CompiledRule): CircuitBreaker | undefined {
    const cfg = rule.breaker;
    if (!cfg) return undefined;
    let b = this.boundBreakers.get(rule);
    if (b) return b;
    const name = rule.statName;
    b = this.breakers.get(name);
    if (!b) this.breakers.set(name, (b = new CircuitBreaker(cfg, this.clock, (from, to) => this.events.breaker?.(name, from, to))));
    else b.configure(cfg);
    this.boundBreakers.set(rule, b);
    return b;
  }

  /** Per destination service, the endpoints ejected now (the dashboard's graph and service page). */
  ejections(): { service: string; endpoints: string[] }[] {
    const out: { service: string; endpoints: string[] }[] = [];
    for (const [service, st] of this.services) {
      const endpoints = st.ejected();
      if (endpoints.length) out.push({ service, endpoints });
    }
    return out;
  }

  breakerStates(): { route: string; state: BreakerState }[] {
    return [...this.breakers].map(([route, b]) => ({ route, state: b.state() }));
  }

  close(): void {
    for (const s of this.services.values()) s.close();
    this.services.clear();
  }
}
