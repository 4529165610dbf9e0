/**
 * The control plane's own metrics, on the pre-bound registry of `src/observability`: pushes,
 * ACK/NACK, a convergence-time histogram (from a change to the last connected sidecar answering),
 * connected sidecars, store revision, API requests by code. The field names (`pushes`, `acks`,
 * `nacks`, `apiRequest`, `gauges`) are the ones the push server and API call.
 */
import { Registry, type Format } from '../src/observability/metrics';
import { registerProcessMetrics } from '../src/observability/process';

/** Convergence buckets, seconds: 1 ms .. 30 s. */
const CONVERGENCE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class ControlPlaneMetrics {
  readonly registry = new Registry();
  private readonly apiRequests = this.registry.counter('meshlet_api_requests_total', 'REST API requests answered, by status code.', ['code']);
  private readonly pushCounter = this.registry.counter('meshlet_push_snapshots_total', 'Snapshots sent to sidecars.');
  private readonly ackCounter = this.registry.counter('meshlet_push_acks_total', 'Snapshots sidecars accepted (ACK).');
  private readonly nackCounter = this.registry.counter('meshlet_push_nacks_total', 'Snapshots sidecars rejected (NACK).');
  private readonly convergence = this.registry.histogram(
    'meshlet_push_convergence_duration_seconds',
    'Seconds from a change to the last connected sidecar answering the snapshot that carries it.',
    [],
    CONVERGENCE_BUCKETS,
  );
  private readonly messageCounter = this.registry.counter('meshlet_push_messages_total', 'Push messages written to sidecar streams, by type (full snapshot or delta).', ['type']);
  private readonly byteCounter = this.registry.counter('meshlet_push_bytes_total', 'Bytes of push messages written to sidecar streams (protobuf), by type.', ['type']);
  private readonly encodeCounter = this.registry.counter('meshlet_push_encodes_total', 'Distinct push messages encoded (each is written to every stream that needs it).');
  private readonly refusedCounter = this.registry.counter('meshlet_push_refused_total', 'Push messages not sent because they exceed the push message limit.');
  private readonly apiCodes = new Map<number, { inc(): void }>();
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

  constructor(opts: { processMetrics?: boolean } = {}) {
    const r = this.registry;
    for (const c of [this.pushCounter, this.ackCounter, this.nackCounter, this.encodeCounter, this.refusedCounter]) c.labels();
    for (const t of ['full', 'delta']) {
      this.messageCounter.labels(t);
      this.byteCounter.labels(t);
    }
    r.gauge('meshlet_connected_sidecars', 'Sidecars with an open push stream.').onCollect((g) => g.set(this.gauges.connectedSidecars()));
    r.gauge('meshlet_known_sidecars', 'Sidecars whose endpoint is in the mesh (connected or in their grace period).').onCollect((g) =>
      g.set(this.gauges.knownSidecars()),
    );
    r.gauge('meshlet_store_revision', 'The store revision.').onCollect((g) => g.set(this.gauges.storeRevision()));
    r.gauge('meshlet_push_convergence_seconds', 'For the last change: seconds from the change to the last connected sidecar answering its snapshot.').onCollect((g) => {
      const ms = this.gauges.lastConvergenceMs();
      g.clear();
      if (ms !== undefined) g.set(ms / 1000);
    });
    if (opts.processMetrics !== false) registerProcessMetrics(r);
  }

  get pushes(): number {
    return this.pushCounter.labels().value;
  }
  set pushes(v: number) {
    this.pushCounter.labels().value = v;
  }
  get acks(): number {
    return this.ackCounter.labels().value;
  }
  set acks(v: number) {
    this.ackCounter.labels().value = v;
  }
  get nacks(): number {
    return this.nackCounter.labels().value;
  }
  set nacks(v: number) {
    this.nackCounter.labels().value = v;
  }

  /** One message written to a stream. */
  pushed(type: 'full' | 'delta', bytes: number): void {
    this.messageCounter.labels(type).inc();
    this.byteCounter.labels(type).inc(bytes);
  }

  /** One distinct message encoded. */
  encoded(): void {
    this.encodeCounter.labels().inc();
  }

  /** One message refused by the size guard. */
  refused(): void {
    this.refusedCounter.labels().inc();
  }

  apiRequest(code: number): void {
    let c = this.apiCodes.get(code);
    if (!c) this.apiCodes.set(code, (c = this.apiRequests.labels(String(code))));
    c.inc();
  }

  /** One convergence, in milliseconds (the push server calls it when the last sidecar answered). */
  converged(ms: number): void {
    this.convergence.observe(ms / 1000);
  }

  render(format: Format = 'prometheus'): string {
    return this.registry.render(format);
  }
}
