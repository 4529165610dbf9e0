/**
 * `--concurrency N`, a worker's side (src/workers/primary.ts is the primary's): ask the primary for
 * the snapshot in force, start the data plane, then follow the primary's messages (snapshots,
 * certificates, log level, metrics / stats / purge requests, the drain).
 *
 * The data plane is the caller's (the sidecar's proxy, the gateway's listeners); this file only
 * speaks the IPC protocol and counts the connections each listener of this worker accepted: the one
 * per-worker series (like Envoy's listener.<addr>.worker_<n>.downstream_cx_total), to see how the
 * kernel spreads them.
 */
import cluster from 'node:cluster';
import type * as net from 'node:net';
import type { Logger } from 'pino';
import { formatErrors, type Result } from '../core/result';
import { Registry } from '../observability/metrics';
import type { WindowExports } from '../observability/merge';
import { parseSnapshot, type Snapshot, type WireSnapshot } from '../policy';
import { ENV_ID, ENV_SLOT, ENV_WORKERS, type FromWorker, type PurgeSelector, type TlsMaterial, type ToWorker } from './protocol';

/** Whether this process is a `--concurrency N` worker (started by a primary, src/workers/primary.ts). */
export const isWorker = (): boolean => cluster.isWorker && process.env[ENV_SLOT] !== undefined;

/** What a worker runs: one data plane, driven by the primary's messages. */
export interface WorkerPlane {
  /** Applies a snapshot; resolves once it is in force (a gateway's listeners bound). */
  apply(w: WireSnapshot): Result<void> | Promise<Result<void>>;
  /** The version in force. */
  version(): string | null;
  /** What the primary shows of this worker's listeners (ports, listener addresses); sent with `listening` and `applied`. */
  info(): unknown;
  metrics(): string;
  windows(): WindowExports;
  stats(): unknown;
  purgeCache(sel: PurgeSelector): number;
  setIdentity(m: TlsMaterial): void;
  setLogLevel(level: string): void;
  close(graceMs: number): Promise<void>;
}

export interface WorkerContext {
  /** 0..N-1. */
  slot: number;
  workers: number;
  /** The id of the process as a whole. */
  id: string | undefined;
  log: Logger;
  /** The snapshot in force at the primary when this worker started, validated. */
  initial: Snapshot | undefined;
  /** Call with each listening server (and a name for it): its accepted connections are counted per worker. */
  onListening(name: string, server: net.Server): void;
}

/** A worker's life; never resolves (the worker exits when the primary tells it to close, or when the primary is gone). */
export async function runWorker(logger: Logger, start: (ctx: WorkerContext) => Promise<WorkerPlane>): Promise<number> {
  const slot = Number(process.env[ENV_SLOT]);
  const workers = Number(process.env[ENV_WORKERS]) || 1;
  const send = (m: FromWorker): void => {
    if (process.connected) process.send?.(m);
  };
  const own = new Registry();
  const accepted = own.counter('meshlet_worker_connections_total', 'Downstream connections accepted, by listener and worker (--concurrency).', ['listener', 'worker']);
  let plane: WorkerPlane | undefined;
  let queued: WireSnapshot | undefined;
  /** A certificate that arrived before the data plane started (installed as it starts). */
  let queuedIdentity: TlsMaterial | undefined;
  let closing: Promise<void> | undefined;
  const log = logger.child({ worker: slot });
  // Snapshots apply one after another (a gateway's apply waits for its listeners): the primary
  // hears `applied` in the order it sent them.
  let applying: Promise<void> = Promise.resolve();
  const apply = (p: WorkerPlane, w: WireSnapshot): void => {
    applying = applying.then(async () => {
      const r = await p.apply(w);
      send(r.ok ? { t: 'applied', version: w.version, info: p.info() } : { t: 'rejected', version: w.version, reason: formatErrors(r.errors) });
    });
  };
  const close = (graceMs: number): Promise<void> =>
    (closing ??= (async () => {
      await plane?.close(graceMs);
      process.exit(0);
    })());

  const started = new Promise<WireSnapshot | undefined>((resolve) => {
    process.on('message', (m: ToWorker) => {
      switch (m.t) {
        case 'start':
          if (m.identity) queuedIdentity = m.identity;
          resolve(m.snapshot);
          return;
        case 'identity':
          if (plane) plane.setIdentity(m.identity);
          else queuedIdentity = m.identity;
          return;
        case 'snapshot':
          if (plane) apply(plane, m.snapshot);
          else queued = m.snapshot;
          return;
        case 'log-level':
          log.level = m.level;
          plane?.setLogLevel(m.level);
          return;
        case 'collect': {
          if (!plane) return;
          if (m.what === 'metrics') send({ t: 'collected', id: m.id, metrics: { text: plane.metrics() + own.render('prometheus'), windows: plane.windows() } });
          else send({ t: 'collected', id: m.id, stats: plane.stats() });
          return;
        }
        case 'purge':
          if (plane) send({ t: 'collected', id: m.id, purged: plane.purgeCache(m.sel) });
          return;
        case 'close':
          void close(m.graceMs);
          return;
      }
    });
  });
  // The primary stops the workers (SIGTERM to the process group must not kill them mid-drain); a
  // worker whose primary is gone drains what it has and exits.
  process.on('SIGTERM', () => undefined);
  process.on('SIGINT', () => undefined);
  process.on('disconnect', () => void close(1000));
  send({ t: 'hello' });
  const first = await started;
  let initial: Snapshot | undefined;
  if (first) {
    const parsed = parseSnapshot(first);
    if (!parsed.ok) throw new Error(`the primary sent a snapshot this worker cannot parse:\n${formatErrors(parsed.errors)}`);
    initial = parsed.value;
  }
  plane = await start({
    slot,
    workers,
    id: process.env[ENV_ID],
    log,
    initial,
    onListening: (name, server) => {
      const c = accepted.labels(name, String(slot));
      server.on('connection', () => c.inc());
    },
  });
  // mTLS before the first connection is taken: listening without a certificate would refuse TLS callers.
  if (queuedIdentity) plane.setIdentity(queuedIdentity);
  queuedIdentity = undefined;
  send({ t: 'listening', version: plane.version(), info: plane.info() });
  if (queued) apply(plane, queued);
  return new Promise<number>(() => undefined);
}
