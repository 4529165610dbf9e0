/**
 * The edge gateway, assembled: the sidecar's data plane facing clients. It connects to the control
 * plane like a sidecar (the same push stream; its own id and identity; registered as kind
 * `gateway`, so `meshlet status` lists it and no sidecar routes to it), and serves the listeners of
 * the Gateway resource named `--name`: plaintext HTTP (HTTP/1.1, h2c) or HTTPS (TLS 1.2+, HTTP/2
 * by ALPN, certificates by SNI, reloaded from their files without a restart).
 *
 * A request goes through the same front and the same compiled outbound stack as a sidecar's
 * outbound side (src/stack/front.ts, src/stack/outbound.ts): matching, splits, retries, timeouts,
 * faults, mirroring, transcoding, gRPC-Web, WebSocket. The route table is the Routes attached to
 * this gateway (`spec.gateways`), with no implicit route per service: a client reaches only what a
 * Route exposes. At the edge, on top of that: the listener's client limits (body 413, headers 431,
 * 408, per-client connection cap), `x-forwarded-for` trust (`spec.trustedHops`), host names,
 * HTTP -> HTTPS redirect, and `x-meshlet-*` response headers removed (unless kept per listener).
 *
 * snapshot arrives -> parse + validate -> compile -> listeners reconciled -> ACK (or NACK, keeping
 * the last good snapshot and its listeners).
 */
import * as os from 'node:os';
import type * as tls from 'node:tls';
import type * as http2 from 'node:http2';
import pino, { type Logger } from 'pino';
import { systemClock } from '../src/core/clock';
import { fail, ok, formatErrors, type Result } from '../src/core/result';
import { VERSION } from '../src/core/version';
import { startListener, type DownstreamResponse, type Listener, type RequestHandler } from '../src/http/listener';
import { OverloadManager } from '../src/http/overload';
import { UpstreamPools } from '../src/http/upstream';
import { ActiveRequests, endpointKey } from '../src/lb';
import { startAdmin, type AdminServer } from '../src/observability/admin';
import { ACCESS_LOG_DESTINATION } from '../src/observability/observer';
import { ProxyStats } from '../src/observability/proxy-stats';
import { parseSnapshot, toWire, type CompiledSnapshot, type GatewayListener, type GatewaySpec, type Snapshot, type WireSnapshot } from '../src/policy';
import { ResilienceState } from '../src/resilience/state';
import { ServerCertificates } from '../src/security/server-certs';
import { compileSnapshot } from '../src/snapshot/compile';
import type { Subscriber } from '../src/snapshot/subscriber';
import { outboundHandler, type ProxyContext } from '../src/stack/front';
import { sendLocalRaw } from '../src/stack/respond-http';

export interface HostPort {
  host: string;
  port: number;
}

export interface GatewayOptions {
  /** The Gateway resource this process serves; also its service name in metrics and registration. */
  name: string;
  /** Unique per replica; default `<name>-<hostname>-<pid>`. */
  id?: string;
  /** The control plane's push address. Exactly one of this and `initial`. */
  controlPlane?: string;
  /** A validated snapshot to serve (`meshlet gateway --config FILE`). */
  initial?: Snapshot;
  /** The address the listeners bind (default 0.0.0.0); ports come from the Gateway resource. */
  listenHost?: string;
  admin?: HostPort;
  logger?: Logger;
  /** Fraction of requests written as access-log lines on stdout (default 1: a gateway logs every request). */
  accessLogSample?: number;
  accessLogger?: Logger;
  /** Percent of new traces sampled (default 1). */
  samplingPercent?: number;
  labels?: Record<string, string>;
  credential?: () => string | undefined;
  /** TLS on the push stream (src/snapshot/push-tls.ts); absent: plaintext. */
  pushTls?: import('../src/snapshot/push-tls').PushTlsOptions;
  /** How often certificate files are polled for changes (default 1000 ms). */
  certPollMs?: number;
  onQuit?: () => void;
}

