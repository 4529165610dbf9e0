/**
 * The sidecar's golden metrics, on the pre-bound registry (metrics.ts).
 *
 * A `RouteHandle` is bound once per (direction, source, destination, route): it holds the
 * children of every family for that label set, and a lazily filled array of request counters
 * indexed by `status * FLAG_SLOTS + flag index`. Recording a request is then a few array
 * indexes and adds, plus one hdr `recordValue`.
 *
 * Every label value is bounded: service and route names come from the compiled snapshot, codes
 * are 100..599 (anything else is counted as 0), flags are the mesh's own set.
 */
import type { Clock } from '../core/clock';
import { Flags } from '../core/errors';
import { BODY_TIMEOUT_FLAG, OVERLOAD_FLAG } from '../http/overload';
import { Registry, type CounterChild, type GaugeChild, type HistogramChild, type WindowChild } from './metrics';

export type Direction = 'inbound' | 'outbound';

/** The response flags a counter can carry; anything else is counted as `other`. */
const FLAG_LIST = ['-', ...Object.values(Flags), 'DC', 'UH', OVERLOAD_FLAG, BODY_TIMEOUT_FLAG, 'other'];
const FLAG_INDEX = new Map<string, number>();
for (const f of FLAG_LIST) if (!FLAG_INDEX.has(f)) FLAG_INDEX.set(f, FLAG_INDEX.size);
const FLAG_NAMES = [...FLAG_INDEX.keys()];
const FLAG_SLOTS = FLAG_NAMES.length;
const OTHER_FLAG = FLAG_INDEX.get('other') as number;

function flagIndex(flag: string | undefined): number {
  if (!flag) return 0;
  return FLAG_INDEX.get(flag) ?? OTHER_FLAG;
}

/**
 * Several decisions on one request (`UF,URX`: a connect failure, then retries exhausted) keep
 * their own label value when every part is a known flag: there are few such combinations in
 * practice, and at most MAX_COMBOS distinct ones are kept (any more count as `other`).
 */
const MAX_COMBOS = 64;
const COMBOS = new Map<string, boolean>();
function isKnownCombination(flag: string): boolean {
  let ok = COMBOS.get(flag);
  if (ok === undefined) {
    ok = COMBOS.size < MAX_COMBOS && flag.includes(',') && flag.split(',').every((f) => f !== 'other' && f !== '-' && FLAG_INDEX.has(f));
    if (COMBOS.size < MAX_COMBOS * 4) COMBOS.set(flag, ok);
  }
  return ok;
}

export const UNKNOWN = 'unknown';

export class RouteHandle {
  private readonly requests: (CounterChild | undefined)[] = [];
  /** Counters for flag combinations (`UF,URX`), by `code flags`. */
  private combos?: Map<string, CounterChild>;
  /** Requests counted on this handle. */
  total = 0;
  /** The access log's route and destination fields, encoded once (observer.ts). */
  accessLogFields?: Buffer;
  constructor(
    private readonly m: MeshMetrics,
    readonly direction: Direction,
    readonly source: string,
    readonly destination: string,
    readonly route: string,
    readonly duration: HistogramChild,
    readonly window: WindowChild,
    readonly requestBytes: CounterChild,
    readonly responseBytes: CounterChild,
    readonly active: GaugeChild,
  ) {}

  /** Requests counted so far by `"CODE FLAG"` (`"200 -"`, `"503 UH"`): the dashboard's response breakdown. */
  responses(): Record<string, number> {
    const out: Record<string, number> = {};
    this.requests.forEach((c, i) => {
      if (c && c.value > 0) out[`${Math.floor(i / FLAG_SLOTS)} ${FLAG_NAMES[i % FLAG_SLOTS]}`] = c.value;
    });
    return out;
  }

  /** Counts one request with its status code and flag. */
  count(status: number, flag?: string): void {
    const code = status >= 100 && status <= 599 ? status | 0 : 0;
    const fi = flagIndex(flag);
    if (fi === OTHER_FLAG && flag !== undefined && isKnownCombination(flag)) return this.countCombination(code, flag);
    const i = code * FLAG_SLOTS + fi;
    let c = this.requests[i];
    if (c === undefined) {
      c = this.m.requests.labels(
        this.direction,
        this.source,
        this.destination,
        this.route,
        code === 0 ? 'unknown' : `${String(code).charAt(0)}xx`,
        String(code),
        FLAG_NAMES[flagIndex(flag)] as string,
      );
      this.requests[i] = c;
    }
    c.value++;
    this.total++;
  }

