/**
 * `meshlet sidecar --concurrency N` (N > 1): one sidecar as N worker processes (node:cluster),
 * the way Envoy runs worker threads beside one main thread.
 *
 * The primary holds what there is one of: the policy source (the control plane's push stream or
 * `--config`), the admin port, and the validation that decides ACK or NACK. Every snapshot it
 * accepts goes to the workers in wire form over IPC; each worker parses, compiles and swaps it in
 * itself (compiled snapshots hold functions and cannot cross a process boundary). Workers run the
 * data-plane listeners on shared sockets: with SCHED_NONE every worker accepts on the same socket
 * and the kernel spreads the connections (Node 20 has no reusePort, so worker_threads cannot share
 * a listening port).
 *
 * `/ready` holds until every worker applied the snapshot in force; `/metrics` asks each worker for
 * its exposition and merges them (src/observability/merge.ts); a log-level change is broadcast; a
 * worker that dies is restarted; SIGTERM drains every worker.
 *
 * Per-worker state, as in Envoy: connection pools, outlier detection and route breakers, and the
 * local rate-limit buckets, each holding 1/N of the policy's rate (see RateLimitLayerOptions.localShare).
 *
 * mTLS: the sidecar has one identity. The primary makes the key, sends the CSR on its push stream
 * and renews at half life (sidecar/identity.ts), as a single-process sidecar does; every
 * certificate it installs (the first, renewals, a new trust bundle) goes to every worker over the
 * IPC channel, and a worker started later gets the one in force with its `start` message. The key
 * stays in memory: the primary's, and the workers' (the IPC channel is a socketpair between the
 * processes, never a file).
 */
import cluster, { type Worker } from 'node:cluster';
import * as os from 'node:os';
import type { Logger } from 'pino';
import { fail, formatErrors, ok, type Result } from '../src/core/result';
import { ActiveRequests } from '../src/lb';
import { mergeExpositions, type Exposition } from '../src/observability/merge';
import { Registry } from '../src/observability/metrics';
import { parseSnapshot, type CompiledSnapshot, type WireSnapshot } from '../src/policy';
import { compileSnapshot } from '../src/snapshot/compile';
import { STATUS_PATHS, startAdmin, type AdminServer } from '../src/observability/admin';
import { configDump, leave, loadStaticWire, startProxy, subscribe, type HostPort, type Proxy, type Sidecar, type SidecarOptions, type SidecarResilience, type SidecarStatsReport } from './index';
import { ProxyStats } from '../src/observability/proxy-stats';
import type { Subscriber } from '../src/snapshot/subscriber';

/** The workload certificate and key the workers serve and dial mTLS with. */
interface TlsMaterial {
  keyPem: string;
  chainPem: string;
  bundlePem: string;
}

/** Primary -> worker. */
type ToWorker =
  | { t: 'start'; snapshot?: WireSnapshot; identity?: TlsMaterial }
  | { t: 'identity'; identity: TlsMaterial }
  | { t: 'snapshot'; snapshot: WireSnapshot }
  | { t: 'collect'; id: number; what: 'metrics' | 'stats' }
  /** Remove cached responses from the worker's caches (`POST /cache/purge` on the primary's admin port). */
  | { t: 'purge'; id: number; sel: { key: string } | { prefix: string } }
  | { t: 'log-level'; level: string }
  | { t: 'close'; graceMs: number };

/** Worker -> primary. */
type FromWorker =
  | { t: 'hello' }
  | { t: 'listening'; outbound: HostPort; inbound: HostPort; version: string | null }
  | { t: 'applied'; version: string }
  | { t: 'rejected'; version: string; reason: string }
  | { t: 'collected'; id: number; metrics?: Exposition; stats?: { routes: unknown[] }; purged?: number };

const ENV_SLOT = 'MESHLET_WORKER_SLOT';
const ENV_ID = 'MESHLET_SIDECAR_ID';
const COLLECT_TIMEOUT_MS = 2000;

