/**
 * The gateway's data plane: the listeners of the Gateway resource it serves, the stack behind them,
 * and the snapshot in force. `startGateway` (gateway/index.ts) runs one in its own process beside
 * the admin port and the push stream; with `--concurrency N` each worker runs one
 * (gateway/cluster.ts) and the primary keeps the rest.
 *
 * snapshot arrives -> parse + validate -> compile -> certificates read (files, and TLSCertificates
 * from the store, which the control plane pushes only to the gateways that use them) -> listeners
 * reconciled (or a NACK, keeping the last good snapshot and its listeners).
 */
import * as os from 'node:os';
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import pino, { type Logger } from 'pino';
import { systemClock } from '../src/core/clock';
import { fail, formatErrors, ok, type Result } from '../src/core/result';
import { viaHops, type HeaderOmit } from '../src/http/headers';
import { startListener, type Listener, type RequestHandler } from '../src/http/listener';
import { OverloadManager } from '../src/http/overload';
import { UpstreamPools } from '../src/http/upstream';
import { ActiveRequests, endpointKey } from '../src/lb';
import { ACCESS_LOG_DESTINATION } from '../src/observability/observer';
import type { Format } from '../src/observability/metrics';
import type { WindowExports } from '../src/observability/merge';
import { ProxyStats } from '../src/observability/proxy-stats';
import type { TapHub } from '../src/observability/tap';
import { parseSnapshot, type CompiledSnapshot, type GatewayListener, type GatewaySpec, type Snapshot, type TLSCertificateSpec, type WireSnapshot } from '../src/policy';
import { ResilienceState } from '../src/resilience/state';
import { ServerCertificates, type CertSource } from '../src/security/server-certs';
import { MeshTls, type MeshTlsMaterial } from '../src/security/tls';
import { compileChecked, snapshotApplier } from '../src/snapshot/compile';
import { createEdgeContext, registerCacheMetrics } from '../src/stack/edge-context';
import { outboundHandler, type ProxyContext } from '../src/stack/front';
import { sendLocalRaw } from '../src/stack/respond-http';

/** A certificate an HTTPS listener serves, as `/stats` reports it (times ISO 8601). */
export interface GatewayCertificate {
  listener: string;
  /** The file; for a certificate from the store, `TLSCertificate/NAME`. */
  file: string;
  /** The TLSCertificate it came from, when from the store. */
  secret?: string;
  subject: string;
  names: string[];
  serial: string;
  notBefore: string;
  notAfter: string;
  loadedAt: string;
}

export interface HostPort {
  host: string;
  port: number;
}

export interface GatewayPlaneOptions {
  /** The Gateway resource served; also the gateway's service name in metrics. */
  name: string;
  /** Unique per replica; default `<name>-<hostname>-<pid>`. */
  id?: string;
  /** A validated snapshot, in force (listeners bound) before `startGatewayPlane` resolves. */
  initial?: Snapshot;
  /** The address the listeners bind (default 0.0.0.0); ports come from the Gateway resource. */
  listenHost?: string;
  logger?: Logger;
  /** Fraction of requests written as access-log lines on stdout (default 1: a gateway logs every request). */
  accessLogSample?: number;
  accessLogger?: Logger;
  /** Percent of new traces sampled (default 1). */
  samplingPercent?: number;
  /** Bytes all the response caches keep together (Route rules' `cache`; default 64 MiB). */
  cacheMaxBytes?: number;
  /** JWT keys: at most one JWKS fetch per URL in this interval (default 30 s). */
  jwksMinRefreshMs?: number;
  /** How often certificate files are polled for changes (default 1000 ms). */
  certPollMs?: number;
  /** Called with each listener's server as it starts (a `--concurrency` worker counts its accepted connections). */
  onListening?: (name: string, server: net.Server) => void;
}

/** A gateway listener as `/config_dump` shows it: its spec and the address it is bound to. */
export type ListenerDump = GatewayListener & { address: HostPort };

