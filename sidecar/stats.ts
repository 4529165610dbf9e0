/**
 * The sidecar's request counters, rendered in the Prometheus text format on the admin port.
 * Keys are bounded: direction, status code and response flag only (never paths or header values).
 */
export class ProxyStats {
  private readonly requests = new Map<string, number>();
  private readonly refusals = new Map<string, number>();
  snapshotVersion = '';
  snapshotAppliedAt = 0;
  acks = 0;
  nacks = 0;
  /** WebSocket (upgraded) connections open now, and ever opened. */
  websocketsOpen = 0;
  websocketsTotal = 0;

  record(direction: 'inbound' | 'outbound', status: number, flag?: string): void {
    const k = `${direction}\0${status}\0${flag ?? ''}`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
  }

  refused(reason: string): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
  }

  /** Requests counted so far, optionally for one direction. */
  total(direction?: 'inbound' | 'outbound'): number {
    let n = 0;
    for (const [k, v] of this.requests) if (!direction || k.startsWith(direction + '\0')) n += v;
    return n;
  }

  render(extra: { upstreamHttp1Pools: number; upstreamHttp2Sessions: number }): string {
    const out: string[] = [
      '# HELP meshlet_requests_total Requests handled, by direction, response code and response flag.',
      '# TYPE meshlet_requests_total counter',
    ];
    for (const [k, v] of [...this.requests].sort()) {
      const [direction, code, flag] = k.split('\0');
      const cls = `${String(code).charAt(0)}xx`;
      out.push(`meshlet_requests_total{direction="${direction}",response_code="${code}",response_code_class="${cls}",response_flags="${flag || '-'}"} ${v}`);
    }
    out.push('# HELP meshlet_requests_refused_total Requests and connections refused as malformed or abusive, by reason.');
    out.push('# TYPE meshlet_requests_refused_total counter');
    for (const [reason, v] of [...this.refusals].sort()) out.push(`meshlet_requests_refused_total{reason="${escapeLabel(reason)}"} ${v}`);
    out.push('# HELP meshlet_policy_acks_total Snapshots accepted.', '# TYPE meshlet_policy_acks_total counter', `meshlet_policy_acks_total ${this.acks}`);
    out.push('# HELP meshlet_policy_nacks_total Snapshots rejected.', '# TYPE meshlet_policy_nacks_total counter', `meshlet_policy_nacks_total ${this.nacks}`);
    out.push(
      '# HELP meshlet_policy_info The policy snapshot version in force.',
      '# TYPE meshlet_policy_info gauge',
      `meshlet_policy_info{version="${escapeLabel(this.snapshotVersion)}"} 1`,
    );
    if (this.snapshotAppliedAt > 0)
      out.push(
        '# HELP meshlet_policy_applied_timestamp_seconds When the snapshot in force was applied.',
        '# TYPE meshlet_policy_applied_timestamp_seconds gauge',
        `meshlet_policy_applied_timestamp_seconds ${this.snapshotAppliedAt / 1000}`,
      );
    out.push(
      '# HELP meshlet_upstream_pools Upstream connection pools, by protocol.',
      '# TYPE meshlet_upstream_pools gauge',
      `meshlet_upstream_pools{protocol="http1"} ${extra.upstreamHttp1Pools}`,
      `meshlet_upstream_pools{protocol="http2"} ${extra.upstreamHttp2Sessions}`,
    );
    out.push(
      '# HELP meshlet_websocket_connections Upgraded (WebSocket) connections open through the sidecar.',
      '# TYPE meshlet_websocket_connections gauge',
      `meshlet_websocket_connections ${this.websocketsOpen}`,
      '# HELP meshlet_websocket_connections_total Upgraded (WebSocket) connections opened through the sidecar.',
      '# TYPE meshlet_websocket_connections_total counter',
      `meshlet_websocket_connections_total ${this.websocketsTotal}`,
    );
    return out.join('\n') + '\n';
  }
}

function escapeLabel(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