/** Whether this process is a `--concurrency N` worker (started by the primary below). */
export const isWorker = (): boolean => cluster.isWorker && process.env[ENV_SLOT] !== undefined;

interface Slot {
  index: number;
  worker?: Worker;
  /** Set once its listeners are up. */
  listening: boolean;
  /** The snapshot version the worker applied last. */
  version: string | null;
  startedAt: number;
  /** Restarts in a row of a worker that died young: the next restart waits longer. */
  quickDeaths: number;
}

export async function startClusterSidecar(opts: SidecarOptions & { logger: Logger }, workers: number): Promise<Sidecar> {
  if (!opts.controlPlane === !opts.configFile) throw new Error('a sidecar needs exactly one of --control-plane and --config');
  const id = opts.id ?? `${opts.service}-${os.hostname()}-${process.pid}`;
  const log = opts.logger.child({ sidecar: id, service: opts.service });
  const source = opts.controlPlane ? `control-plane ${opts.controlPlane}` : `file ${opts.configFile}`;
  // The primary's own metrics: policy ACKs/NACKs and the version in force (one policy stream, so
  // these are the primary's alone), its process metrics, and worker restarts.
  const stats = new ProxyStats({ service: opts.service, recordMetrics: false, tracing: false });
  const restarts = stats.metrics.registry.counter('meshlet_worker_restarts_total', 'Workers (--concurrency) restarted after they died.');
  const workersGauge = stats.metrics.registry.gauge('meshlet_workers', 'Worker processes (--concurrency) running, and configured.', ['state']);
  workersGauge.onCollect((g) => {
    g.labels('running').set(slots.filter((s) => s.worker && s.listening).length);
    g.labels('configured').set(workers);
  });
  const slots: Slot[] = Array.from({ length: workers }, (_, index) => ({ index, listening: false, version: null, startedAt: 0, quickDeaths: 0 }));
  const active = new ActiveRequests();
  let current: CompiledSnapshot | undefined;
  let currentWire: WireSnapshot | undefined;

  const broadcast = (m: ToWorker): void => {
    for (const s of slots) if (s.worker?.isConnected() && s.listening) s.worker.send(m);
  };
  // One workload identity for the whole sidecar, held by the primary (it has the push stream).
  let subscriber: Subscriber | undefined;
  const identity =
    opts.controlPlane && opts.credential
      ? new (await import('../src/security/workload-identity')).WorkloadIdentity({ request: (csr) => subscriber?.requestCertificate(csr) ?? false, logger: log })
      : undefined;
  const tlsMaterial = (): TlsMaterial | undefined => {
    const m = identity?.current();
    return m && { keyPem: m.keyPem, chainPem: m.chainPem, bundlePem: m.bundlePem };
  };
  identity?.onChange(() => {
    const material = tlsMaterial();
    if (!material) return;
    // Every worker connected, listening or not: one still starting installs it before it listens.
    for (const s of slots) if (s.worker?.isConnected()) s.worker.send({ t: 'identity', identity: material } satisfies ToWorker);
    log.info({ workers }, 'workload certificate sent to the workers');
  });

  /** Validates a snapshot as a single sidecar would (parse + compile), so a NACK is decided here, once. */
  const accept = (w: WireSnapshot): Result<void> => {
    if (current && current.version === w.version) return ok(undefined);
    const parsed = parseSnapshot(w);
    if (!parsed.ok) {
      stats.nacks++;
      return parsed;
    }
    let compiled: CompiledSnapshot;
    try {
      compiled = compileSnapshot(parsed.value, { stats: active });
    } catch (err) {
      stats.nacks++;
      return fail([{ path: '', message: `could not compile: ${(err as Error).message}` }]);
    }
    current = compiled;
    currentWire = w;
    stats.acks++;
    stats.snapshotVersion = compiled.version;
    stats.snapshotAppliedAt = Date.now();
    log.info({ version: compiled.version, resources: compiled.resources.length, endpoints: compiled.endpoints.length, workers }, 'snapshot accepted; sending it to the workers');
    broadcast({ t: 'snapshot', snapshot: w });
    return ok(undefined);
  };

  if (opts.configFile) {
    const cfg = await loadStaticWire(opts.configFile);
    if (!cfg.ok) throw new Error(`invalid static config:\n${formatErrors(cfg.errors)}`);
    const r = accept(cfg.value.wire);
    if (!r.ok) throw new Error(`invalid static config:\n${formatErrors(r.errors)}`);
  }

  // SCHED_NONE: each worker accepts on the shared socket itself (the kernel spreads connections);
  // Node's own NODE_CLUSTER_SCHED_POLICY=rr still selects round-robin through the primary.
  if (!process.env.NODE_CLUSTER_SCHED_POLICY) cluster.schedulingPolicy = cluster.SCHED_NONE;

  const pending = new Map<number, (m: Extract<FromWorker, { t: 'collected' }>) => void>();
  let nextId = 1;
  let closing = false;
  let draining = false;
  let ports: { outbound: HostPort; inbound: HostPort } | undefined;
  let startup: { resolve(): void; reject(err: Error): void } | undefined;

  const fork = (slot: Slot): void => {
    slot.listening = false;
    slot.version = null;
    slot.startedAt = Date.now();
    const w = cluster.fork({ [ENV_SLOT]: String(slot.index), [ENV_ID]: id, MESHLET_WORKERS: String(workers) });
    slot.worker = w;
    w.on('message', (m: FromWorker) => {
      switch (m.t) {
        case 'hello': {
          const material = tlsMaterial();
          w.send({ t: 'start', snapshot: currentWire, ...(material ? { identity: material } : {}) } satisfies ToWorker);
          return;
        }
        case 'listening':
          slot.listening = true;
          slot.version = m.version;
          ports ??= { outbound: m.outbound, inbound: m.inbound };
          log.info({ worker: slot.index, workerPid: w.process.pid, version: m.version }, 'worker listening');
          // A snapshot accepted while it started: send the one in force now.
          if (currentWire && currentWire.version !== m.version) w.send({ t: 'snapshot', snapshot: currentWire } satisfies ToWorker);
          if (startup && slots.every((s) => s.listening)) startup.resolve();
          return;
        case 'applied':
          slot.version = m.version;
          return;
        case 'rejected':
          // The primary compiled it already: a worker disagreeing is a bug worth a loud line.
          log.error({ worker: slot.index, version: m.version, reason: m.reason }, 'a worker rejected a snapshot the primary accepted');
          return;
        case 'collected':
          pending.get(m.id)?.(m);
          return;
      }
    });
    w.on('exit', (code, signal) => {
      if (slot.worker !== w) return;
      slot.worker = undefined;
      slot.listening = false;
      if (closing) return;
      if (startup) {
        startup.reject(new Error(`sidecar worker ${slot.index} exited (${signal ?? code}) while starting`));
        return;
      }
      slot.quickDeaths = Date.now() - slot.startedAt < 5000 ? slot.quickDeaths + 1 : 0;
      const delay = slot.quickDeaths ? Math.min(5000, 100 * 2 ** (slot.quickDeaths - 1)) : 0;
      log.warn({ worker: slot.index, workerPid: w.process.pid, code, signal, restartInMs: delay }, 'worker died; restarting it');
      restarts.inc();
      setTimeout(() => {
        if (!closing) fork(slot);
      }, delay);
    });
  };

  const stopWorkers = async (graceMs: number): Promise<void> => {
    const exits = slots
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
  };

  try {
    await new Promise<void>((resolve, reject) => {
      startup = { resolve, reject };
      for (const s of slots) fork(s);
    });
  } catch (err) {
    closing = true;
    await stopWorkers(0);
    stats.close();
    throw err;
  } finally {
    startup = undefined;
  }
  const { outbound, inbound } = ports as { outbound: HostPort; inbound: HostPort };

  /** Asks every running worker; a worker that does not answer in time is left out of this answer. */
  const collect = async (what: 'metrics' | 'stats' | { key: string } | { prefix: string }): Promise<Extract<FromWorker, { t: 'collected' }>[]> => {
    const asks = slots
      .filter((s) => s.worker?.isConnected() && s.listening)
      .map(
        (s) =>
          new Promise<Extract<FromWorker, { t: 'collected' }> | undefined>((resolve) => {
            const reqId = nextId++;
            const timer = setTimeout(() => {
              pending.delete(reqId);
              log.warn({ worker: s.index, what }, 'a worker did not answer in time; left out of this answer');
              resolve(undefined);
            }, COLLECT_TIMEOUT_MS);
            pending.set(reqId, (m) => {
              clearTimeout(timer);
              pending.delete(reqId);
              resolve(m);
            });
            s.worker!.send((typeof what === 'string' ? { t: 'collect', id: reqId, what } : { t: 'purge', id: reqId, sel: what }) satisfies ToWorker);
          }),
      );
    return (await Promise.all(asks)).filter((m): m is Extract<FromWorker, { t: 'collected' }> => m !== undefined);
  };

  let admin: AdminServer;
  let status: AdminServer | undefined;
  try {
    const a = opts.admin ?? { host: '127.0.0.1', port: 15000 };
    const src: import('../src/observability/admin').AdminSource = {
        ready: () => current !== undefined && !draining && slots.every((s) => s.listening && s.version === current!.version),
        configDump: () => ({
          ...(configDump(id, opts.service, source, current, subscriber, identity) as object),
          mtls: { mode: current?.peerAuth.mode(opts.service) ?? { mode: 'PERMISSIVE' }, certificate: identity?.current() !== undefined },
          workers: slots.map((s) => ({ worker: s.index, pid: s.worker?.process.pid ?? null, listening: s.listening, version: s.version })),
        }),
        quit: opts.onQuit,
        metrics: async (format) => {
          const own: Exposition = { text: stats.render({ upstreamHttp1Pools: 0, upstreamHttp2Sessions: 0 }, 'prometheus') };
          const parts = (await collect('metrics')).map((m) => m.metrics).filter((m): m is Exposition => m !== undefined);
          return mergeExpositions([own, ...parts], format);
        },
        stats: async () => {
          // Each worker's windows and counters as they are (the control plane merges them); resilience state listed per worker.
          const parts = (await collect('stats')).map((m) => m.stats as Partial<SidecarStatsReport> | undefined);
          const res = parts.map((p) => p?.resilience);
          return {
            id,
            service: opts.service,
            version: current?.version ?? null,
            routes: parts.flatMap((p) => p?.routes ?? []),
            resilience: {
              breakers: res.flatMap((r) => r?.breakers ?? []),
              ejected: res.flatMap((r) => r?.ejected ?? []),
              rateLimits: res.flatMap((r) => r?.rateLimits ?? []),
            } satisfies SidecarResilience,
            taps: 0,
          };
        },
        // Each worker has its own caches: a purge goes to all of them and answers their sum. A
        // worker that does not answer in time is left out (logged), like a scrape.
        purgeCache: async (sel) => ({ purged: (await collect(sel)).reduce((n, m) => n + (m.purged ?? 0), 0) }),
        logLevel: () => log.level,
        setLogLevel: (level) => {
          log.level = level;
          broadcast({ t: 'log-level', level });
        },
    };
    admin = await startAdmin(a.host, a.port, src, log);
    if (opts.status) status = await startAdmin(opts.status.host, opts.status.port, src, log, STATUS_PATHS, identity);
  } catch (err) {
    closing = true;
    await stopWorkers(0);
    stats.close();
    throw err;
  }
  if (opts.controlPlane) subscriber = await subscribe(opts, id, inbound.port, (status ?? admin).address().port, accept, log, identity);

  let closed: Promise<void> | undefined;
  return {
    id,
    inbound,
    outbound,
    admin: admin.address(),
    status: status?.address(),
    current: () => current,
    close(graceMs = 5000) {
      closed ??= (async () => {
        draining = true;
        identity?.close();
        await leave(opts, subscriber, log);
        closing = true;
        log.info({ workers, graceMs }, 'draining the workers');
        await stopWorkers(graceMs);
        await admin.close();
        await status?.close();
        stats.close();
      })();
      return closed;
    },
  };
}