  private countCombination(code: number, flag: string): void {
    const key = `${code} ${flag}`;
    const combos = (this.combos ??= new Map());
    let c = combos.get(key);
    if (c === undefined) {
      c = this.m.requests.labels(this.direction, this.source, this.destination, this.route, code === 0 ? 'unknown' : `${String(code).charAt(0)}xx`, String(code), flag);
      combos.set(key, c);
    }
    c.value++;
    this.total++;
  }

  /** Records a finished request: counter, duration (seconds) twice, bytes. */
  complete(status: number, flag: string | undefined, seconds: number, requestBytes: number, responseBytes: number): void {
    this.count(status, flag);
    this.duration.observe(seconds);
    this.window.observe(seconds, status >= 500 || status < 100);
    this.requestBytes.value += requestBytes;
    this.responseBytes.value += responseBytes;
  }
}

export interface MeshMetricsOptions {
  /** This sidecar's service: the source of outbound requests and destination of inbound ones. */
  service: string;
  clock?: Clock;
  /** hdr sliding window (default 60 s in 6 slices). */
  windowMs?: number;
}

export class MeshMetrics {
  readonly registry = new Registry();
  readonly service: string;
  readonly requests;
  readonly duration;
  readonly window;
  readonly requestBytes;
  readonly responseBytes;
  readonly active;
  readonly refusals;
  readonly retries;
  readonly grpcRequests;
  readonly timeouts;
  readonly breakerState;
  readonly ejections;
  readonly mirrored;
  readonly websocketsOpen;
  readonly websocketsTotal;
  readonly acks;
  readonly nacks;
  readonly policyInfo;
  readonly policyApplied;
  readonly policyAge;
  readonly upstreamPools;
  private readonly handles = new Map<string, RouteHandle>();
  private policyVersion = '';
  private policyAppliedAt = 0;

  constructor(opts: MeshMetricsOptions) {
    const r = this.registry;
    this.service = opts.service;
    const L = ['direction', 'source', 'destination', 'route'];
    this.requests = r.counter('meshlet_requests_total', 'Requests handled, by direction, source and destination service, route, response code and response flag.', [
      ...L,
      'response_code_class',
      'response_code',
      'response_flags',
    ]);
    this.duration = r.histogram('meshlet_request_duration_seconds', 'Request duration, from the request arriving to the response ending, in seconds.', L);
    this.window = r.windowSummary(
      'meshlet_request_duration_window_seconds',
      'Precise request-duration quantiles (hdr histogram) over a sliding window, in seconds.',
      L,
      { clock: opts.clock, windowMs: opts.windowMs },
    );
    this.requestBytes = r.counter('meshlet_request_bytes_total', 'Request body bytes received from the downstream.', L);
    this.responseBytes = r.counter('meshlet_response_bytes_total', 'Response body bytes sent to the downstream.', L);
    this.active = r.gauge('meshlet_active_requests', 'Requests in flight.', L);
    this.refusals = r.counter('meshlet_requests_refused_total', 'Requests and connections refused as malformed or abusive, by reason.', ['reason']);
    this.grpcRequests = r.counter('meshlet_grpc_requests_total', 'gRPC calls (native, gRPC-Web, transcoded) by direction, source and destination service, route and final grpc-status ("unknown" when none came).', [...L, 'grpc_status']);
    this.retries = r.counter('meshlet_retries_total', 'Retried upstream attempts, by destination service.', ['destination']);
    this.timeouts = r.counter('meshlet_timeouts_total', 'Requests that ran out of time upstream, by destination service.', ['destination']);
    this.breakerState = r.gauge('meshlet_circuit_breaker_state', 'Route circuit breakers: 0 closed, 1 half-open, 2 open.', ['route']);
    this.ejections = r.counter('meshlet_outlier_ejections_total', 'Endpoints ejected by outlier detection, by destination service.', ['destination']);
    this.mirrored = r.counter('meshlet_mirrored_requests_total', 'Requests copied to a mirror backend, by mirror service.', ['destination']);
    // Rate-limit decisions are meshlet_ratelimit_decisions_total, rendered by the rate-limit layer.
    this.websocketsOpen = r.gauge('meshlet_websocket_connections', 'Upgraded (WebSocket) connections open through the sidecar.');
    this.websocketsTotal = r.counter('meshlet_websocket_connections_total', 'Upgraded (WebSocket) connections opened through the sidecar.');
    this.acks = r.counter('meshlet_policy_acks_total', 'Snapshots accepted.');
    this.nacks = r.counter('meshlet_policy_nacks_total', 'Snapshots rejected.');
    this.acks.labels();
    this.nacks.labels();
    this.policyInfo = r.gauge('meshlet_policy_info', 'The policy snapshot version in force.', ['version']);
    this.policyApplied = r.gauge('meshlet_policy_applied_timestamp_seconds', 'When the snapshot in force was applied.');
    this.policyAge = r.gauge('meshlet_policy_age_seconds', 'Seconds since the snapshot in force was applied.');
    this.upstreamPools = r.gauge('meshlet_upstream_pools', 'Upstream connection pools (HTTP/1.1) and sessions (HTTP/2), by protocol.', ['protocol']);
    this.policyInfo.onCollect((g) => {
      g.clear();
      if (!this.policyVersion) return;
      g.labels(this.policyVersion).set(1);
    });
    this.policyAge.onCollect((g) => {
      if (this.policyAppliedAt > 0) g.set(Math.max(0, (Date.now() - this.policyAppliedAt) / 1000));
    });
  }

