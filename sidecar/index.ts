/**
 * The sidecar, assembled: outbound listener (app -> mesh, 15001), inbound listener (mesh -> app,
 * 15006), admin port (15000), and the policy source: the control plane's push stream, or a static
 * file (`--config`, like Envoy's static bootstrap).
 *
 * snapshot arrives -> parse + validate -> compile -> atomic swap -> ACK (or NACK, keeping the
 * last good snapshot).
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino, { type Logger } from 'pino';
import { embedProtoFiles } from '../src/grpc/transcode/embed';
import { fail, ok, formatErrors, type Result } from '../src/core/result';
import { viaHops } from '../src/http/headers';
import { startListener, type Listener } from '../src/http/listener';
import { OverloadManager } from '../src/http/overload';
import { UpstreamPools, type UpstreamProtocol } from '../src/http/upstream';
import { ActiveRequests, endpointKey } from '../src/lb';
import { RateLimitLayer } from '../src/resilience/rate-limit';
import { AUTHZ_METRIC, AUTHZ_METRIC_HELP, AUTHZ_METRIC_LABELS, InboundAuthz } from '../src/stack/authz';
import { snapshotApplier } from '../src/snapshot/compile';
import { parseAll, parseDocuments, toWire, type CompiledSnapshot, type Snapshot, type WireSnapshot } from '../src/policy';
import { redactResource } from '../src/policy/redact';
import { VERSION } from '../src/core/version';
import { STATUS_PATHS, startAdmin, type AdminServer } from '../src/observability/admin';
import { explain, recentDecisions } from './explain';
import { DecisionRing, DEFAULT_DECISIONS } from '../src/observability/decisions';
import { systemClock } from '../src/core/clock';
import { ResilienceState } from '../src/resilience/state';
import { inboundHandler, outboundHandler, type ProxyContext } from '../src/stack/front';
import { SpanExporter, type TraceFormat } from '../src/observability/tracing';
import { ACCESS_LOG_DESTINATION } from '../src/observability/observer';
import { ProxyStats } from '../src/observability/proxy-stats';
import { createEdgeContext, registerCacheMetrics } from '../src/stack/edge-context';
import * as TlsModule from '../src/security/tls';
import type { Format } from '../src/observability/metrics';
import type { SidecarResilience } from '../src/observability/mesh-stats';
import type { MeshMetrics } from '../src/observability/mesh-metrics';
import type { WindowExports } from '../src/observability/merge';
import type { Subscriber } from '../src/snapshot/subscriber';
// Types only: @peculiar/x509 costs ~0.3-0.8 s to load; a sidecar without a credential never loads it.
import type { WorkloadIdentity, IdentityMaterial } from '../src/security/workload-identity';
import { identityDump } from '../src/security/identity-dump';

function isLoopbackHost(h: string): boolean {
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}

export interface HostPort {
  host: string;
  port: number;
}

export interface SidecarOptions {
  service: string;
  /** Unique per sidecar; default `<service>-<hostname>-<pid>`. */
  id?: string;
  labels?: Record<string, string>;
  /** The control plane's push address `host:port`. Exactly one of this and `configFile`. */
  controlPlane?: string;
  configFile?: string;
  /** The local app; without it the inbound listener answers 503. */
  app?: { host: string; port: number; protocol?: UpstreamProtocol };
  inbound?: HostPort;
  outbound?: HostPort;
  admin?: HostPort;
  /** The status listener (/ready /live /metrics /stats only), e.g. the pod address :15020; none by default. */
  status?: HostPort;
  /** The address other sidecars reach our inbound listener at (default: as the control plane sees us). */
  advertiseAddress?: string;
  logger?: Logger;
  maxHeaderBytes?: number;
  headersTimeoutMs?: number;
  /** Overload protection (src/http/overload.ts) and slow-body limits; see docs/hardening.md. */
  limits?: LimitOptions;
  /** Outbound: proxies in front of the app whose x-forwarded-for entries are kept (default 0: replaced by the peer's address; src/stack/forwarded.ts). */
  xffTrustedHops?: number;
  observability?: ObservabilityOptions;
  /** iptables interception is on (deploy/meshlet-init.sh): classify connections by original destination. */
  intercept?: import('./intercept').InterceptOptions;
  /**
   * On close, keep serving this long after leaving the control plane (so the other sidecars stop
   * sending here first; /ready answers 503 meanwhile), then drain in-flight requests.
   */
  drainDelayMs?: number;
  /** Called on POST /quitquitquit (from loopback); the CLI stops the process as on SIGTERM. */
  onQuit?: () => void;
  /**
   * The bootstrap credential (join token or ServiceAccount token), read at every connect to the
   * control plane. With it the sidecar gets a workload certificate (sidecar/identity.ts).
   */
  credential?: () => string | undefined;
  /** TLS on the push stream (src/snapshot/push-tls.ts); absent: plaintext. */
  pushTls?: import('../src/snapshot/push-tls').PushTlsOptions;
  /** Bytes all the response caches of this process keep together (Route rules' `cache`; default 64 MiB). */
  cacheMaxBytes?: number;
  /** JWT keys: at most one JWKS fetch per URL in this interval (default 30 s). */
  jwksMinRefreshMs?: number;
}

