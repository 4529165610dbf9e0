/**
 * `--concurrency N` (N > 1), the primary's side: N worker processes (node:cluster) serving one
 * data plane, the way Envoy runs worker threads beside one main thread. Shared by the sidecar
 * (sidecar/cluster.ts) and the gateway (gateway/cluster.ts); what differs between them (which data
 * plane a worker starts, how a snapshot is validated, what `/config_dump` shows) stays there.
 *
 * The primary holds what there is one of: the policy source, the admin port, the validation that
 * decides ACK or NACK, and the workload identity. Every snapshot it accepts goes to the workers in
 * wire form over IPC (`publish`); each worker parses, compiles and swaps it in itself (compiled
 * snapshots hold functions and cannot cross a process boundary). Workers run the listeners on
 * shared sockets: with SCHED_NONE every worker accepts on the same socket and the kernel spreads
 * the connections (Node 20 has no reusePort, so worker_threads cannot share a listening port).
 *
 * Here: forking, the restart of a worker that died (with a backoff for one that dies young), the
 * snapshot and certificate a late worker gets with its `start` message, asking every worker for
 * its metrics, stats or a cache purge (`collect`), a log-level broadcast, and the drain.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import type { Counter, Registry } from '../observability/metrics';
import type { WireSnapshot } from '../policy';
import type { WorkloadIdentity } from '../security/workload-identity';
import type { Subscriber } from '../snapshot/subscriber';
import { ENV_ID, ENV_SLOT, ENV_WORKERS, type Collected, type FromWorker, type PurgeSelector, type TlsMaterial, type ToWorker } from './protocol';

const COLLECT_TIMEOUT_MS = 2000;

interface Slot {
  index: number;
  worker?: Worker;
  /** Set once its listeners are up. */
  listening: boolean;
  /** The snapshot version the worker applied last. */
  version: string | null;
  /** What the worker reported with `listening` / `applied` (its ports or listeners). */
  info: unknown;
  startedAt: number;
  /** Restarts in a row of a worker that died young: the next restart waits longer. */
  quickDeaths: number;
}

export interface WorkerPoolOptions {
  workers: number;
  /** The id of the process as a whole (each worker serves under it). */
  id: string;
  /** `sidecar` or `gateway`, in log lines and errors. */
  kind: string;
  log: Logger;
  /** The primary's registry: worker restarts and the running / configured gauge go there. */
  registry: Registry;
  /** The workload certificate in force, sent to each worker as it starts. */
  identity?: () => TlsMaterial | undefined;
}

/**
 * The primary's workload identity (when it has a credential: it holds the push stream, so it makes
 * the key and the CSRs) and the pool it hands that certificate to: each worker gets the material in
 * force when it starts and again at every renewal. The key never goes to a file.
 */
export async function poolWithIdentity(opts: Omit<WorkerPoolOptions, 'identity'>, credential: boolean, subscriber: () => Subscriber | undefined): Promise<{ pool: WorkerPool; identity: WorkloadIdentity | undefined }> {
  const identity = credential ? new (await import('../security/workload-identity')).WorkloadIdentity({ request: (csr) => subscriber()?.requestCertificate(csr) ?? false, logger: opts.log }) : undefined;
  const material = (): TlsMaterial | undefined => {
    const m = identity?.current();
    return m && { keyPem: m.keyPem, chainPem: m.chainPem, bundlePem: m.bundlePem };
  };
  const pool = new WorkerPool({ ...opts, identity: material });
  identity?.onChange(() => {
    const m = material();
    if (m) pool.sendIdentity(m);
  });
  return { pool, identity };
}

/** A worker as `/config_dump` lists it. */
export interface WorkerState {
  worker: number;
  pid: number | null;
  listening: boolean;
  version: string | null;
}

export class WorkerPool {
  private readonly slots: Slot[];
  private readonly pending = new Map<number, (m: Collected) => void>();
  private nextId = 1;
  private closing = false;
  private wire: WireSnapshot | undefined;
  private startup: { resolve(info: unknown): void; reject(err: Error): void } | undefined;
  private readonly restarts: Counter;

  constructor(private readonly opts: WorkerPoolOptions) {
    this.slots = Array.from({ length: opts.workers }, (_, index) => ({ index, listening: false, version: null, info: undefined, startedAt: 0, quickDeaths: 0 }));
    this.restarts = opts.registry.counter('meshlet_worker_restarts_total', 'Workers (--concurrency) restarted after they died.');
    opts.registry.gauge('meshlet_workers', 'Worker processes (--concurrency) running, and configured.', ['state']).onCollect((g) => {
      g.labels('running').set(this.slots.filter((s) => s.worker && s.listening).length);
      g.labels('configured').set(opts.workers);
    });
  }

  /** Forks every worker; resolves with the first worker's `info` once all of them listen (rejects if one dies first). */
  async start(): Promise<unknown> {
    // SCHED_NONE: each worker accepts on the shared socket itself (the kernel spreads connections);
    // Node's own NODE_CLUSTER_SCHED_POLICY=rr still selects round-robin through the primary.
    if (!process.env.NODE_CLUSTER_SCHED_POLICY) cluster.schedulingPolicy = cluster.SCHED_NONE;
    try {
      return await new Promise<unknown>((resolve, reject) => {
        this.startup = { resolve, reject };
        for (const s of this.slots) this.fork(s);
      });
    } catch (err) {
      this.closing = true;
      await this.stop(0);
      throw err;
    } finally {
      this.startup = undefined;
    }
  }

