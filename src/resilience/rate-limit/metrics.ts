/**
 * Rate-limit decision counters, per limit (a bounded label set: the limits of one policy), kept
 * across snapshots so a policy update does not reset them. Rendered in the Prometheus text
 * format on the sidecar's /metrics.
 */
export interface LimitCounters {
  allowed: number;
  limited: number;
  failedOpen: number;
  failedClosed: number;
}

export interface RedisCounters {
  roundTrips: number;
  remoteChecks: number;
  localDenials: number;
  failures: number;
  scriptLoads: number;
  connected: boolean;
}

export class RateLimitMetrics {
  private readonly limits = new Map<string, LimitCounters>();
  /** Requests that used a shared overflow bucket because a limit's key table was full. */
  readonly overflow = new Map<string, number>();

  /** The counters of one limit; the same object every time, so it can be pre-bound at compile time. */
  counters(limit: string, scope: 'local' | 'global'): LimitCounters {
    const k = `${limit}\0${scope}`;
    let c = this.limits.get(k);
    if (!c) this.limits.set(k, (c = { allowed: 0, limited: 0, failedOpen: 0, failedClosed: 0 }));
    return c;
  }

  /** Every limit's decisions so far (the dashboard's view of `meshlet_ratelimit_decisions_total`). */
  decisions(): ({ limit: string; scope: 'local' | 'global' } & LimitCounters)[] {
    return [...this.limits].map(([k, c]) => {
      const [limit, scope] = k.split('\0') as [string, 'local' | 'global'];
      return { limit, scope, ...c };
    });
  }

  render(overflow: ReadonlyMap<string, number>, redis: ReadonlyMap<string, RedisCounters>): string {
    const out = [
      '# HELP meshlet_ratelimit_decisions_total Rate-limit decisions on inbound requests, by limit, scope and decision (allowed, limited, failed_open, failed_closed).',
      '# TYPE meshlet_ratelimit_decisions_total counter',
    ];
    for (const [k, c] of [...this.limits].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const [limit, scope] = k.split('\0');
      const l = `limit="${esc(limit!)}",scope="${scope}"`;
      out.push(
        `meshlet_ratelimit_decisions_total{${l},decision="allowed"} ${c.allowed}`,
        `meshlet_ratelimit_decisions_total{${l},decision="limited"} ${c.limited}`,
        `meshlet_ratelimit_decisions_total{${l},decision="failed_open"} ${c.failedOpen}`,
        `meshlet_ratelimit_decisions_total{${l},decision="failed_closed"} ${c.failedClosed}`,
      );
    }
    out.push('# HELP meshlet_ratelimit_key_overflow_total Requests counted in a shared overflow bucket because the key table was full.', '# TYPE meshlet_ratelimit_key_overflow_total counter');
    for (const [limit, n] of [...overflow].sort()) out.push(`meshlet_ratelimit_key_overflow_total{limit="${esc(limit)}"} ${n}`);
    out.push(
      '# HELP meshlet_ratelimit_redis_round_trips_total Script calls sent to Redis (one round trip each; concurrent checks share one).',
      '# TYPE meshlet_ratelimit_redis_round_trips_total counter',
    );
    for (const [addr, r] of redis) out.push(`meshlet_ratelimit_redis_round_trips_total{redis="${esc(addr)}"} ${r.roundTrips}`);
    out.push('# HELP meshlet_ratelimit_redis_checks_total Global checks, by how they were answered (redis, local_precheck, failed).', '# TYPE meshlet_ratelimit_redis_checks_total counter');
    for (const [addr, r] of redis) {
      out.push(
        `meshlet_ratelimit_redis_checks_total{redis="${esc(addr)}",answer="redis"} ${r.remoteChecks}`,
        `meshlet_ratelimit_redis_checks_total{redis="${esc(addr)}",answer="local_precheck"} ${r.localDenials}`,
        `meshlet_ratelimit_redis_checks_total{redis="${esc(addr)}",answer="failed"} ${r.failures}`,
      );
    }
    out.push('# HELP meshlet_ratelimit_redis_up Whether the rate-limit Redis connection is ready.', '# TYPE meshlet_ratelimit_redis_up gauge');
    for (const [addr, r] of redis) out.push(`meshlet_ratelimit_redis_up{redis="${esc(addr)}"} ${r.connected ? 1 : 0}`);
    return out.join('\n') + '\n';
  }
}

function esc(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