export interface LimitOptions {
  /** Connections per listener (default from the fd limit: `defaultMaxConnections()`). */
  maxConnections?: number;
  /** Requests and streams in flight across both listeners (default 10,000). */
  maxRequests?: number;
  /** Resident set size above which new connections are refused and new requests shed (default: none). */
  memoryWatermarkBytes?: number;
  /** A request body (not gRPC) idle this long is answered 408 (default 30 s; 0: no limit). */
  bodyIdleTimeoutMs?: number;
  /** After `bodyIdleTimeoutMs`, a request body must average this many bytes/s (default 1024; 0: no minimum). */
  minBodyBytesPerSec?: number;
  /** Resident set size reader (tests). */
  rss?: () => number;
}

export interface ObservabilityOptions {
  /** Request metrics (default true; off only to measure their cost). */
  metrics?: boolean;
  /** Trace-context propagation and spans (default true). */
  tracing?: boolean;
  /** Percent of new traces sampled, 0..100 (default 1); a caller's sampled flag always wins. */
  samplingPercent?: number;
  /** Where spans go; without it sampled spans are not exported. */
  collector?: { url: string; format: TraceFormat };
  /** Fraction of requests written to the access log, 0..1 (0 = off, the default: like Istio and Linkerd, access logs are opt-in). */
  accessLogSample?: number;
  /** The access log's own pino logger (default: JSON lines on stdout, written asynchronously). */
  accessLogger?: Logger;
  /** Requests whose decisions are kept in memory for `meshlet explain --last` (default DEFAULT_DECISIONS; 0: none). */
  recentRequests?: number;
}

export interface Sidecar {
  readonly id: string;
  inbound: HostPort;
  outbound: HostPort;
  admin: HostPort;
  /** The status listener, when `status` was given. */
  status?: HostPort;
  /** The compiled snapshot in force. */
  current(): CompiledSnapshot | undefined;
  /** The workload identity (key, certificate, bundle), once the control plane signed one. */
  identity?(): IdentityMaterial | undefined;
  /** Stops accepting, drains in-flight requests for up to `graceMs`, closes everything. */
  close(graceMs?: number): Promise<void>;
}

/** Parses and validates a static policy file into a snapshot; its version is the content hash. */
export async function loadStaticConfig(file: string): Promise<Result<Snapshot>> {
  const r = await loadStaticWire(file);
  return r.ok ? ok(r.value.snapshot) : r;
}