export interface RunningGateway {
  readonly id: string;
  admin: HostPort;
  /** The listeners serving now, by name. */
  listeners(): Map<string, HostPort>;
  current(): CompiledSnapshot | undefined;
  /** Resolves once the listeners of the snapshot in force are bound (tests, `meshlet up`). */
  settled(): Promise<void>;
  close(graceMs?: number): Promise<void>;
}

interface Running {
  key: string;
  spec: GatewayListener;
  listener: Listener;
  certs?: ServerCertificates;
}

export async function startGateway(opts: GatewayOptions): Promise<RunningGateway> {
  if (!opts.controlPlane === !opts.initial) throw new Error('a gateway needs exactly one of --control-plane and --config');
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
    knownService: (n) => current?.services.has(n) === true,
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
  const pools = new UpstreamPools();
  const resilience = new ResilienceState(systemClock, active, Math.random, {
    breaker: (route, from, to) => log.info({ route, from, to }, 'circuit breaker state changed'),
    ejected: (service, endpoint, reason) => {
      stats.metrics.ejection(service);
      log.info({ service, endpoint, reason }, 'endpoint ejected');
    },
  });
  let current: CompiledSnapshot | undefined;
  const ctx: ProxyContext = { snapshot: () => current, pools, active, stats, logger: log, viaName: 'meshlet-gateway', service: opts.name, resilience, clock: systemClock, random: Math.random, xffTrustedHops: 0 };
  const overload = new OverloadManager({ clock: systemClock, logger: log, onAction: (listener, action) => log.debug({ listener, action }, 'overload action') });
  const running = new Map<string, Running>();
  reg.gauge('meshlet_gateway_connections', 'Connections open on each gateway listener.', ['listener']).onCollect((g) => {
    for (const [name, r] of running) g.labels(name).set(r.listener.connections());
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
      if (running.has(name)) continue;
      const c = certs.get(name);
      const key = JSON.stringify(l);
      starts.push(
        startOne(l, c, https?.port).then(
          (listener) => {
            if (closed) return void listener.close(0);
            running.set(name, { key, spec: l, listener, certs: c });
            if (c) c.watch(listener.server as tls.Server, opts.certPollMs);
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
    const keep = new Set(l.keepMeshHeaders);
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
      m.requests.labels(l.name).inc();
      stripMeshHeaders(res, protocol, keep);
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

  const apply = (w: WireSnapshot): Result<void> => {
    if (current && current.version === w.version) return ok(undefined);
    const parsed = parseSnapshot(w);
    if (!parsed.ok) {
      stats.nacks++;
      return parsed;
    }
    return applyValid(parsed.value);
  };
  const applyValid = (snapshot: Snapshot): Result<void> => {
    let compiled: CompiledSnapshot;
    try {
      compiled = compileSnapshot(snapshot, { stats: active });
    } catch (err) {
      stats.nacks++;
      return fail([{ path: '', message: `could not compile: ${(err as Error).message}` }]);
    }
    const spec = compiled.gateways.get(opts.name);
    // Certificates are read now: one that cannot be read or does not match its key NACKs the
    // snapshot, and the listeners in force keep serving.
    const certs = new Map<string, ServerCertificates>();
    for (const l of spec?.listeners ?? []) {
      const r = running.get(l.name);
      if (!l.tls || (r && r.key === JSON.stringify(l))) continue;
      try {
        certs.set(
          l.name,
          new ServerCertificates(l.tls.certificates, l.tls.minVersion, {
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
      } catch (err) {
        for (const c of certs.values()) c.close();
        stats.nacks++;
        return fail([{ path: `Gateway/${opts.name}: spec.listeners[${spec?.listeners.indexOf(l)}].tls`, message: (err as Error).message }]);
      }
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
    pending = pending.then(() => reconcile(spec, certs));
    log.info({ version: compiled.version, listeners: spec?.listeners.map((l) => `${l.name}:${l.port}/${l.protocol}`) ?? [] }, 'snapshot applied');
    return ok(undefined);
  };

  if (opts.initial) {
    const r = applyValid(opts.initial);
    if (!r.ok) throw new Error(`invalid static config:\n${formatErrors(r.errors)}`);
    await pending;
  }

  let subscriber: Subscriber | undefined;
  const a = opts.admin ?? { host: '127.0.0.1', port: 15000 };
  const admin: AdminServer = await startAdmin(
    a.host,
    a.port,
    {
      ready: () => current !== undefined && !closed,
      configDump: () => ({
        id,
        gateway: opts.name,
        controlPlane: subscriber ? { connected: subscriber.connected, target: subscriber.target, lastError: subscriber.lastError ?? null } : undefined,
        version: current?.version ?? null,
        listeners: [...running.values()].map((r) => ({ ...r.spec, address: r.listener.address() })),
        resources: current ? current.resources.map(toWire) : [],
      }),
      metrics: (format) => {
        const c = pools.counts();
        return stats.render({ upstreamHttp1Pools: c.http1Pools, upstreamHttp2Sessions: c.http2Sessions, breakers: resilience.breakerStates() }, format);
      },
      stats: () => ({ id, ...stats.metrics.stats(), version: current?.version ?? null, resilience: { breakers: resilience.breakerStates(), ejected: resilience.ejections(), rateLimits: [] }, taps: stats.observer.tap.watching }),
      tap: stats.observer.tap,
      logLevel: () => log.level,
      setLogLevel: (level) => {
        log.level = level;
        if (accessLogger) accessLogger.level = level;
      },
      quit: opts.onQuit,
    },
    log,
  );

  if (opts.controlPlane) {
    const { Subscriber: Sub } = await import('../src/snapshot/subscriber');
    subscriber = new Sub({
      target: opts.controlPlane,
      node: { id, service: opts.name, address: '', inboundPort: admin.address().port, labels: opts.labels ?? {}, buildVersion: VERSION, adminPort: admin.address().port, kind: 'gateway' },
      apply,
      logger: log,
      credential: opts.credential,
      tls: opts.pushTls,
    });
    subscriber.start();
  }

  let closing: Promise<void> | undefined;
  return {
    id,
    admin: admin.address(),
    listeners: () => new Map([...running].map(([n, r]) => [n, r.listener.address()])),
    current: () => current,
    settled: () => pending,
    close(graceMs = 5000) {
      closing ??= (async () => {
        closed = true;
        subscriber?.close();
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
        await admin.close();
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
 * `x-meshlet-*` headers stay inside the mesh: removed from every response head written to this
 * client (HTTP/1.1 heads, HTTP/2 HEADERS including gRPC trailers-only answers), except `keep`.
 */
function stripMeshHeaders(res: DownstreamResponse, protocol: 'http1' | 'http2', keep: ReadonlySet<string>): void {
  const clean = (h: unknown): unknown => {
    if (!h || typeof h !== 'object' || Array.isArray(h)) return h;
    let out: Record<string, unknown> | undefined;
    for (const k of Object.keys(h)) {
      if (k.length > 10 && k.toLowerCase().startsWith('x-meshlet-') && !keep.has(k.toLowerCase())) {
        out ??= { ...(h as Record<string, unknown>) };
        delete out[k];
      }
    }
    return out ?? h;
  };
  if (protocol === 'http2') {
    const stream = (res as http2.Http2ServerResponse).stream;
    const respond = stream.respond;
    stream.respond = function (headers, options) {
      return respond.call(this, clean(headers) as http2.OutgoingHttpHeaders, options);
    };
    const sendTrailers = stream.sendTrailers;
    stream.sendTrailers = function (headers) {
      return sendTrailers.call(this, clean(headers) as http2.OutgoingHttpHeaders);
    };
    return;
  }
  const r = res as unknown as { writeHead(status: number, headers?: unknown): unknown };
  const writeHead = r.writeHead;
  r.writeHead = function (status: number, headers?: unknown) {
    return writeHead.call(this, status, clean(headers));
  };
}
