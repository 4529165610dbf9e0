/**
 * The edge gateway, assembled: the sidecar's data plane facing clients. It connects to the control
 * plane like a sidecar (the same push stream; its own id and identity; registered as kind
 * `gateway`, so `meshlet status` lists it and no sidecar routes to it), and serves the listeners of
 * the Gateway resource named `--name`: plaintext HTTP (HTTP/1.1, h2c) or HTTPS (TLS 1.2+, HTTP/2
 * by ALPN, certificates by SNI, from files or from the store (TLSCertificate, pushed only to the
 * gateways that use it), reloaded without a restart when a file or the stored resource changes).
 *
 * A request goes through the same front and the same compiled outbound stack as a sidecar's
 * outbound side (src/stack/front.ts, src/stack/outbound.ts): matching, splits, retries, timeouts,
 * faults, mirroring, transcoding, gRPC-Web, WebSocket. The route table is the Routes attached to
 * this gateway (`spec.gateways`), with no implicit route per service: a client reaches only what a
 * Route exposes. At the edge, on top of that: the listener's client limits (body 413, headers 431,
 * 408, per-client connection cap), `x-forwarded-for` trust (`spec.trustedHops`), host names,
 * HTTP -> HTTPS redirect, and `x-meshlet-*` response headers removed (unless kept per listener).
 * The certificates each HTTPS listener serves (names, validity, file) are reported in `/stats`
 * (sampled by the control plane for `meshlet check` MC0017/MC0018) and as a not-after gauge.
 *
 * With a credential (`--join-token`, `--credential-file`) the gateway is a mesh workload like a
 * sidecar: the control plane signs it a certificate for `spiffe://TRUST_DOMAIN/svc/NAME` over the
 * push stream (src/security/workload-identity.ts: renewed at half life, and at once when the trust
 * bundle changes), and it dials mTLS to every endpoint that has an identity, as sidecars do
 * (src/http/upstream.ts): services with PeerAuthentication STRICT are reachable, and their
 * AuthorizationPolicies see the gateway's verified identity. Without one it calls in plaintext.
 *
 * snapshot arrives -> parse + validate -> compile -> listeners reconciled -> ACK (or NACK, keeping
 * the last good snapshot and its listeners).
 */