/** The same, also in wire form (the documents with their proto files embedded): what a `--concurrency N` primary sends its workers. */
export async function loadStaticWire(file: string): Promise<Result<{ snapshot: Snapshot; wire: WireSnapshot }>> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    return fail([{ path: file, message: (err as Error).message }]);
  }
  const docs = parseDocuments(text);
  if (!docs.ok) return fail(docs.errors.map((e) => ({ path: `${file}: ${e.path}`, message: e.message })));
  const embedded = embedProtoFiles(docs.value, path.dirname(file));
  if (!embedded.ok) return fail(embedded.errors.map((e) => ({ path: `${file}: ${e.path}`, message: e.message })));
  const parsed = parseAll(embedded.value);
  if (!parsed.ok) return fail(parsed.errors.map((e) => ({ path: `${file}: ${e.path}`, message: e.message })));
  // The embedded proto files count too: a changed .proto is a new version.
  const version = createHash('sha256').update(JSON.stringify(embedded.value)).digest('hex').slice(0, 12);
  return ok({ snapshot: { version, resources: parsed.value, endpoints: [] }, wire: { version, resources: embedded.value as unknown[], endpoints: [] } });
}

/**
 * The sidecar's `/stats`: per label set, the sliding window (`meshlet stat`) and the responses by
 * code and flag so far; the version in force; breakers, ejected endpoints and rate-limit decisions
 * (the dashboard's service page).
 */
export type SidecarStatsReport = { id: string; version: string | null; resilience: SidecarResilience; /** Open `/tap` watchers. */ taps: number } & ReturnType<
  MeshMetrics['stats']
>;
export type { SidecarResilience } from '../src/observability/mesh-stats';

/** The data plane alone: what a `--concurrency N` worker runs (sidecar/cluster.ts), and the core of `startSidecar`. */
export interface ProxyOptions extends Omit<SidecarOptions, 'controlPlane' | 'configFile' | 'admin' | 'advertiseAddress' | 'onQuit' | 'drainDelayMs'> {
  /** A snapshot validated already, in force before the listeners accept their first connection. */
  initial?: Snapshot;
  /**
   * With N workers each takes this share (1/N) of every local rate limit's rate and burst, so the
   * sidecar as a whole keeps the policy's limit (approximately; see src/resilience/rate-limit/layer.ts).
   */
  localRateShare?: number;
  /** Called with each listener's server as it starts (a worker counts its accepted connections). */
  onListening?: (name: 'outbound' | 'inbound', server: import('node:net').Server) => void;
}

/** A running data plane: its listeners, the snapshot in force, and what the admin port shows of it. */
export interface Proxy {
  readonly id: string;
  readonly log: Logger;
  inbound: HostPort;
  outbound: HostPort;
  current(): CompiledSnapshot | undefined;
  /** Parses (when new), compiles and swaps in a snapshot; errors become the NACK reason. */
  apply(w: WireSnapshot): Result<void>;
  applyValid(snapshot: Snapshot): Result<void>;
  metrics(format: Format): string;
  /** The sliding windows of the request-duration summaries, for a merge elsewhere (cluster primary). */
  windows(): WindowExports;
  /** Removes cached responses by key (every Vary variant) or key prefix, in every rule's cache; how many went. */
  purgeCache(sel: { key: string } | { prefix: string }): number;
  /**
   * This sidecar's workload certificate (new or rotated): the inbound listener serves mTLS with it
   * and outbound connections to endpoints with an identity use it. Open connections keep theirs.
   */
  setIdentity(m: { keyPem: string; chainPem: string; bundlePem: string }): void;
  /** The mTLS state: this service's PeerAuthentication mode (and the policy that set it), whether a certificate is in use. */
  mtls(): { mode: { mode: string; policy?: string }; certificate: boolean };
  /** Whether outlier detection has ejected the endpoint now (`meshlet explain`). */
  isEjected(service: string, e: { address: string; port: number }): boolean;
  stats(): SidecarStatsReport;
  /** Live requests (`/tap` on the admin port). */
  readonly tap: import('../src/observability/tap').TapHub;
  /** What happened to recent requests (`/decisions` on the admin port), when kept. */
  readonly decisions?: DecisionRing;
  setLogLevel(level: string): void;
  /** Stops accepting, drains in-flight requests for up to `graceMs`, then closes the proxy's parts. */
  close(graceMs?: number): Promise<void>;
}

