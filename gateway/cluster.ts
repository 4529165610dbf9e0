/**
 * `meshlet gateway --concurrency N` (N > 1): one gateway as N worker processes, as
 * `meshlet sidecar --concurrency N` runs one sidecar (the machinery is src/workers/, shared).
 *
 * The primary holds what there is one of: the policy source (push stream or `--config`), the
 * admin port, the workload identity, and the decision to ACK or NACK (parse, compile, and the
 * certificates of changed HTTPS listeners read, as a single gateway would: checkGatewaySnapshot).
 * Every worker runs the whole data plane (gateway/plane.ts): it reconciles the Gateway's listeners
 * itself, and node:cluster makes them one shared socket per port, accepted on by every worker (the
 * kernel spreads the connections). Each worker reads and watches the certificate files of its HTTPS
 * listeners (a renewed file is picked up by every worker within the poll interval); the primary
 * sends every workload certificate it gets (the first, renewals, a new bundle) to every worker,
 * which dials services over mTLS with it.
 *
 * `/ready` holds until every worker has the snapshot in force and its listeners bound (and, with a
 * credential, the workload certificate is there); `/metrics` merges the workers' expositions;
 * `/stats` lists every worker's route windows (the control plane merges them) and the certificates
 * the HTTPS listeners serve, once per listener and file; `/cache/purge` reaches every worker's
 * caches and answers their sum. Per-worker state, as in Envoy: connection pools, breakers, outlier
 * detection, response caches, JWKS caches. `/tap` is not served by a primary (501).
 */
import * as os from 'node:os';
import type { Logger } from 'pino';
import { formatErrors, ok, type Result } from '../src/core/result';
import { ActiveRequests } from '../src/lb';
import { startAdmin, type AdminServer } from '../src/observability/admin';
import { mergeExpositions, type Exposition } from '../src/observability/merge';
import { ProxyStats } from '../src/observability/proxy-stats';
import { toWire, type CompiledSnapshot, type WireSnapshot } from '../src/policy';
import { redactResource } from '../src/policy/redact';
import { identityDump } from '../src/security/identity-dump';
import type { Subscriber } from '../src/snapshot/subscriber';
import { poolWithIdentity } from '../src/workers/primary';
import { runWorker } from '../src/workers/worker';
import { subscribeGateway, type GatewayOptions, type RunningGateway } from './index';
import { checkGatewaySnapshot, startGatewayPlane, type GatewayCertificate, type GatewayStatsReport, type HostPort, type ListenerDump } from './plane';

export { isWorker } from '../src/workers/worker';

export interface ClusterGatewayOptions extends Omit<GatewayOptions, 'initial'> {
  logger: Logger;
  /** The static policies in wire form (`--config FILE`), sent to the workers as they are. */
  initialWire?: WireSnapshot;
}

/** What a worker reports of its listeners with `listening` and `applied`. */
type WorkerInfo = { listeners: ListenerDump[] };