  /** A snapshot the primary accepted: to every listening worker now, to every later one as it starts. */
  publish(w: WireSnapshot): void {
    this.wire = w;
    this.broadcast({ t: 'snapshot', snapshot: w });
  }

  /** A new workload certificate: to every connected worker, listening or not (one still starting installs it before it listens). */
  sendIdentity(material: TlsMaterial): void {
    for (const s of this.slots) if (s.worker?.isConnected()) s.worker.send({ t: 'identity', identity: material } satisfies ToWorker);
    this.opts.log.info({ workers: this.opts.workers }, 'workload certificate sent to the workers');
  }

  setLogLevel(level: string): void {
    this.broadcast({ t: 'log-level', level });
  }

  /** Whether every worker listens with `version` applied. */
  allApplied(version: string): boolean {
    return this.slots.every((s) => s.listening && s.version === version);
  }

  /** What each listening worker reported last (`listening` / `applied`). */
  infos(): unknown[] {
    return this.slots.filter((s) => s.listening).map((s) => s.info);
  }

  workers(): WorkerState[] {
    return this.slots.map((s) => ({ worker: s.index, pid: s.worker?.process.pid ?? null, listening: s.listening, version: s.version }));
  }

  /** Asks every running worker; a worker that does not answer in time is left out of this answer (logged). */
  async collect(what: 'metrics' | 'stats' | PurgeSelector): Promise<Collected[]> {
    const asks = this.slots
      .filter((s) => s.worker?.isConnected() && s.listening)
      .map(
        (s) =>
          new Promise<Collected | undefined>((resolve) => {
            const reqId = this.nextId++;
            const timer = setTimeout(() => {
              this.pending.delete(reqId);
              this.opts.log.warn({ worker: s.index, what }, 'a worker did not answer in time; left out of this answer');
              resolve(undefined);
            }, COLLECT_TIMEOUT_MS);
            this.pending.set(reqId, (m) => {
              clearTimeout(timer);
              this.pending.delete(reqId);
              resolve(m);
            });
            s.worker!.send((typeof what === 'string' ? { t: 'collect', id: reqId, what } : { t: 'purge', id: reqId, sel: what }) satisfies ToWorker);
          }),
      );
    return (await Promise.all(asks)).filter((m): m is Collected => m !== undefined);
  }

  /** Drains every worker (each gets `graceMs` for its in-flight requests, then is killed 5 s later at the latest). */
  async stop(graceMs: number): Promise<void> {
    this.closing = true;
    const exits = this.slots
      .filter((s) => s.worker)
      .map((s) => {
        const w = s.worker as Worker;
        return new Promise<void>((resolve) => {
          if (w.isDead()) return resolve();
          const kill = setTimeout(() => w.process.kill('SIGKILL'), graceMs + 5000);
          w.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          if (w.isConnected()) w.send({ t: 'close', graceMs } satisfies ToWorker);
          else w.process.kill('SIGTERM');
        });
      });
    await Promise.all(exits);
  }

  private broadcast(m: ToWorker): void {
    for (const s of this.slots) if (s.worker?.isConnected() && s.listening) s.worker.send(m);
  }

  private fork(slot: Slot): void {
    const log = this.opts.log;
    slot.listening = false;
    slot.version = null;
    slot.info = undefined;
    slot.startedAt = Date.now();
    const w = cluster.fork({ [ENV_SLOT]: String(slot.index), [ENV_ID]: this.opts.id, [ENV_WORKERS]: String(this.opts.workers) });
    slot.worker = w;
    w.on('message', (m: FromWorker) => {
      switch (m.t) {
        case 'hello': {
          const material = this.opts.identity?.();
          w.send({ t: 'start', snapshot: this.wire, ...(material ? { identity: material } : {}) } satisfies ToWorker);
          return;
        }
        case 'listening':
          slot.listening = true;
          slot.version = m.version;
          slot.info = m.info;
          log.info({ worker: slot.index, workerPid: w.process.pid, version: m.version }, 'worker listening');
          // A snapshot accepted while it started: send the one in force now.
          if (this.wire && this.wire.version !== m.version) w.send({ t: 'snapshot', snapshot: this.wire } satisfies ToWorker);
          if (this.startup && this.slots.every((s) => s.listening)) this.startup.resolve(this.slots[0]!.info);
          return;
        case 'applied':
          slot.version = m.version;
          if (m.info !== undefined) slot.info = m.info;
          return;
        case 'rejected':
          // The primary validated it already: a worker disagreeing is a bug worth a loud line.
          log.error({ worker: slot.index, version: m.version, reason: m.reason }, 'a worker rejected a snapshot the primary accepted');
          return;
        case 'collected':
          this.pending.get(m.id)?.(m);
          return;
      }
    });
    w.on('exit', (code, signal) => {
      if (slot.worker !== w) return;
      slot.worker = undefined;
      slot.listening = false;
      if (this.closing) return;
      if (this.startup) {
        this.startup.reject(new Error(`${this.opts.kind} worker ${slot.index} exited (${signal ?? code}) while starting`));
        return;
      }
      slot.quickDeaths = Date.now() - slot.startedAt < 5000 ? slot.quickDeaths + 1 : 0;
      const delay = slot.quickDeaths ? Math.min(5000, 100 * 2 ** (slot.quickDeaths - 1)) : 0;
      log.warn({ worker: slot.index, workerPid: w.process.pid, code, signal, restartInMs: delay }, 'worker died; restarting it');
      this.restarts.inc();
      setTimeout(() => {
        if (!this.closing) this.fork(slot);
      }, delay);
    });
  }
}
