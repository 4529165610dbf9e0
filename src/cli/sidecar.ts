import { hostPort, labels, port, flags, UsageError, type Command } from './common';
import { availableParallelism } from 'node:os';
import { readFileSync } from 'node:fs';
import { runUntilSignal, logger } from './process';
import { PUSH_TLS_FLAGS, PUSH_TLS_USAGE, pushTlsFlags } from './push-tls-flags';

export const sidecar: Command = {
  name: 'sidecar',
  usage: `meshlet sidecar --service NAME [--labels k=v,...] [--control-plane HOST:PORT | --config FILE]
                [--app-port N] [--inbound P] [--outbound P] [--admin P] [--id ID] [--advertise ADDR] [--concurrency N]

  --service NAME          the service this instance belongs to (required)
  --labels k=v,...        endpoint labels, e.g. version=v2 (DestinationPolicy subsets select on them)
  --control-plane H:P     take policies from the control plane's push port (default 127.0.0.1:15010);
                          several replicas: H:P,H:P,... (or a DNS name resolving to several), tried in turn
  --config FILE           or run from static policies in FILE (YAML/JSON), with no control plane
  --app-port N            the local app's port; the inbound listener forwards to 127.0.0.1:N
  --app-protocol P        http1 or http2 (h2c) towards the app (default: as the request arrived)
  --inbound P             inbound listener, mesh -> app (default 15006, all interfaces)
  --outbound P            outbound listener, app -> mesh (default 15001, loopback); set HTTP_PROXY to it
  --admin P               admin port, every admin path: /ready /live /metrics /stats /config_dump /explain
                          /tap /logging /quitquitquit (default 127.0.0.1:15000; keep it on loopback)
  --status HOST:PORT      status port: /ready /live /metrics /stats, for probes, Prometheus and the
                          control plane, and the admin paths over mTLS to the control plane alone
                          (e.g. 0.0.0.0:15020 on the pod address; default: none)
  --id ID                 unique sidecar id (default SERVICE-HOSTNAME-PID)
  --advertise ADDR        address other sidecars use for our inbound port (default: as the control plane sees us)
  --headers-timeout MS    a client must send its request headers within MS milliseconds, else 408 (default 10000)
  --max-header-bytes N    request header bytes allowed per request, else 431 (default 65536)
  --max-connections N     downstream connections per listener; at the cap the oldest idle one is closed, or
                          the new one refused (default: from the fd limit, (ulimit -n - 256) / 4)
  --max-requests N        requests and HTTP/2 streams in flight, both listeners; more get 503 OL (default 10000)
  --max-memory MB         resident-memory watermark: above it new connections are refused, new requests get
                          503 OL and idle connections are closed (default: none)
  --cache-max-mb MB       memory all response caches (Route rules' cache) keep together, LRU (default 64)
  --jwks-refresh-ms MS    JWT keys: at most one JWKS fetch per URL in MS ms, for unknown kids and failures alike (default 30000)
  --request-body-timeout MS  a request body (not gRPC) sending nothing for MS ms gets 408 (default 30000; 0: off)
  --min-upload-rate B     after that, a request body must average B bytes/s, else 408 (default 1024; 0: off)
  --log-level LEVEL       trace, debug, info, warn, error (default info); change it live: POST ADMIN/logging?level=debug
  --metrics on|off        per-request metrics (default on; off only to measure what they cost)
  --tracing on|off        trace-context propagation (traceparent, B3, x-request-id) and spans (default on)
  --trace-sampling PCT    percent of new traces sampled, 0-100 (default 1); a caller's sampled flag always wins
  --trace-collector URL   export spans in batches to URL (e.g. http://zipkin:9411/api/v2/spans)
  --trace-format F        zipkin (v2 JSON) or otlp (OTLP/HTTP JSON, URL .../v1/traces); default zipkin
  --xff-trusted-hops N    proxies in front of the app whose x-forwarded-for entries are kept (default 0: an
                          app-supplied x-forwarded-for is replaced by the address the sidecar sees)
  --access-log RATE       fraction of requests written as JSON access-log lines on stdout, 0-1 (default 0: off; 1: every request)
  --recent-requests N     what happened to the last N requests, kept in memory for \`meshlet explain --last\`
                          (default 1024; 0: off)
  --intercept             the pod's traffic is redirected by iptables (deploy/meshlet-init.sh): route by
                          original destination, pass ports no policy makes HTTP through as opaque TCP
  --inbound-localhost     with --intercept: pass inbound connections to ports other than the app's to
                          127.0.0.1:PORT (the old behaviour) instead of the pod's own address, so an app
                          listening only on loopback is reachable through the mesh (pod annotation
                          meshlet.dev/inbound-localhost: "true")
  --drain-ms MS           on SIGTERM keep serving MS milliseconds after leaving the control plane, then drain
  --http-ports P,P        with --intercept: outbound ports always proxied as HTTP (beside 80 and Route host ports)
  --join-token TOKEN      the bootstrap credential from \`meshlet token create\` (better: MESHLET_JOIN_TOKEN,
                          not seen in ps); with it the sidecar gets a workload certificate (docs/security.md)
  --credential-file FILE  or read it from FILE at every connect (a projected ServiceAccount token on Kubernetes)
${PUSH_TLS_USAGE}
  --concurrency N|auto    worker processes serving the listeners (default 1: one process; auto: one per CPU).
                          With N > 1 a primary keeps the policy stream and the admin port, and the workers
                          share the listening sockets; each local rate limit is split 1/N per worker

Ports accept HOST:PORT too. SIGTERM or SIGINT drains in-flight requests, then exits.`,
  async run(argv) {
    const { values } = flags(argv, {
      service: { type: 'string' },
      labels: { type: 'string' },
      'control-plane': { type: 'string' },
      config: { type: 'string' },
      'app-port': { type: 'string' },
      'app-protocol': { type: 'string' },
      inbound: { type: 'string' },
      outbound: { type: 'string' },
      admin: { type: 'string' },
      status: { type: 'string' },
      id: { type: 'string' },
      advertise: { type: 'string' },
      'headers-timeout': { type: 'string' },
      'max-header-bytes': { type: 'string' },
      'max-connections': { type: 'string' },
      'max-requests': { type: 'string' },
      'max-memory': { type: 'string' },
      'cache-max-mb': { type: 'string' },
      'jwks-refresh-ms': { type: 'string' },
      'request-body-timeout': { type: 'string' },
      'min-upload-rate': { type: 'string' },
      'log-level': { type: 'string' },
      tracing: { type: 'string' },
      metrics: { type: 'string' },
      'trace-sampling': { type: 'string' },
      'trace-collector': { type: 'string' },
      'trace-format': { type: 'string' },
      'access-log': { type: 'string' },
      'recent-requests': { type: 'string' },
      'xff-trusted-hops': { type: 'string' },
      intercept: { type: 'boolean' },
      'inbound-localhost': { type: 'boolean' },
      'drain-ms': { type: 'string' },
      'http-ports': { type: 'string' },
      concurrency: { type: 'string' },
      'join-token': { type: 'string' },
      'credential-file': { type: 'string' },
      ...PUSH_TLS_FLAGS,
    });
    if (!values.service) throw new UsageError('--service NAME is required');
    if (values['control-plane'] && values.config) throw new UsageError('use either --control-plane or --config, not both');
    const appProtocol = values['app-protocol'];
    if (appProtocol !== undefined && appProtocol !== 'http1' && appProtocol !== 'http2')
      throw new UsageError(`--app-protocol must be http1 or http2, got ${JSON.stringify(appProtocol)}`);
    const listen = (v: string | undefined, dfltHost: string, dfltPort: number, what: string) =>
      v === undefined ? { host: dfltHost, port: dfltPort } : v.includes(':') ? hostPort(v, what) : { host: dfltHost, port: port(v, what, dfltPort) };
    const positive = (v: string | undefined, what: string): number | undefined => {
      if (v === undefined) return undefined;
      if (!/^\d{1,9}$/.test(v) || Number(v) === 0) throw new UsageError(`${what}: expected a positive integer, got ${JSON.stringify(v)}`);
      return Number(v);
    };
    const headersTimeoutMs = positive(values['headers-timeout'], '--headers-timeout');
    const maxHeaderBytes = positive(values['max-header-bytes'], '--max-header-bytes');
    const orZero = (v: string | undefined, what: string): number | undefined => {
      if (v === undefined) return undefined;
      if (!/^\d{1,9}$/.test(v)) throw new UsageError(`${what}: expected a non-negative integer (0: off), got ${JSON.stringify(v)}`);
      return Number(v);
    };
    const maxMemoryMb = positive(values['max-memory'], '--max-memory');
    const limits = {
      maxConnections: positive(values['max-connections'], '--max-connections'),
      maxRequests: positive(values['max-requests'], '--max-requests'),
      memoryWatermarkBytes: maxMemoryMb === undefined ? undefined : maxMemoryMb * 1024 * 1024,
      bodyIdleTimeoutMs: orZero(values['request-body-timeout'], '--request-body-timeout'),
      minBodyBytesPerSec: orZero(values['min-upload-rate'], '--min-upload-rate'),
    };
    const fraction = (v: string | undefined, what: string, max: number): number | undefined => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > max) throw new UsageError(`${what}: expected a number from 0 to ${max}, got ${JSON.stringify(v)}`);
      return n;
    };
    const tracing = values.tracing;
    if (tracing !== undefined && tracing !== 'on' && tracing !== 'off') throw new UsageError(`--tracing must be on or off, got ${JSON.stringify(tracing)}`);
    const metrics = values.metrics;
    if (metrics !== undefined && metrics !== 'on' && metrics !== 'off') throw new UsageError(`--metrics must be on or off, got ${JSON.stringify(metrics)}`);
    const traceFormat = values['trace-format'] ?? 'zipkin';
    if (traceFormat !== 'zipkin' && traceFormat !== 'otlp') throw new UsageError(`--trace-format must be zipkin or otlp, got ${JSON.stringify(traceFormat)}`);
    const collector = values['trace-collector'];
    if (collector !== undefined) {
      let u: URL | undefined;
      try {
        u = new URL(collector);
      } catch {
        u = undefined;
      }
      if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) throw new UsageError(`--trace-collector: expected an http(s) URL, got ${JSON.stringify(collector)}`);
    }
    const observability = {
      metrics: metrics === undefined ? undefined : metrics === 'on',
      tracing: tracing === undefined ? undefined : tracing === 'on',
      samplingPercent: fraction(values['trace-sampling'], '--trace-sampling', 100),
      collector: collector ? { url: collector, format: traceFormat as 'zipkin' | 'otlp' } : undefined,
      accessLogSample: fraction(values['access-log'], '--access-log', 1),
      recentRequests: orZero(values['recent-requests'], '--recent-requests'),
    };
    const appPort = values['app-port'] === undefined ? undefined : port(values['app-port'], '--app-port', 0);
    if (values['http-ports'] !== undefined && !values.intercept) throw new UsageError('--http-ports goes with --intercept');
    if (values['inbound-localhost'] && !values.intercept) throw new UsageError('--inbound-localhost goes with --intercept');
    const httpPorts = (values['http-ports'] ?? '').split(',').filter((p) => p.trim() !== '').map((p) => port(p.trim(), '--http-ports', 0));
    const concurrency = workerCount(values.concurrency);
    const credential = credentialSource(values['join-token'], values['credential-file']);
    if (credential && values.config) throw new UsageError('--join-token and --credential-file go with --control-plane, not --config');
    const pushTls = pushTlsFlags(values, values.config !== undefined);
    const opts = {
      intercept: values.intercept ? { httpPorts, inboundLocalhost: values['inbound-localhost'] === true } : undefined,
      drainDelayMs: values['drain-ms'] === undefined ? undefined : (positive(values['drain-ms'], '--drain-ms') as number),
      service: values.service,
      id: values.id,
      labels: labels(values.labels),
      controlPlane: values.config ? undefined : values['control-plane'] ?? '127.0.0.1:15010',
      configFile: values.config,
      app: appPort ? { host: '127.0.0.1', port: appPort, protocol: appProtocol as 'http1' | 'http2' | undefined } : undefined,
      inbound: listen(values.inbound, '0.0.0.0', 15006, '--inbound'),
      outbound: listen(values.outbound, '127.0.0.1', 15001, '--outbound'),
      admin: listen(values.admin, '127.0.0.1', 15000, '--admin'),
      status: values.status === undefined ? undefined : listen(values.status, '0.0.0.0', 15020, '--status'),
      advertiseAddress: values.advertise,
      headersTimeoutMs,
      maxHeaderBytes,
      limits,
      xffTrustedHops: trustedHops(values['xff-trusted-hops']),
      logger: logger(values['log-level']),
      observability,
      // The same path as SIGTERM: leave, drain, exit 0.
      onQuit: () => process.kill(process.pid, 'SIGTERM'),
      credential,
      pushTls,
      jwksMinRefreshMs: positive(values['jwks-refresh-ms'], '--jwks-refresh-ms'),
      cacheMaxBytes: values['cache-max-mb'] === undefined ? undefined : (positive(values['cache-max-mb'], '--cache-max-mb') as number) * 1024 * 1024,
    };
    if (concurrency > 1 || process.env.MESHLET_WORKER_SLOT !== undefined) {
      const cluster = await import('../../sidecar/cluster');
      if (cluster.isWorker()) return cluster.runClusterWorker(opts);
    }
    const { startSidecar } = await import('../../sidecar');
    const s = concurrency > 1 ? await (await import('../../sidecar/cluster')).startClusterSidecar(opts, concurrency) : await startSidecar(opts);
    opts.logger.info(
      { ...(concurrency > 1 ? { concurrency } : {}), outbound: `${s.outbound.host}:${s.outbound.port}`, inbound: `${s.inbound.host}:${s.inbound.port}`, admin: `${s.admin.host}:${s.admin.port}`, ...(s.status ? { status: `${s.status.host}:${s.status.port}` } : {}) },
      'sidecar started',
    );
    return runUntilSignal(() => s.close());
  },
};