export interface GatewayPlane {
  readonly id: string;
  readonly log: Logger;
  current(): CompiledSnapshot | undefined;
  /** Parses (when new), validates, compiles and swaps in a snapshot; errors become the NACK reason. */
  apply(w: WireSnapshot): Result<void>;
  applyValid(snapshot: Snapshot): Result<void>;
  /** Resolves once the listeners of the snapshot in force are bound. */
  settled(): Promise<void>;
  /** The listeners serving now, by name. */
  listeners(): Map<string, HostPort>;
  listenerDump(): ListenerDump[];
  /** The certificates every HTTPS listener serves now. */
  certificates(): GatewayCertificate[];
  metrics(format: Format): string;
  /** The sliding windows of the request-duration summaries, for a merge elsewhere (a `--concurrency` primary). */
  windows(): WindowExports;
  stats(): GatewayStatsReport;
  purgeCache(sel: { key: string } | { prefix: string }): number;
  /** The gateway's workload certificate (new or rotated): outbound connections to endpoints with an identity use it. */
  setIdentity(m: MeshTlsMaterial): void;
  /** Whether a workload certificate is in use (calls to services with an identity are mTLS). */
  hasIdentity(): boolean;
  readonly tap: TapHub;
  setLogLevel(level: string): void;
  close(graceMs?: number): Promise<void>;
}

/** The gateway's `/stats`: the sidecar's (windows per route, resilience) plus its certificates. */
export type GatewayStatsReport = { id: string; version: string | null; resilience: { breakers: unknown[]; ejected: unknown[]; rateLimits: unknown[] }; taps: number; certificates: GatewayCertificate[] } & ReturnType<ProxyStats['metrics']['stats']>;

interface Running {
  key: string;
  spec: GatewayListener;
  listener: Listener;
  certs?: ServerCertificates;
}

type CertHooks = ConstructorParameters<typeof ServerCertificates>[2];

/** Certificates read for a snapshot: new listeners' (owned by the caller), and stored ones to swap into running listeners. */
interface LoadedCertificates {
  certs: Map<string, ServerCertificates>;
  swaps: { listener: string; certs: ServerCertificates; sources: CertSource[] }[];
}

/**
 * Reads the certificates of the gateway's HTTPS listeners: a listener that is new or changed gets
 * its own; an unchanged one (`running` returns its entry) whose stored certificates changed gets a
 * swap, checked now by a throwaway load. A file that cannot be read, a key that does not match,
 * or a TLSCertificate this gateway was not sent is an error naming the field, and the snapshot is
 * NACKed with nothing changed. On success the caller owns the returned certificates.
 */
function loadListenerCertificates(
  gateway: string,
  compiled: CompiledSnapshot,
  running: (l: GatewayListener) => { certs?: ServerCertificates } | undefined,
  hooks: (l: GatewayListener) => CertHooks,
): Result<LoadedCertificates> {
  const spec = compiled.gateways.get(gateway);
  const stored = new Map<string, TLSCertificateSpec>();
  for (const r of compiled.resources) if (r.kind === 'TLSCertificate') stored.set(r.metadata.name, r.spec);
  const out: LoadedCertificates = { certs: new Map(), swaps: [] };
  const refuse = (path: string, message: string): Result<LoadedCertificates> => {
    for (const c of out.certs.values()) c.close();
    return fail([{ path: `Gateway/${gateway}: ${path}`, message }]);
  };
  for (const [i, l] of (spec?.listeners ?? []).entries()) {
    if (!l.tls) continue;
    const sources: CertSource[] = [];
    for (const [j, c] of l.tls.certificates.entries()) {
      if (c.secret === undefined) {
        sources.push({ certFile: c.certFile as string, keyFile: c.keyFile as string });
        continue;
      }
      const sec = stored.get(c.secret);
      if (!sec)
        return refuse(
          `spec.listeners[${i}].tls.certificates[${j}].secret`,
          `TLSCertificate ${JSON.stringify(c.secret)} was not pushed to this gateway: the control plane sends private keys only over its TLS push port (not --insecure-push-plaintext), to a gateway that joined with a credential for its own name (a join token for ${JSON.stringify(gateway)})`,
        );
      sources.push({ secret: c.secret, certPem: sec.certificate, keyPem: sec.privateKey });
    }
    try {
      const r = running(l);
      if (r) {
        // Unchanged listener: a stored certificate that changed is checked now, swapped once the whole snapshot is good.
        const changed = r.certs ? !r.certs.same(sources) : sources.some((x) => 'secret' in x);
        if (changed) new ServerCertificates(sources, l.tls.minVersion).close();
        if (changed && r.certs) out.swaps.push({ listener: l.name, certs: r.certs, sources });
        continue;
      }
      out.certs.set(l.name, new ServerCertificates(sources, l.tls.minVersion, hooks(l)));
    } catch (err) {
      return refuse(`spec.listeners[${i}].tls`, (err as Error).message);
    }
  }
  return ok(out);
}

