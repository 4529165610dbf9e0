/**
 * What the layers of the request stack need from the process that runs them (the sidecar passes
 * its ProxyContext, which is a superset). Structural, so src/ never imports sidecar/.
 */
import type { Logger } from 'pino';
import type { Clock } from '../core/clock';
import type { ViaHops } from '../http/headers';
import type { UpstreamCall, UpstreamRequest, UpstreamTarget, ResponseSink } from '../http/upstream-types';
import type { MeshMetrics, RouteHandle } from '../observability/mesh-metrics';
import type { Observer } from '../observability/observer';
import type { CompiledSnapshot } from '../policy/compiled';
import type { RateLimitLayer } from '../resilience/rate-limit';
import type { InboundAuthz } from './authz';
import type { ResilienceState } from '../resilience/state';
import type { Direction } from '../core/layer';
import type { CacheRegistry } from '../edge/cache';
import type { JwksStore } from '../edge/jwt';

/** What the edge layers share across snapshots: fetched JWKS keys and the response caches. */
export interface EdgeContext {
  /** The process's JWKS store (created on first use: it loads jose). */
  jwks(): JwksStore;
  caches: CacheRegistry;
}

export interface StackStats {
  /** Counts a request the mesh answered before it was observed (no route, rate limited, ...). */
  record(direction: Direction, status: number, flag?: string, route?: RouteHandle): void;
  route(direction: Direction, destination: string, route: string): RouteHandle;
  readonly metrics: MeshMetrics;
  readonly observer: Observer;
  websocketsOpen: number;
  websocketsTotal: number;
}

export interface StackContext {
  /** The compiled snapshot in force, or undefined before the first one. */
  snapshot(): CompiledSnapshot | undefined;
  /** The dispatcher: connection pools per endpoint (src/http/upstream.ts). */
  pools: {
    send(target: UpstreamTarget, req: UpstreamRequest, sink: ResponseSink): UpstreamCall;
    /** TLS options for a dedicated (upgrade) connection to a target with an identity (mTLS). */
    tlsOptions?(target: UpstreamTarget): import('node:tls').ConnectionOptions | undefined;
    /** Whether this sidecar has a certificate to dial mTLS with. */
    readonly hasTls?: boolean;
  };
  active: { begin(key: string): void; end(key: string): void };
  stats: StackStats;
  logger: Logger;
  /** This sidecar's entries in `via` headers (src/http/headers.ts `viaHops`). */
  via: ViaHops;
  /** Per-service and per-route state that outlives snapshots (budgets, breakers, ejections). */
  resilience: ResilienceState;
  clock: Clock;
  random: () => number;
  /** This sidecar's service, stamped on outbound requests as `x-meshlet-source`. */
  service?: string;
  /** Inbound rate limits (RateLimitPolicy for this service). */
  rateLimit?: RateLimitLayer;
  /** Inbound authorization (AuthorizationPolicies for this service), compiled per snapshot. */
  authz?: InboundAuthz;
  /** JWKS keys and response caches (absent: the edge layers make their own, per rule stack). */
  edge?: EdgeContext;
  /**
   * Outbound: proxies in front whose `x-forwarded-for` entries are trusted (src/stack/forwarded.ts);
   * undefined: the headers are left as the front built them.
   */
  xffTrustedHops?: number;
}