export async function startProxy(opts: ProxyOptions): Promise<Proxy> {
  const logger = opts.logger ?? pino({ level: 'info' });
  const id = opts.id ?? `${opts.service}-${os.hostname()}-${process.pid}`;
  const log = logger.child({ sidecar: id, service: opts.service });
  const obs = opts.observability ?? {};
  const accessLogSample = obs.accessLogSample ?? 0;
  if (!(accessLogSample >= 0 && accessLogSample <= 1)) throw new Error(`access-log sampling must be within 0..1, got ${accessLogSample}`);
  // Access-log lines are batched (observer.ts, ACCESS_LOG_DESTINATION: one syscall per 12-64 KiB
  // instead of one a line) and flushed at least every 500 ms, so a quiet sidecar's lines still
  // show up promptly.
  let accessFlush: NodeJS.Timeout | undefined;
  let accessDest: ReturnType<typeof pino.destination> | undefined;
  if (accessLogSample > 0 && !obs.accessLogger) {
    accessDest = pino.destination({ dest: 1, ...ACCESS_LOG_DESTINATION });
    const dest = accessDest;
    accessFlush = setInterval(() => dest.flush(), 500);
    accessFlush.unref();
  }
  const accessLogger =
    accessLogSample > 0
      ? (obs.accessLogger ?? pino({ level: logger.level, base: undefined, timestamp: false }, accessDest)).child({
          log: 'access',
          service: opts.service,
        })
      : undefined;
  let exporter: SpanExporter | undefined;
  const stats = new ProxyStats({
    service: opts.service,
    recordMetrics: obs.metrics,
    // Callers counted by name: the mesh's services and its edge gateways (a gateway is never an
    // endpoint, so it is not among the services).
    knownService: (name) => current?.services.has(name) === true || current?.gateways.has(name) === true,
    tracing: obs.tracing,
    samplingPercent: obs.samplingPercent,
    // Our own destination takes Buffers: the observer encodes the lines (ACCESS_LOG_DESTINATION).
    accessLog: accessLogger ? { logger: accessLogger, sample: accessLogSample, buffers: accessDest !== undefined } : undefined,
  });
  if (obs.collector) {
    const m = stats.metrics.registry;
    exporter = new SpanExporter({
      url: obs.collector.url,
      format: obs.collector.format,
      service: opts.service,
      counters: {
        exported: m.counter('meshlet_trace_spans_exported_total', 'Spans the collector accepted.'),
        dropped: m.counter('meshlet_trace_spans_dropped_total', 'Spans dropped: queue full or export failed.', ['reason']),
      },
    });
    stats.observer.exporter = exporter;
  }
  const active = new ActiveRequests();
  const reg0 = stats.metrics.registry;
  const tlsHandshakes = reg0.counter('meshlet_tls_handshakes_total', 'mTLS handshakes between sidecars, by direction and result: ok; inbound failed (bad or expired certificate, garbage, timeout) or no_spiffe_id; outbound failed or wrong_identity (the peer proved another identity than the endpoint has).', ['direction', 'result']);
  const inboundConns = reg0.counter('meshlet_inbound_connections_total', 'Connections admitted on the inbound listener, by security: tls (mTLS, the caller verified) or plaintext.', ['security']);
  const mtlsRefused = reg0.counter('meshlet_mtls_refused_total', 'Inbound connections closed by PeerAuthentication, by reason: plaintext_refused (STRICT), tls_refused (DISABLE), no_certificate (this sidecar has none yet).', ['reason']);
  const pools = new UpstreamPools({ onHandshake: (result) => tlsHandshakes.labels('outbound', result).inc() });
  let meshTls: import('../src/security/tls').MeshTls | undefined;
  const resilience = new ResilienceState(systemClock, active, Math.random, {
    breaker: (route, from, to) => log.info({ route, from, to }, 'circuit breaker state changed'),
    ejected: (service, endpoint, reason) => {
      stats.metrics.ejection(service);
      log.info({ service, endpoint, reason }, 'endpoint ejected');
    },
  });
  const rateLimit = new RateLimitLayer({ service: opts.service, logger: log, localShare: opts.localRateShare });
  const authz = new InboundAuthz({
    service: opts.service,
    counters: stats.metrics.registry.counter(AUTHZ_METRIC, AUTHZ_METRIC_HELP, AUTHZ_METRIC_LABELS),
    logger: log,
    clock: systemClock,
  });
  let current: CompiledSnapshot | undefined;

  const install = (compiled: CompiledSnapshot): Result<void> => {
    try {
      authz.apply(compiled.resources);
    } catch (err) {
      stats.nacks++;
      return fail([{ path: '', message: `could not compile the AuthorizationPolicies: ${(err as Error).message}` }]);
    }
    current = compiled;
    resilience.apply(compiled);
    rateLimit.apply(compiled.rateLimits.get(opts.service));
    stats.acks++;
    stats.snapshotVersion = compiled.version;
    stats.snapshotAppliedAt = Date.now();
    const keep = new Set<string>();
    for (const s of compiled.services.values()) for (const e of s.endpoints) keep.add(endpointKey(e));
    if (opts.app) keep.add(endpointKey({ address: opts.app.host, port: opts.app.port }));
    pools.retain(keep);
    log.info({ version: compiled.version, resources: compiled.resources.length, endpoints: compiled.endpoints.length }, 'snapshot applied');
    return ok(undefined);
  };
  const { apply, applyValid } = snapshotApplier({ version: () => current?.version, stats, compile: { stats: active }, install });

  const recent = obs.recentRequests ?? DEFAULT_DECISIONS;
  const decisions = recent > 0 ? new DecisionRing(recent, systemClock) : undefined;
  const edge = createEdgeContext({ cacheMaxBytes: opts.cacheMaxBytes, jwksMinRefreshMs: opts.jwksMinRefreshMs, clock: systemClock });
  const caches = edge.caches;
  const ctx: ProxyContext = { snapshot: () => current, pools, active, stats, logger: log, via: viaHops('meshlet'), service: opts.service, rateLimit, authz, resilience, clock: systemClock, random: Math.random, decisions, edge, xffTrustedHops: opts.xffTrustedHops ?? 0 };
  const lim = opts.limits ?? {};
  const reg = stats.metrics.registry;
  registerCacheMetrics(reg, caches);
  const overloadActions = reg.counter('meshlet_overload_actions_total', 'Overload protection at work, by listener and action: connection_refused, idle_closed, request_shed (503 OL), body_timeout and body_too_slow (408).', ['listener', 'action']);
  const overload = new OverloadManager({
    maxConnections: lim.maxConnections,
    maxRequests: lim.maxRequests,
    memoryWatermarkBytes: lim.memoryWatermarkBytes,
    rss: lim.rss,
    clock: systemClock,
    logger: log,
    onAction: (listener, action) => {
      overloadActions.labels(listener, action).inc();
      if (action === 'request_shed') stats.record(listener === 'inbound' ? 'inbound' : 'outbound', 503, 'OL');
    },
  });
  reg.gauge('meshlet_downstream_connections', 'Downstream connections open, by listener.', ['listener']).onCollect((g) => {
    // Registered before the listeners start; scraped only once they have.
    g.labels('outbound').set(outL?.connections() ?? 0);
    g.labels('inbound').set(inL?.connections() ?? 0);
  });
  reg.gauge('meshlet_downstream_connections_limit', 'Downstream connections allowed per listener (--max-connections).').onCollect((g) => g.set(overload.maxConnections));
  reg.gauge('meshlet_overloaded', 'Whether memory is above the watermark (--max-memory), 1 or 0: new connections refused, new requests shed.').onCollect((g) => g.set(overload.overloaded ? 1 : 0));
  const listenerOpts = {
    logger: log,
    maxHeaderBytes: opts.maxHeaderBytes,
    headersTimeoutMs: opts.headersTimeoutMs,
    onRefused: (reason: string) => stats.refused(reason),
    overload,
    bodyIdleTimeoutMs: lim.bodyIdleTimeoutMs ?? 30_000,
    minBodyBytesPerSec: lim.minBodyBytesPerSec ?? 1024,
  };
  log.info({ maxConnections: overload.maxConnections, maxRequests: overload.maxRequests, memoryWatermarkBytes: overload.memoryWatermarkBytes }, 'overload limits');
  const started: { close(): Promise<void> }[] = [];
  let outL: Listener;
  let inL: Listener;
  try {
    if (opts.initial) {
      const r = applyValid(opts.initial);
      if (!r.ok) throw new Error(`invalid static config:\n${formatErrors(r.errors)}`);
    }
    const o = opts.outbound ?? { host: '127.0.0.1', port: 15001 };
    const icpt = opts.intercept ? await import('./intercept') : undefined;
    outL = await startListener(o.host, o.port, {
      ...listenerOpts,
      name: 'outbound',
      handler: outboundHandler(ctx),
      takeover: icpt && opts.intercept ? icpt.outboundTakeover(() => current, opts.intercept, log) : undefined,
    });
    started.push(outL);
    opts.onListening?.('outbound', outL.server);
    const i = opts.inbound ?? { host: '0.0.0.0', port: 15006 };
    const app = opts.app;
    inL = await startListener(i.host, i.port, {
      ...listenerOpts,
      name: 'inbound',
      mtls: {
        mode: () => current?.peerAuth.mode(opts.service).mode ?? 'PERMISSIVE',
        onEvent: (event) => {
          if (event === 'tls') {
            tlsHandshakes.labels('inbound', 'ok').inc();
            inboundConns.labels('tls').inc();
          } else if (event === 'plaintext') inboundConns.labels('plaintext').inc();
          else if (event === 'handshake_failed' || event === 'no_spiffe_id') tlsHandshakes.labels('inbound', event === 'handshake_failed' ? 'failed' : event).inc();
          else mtlsRefused.labels(event).inc();
        },
      },
      takeover: icpt ? icpt.inboundTakeover(app, () => inL.address().port, log, opts.intercept) : undefined,
      handler: app
        ? inboundHandler(ctx, app)
        : (_req, res) => {
            res.writeHead(503, { 'content-type': 'text/plain', 'x-meshlet-flags': 'UH' });
            res.end('no application behind this sidecar (--app-port not set)\n');
          },
    });
    started.push(inL);
    opts.onListening?.('inbound', inL.server);
  } catch (err) {
    await Promise.all(started.map((s) => s.close().catch(() => undefined)));
    resilience.close();
    await pools.close();
    await rateLimit.close();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    id,
    log,
    inbound: inL.address(),
    outbound: outL.address(),
    current: () => current,
    apply,
    applyValid,
    metrics: (format) => {
      const c = pools.counts();
      return (
        stats.render({ upstreamHttp1Pools: c.http1Pools, upstreamHttp2Sessions: c.http2Sessions, breakers: resilience.breakerStates() }, format) +
        (format === 'prometheus' ? rateLimit.render() : '')
      );
    },
    windows: () => ({ [stats.metrics.window.name]: stats.metrics.window.exports() }),
    purgeCache: (sel) => caches.purge(sel),
    setIdentity: (m) => {
      const material = { keyPem: m.keyPem, chainPem: m.chainPem, bundlePem: m.bundlePem };
      if (meshTls) meshTls.update(material);
      else {
        meshTls = new TlsModule.MeshTls(material);
        inL.setTls(meshTls);
        pools.setTls(meshTls);
      }
    },
    mtls: () => ({ mode: current?.peerAuth.mode(opts.service) ?? { mode: 'PERMISSIVE' }, certificate: meshTls !== undefined }),
    isEjected: (service, e) => resilience.service(service)?.isEjected(endpointKey(e)) ?? false,
    stats: () => ({
      id,
      ...stats.metrics.stats(),
      version: current?.version ?? null,
      resilience: { breakers: resilience.breakerStates(), ejected: resilience.ejections(), rateLimits: rateLimit.decisions() },
      authz: authz.decisions(),
      taps: stats.observer.tap.watching,
    }),
    tap: stats.observer.tap,
    decisions,
    setLogLevel: (level) => {
      log.level = level;
      if (accessLogger) accessLogger.level = level;
    },
    close(graceMs = 5000) {
      closing ??= (async () => {
        await Promise.all([outL.close(graceMs), inL.close(graceMs)]);
        overload.close();
        resilience.close();
        await pools.close();
        await rateLimit.close();
        await exporter?.close();
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

export async function startSidecar(opts: SidecarOptions): Promise<Sidecar> {
  if (!opts.controlPlane === !opts.configFile) throw new Error('a sidecar needs exactly one of --control-plane and --config');
  let initial: Snapshot | undefined;
  if (opts.configFile) {
    const cfg = await loadStaticConfig(opts.configFile);
    if (!cfg.ok) throw new Error(`invalid static config:\n${formatErrors(cfg.errors)}`);
    initial = cfg.value;
  }
  const source = opts.controlPlane ? `control-plane ${opts.controlPlane}` : `file ${opts.configFile}`;
  const proxy = await startProxy({ ...opts, initial });
  const log = proxy.log;
  let admin: AdminServer;
  let status: AdminServer | undefined;
  let subscriber: Subscriber | undefined;
  let draining = false;
  const identity =
    opts.controlPlane && opts.credential
      ? new (await import('../src/security/workload-identity')).WorkloadIdentity({ request: (csr) => subscriber?.requestCertificate(csr) ?? false, logger: log })
      : undefined;
  try {
    const a = opts.admin ?? { host: '127.0.0.1', port: 15000 };
    if (!isLoopbackHost(a.host))
      log.warn({ admin: `${a.host}:${a.port}` }, 'the admin port listens beyond loopback: /config_dump, /explain, /tap and /logging are reachable from the network; keep it on 127.0.0.1 and use --status for /metrics /ready /live');
    const src: import('../src/observability/admin').AdminSource = {
        ready: () => proxy.current() !== undefined && !draining,
        configDump: () => ({ ...(configDump(proxy.id, opts.service, source, proxy.current(), subscriber, identity) as object), mtls: proxy.mtls() }),
        quit: opts.onQuit,
        metrics: (format) => proxy.metrics(format),
        stats: () => proxy.stats(),
        purgeCache: (sel) => ({ purged: proxy.purgeCache(sel) }),
        explain: (q) => explain(proxy.current(), opts.service, q, { isEjected: (svc, e) => proxy.isEjected(svc, e), spiffeId: () => identity?.id() }),
        tap: proxy.tap,
        decisions: proxy.decisions ? (q) => recentDecisions(proxy.decisions as DecisionRing, proxy.id, opts.service, q) : undefined,
        logLevel: () => log.level,
        setLogLevel: (level) => proxy.setLogLevel(level),
    };
    admin = await startAdmin(a.host, a.port, src, log);
    if (opts.status) {
      try {
        status = await startAdmin(opts.status.host, opts.status.port, src, log, STATUS_PATHS, identity);
      } catch (err) {
        await admin.close();
        throw err;
      }
    }
  } catch (err) {
    await proxy.close(0);
    throw err;
  }

  // mTLS: every certificate the control plane signs (the first, rotations, a new trust bundle) goes to the data plane.
  identity?.onChange((m) => proxy.setIdentity(m));
  if (opts.controlPlane) {
    // The control plane reads /stats and /metrics from the status port when there is one (the
    // admin port may be loopback-only, out of its reach).
    subscriber = await subscribe(opts, proxy.id, proxy.inbound.port, (status ?? admin).address().port, proxy.apply, log, identity);
  }

  let closing: Promise<void> | undefined;
  return {
    id: proxy.id,
    inbound: proxy.inbound,
    outbound: proxy.outbound,
    admin: admin.address(),
    status: status?.address(),
    current: () => proxy.current(),
    identity: () => identity?.current(),
    close(graceMs = 5000) {
      closing ??= (async () => {
        draining = true;
        identity?.close();
        await leave(opts, subscriber, log);
        await proxy.close(graceMs);
        await admin.close();
        await status?.close();
      })();
      return closing;
    },
  };
}

/** Registers with the control plane and starts taking snapshots (gRPC is loaded only here: ~20 MB of RSS a static sidecar does without). */
export async function subscribe(
  opts: SidecarOptions,
  id: string,
  inboundPort: number,
  adminPort: number,
  apply: (w: WireSnapshot) => Result<void>,
  log: Logger,
  identity?: WorkloadIdentity,
): Promise<Subscriber> {
  const { Subscriber } = await import('../src/snapshot/subscriber');
  const subscriber = new Subscriber({
    target: opts.controlPlane as string,
    node: {
      id,
      service: opts.service,
      address: opts.advertiseAddress ?? '',
      inboundPort,
      labels: opts.labels ?? {},
      buildVersion: VERSION,
      adminPort,
    },
    apply,
    logger: log,
    credential: opts.credential,
    tls: opts.pushTls,
    onIdentity: identity ? (m) => identity.handle(m) : undefined,
    // A reconnect presents the workload certificate: it outlives a join token that expired.
    clientCertificate: identity ? () => identity.current() : undefined,
  });
  subscriber.start();
  return subscriber;
}

/** The first step of a drain: leave the control plane (so other sidecars stop sending here), then wait `drainDelayMs`. */
export async function leave(opts: SidecarOptions, subscriber: Subscriber | undefined, log: Logger): Promise<void> {
  // Leaving (not just disconnecting) takes our endpoint out of the mesh at once.
  if (opts.drainDelayMs) subscriber?.leave();
  else subscriber?.close();
  if (opts.drainDelayMs) {
    log.info({ drainDelayMs: opts.drainDelayMs }, 'draining: left the control plane, still serving');
    await new Promise((r) => setTimeout(r, opts.drainDelayMs));
  }
}

export function configDump(id: string, service: string, source: string, snap: CompiledSnapshot | undefined, sub: Subscriber | undefined, identity?: WorkloadIdentity): unknown {
  return {
    id,
    service,
    source,
    controlPlane: sub ? { connected: sub.connected, target: sub.target, lastError: sub.lastError ?? null } : undefined,
    identity: identity ? identityDump(identity) : undefined,
    version: snap?.version ?? null,
    appliedAt: snap ? new Date(snap.compiledAt).toISOString() : null,
    resources: snap ? snap.resources.map((r) => redactResource(toWire(r))) : [],
    services: snap
      ? [...snap.services.values()].map((s) => ({
          name: s.name,
          protocol: s.protocol,
          loadBalancer: s.policy?.loadBalancer?.type ?? 'round-robin',
          subsets: (s.policy?.subsets ?? []).map((x) => ({ name: x.name, labels: x.labels })),
          endpoints: s.endpoints.map((e) => ({ address: e.address, port: e.port, labels: e.labels, meshed: e.meshed, id: e.id, ...(e.identity ? { identity: e.identity } : {}) })),
        }))
      : [],
  };
}