/**
 * Validates a snapshot as a gateway applying it would (parse, compile, the certificates of its
 * HTTPS listeners that changed since `previous`): what a `--concurrency N` primary decides its ACK
 * or NACK on before the workers get it.
 */
export function checkGatewaySnapshot(gateway: string, w: WireSnapshot, active: ActiveRequests, previous: CompiledSnapshot | undefined): Result<CompiledSnapshot> {
  const parsed = parseSnapshot(w);
  if (!parsed.ok) return parsed;
  const c = compileChecked(parsed.value, { stats: active });
  if (!c.ok) return c;
  const compiled = c.value;
  const before = new Map((previous?.gateways.get(gateway)?.listeners ?? []).map((l) => [l.name, JSON.stringify(l)]));
  const certs = loadListenerCertificates(gateway, compiled, (l) => (before.get(l.name) === JSON.stringify(l) ? {} : undefined), () => undefined);
  if (!certs.ok) return certs;
  for (const c of certs.value.certs.values()) c.close();
  return ok(compiled);
}

export async function startGatewayPlane(opts: GatewayPlaneOptions): Promise<GatewayPlane> {
  const logger = opts.logger ?? pino({ level: 'info' });
  const id = opts.id ?? `${opts.name}-${os.hostname()}-${process.pid}`;
  const log = logger.child({ gateway: id, service: opts.name });
  const sample = opts.accessLogSample ?? 1;
  let accessDest: ReturnType<typeof pino.destination> | undefined;
  let accessFlush: NodeJS.Timeout | undefined;
  if (sample > 0 && !opts.accessLogger) {
    accessDest = pino.destination({ dest: 1, ...ACCESS_LOG_DESTINATION });
    const d = accessDest;
    accessFlush = setInterval(() => d.flush(), 500);
    accessFlush.unref();
  }
  const accessLogger = sample > 0 ? (opts.accessLogger ?? pino({ level: logger.level, base: undefined, timestamp: false }, accessDest)).child({ log: 'access', gateway: opts.name }) : undefined;
  const stats = new ProxyStats({
    service: opts.name,
    knownService: (n) => current?.services.has(n) === true || current?.gateways.has(n) === true,
    samplingPercent: opts.samplingPercent,
    accessLog: accessLogger ? { logger: accessLogger, sample, buffers: accessDest !== undefined } : undefined,
  });
  const reg = stats.metrics.registry;
  const m = {
    requests: reg.counter('meshlet_gateway_requests_total', 'Requests received by each gateway listener.', ['listener']),
    handshakes: reg.counter('meshlet_gateway_tls_handshakes_total', 'TLS handshakes on each HTTPS listener, by result (ok, or the OpenSSL error code).', ['listener', 'result']),
    connections: reg.counter('meshlet_gateway_connections_total', 'Connections accepted by each gateway listener.', ['listener']),
    reloads: reg.counter('meshlet_gateway_certificate_reloads_total', 'Certificate files reloaded, by listener and result.', ['listener', 'result']),
  };
  const active = new ActiveRequests();
  const tlsHandshakes = reg.counter('meshlet_tls_handshakes_total', 'mTLS handshakes from the gateway to services, by direction (outbound) and result: ok, failed, or wrong_identity (the peer proved another identity than the endpoint has).', ['direction', 'result']);
  const pools = new UpstreamPools({ onHandshake: (result) => tlsHandshakes.labels('outbound', result).inc() });
  let meshTls: MeshTls | undefined;
  const edge = createEdgeContext({ cacheMaxBytes: opts.cacheMaxBytes, jwksMinRefreshMs: opts.jwksMinRefreshMs, clock: systemClock });
  registerCacheMetrics(reg, edge.caches);
  const resilience = new ResilienceState(systemClock, active, Math.random, {
    breaker: (route, from, to) => log.info({ route, from, to }, 'circuit breaker state changed'),
    ejected: (service, endpoint, reason) => {
      stats.metrics.ejection(service);
      log.info({ service, endpoint, reason }, 'endpoint ejected');
    },
  });
  let current: CompiledSnapshot | undefined;
  const ctx: ProxyContext = { snapshot: () => current, pools, active, stats, logger: log, via: viaHops('meshlet-gateway'), service: opts.name, resilience, clock: systemClock, random: Math.random, edge, xffTrustedHops: 0 };
  const overload = new OverloadManager({ clock: systemClock, logger: log, onAction: (listener, action) => log.debug({ listener, action }, 'overload action') });
  const running = new Map<string, Running>();
  reg.gauge('meshlet_gateway_connections', 'Connections open on each gateway listener.', ['listener']).onCollect((g) => {
    for (const [name, r] of running) g.labels(name).set(r.listener.connections());
  });
  /** The certificates every HTTPS listener serves now (`/stats`, so `meshlet check` sees expiry). */
  const certificates = (): GatewayCertificate[] =>
    [...running].flatMap(([listener, r]) =>
      (r.certs?.certificates() ?? []).map((c) => ({ listener, file: c.certFile, ...(c.secret ? { secret: c.secret } : {}), subject: c.subject, names: c.names, serial: c.serial, notBefore: new Date(c.notBefore).toISOString(), notAfter: new Date(c.notAfter).toISOString(), loadedAt: new Date(c.loadedAt).toISOString() })),
    );
  reg.gauge('meshlet_gateway_certificate_expiry_timestamp_seconds', "When each certificate served by an HTTPS listener expires (its notAfter, Unix seconds); alert on it minus time().", ['listener', 'file', 'name']).onCollect((g) => {
    g.clear(); // a listener or certificate gone since the last scrape is gone from the series too
    for (const [listener, r] of running) for (const c of r.certs?.certificates() ?? []) g.labels(listener, c.certFile, c.names[0] ?? c.subject).set(c.notAfter / 1000);
  });
  let pending: Promise<void> = Promise.resolve();
  let closed = false;

  /** Starts, restarts (spec changed) and stops listeners to match the Gateway in force. */
  const reconcile = (spec: GatewaySpec | undefined, certs: Map<string, ServerCertificates>): Promise<void> => {
    const want = new Map((spec?.listeners ?? []).map((l) => [l.name, l]));
    const stops: Promise<void>[] = [];
    for (const [name, r] of running) {
      const w = want.get(name);
      if (w && JSON.stringify(w) === r.key) continue;
      running.delete(name);
      r.certs?.close();
      stops.push(r.listener.close(5000));
    }
    const https = spec?.listeners.find((l) => l.protocol === 'HTTPS');
    const starts: Promise<void>[] = [];
    for (const [name, l] of want) {
      const r = running.get(name);
      if (r) {
        // Started while this snapshot was applied: a stored certificate changed since is swapped in.
        const c = certs.get(name);
        if (c && r.certs && !r.certs.same(c.sourceList()))
          try {
            r.certs.replace(c.sourceList());
          } catch (err) {
            log.error({ err, listener: name }, 'stored certificate swap failed; the certificates in force stay');
          }
        c?.close();
        continue;
      }
      const c = certs.get(name);
      const key = JSON.stringify(l);
      starts.push(
        startOne(l, c, https?.port).then(
          (listener) => {
            if (closed) return void listener.close(0);
            running.set(name, { key, spec: l, listener, certs: c });
            if (c) c.watch(listener.server as tls.Server, opts.certPollMs);
            opts.onListening?.(name, listener.server);
          },
          (err: Error) => {
            c?.close();
            log.error({ err, listener: name, port: l.port }, 'gateway listener could not start');
          },
        ),
      );
    }
    return Promise.all([...starts]).then(() => void Promise.all(stops));
  };

  const startOne = (l: GatewayListener, certs: ServerCertificates | undefined, httpsPort: number | undefined): Promise<Listener> => {
    const omit = meshHeaderOmit(new Set(l.keepMeshHeaders));
    const requests = m.requests.labels(l.name);
    const hostnames = l.hostnames;
    const front = outboundHandler(ctx, {
      routes: (snap) => snap.gatewayRoutes(opts.name),
      proto: l.protocol === 'HTTPS' ? 'https' : 'http',
      maxBodyBytes: l.limits.maxRequestBodyBytes,
      before: (_req, res, authority, path) => {
        const host = stripPort(authority);
        if (hostnames && !hostnames.some((h) => h === host || (h.startsWith('*.') && host.endsWith(h.slice(1))))) {
          stats.record('outbound', 404, 'NR');
          sendLocalRaw(res, 404, 'NR', `no route: host ${host} is not served by listener ${l.name}`);
          return true;
        }
        if (l.httpsRedirect) {
          const port = httpsPort === undefined || httpsPort === 443 ? '' : `:${httpsPort}`;
          const location = `https://${host.includes(':') ? `[${host}]` : host}${port}${path}`;
          stats.record('outbound', 301);
          res.writeHead(301, { location, 'content-length': '0' });
          res.end();
          return true;
        }
        return false;
      },
    });
    const handler: RequestHandler = (req, res, protocol) => {
      requests.inc();
      res.omit = omit;
      front(req, res, protocol);
    };
    return startListener(opts.listenHost ?? '0.0.0.0', l.port, {
      name: l.name,
      handler,
      logger: log,
      maxHeaderBytes: l.limits.maxHeaderBytes,
      headersTimeoutMs: l.limits.requestHeadersTimeoutMs,
      keepAliveTimeoutMs: l.limits.idleTimeoutMs,
      bodyIdleTimeoutMs: l.limits.requestBodyIdleTimeoutMs,
      minBodyBytesPerSec: 1024,
      maxConnectionsPerClient: l.limits.maxConnectionsPerClient,
      overload,
      onRefused: (reason) => stats.refused(reason),
      tls: certs?.serverOptions(),
      onTls: (outcome, detail) => m.handshakes.labels(l.name, outcome === 'ok' ? 'ok' : (detail ?? 'error')).inc(),
    }).then((listener) => {
      listener.server.on('connection', () => m.connections.labels(l.name).inc());
      return listener;
    });
  };

  const install = (compiled: CompiledSnapshot): Result<void> => {
    const spec = compiled.gateways.get(opts.name);
    // Certificates are read now: one that cannot be read or does not match its key NACKs the
    // snapshot, and the listeners in force keep serving.
    const certs = loadListenerCertificates(
      opts.name,
      compiled,
      (l) => {
        const r = running.get(l.name);
        return r?.key === JSON.stringify(l) ? r : undefined;
      },
      (l) => ({
        reloaded: (names) => {
          m.reloads.labels(l.name, 'ok').inc();
          log.info({ listener: l.name, names }, 'certificates reloaded');
        },
        failed: (err) => {
          m.reloads.labels(l.name, 'error').inc();
          log.error({ err, listener: l.name }, 'certificate reload failed; the certificates in force stay');
        },
      }),
    );
    if (!certs.ok) {
      stats.nacks++;
      return certs;
    }
    for (const sw of certs.value.swaps)
      try {
        sw.certs.replace(sw.sources);
      } catch (err) {
        // Checked above; a failure here keeps the certificates in force.
        log.error({ err, listener: sw.listener }, 'stored certificate swap failed; the certificates in force stay');
      }
    if (!spec) log.warn({ gateway: opts.name }, 'no Gateway resource of this name: no listeners');
    current = compiled;
    ctx.xffTrustedHops = spec?.trustedHops ?? 0;
    resilience.apply(compiled);
    stats.acks++;
    stats.snapshotVersion = compiled.version;
    stats.snapshotAppliedAt = Date.now();
    const keepPools = new Set<string>();
    for (const s of compiled.services.values()) for (const e of s.endpoints) keepPools.add(endpointKey(e));
    pools.retain(keepPools);
    pending = pending.then(() => reconcile(spec, certs.value.certs));
    log.info({ version: compiled.version, listeners: spec?.listeners.map((l) => `${l.name}:${l.port}/${l.protocol}`) ?? [] }, 'snapshot applied');
    return ok(undefined);
  };
  const { apply, applyValid } = snapshotApplier({ version: () => current?.version, stats, compile: { stats: active }, install });

  if (opts.initial) {
    const r = applyValid(opts.initial);
    if (!r.ok) throw new Error(`invalid static config:\n${formatErrors(r.errors)}`);
    await pending;
  }

  let closing: Promise<void> | undefined;
  return {
    id,
    log,
    current: () => current,
    apply,
    applyValid,
    settled: () => pending,
    listeners: () => new Map([...running].map(([n, r]) => [n, r.listener.address()])),
    listenerDump: () => [...running.values()].map((r) => ({ ...r.spec, address: r.listener.address() })),
    certificates,
    metrics: (format) => {
      const c = pools.counts();
      return stats.render({ upstreamHttp1Pools: c.http1Pools, upstreamHttp2Sessions: c.http2Sessions, breakers: resilience.breakerStates() }, format);
    },
    windows: () => ({ [stats.metrics.window.name]: stats.metrics.window.exports() }),
    stats: () => ({ id, ...stats.metrics.stats(), version: current?.version ?? null, resilience: { breakers: resilience.breakerStates(), ejected: resilience.ejections(), rateLimits: [] }, taps: stats.observer.tap.watching, certificates: certificates() }),
    purgeCache: (sel) => edge.caches.purge(sel),
    // Every certificate the control plane signs (the first, renewals, a new trust bundle) goes to
    // the outbound pools: new connections use it, open ones keep theirs.
    setIdentity: (mat) => {
      const material = { keyPem: mat.keyPem, chainPem: mat.chainPem, bundlePem: mat.bundlePem };
      if (meshTls) meshTls.update(material);
      else {
        meshTls = new MeshTls(material);
        pools.setTls(meshTls);
      }
    },
    hasIdentity: () => meshTls !== undefined,
    tap: stats.observer.tap,
    setLogLevel: (level) => {
      log.level = level;
      if (accessLogger) accessLogger.level = level;
    },
    close(graceMs = 5000) {
      closing ??= (async () => {
        closed = true;
        await pending;
        await Promise.all([...running.values()].map((r) => (r.certs?.close(), r.listener.close(graceMs))));
        running.clear();
        overload.close();
        resilience.close();
        await pools.close();
        stats.close();
        if (accessFlush) clearInterval(accessFlush);
        stats.observer.flushAccessLog();
        accessLogger?.flush();
        accessDest?.flushSync();
      })();
      return closing;
    },
  };
}

function stripPort(authority: string): string {
  if (authority.startsWith('[')) {
    const end = authority.indexOf(']');
    return end > 0 ? authority.slice(1, end) : authority;
  }
  const i = authority.lastIndexOf(':');
  return i > 0 && authority.indexOf(':') === i ? authority.slice(0, i) : authority;
}

/**
 * The gateway's clients get no `x-meshlet-*` response header but the listener's keepMeshHeaders
 * (flags, decisions and the like are the mesh's business): the names every response of the
 * listener leaves out, in heads and HTTP/2 trailers, whichever path writes them.
 */
function meshHeaderOmit(keep: ReadonlySet<string>): HeaderOmit {
  return (name) => {
    if (name.length <= 10 || (name.charCodeAt(0) | 0x20) !== 0x78) return false;
    const lower = name.toLowerCase();
    return lower.startsWith('x-meshlet-') && !keep.has(lower);
  };
}