/** A worker's life: ask the primary for the snapshot in force, start the listeners, then follow the primary's messages. */
export async function runClusterWorker(opts: SidecarOptions & { logger: Logger }): Promise<number> {
  const slot = Number(process.env[ENV_SLOT]);
  const workers = Number(process.env.MESHLET_WORKERS) || 1;
  const send = (m: FromWorker): void => {
    if (process.connected) process.send?.(m);
  };
  // Connections this worker accepted, per listener: the one per-worker series (like Envoy's
  // listener.<addr>.worker_<n>.downstream_cx_total), to see how the kernel spreads them.
  const own = new Registry();
  const accepted = own.counter('meshlet_worker_connections_total', 'Downstream connections accepted, by listener and worker (--concurrency).', ['listener', 'worker']);
  let proxy: Proxy | undefined;
  let queued: WireSnapshot | undefined;
  /** A certificate that arrived before the proxy started (installed as it starts). */
  let queuedIdentity: TlsMaterial | undefined;
  let closing: Promise<void> | undefined;
  const log = opts.logger.child({ worker: slot });
  const apply = (p: Proxy, w: WireSnapshot): void => {
    const r = p.apply(w);
    send(r.ok ? { t: 'applied', version: w.version } : { t: 'rejected', version: w.version, reason: formatErrors(r.errors) });
  };
  const close = (graceMs: number): Promise<void> =>
    (closing ??= (async () => {
      await proxy?.close(graceMs);
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
          if (proxy) proxy.setIdentity(m.identity);
          else queuedIdentity = m.identity;
          return;
        case 'snapshot':
          if (proxy) apply(proxy, m.snapshot);
          else queued = m.snapshot;
          return;
        case 'log-level':
          log.level = m.level;
          proxy?.setLogLevel(m.level);
          return;
        case 'collect': {
          if (!proxy) return;
          if (m.what === 'metrics') send({ t: 'collected', id: m.id, metrics: { text: proxy.metrics('prometheus') + own.render('prometheus'), windows: proxy.windows() } });
          else send({ t: 'collected', id: m.id, stats: proxy.stats() });
          return;
        }
        case 'purge':
          if (proxy) send({ t: 'collected', id: m.id, purged: proxy.purgeCache(m.sel) });
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
  let initial;
  if (first) {
    const parsed = parseSnapshot(first);
    if (!parsed.ok) throw new Error(`the primary sent a snapshot this worker cannot parse:\n${formatErrors(parsed.errors)}`);
    initial = parsed.value;
  }
  proxy = await startProxy({
    ...opts,
    id: process.env[ENV_ID] ?? opts.id,
    logger: log,
    initial,
    localRateShare: 1 / workers,
    onListening: (name, server) => {
      const c = accepted.labels(name, String(slot));
      server.on('connection', () => c.inc());
    },
  });
  // mTLS before the first connection is taken: listening without a certificate would refuse TLS callers.
  if (queuedIdentity) proxy.setIdentity(queuedIdentity);
  queuedIdentity = undefined;
  send({ t: 'listening', outbound: proxy.outbound, inbound: proxy.inbound, version: proxy.current()?.version ?? null });
  if (queued) apply(proxy, queued);
  return new Promise<number>(() => undefined);
}