import * as os from 'node:os';
import type * as tls from 'node:tls';
import type * as http2 from 'node:http2';
import type { H2Response } from '../src/http/h2-server';
import pino, { type Logger } from 'pino';
import { systemClock } from '../src/core/clock';
import { fail, ok, formatErrors, type Result } from '../src/core/result';
import { VERSION } from '../src/core/version';
import { H1Response } from '../src/http/h1-server';
import { startListener, type DownstreamResponse, type Listener, type RequestHandler } from '../src/http/listener';
import { OverloadManager } from '../src/http/overload';
import { UpstreamPools } from '../src/http/upstream';
import { ActiveRequests, endpointKey } from '../src/lb';
import { startAdmin, type AdminServer } from '../src/observability/admin';
import { ACCESS_LOG_DESTINATION } from '../src/observability/observer';
import { ProxyStats } from '../src/observability/proxy-stats';
import { parseSnapshot, toWire, type CompiledSnapshot, type GatewayListener, type GatewaySpec, type Snapshot, type TLSCertificateSpec, type WireSnapshot } from '../src/policy';
import { redactResource } from '../src/policy/redact';
import { ResilienceState } from '../src/resilience/state';
import { identityDump } from '../src/security/identity-dump';
import { ServerCertificates, type CertSource } from '../src/security/server-certs';
import { MeshTls } from '../src/security/tls';
// Types only: the CSR code (@peculiar/x509) loads only when the gateway has a credential.
import type { IdentityMaterial, WorkloadIdentity } from '../src/security/workload-identity';
import { compileSnapshot } from '../src/snapshot/compile';
import type { Subscriber } from '../src/snapshot/subscriber';
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
  /**
   * The bootstrap credential (join token or ServiceAccount token), read at every connect to the
   * control plane. With it the gateway gets a workload certificate and calls services over mTLS.
   */
  credential?: () => string | undefined;
  /** Bytes all the response caches of this gateway keep together (Route rules' `cache`; default 64 MiB). */
  cacheMaxBytes?: number;
  /** JWT keys: at most one JWKS fetch per URL in this interval (default 30 s). */
  jwksMinRefreshMs?: number;
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
  /** The workload identity (key, certificate, bundle), once the control plane signed one. */
  identity(): IdentityMaterial | undefined;
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
  const ctx: ProxyContext = { snapshot: () => current, pools, active, stats, logger: log, viaName: 'meshlet-gateway', service: opts.name, resilience, clock: systemClock, random: Math.random, edge, xffTrustedHops: 0 };
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
    const strip = meshHeaderStripper(new Set(l.keepMeshHeaders));
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
      strip(res, protocol);
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
    // Certificates are read now: one that cannot be read or does not match its key (or a stored
    // one this gateway was not sent) NACKs the snapshot, and the listeners in force keep serving.
    const stored = new Map<string, TLSCertificateSpec>();
    for (const r of compiled.resources) if (r.kind === 'TLSCertificate') stored.set(r.metadata.name, r.spec);
    const certs = new Map<string, ServerCertificates>();
    /** Running listeners whose stored certificates changed: swapped once the whole snapshot is good. */
    const swaps: { certs: ServerCertificates; sources: CertSource[] }[] = [];
    const events = (name: string) => ({
      reloaded: (names: string[]) => {
        m.reloads.labels(name, 'ok').inc();
        log.info({ listener: name, names }, 'certificates reloaded');
      },
      failed: (err: Error) => {
        m.reloads.labels(name, 'error').inc();
        log.error({ err, listener: name }, 'certificate reload failed; the certificates in force stay');
      },
    });
    const refuse = (path: string, message: string): Result<void> => {
      for (const c of certs.values()) c.close();
      stats.nacks++;
      return fail([{ path: `Gateway/${opts.name}: ${path}`, message }]);
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
            `TLSCertificate ${JSON.stringify(c.secret)} was not pushed to this gateway: the control plane sends private keys only over its TLS push port (not --insecure-push-plaintext), to a gateway that joined with a credential for its own name (a join token for ${JSON.stringify(opts.name)})`,
          );
        sources.push({ secret: c.secret, certPem: sec.certificate, keyPem: sec.privateKey });
      }
      const r = running.get(l.name);
      try {
        if (r && r.key === JSON.stringify(l)) {
          if (r.certs && !r.certs.same(sources)) {
            // Checked now (a throwaway load), swapped below: nothing changes unless all is good.
            new ServerCertificates(sources, l.tls.minVersion).close();
            swaps.push({ certs: r.certs, sources });
          }
          continue;
        }
        certs.set(l.name, new ServerCertificates(sources, l.tls.minVersion, events(l.name)));
      } catch (err) {
        return refuse(`spec.listeners[${i}].tls`, (err as Error).message);
      }
    }
    for (const sw of swaps)
      try {
        sw.certs.replace(sw.sources);
      } catch (err) {
        // Checked above; a failure here keeps the certificates in force.
        log.error({ err }, 'stored certificate swap failed; the certificates in force stay');
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
  const identity: WorkloadIdentity | undefined =
    opts.controlPlane && opts.credential
      ? new (await import('../src/security/workload-identity')).WorkloadIdentity({ request: (csr) => subscriber?.requestCertificate(csr) ?? false, logger: log })
      : undefined;
  // Every certificate the control plane signs (the first, renewals, a new trust bundle) goes to the
  // outbound pools: new connections use it, open ones keep theirs.
  identity?.onChange((mat) => {
    const material = { keyPem: mat.keyPem, chainPem: mat.chainPem, bundlePem: mat.bundlePem };
    if (meshTls) meshTls.update(material);
    else {
      meshTls = new MeshTls(material);
      pools.setTls(meshTls);
    }
  });
  const a = opts.admin ?? { host: '127.0.0.1', port: 15000 };
  const admin: AdminServer = await startAdmin(
    a.host,
    a.port,
    {
      // With a credential, ready only once it holds its certificate: before that it would call
      // services in plaintext, which STRICT services refuse (a load balancer waits for ready).
      ready: () => current !== undefined && !closed && (identity === undefined || meshTls !== undefined),
      configDump: () => ({
        id,
        gateway: opts.name,
        controlPlane: subscriber ? { connected: subscriber.connected, target: subscriber.target, lastError: subscriber.lastError ?? null } : undefined,
        identity: identity ? identityDump(identity) : undefined,
        mtls: { certificate: meshTls !== undefined },
        version: current?.version ?? null,
        listeners: [...running.values()].map((r) => ({ ...r.spec, address: r.listener.address() })),
        // Private keys are never shown (src/policy/redact.ts).
        resources: current ? current.resources.map((r) => redactResource(toWire(r))) : [],
      }),
      metrics: (format) => {
        const c = pools.counts();
        return stats.render({ upstreamHttp1Pools: c.http1Pools, upstreamHttp2Sessions: c.http2Sessions, breakers: resilience.breakerStates() }, format);
      },
      stats: () => ({ id, ...stats.metrics.stats(), version: current?.version ?? null, resilience: { breakers: resilience.breakerStates(), ejected: resilience.ejections(), rateLimits: [] }, taps: stats.observer.tap.watching, certificates: certificates() }),
      tap: stats.observer.tap,
      purgeCache: (sel) => ({ purged: edge.caches.purge(sel) }),
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
      onIdentity: identity ? (msg) => identity.handle(msg) : undefined,
      tls: opts.pushTls,
      // A reconnect presents the workload certificate: it outlives a join token that expired.
      clientCertificate: identity ? () => identity.current() : undefined,
    });
    subscriber.start();
  }

  let closing: Promise<void> | undefined;
  return {
    id,
    admin: admin.address(),
    listeners: () => new Map([...running].map(([n, r]) => [n, r.listener.address()])),
    current: () => current,
    identity: () => identity?.current(),
    settled: () => pending,
    close(graceMs = 5000) {
      closing ??= (async () => {
        closed = true;
        identity?.close();
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
 *
 * Per request this is one property write: the wrappers are made once per listener, and an
 * HTTP/1.1 response (the common case) gets the shared `writeHead` wrapper over the class's own
 * method (no closure per request). A head without such a header is passed on as it is.
 */
function meshHeaderStripper(keep: ReadonlySet<string>): (res: DownstreamResponse, protocol: 'http1' | 'http2') => void {
  const clean = (h: unknown): unknown => {
    if (!h || typeof h !== 'object' || Array.isArray(h)) return h;
    let out: Record<string, unknown> | undefined;
    for (const k in h as Record<string, unknown>) {
      if (k.length > 10 && (k.charCodeAt(0) | 0x20) === 0x78 && k.toLowerCase().startsWith('x-meshlet-') && !keep.has(k.toLowerCase())) {
        out ??= { ...(h as Record<string, unknown>) };
        delete out[k];
      }
    }
    return out ?? h;
  };
  const baseWriteHead = H1Response.prototype.writeHead;
  const writeHead = function (this: H1Response, status: number, headers?: unknown) {
    return baseWriteHead.call(this, status, clean(headers) as Parameters<typeof baseWriteHead>[1]);
  };
  return (res, protocol) => {
    if (protocol === 'http2') {
      const stream = (res as H2Response).stream;
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
    const r = res as H1Response;
    if (r.writeHead === baseWriteHead) {
      r.writeHead = writeHead;
      return;
    }
    // Already wrapped by someone else: wrap what is there.
    const prev = r.writeHead;
    r.writeHead = function (this: H1Response, status: number, headers?: unknown) {
      return prev.call(this, status, clean(headers) as Parameters<typeof baseWriteHead>[1]);
    };
  };
}