export async function startClusterGateway(opts: ClusterGatewayOptions, workers: number): Promise<RunningGateway> {
  if (!opts.controlPlane === !opts.initialWire) throw new Error('a gateway needs exactly one of --control-plane and --config');
  const id = opts.id ?? `${opts.name}-${os.hostname()}-${process.pid}`;
  const log = opts.logger.child({ gateway: id, service: opts.name });
  // The primary's own metrics: policy ACKs/NACKs and the version in force, its process metrics,
  // worker restarts (the workers' request metrics are merged in at each scrape).
  const stats = new ProxyStats({ service: opts.name, recordMetrics: false, tracing: false });
  const active = new ActiveRequests();
  let current: CompiledSnapshot | undefined;

  let subscriber: Subscriber | undefined;
  const { pool, identity } = await poolWithIdentity({ workers, id, kind: 'gateway', log, registry: stats.metrics.registry }, Boolean(opts.controlPlane && opts.credential), () => subscriber);

  /** Decides ACK or NACK once, as a single gateway would, then sends the snapshot to every worker. */
  const accept = (w: WireSnapshot): Result<void> => {
    if (current && current.version === w.version) return ok(undefined);
    const r = checkGatewaySnapshot(opts.name, w, active, current);
    if (!r.ok) {
      stats.nacks++;
      return r;
    }
    current = r.value;
    stats.acks++;
    stats.snapshotVersion = current.version;
    stats.snapshotAppliedAt = Date.now();
    const spec = current.gateways.get(opts.name);
    log.info({ version: current.version, listeners: spec?.listeners.map((l) => `${l.name}:${l.port}/${l.protocol}`) ?? [], workers }, 'snapshot accepted; sending it to the workers');
    pool.publish(w);
    return ok(undefined);
  };
  if (opts.initialWire) {
    const r = accept(opts.initialWire);
    if (!r.ok) throw new Error(`invalid static config:\n${formatErrors(r.errors)}`);
  }

  try {
    await pool.start();
  } catch (err) {
    stats.close();
    throw err;
  }

  let closed = false;
  const listenerDump = (): ListenerDump[] => ((pool.infos()[0] as WorkerInfo | undefined)?.listeners ?? []);
  const a = opts.admin ?? { host: '127.0.0.1', port: 15000 };
  let admin: AdminServer;
  try {
    admin = await startAdmin(
      a.host,
      a.port,
      {
        ready: () => current !== undefined && !closed && pool.allApplied(current.version) && (identity === undefined || identity.current() !== undefined),
        configDump: () => ({
          id,
          gateway: opts.name,
          controlPlane: subscriber ? { connected: subscriber.connected, target: subscriber.target, lastError: subscriber.lastError ?? null } : undefined,
          identity: identity ? identityDump(identity) : undefined,
          mtls: { certificate: identity?.current() !== undefined },
          version: current?.version ?? null,
          listeners: listenerDump(),
          // Private keys are never shown (src/policy/redact.ts).
          resources: current?.resources.map((r) => redactResource(toWire(r))) ?? [],
          workers: pool.workers(),
        }),
        metrics: async (format) => {
          const own: Exposition = { text: stats.render({ upstreamHttp1Pools: 0, upstreamHttp2Sessions: 0 }, 'prometheus') };
          const parts = (await pool.collect('metrics')).map((m) => m.metrics).filter((m): m is Exposition => m !== undefined);
          return mergeExpositions([own, ...parts], format);
        },
        stats: async () => {
          // Each worker's windows and counters as they are (the control plane merges them, as for a
          // sidecar's workers); the certificates once per listener and file: every worker loads the same files.
          const parts = (await pool.collect('stats')).map((m) => m.stats as Partial<GatewayStatsReport> | undefined);
          const certificates = new Map<string, GatewayCertificate>();
          for (const p of parts)
            for (const c of p?.certificates ?? []) {
              const key = `${c.listener}\0${c.file}`;
              const seen = certificates.get(key);
              // Mid-reload two workers may serve different ones: report the newer load.
              if (!seen || c.loadedAt > seen.loadedAt) certificates.set(key, c);
            }
          return {
            id,
            service: opts.name,
            version: current?.version ?? null,
            routes: parts.flatMap((p) => p?.routes ?? []),
            resilience: {
              breakers: parts.flatMap((p) => p?.resilience?.breakers ?? []),
              ejected: parts.flatMap((p) => p?.resilience?.ejected ?? []),
              rateLimits: [],
            },
            taps: 0,
            certificates: [...certificates.values()],
          };
        },
        purgeCache: async (sel) => ({ purged: (await pool.collect(sel)).reduce((n, m) => n + (m.purged ?? 0), 0) }),
        logLevel: () => log.level,
        setLogLevel: (level) => {
          log.level = level;
          pool.setLogLevel(level);
        },
        quit: opts.onQuit,
      },
      log,
    );
  } catch (err) {
    await pool.stop(0);
    stats.close();
    throw err;
  }
  if (opts.controlPlane) subscriber = await subscribeGateway(opts, id, admin.address().port, accept, log, identity);

  let closing: Promise<void> | undefined;
  return {
    id,
    admin: admin.address(),
    listeners: () => new Map(listenerDump().map((l) => [l.name, l.address] as [string, HostPort])),
    current: () => current,
    identity: () => identity?.current(),
    // The workers apply on their own: settled once every one has the version in force (with its listeners bound).
    settled: () =>
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (closed || !current || pool.allApplied(current.version)) resolve();
          else setTimeout(check, 20).unref();
        };
        check();
      }),
    close(graceMs = 5000) {
      closing ??= (async () => {
        closed = true;
        identity?.close();
        subscriber?.close();
        log.info({ workers, graceMs }, 'draining the workers');
        await pool.stop(graceMs);
        await admin.close();
        stats.close();
      })();
      return closing;
    },
  };
}

/** A worker's life: the gateway's data plane, driven by the primary (src/workers/worker.ts). */
export function runGatewayWorker(opts: Omit<GatewayOptions, 'initial'> & { logger: Logger }): Promise<number> {
  return runWorker(opts.logger, async (w) => {
    const plane = await startGatewayPlane({ ...opts, id: w.id ?? opts.id, logger: w.log, initial: w.initial, onListening: w.onListening });
    return {
      apply: async (s) => {
        const r = plane.apply(s);
        if (r.ok) await plane.settled();
        return r;
      },
      version: () => plane.current()?.version ?? null,
      info: (): WorkerInfo => ({ listeners: plane.listenerDump() }),
      metrics: () => plane.metrics('prometheus'),
      windows: () => plane.windows(),
      stats: () => plane.stats(),
      purgeCache: (sel) => plane.purgeCache(sel),
      setIdentity: (m) => plane.setIdentity(m),
      setLogLevel: (level) => plane.setLogLevel(level),
      close: (graceMs) => plane.close(graceMs),
    };
  });
}