  /** The handle for a label set; bound once, then looked up. */
  handle(direction: Direction, destination: string, route: string, source?: string): RouteHandle {
    const src = source ?? (direction === 'outbound' ? this.service : UNKNOWN);
    const key = `${direction}\u0001${src}\u0001${destination}\u0001${route}`;
    let h = this.handles.get(key);
    if (!h) {
      const lv = [direction, src, destination, route];
      h = new RouteHandle(
        this,
        direction,
        src,
        destination,
        route,
        this.duration.labels(...lv),
        this.window.labels(...lv),
        this.requestBytes.labels(...lv),
        this.responseBytes.labels(...lv),
        this.active.labels(...lv),
      );
      this.handles.set(key, h);
    }
    return h;
  }

  /** Default handles for requests that never matched a route. */
  unrouted(direction: Direction): RouteHandle {
    return direction === 'outbound' ? this.handle('outbound', UNKNOWN, UNKNOWN) : this.handle('inbound', this.service, UNKNOWN);
  }

  allHandles(): RouteHandle[] {
    return [...this.handles.values()];
  }

  /** Per label set, the sliding window for `meshlet stat` (sidecar admin `/stats`). */
  stats(): {
    service: string;
    routes: ({ direction: Direction; source: string; destination: string; route: string; responses: Record<string, number> } & ReturnType<WindowChild['export']>)[];
  } {
    const routes = [];
    for (const h of this.handles.values()) {
      const w = h.window.export();
      if (w.count > 0) routes.push({ direction: h.direction, source: h.source, destination: h.destination, route: h.route, ...w, responses: h.responses() });
    }
    return { service: this.service, routes };
  }

  /** The snapshot in force: its version and when it was applied (ms since the epoch). */
  setPolicy(version: string, at: number): void {
    this.policyVersion = version;
    this.policyAppliedAt = at;
    if (at > 0) this.policyApplied.set(at / 1000);
  }

  // ---- record methods for the resilience layers (they hold their own bound children when hot)
  /** A finished gRPC call on its route's handle, by grpc-status (-1: none). */
  grpcStatus(h: RouteHandle, code: number): void {
    this.grpcRequests.labels(h.direction, h.source, h.destination, h.route, code >= 0 && code <= 16 ? String(code) : UNKNOWN).inc();
  }
  retry(destination: string): void {
    this.retries.labels(destination).inc();
  }
  timeout(destination: string): void {
    this.timeouts.labels(destination).inc();
  }
  breaker(route: string, state: 'closed' | 'open' | 'half-open'): void {
    this.breakerState.labels(route).set(state === 'closed' ? 0 : state === 'half-open' ? 1 : 2);
  }
  ejection(destination: string): void {
    this.ejections.labels(destination).inc();
  }
  mirror(destination: string): void {
    this.mirrored.labels(destination).inc();
  }
}
