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
 * The machinery (forking, restarts, IPC, collecting from the workers) is src/workers/, shared
 * with `meshlet gateway --concurrency N`; this file is what is the sidecar's own.
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
import * as os from 'node:os';
import type { Logger } from 'pino';
import { formatErrors, ok, type Result } from '../src/core/result';
import { ActiveRequests } from '../src/lb';
import { mergeExpositions, type Exposition } from '../src/observability/merge';
import { parseSnapshot, type CompiledSnapshot, type WireSnapshot } from '../src/policy';
import { compileChecked } from '../src/snapshot/compile';
import { STATUS_PATHS, startAdmin, type AdminServer } from '../src/observability/admin';
import { ProxyStats } from '../src/observability/proxy-stats';
import type { Subscriber } from '../src/snapshot/subscriber';
import { poolWithIdentity } from '../src/workers/primary';
import { runWorker } from '../src/workers/worker';
import { configDump, leave, loadStaticWire, startProxy, subscribe, type HostPort, type Sidecar, type SidecarOptions, type SidecarResilience, type SidecarStatsReport } from './index';

export { isWorker } from '../src/workers/worker';

export async function startClusterSidecar(opts: SidecarOptions & { logger: Logger }, workers: number): Promise<Sidecar> {
  if (!opts.controlPlane === !opts.configFile) throw new Error('a sidecar needs exactly one of --control-plane and --config');
  const id = opts.id ?? `${opts.service}-${os.hostname()}-${process.pid}`;
  const log = opts.logger.child({ sidecar: id, service: opts.service });
  const source = opts.controlPlane ? `control-plane ${opts.controlPlane}` : `file ${opts.configFile}`;
  // The primary's own metrics: policy ACKs/NACKs and the version in force (one policy stream, so
  // these are the primary's alone), its process metrics, and worker restarts.
  const stats = new ProxyStats({ service: opts.service, recordMetrics: false, tracing: false });
  const active = new ActiveRequests();
  let current: CompiledSnapshot | undefined;

  // One workload identity for the whole sidecar, held by the primary (it has the push stream).
  let subscriber: Subscriber | undefined;
  const { pool, identity } = await poolWithIdentity({ workers, id, kind: 'sidecar', log, registry: stats.metrics.registry }, Boolean(opts.controlPlane && opts.credential), () => subscriber);

  /** Validates a snapshot as a single sidecar would (parse + compile), so a NACK is decided here, once. */
  const accept = (w: WireSnapshot): Result<void> => {
    if (current && current.version === w.version) return ok(undefined);
    const parsed = parseSnapshot(w);
    if (!parsed.ok) {
      stats.nacks++;
      return parsed;
    }
    const c = compileChecked(parsed.value, { stats: active });
    if (!c.ok) {
      stats.nacks++;
      return c;
    }
    const compiled = c.value;
    current = compiled;
    stats.acks++;
    stats.snapshotVersion = compiled.version;
    stats.snapshotAppliedAt = Date.now();
    log.info({ version: compiled.version, resources: compiled.resources.length, endpoints: compiled.endpoints.length, workers }, 'snapshot accepted; sending it to the workers');
    pool.publish(w);
    return ok(undefined);
  };

  if (opts.configFile) {
    const cfg = await loadStaticWire(opts.configFile);
    if (!cfg.ok) throw new Error(`invalid static config:\n${formatErrors(cfg.errors)}`);
    const r = accept(cfg.value.wire);
    if (!r.ok) throw new Error(`invalid static config:\n${formatErrors(r.errors)}`);
  }

  let draining = false;
  const { outbound, inbound } = (await pool.start().catch((err: unknown) => {
    stats.close();
    throw err;
  })) as { outbound: HostPort; inbound: HostPort };
  const collect = pool.collect.bind(pool);

  let admin: AdminServer;
  let status: AdminServer | undefined;
  try {
    const a = opts.admin ?? { host: '127.0.0.1', port: 15000 };
    const src: import('../src/observability/admin').AdminSource = {
        ready: () => current !== undefined && !draining && pool.allApplied(current.version),
        configDump: () => ({
          ...(configDump(id, opts.service, source, current, subscriber, identity) as object),
          mtls: { mode: current?.peerAuth.mode(opts.service) ?? { mode: 'PERMISSIVE' }, certificate: identity?.current() !== undefined },
          workers: pool.workers(),
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
          pool.setLogLevel(level);
        },
    };
    admin = await startAdmin(a.host, a.port, src, log);
    if (opts.status) status = await startAdmin(opts.status.host, opts.status.port, src, log, STATUS_PATHS, identity);
  } catch (err) {
    await pool.stop(0);
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
        log.info({ workers, graceMs }, 'draining the workers');
        await pool.stop(graceMs);
        await admin.close();
        await status?.close();
        stats.close();
      })();
      return closed;
    },
  };
}

/** A worker's life: the sidecar's data plane (startProxy) driven by the primary (src/workers/worker.ts). */
export function runClusterWorker(opts: SidecarOptions & { logger: Logger }): Promise<number> {
  return runWorker(opts.logger, async (w) => {
    const proxy = await startProxy({
      ...opts,
      id: w.id ?? opts.id,
      logger: w.log,
      initial: w.initial,
      localRateShare: 1 / w.workers,
      onListening: w.onListening,
    });
    return {
      apply: (s) => proxy.apply(s),
      version: () => proxy.current()?.version ?? null,
      info: () => ({ outbound: proxy.outbound, inbound: proxy.inbound }),
      metrics: () => proxy.metrics('prometheus'),
      windows: () => proxy.windows(),
      stats: () => proxy.stats(),
      purgeCache: (sel) => proxy.purgeCache(sel),
      setIdentity: (m) => proxy.setIdentity(m),
      setLogLevel: (level) => proxy.setLogLevel(level),
      close: (graceMs) => proxy.close(graceMs),
    };
  });
}