/** `--xff-trusted-hops`: 0..10 (default 0). */
export function trustedHops(v: string | undefined): number {
  if (v === undefined) return 0;
  if (!/^\d{1,2}$/.test(v) || Number(v) > 10) throw new UsageError(`--xff-trusted-hops: expected an integer from 0 to 10, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** `--concurrency`: a positive integer up to 128, or `auto` (os.availableParallelism()); default 1. */
export function workerCount(v: string | undefined): number {
  if (v === undefined) return 1;
  if (v === 'auto') return Math.max(1, Math.min(128, availableParallelism()));
  if (!/^\d{1,3}$/.test(v) || Number(v) < 1 || Number(v) > 128) throw new UsageError(`--concurrency: expected an integer from 1 to 128 or auto, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** The bootstrap credential: --join-token, else --credential-file (read at each connect), else MESHLET_JOIN_TOKEN. */
export function credentialSource(token: string | undefined, file: string | undefined): (() => string | undefined) | undefined {
  if (token !== undefined && file !== undefined) throw new UsageError('use either --join-token or --credential-file, not both');
  if (token !== undefined) {
    if (token.trim() === '') throw new UsageError('--join-token: empty');
    return () => token;
  }
  if (file !== undefined) {
    // Read at every connect: a projected ServiceAccount token is rotated by the kubelet.
    return () => {
      try {
        return readFileSync(file, 'utf8').trim();
      } catch {
        return undefined;
      }
    };
  }
  const env = process.env.MESHLET_JOIN_TOKEN;
  return env ? () => env : undefined;
}
