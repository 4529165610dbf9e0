/**
 * The control plane's own Prometheus metrics (text exposition format 0.0.4). A handful of
 * counters and gauges, so plain fields rather than a registry.
 */
export class ControlPlaneMetrics {
  private readonly apiRequests = new Map<string, number>();
  pushes = 0;
  acks = 0;
  nacks = 0;
  /** Live values read at scrape time. */
  gauges: {
    connectedSidecars: () => number;
    knownSidecars: () => number;
    storeRevision: () => number;
    lastConvergenceMs: () => number | undefined;
  } = {
    connectedSidecars: () => 0,
    knownSidecars: () => 0,
    storeRevision: () => 0,
    lastConvergenceMs: () => undefined,
  };

  apiRequest(code: number): void {
    const k = String(code);
    this.apiRequests.set(k, (this.apiRequests.get(k) ?? 0) + 1);
  }

  render(): string {
    const out: string[] = [];
    out.push('# HELP meshlet_api_requests_total REST API requests answered, by status code.');
    out.push('# TYPE meshlet_api_requests_total counter');
    for (const code of [...this.apiRequests.keys()].sort())
      out.push(`meshlet_api_requests_total{code="${code}"} ${this.apiRequests.get(code)}`);
    const simple = (name: string, type: 'counter' | 'gauge', help: string, v: number | undefined): void => {
      if (v === undefined) return;
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${v}`);
    };
    simple('meshlet_push_snapshots_total', 'counter', 'Snapshots sent to sidecars.', this.pushes);
    simple('meshlet_push_acks_total', 'counter', 'Snapshots sidecars accepted (ACK).', this.acks);
    simple('meshlet_push_nacks_total', 'counter', 'Snapshots sidecars rejected (NACK).', this.nacks);
    simple('meshlet_connected_sidecars', 'gauge', 'Sidecars with an open push stream.', this.gauges.connectedSidecars());
    simple('meshlet_known_sidecars', 'gauge', 'Sidecars whose endpoint is in the mesh (connected or in their grace period).', this.gauges.knownSidecars());
    simple('meshlet_store_revision', 'gauge', 'The store revision.', this.gauges.storeRevision());
    const c = this.gauges.lastConvergenceMs();
    simple(
      'meshlet_push_convergence_seconds',
      'gauge',
      'For the last change: seconds from the change to the last connected sidecar answering its snapshot.',
      c === undefined ? undefined : c / 1000,
    );
    return out.join('\n') + '\n';
  }
}
