import { hostPort, labels, port, flags, UsageError, type Command } from './common';
import { runUntilSignal, logger } from './process';
import { credentialSource, workerCount } from './sidecar';
import { PUSH_TLS_FLAGS, PUSH_TLS_USAGE, pushTlsFlags } from './push-tls-flags';

export const gateway: Command = {
  name: 'gateway',
  usage: `meshlet gateway --name NAME [--control-plane HOST:PORT | --config FILE] [--address ADDR] [--admin P] [--concurrency N]

Runs the edge gateway: the listeners of the Gateway resource NAME (ports, HTTP/HTTPS, certificates,
client limits), serving the Routes attached to it (Route spec.gateways: [NAME]) through the same
stack as a sidecar. It connects to the control plane like a sidecar and \`meshlet status\` lists it.
With a join token (or a credential file) it gets its own workload certificate and calls services
over mTLS, as sidecars do.

  --name NAME             the Gateway resource to serve; also the gateway's service name (required)
  --control-plane H:P     take policies from the control plane's push port (default 127.0.0.1:15010)
  --config FILE           or serve static policies from FILE (YAML/JSON), with no control plane
  --address ADDR          address the Gateway's listeners bind (default 0.0.0.0)
  --admin P               admin port: /ready /live /config_dump /metrics (default 15000, loopback; HOST:PORT too)
  --id ID                 unique id of this replica (default NAME-HOSTNAME-PID)
  --labels k=v,...        labels shown by meshlet status
  --access-log RATE       fraction of requests written as JSON access-log lines on stdout, 0-1 (default 1)
  --trace-sampling PCT    percent of new traces sampled, 0-100 (default 1)
  --log-level LEVEL       trace, debug, info, warn, error (default info)
  --cache-max-mb MB       memory all response caches (Route rules' cache) keep together, LRU (default 64)
  --jwks-refresh-ms MS    JWT keys: at most one JWKS fetch per URL in MS ms (default 30000)
  --join-token TOKEN      the bootstrap credential from \`meshlet token create\` (or MESHLET_JOIN_TOKEN)
  --credential-file FILE  or read it from FILE at every connect (a projected ServiceAccount token)
${PUSH_TLS_USAGE}
  --concurrency N|auto    worker processes serving the listeners (default 1: one process; auto: one per CPU).
                          With N > 1 a primary keeps the policy stream, the identity and the admin port, and
                          the workers share the listening sockets (HTTPS too); caches and pools are per worker

SIGTERM or SIGINT drains in-flight requests, then exits.`,
  async run(argv) {
    const { values } = flags(argv, {
      name: { type: 'string' },
      'control-plane': { type: 'string' },
      config: { type: 'string' },
      address: { type: 'string' },
      admin: { type: 'string' },
      id: { type: 'string' },
      labels: { type: 'string' },
      'access-log': { type: 'string' },
      'trace-sampling': { type: 'string' },
      'log-level': { type: 'string' },
      'join-token': { type: 'string' },
      'credential-file': { type: 'string' },
      'cache-max-mb': { type: 'string' },
      'jwks-refresh-ms': { type: 'string' },
      concurrency: { type: 'string' },
      ...PUSH_TLS_FLAGS,
    });
    if (!values.name) throw new UsageError('--name NAME is required (the Gateway resource to serve)');
    if (values['control-plane'] && values.config) throw new UsageError('use either --control-plane or --config, not both');
    const fraction = (v: string | undefined, what: string, max: number): number | undefined => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > max) throw new UsageError(`${what}: expected a number from 0 to ${max}, got ${JSON.stringify(v)}`);
      return n;
    };
    const positive = (v: string | undefined, what: string): number | undefined => {
      if (v === undefined) return undefined;
      if (!/^\d{1,9}$/.test(v) || Number(v) === 0) throw new UsageError(`${what}: expected a positive integer, got ${JSON.stringify(v)}`);
      return Number(v);
    };
    const cacheMb = positive(values['cache-max-mb'], '--cache-max-mb');
    const jwksMinRefreshMs = positive(values['jwks-refresh-ms'], '--jwks-refresh-ms');
    const admin = values.admin === undefined ? { host: '127.0.0.1', port: 15000 } : values.admin.includes(':') ? hostPort(values.admin, '--admin') : { host: '127.0.0.1', port: port(values.admin, '--admin', 0) };
    const credential = credentialSource(values['join-token'], values['credential-file']);
    if (credential && values.config) throw new UsageError('--join-token and --credential-file go with --control-plane, not --config');
    const pushTls = pushTlsFlags(values, values.config !== undefined);
    const log = logger(values['log-level']);
    const concurrency = workerCount(values.concurrency);
    const opts = {
      name: values.name,
      id: values.id,
      controlPlane: values.config ? undefined : (values['control-plane'] ?? '127.0.0.1:15010'),
      listenHost: values.address ?? '0.0.0.0',
      admin,
      labels: labels(values.labels),
      logger: log,
      accessLogSample: fraction(values['access-log'], '--access-log', 1),
      samplingPercent: fraction(values['trace-sampling'], '--trace-sampling', 100),
      credential,
      cacheMaxBytes: cacheMb === undefined ? undefined : cacheMb * 1024 * 1024,
      jwksMinRefreshMs,
      pushTls,
      onQuit: () => process.kill(process.pid, 'SIGTERM'),
    };
    // A worker of a --concurrency N gateway: its snapshot comes from the primary, not from --config.
    const cluster = concurrency > 1 || process.env.MESHLET_WORKER_SLOT !== undefined ? await import('../../gateway/cluster') : undefined;
    if (cluster?.isWorker()) return cluster.runGatewayWorker(opts);
    let loaded;
    if (values.config) {
      const { loadStaticWire } = await import('../../sidecar');
      const { formatErrors } = await import('../core/result');
      const cfg = await loadStaticWire(values.config);
      if (!cfg.ok) throw new UsageError(`invalid static config:\n${formatErrors(cfg.errors)}`);
      loaded = cfg.value;
    }
    const g = cluster && concurrency > 1
      ? await cluster.startClusterGateway({ ...opts, initialWire: loaded?.wire }, concurrency)
      : await (await import('../../gateway')).startGateway({ ...opts, initial: loaded?.snapshot });
    await g.settled();
    log.info({ ...(concurrency > 1 ? { concurrency } : {}), admin: `${g.admin.host}:${g.admin.port}`, listeners: Object.fromEntries([...g.listeners()].map(([n, a]) => [n, `${a.host}:${a.port}`])) }, 'gateway started');
    return runUntilSignal(() => g.close());
  },
};
