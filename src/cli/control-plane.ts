import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { CliError, hostPort, flags, UsageError, type Command } from './common';
import { logger, runUntilSignal } from './process';

export const controlPlane: Command = {
  name: 'control-plane',
  usage: `meshlet control-plane [--data-dir D] [--api HOST:PORT] [--push HOST:PORT] [--grace DURATION_MS]

  --data-dir D        where policies and the endpoint registry are kept (default .meshlet/)
  --api HOST:PORT     REST API (default 127.0.0.1:15080)
  --push HOST:PORT    gRPC push port sidecars connect to (default 127.0.0.1:15010)
  --grace MS          how long a disconnected sidecar's endpoint stays (default 10000)
  --log-level LEVEL   trace, debug, info, warn, error (default info)

Service discovery from Kubernetes:
  --kubernetes                 also take endpoints from EndpointSlices (KUBECONFIG, ~/.kube/config or in-cluster)
  --k8s-namespace NS           only this namespace's (default: all)

The sidecar injector (Kubernetes mutating admission webhook, HTTPS, POST /inject):
  --webhook HOST:PORT          serve it there (e.g. 0.0.0.0:15017); needs --tls-cert and --tls-key
  --tls-cert FILE, --tls-key FILE   PEM certificate (for the webhook Service's DNS name) and key
  --inject-image IMAGE         the image injected pods run (default ghcr.io/meshlet/meshlet:0.1.0)
  --inject-control-plane H:P   the push address injected sidecars use (default meshlet-control-plane.meshlet-system.svc:15010)
  --inject-mode native|classic the sidecar layout (default native: Kubernetes >= 1.29)

Workload identity (docs/security.md): a CA under D/ca signs sidecars' certificates
  --trust-domain TD            the SPIFFE trust domain (default cluster.local; fixed once the CA exists)
  --ca-cert FILE --ca-key FILE sign with an intermediate under this root (PEM), instead of a root of our own
  --cert-ttl DURATION          workload certificate lifetime (default 24h)
  --sidecar-auth MODE          permissive (default: a sidecar without a credential connects, with no
                               identity) or strict (refused)
  --no-identity                no CA, no certificates

Both ports stay on loopback unless told otherwise. SIGTERM or SIGINT stops it cleanly.`,
  async run(argv) {
    const { values } = flags(argv, {
      'data-dir': { type: 'string' },
      api: { type: 'string' },
      push: { type: 'string' },
      grace: { type: 'string' },
      'log-level': { type: 'string' },
      webhook: { type: 'string' },
      kubernetes: { type: 'boolean' },
      'k8s-namespace': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'inject-image': { type: 'string' },
      'inject-control-plane': { type: 'string' },
      'inject-mode': { type: 'string' },
      'trust-domain': { type: 'string' },
      'ca-cert': { type: 'string' },
      'ca-key': { type: 'string' },
      'cert-ttl': { type: 'string' },
      'sidecar-auth': { type: 'string' },
      'no-identity': { type: 'boolean' },
    });
    const security = await securityFlags(values);
    if (values['k8s-namespace'] !== undefined && !values.kubernetes) throw new UsageError('--k8s-namespace goes with --kubernetes');
    let webhook;
    if (values.webhook) {
      if (!values['tls-cert'] || !values['tls-key']) throw new UsageError('--webhook needs --tls-cert and --tls-key (the API server calls webhooks over HTTPS only)');
      const read = (f: string) => {
        try {
          return readFileSync(f);
        } catch (e) {
          throw new CliError(`cannot read ${f}: ${(e as Error).message}`);
        }
      };
      const { DEFAULT_OPTIONS } = await import('../inject');
      const mode = values['inject-mode'] ?? DEFAULT_OPTIONS.mode;
      if (mode !== 'native' && mode !== 'classic') throw new UsageError(`--inject-mode must be native or classic, got ${JSON.stringify(mode)}`);
      webhook = {
        ...hostPort(values.webhook, '--webhook'),
        cert: read(values['tls-cert']),
        key: read(values['tls-key']),
        inject: {
          ...DEFAULT_OPTIONS,
          mode: mode as 'native' | 'classic',
          image: values['inject-image'] ?? DEFAULT_OPTIONS.image,
          controlPlane: values['inject-control-plane'] ?? DEFAULT_OPTIONS.controlPlane,
        },
      };
    } else if (values['tls-cert'] || values['tls-key'] || values['inject-image'] || values['inject-control-plane'] || values['inject-mode']) {
      throw new UsageError('--tls-cert, --tls-key and --inject-* go with --webhook');
    }
    const log = logger(values['log-level']);
    const { startControlPlane } = await import('../../control-plane');
    const graceMs = values.grace === undefined ? undefined : Number(values.grace);
    const cp = await startControlPlane({
      dataDir: path.resolve(values['data-dir'] ?? '.meshlet'),
      api: values.api ? hostPort(values.api, '--api') : undefined,
      push: values.push ? hostPort(values.push, '--push') : undefined,
      graceMs: graceMs !== undefined && Number.isFinite(graceMs) ? graceMs : undefined,
      logger: log,
      webhook,
      kubernetes: values.kubernetes ? { namespace: values['k8s-namespace'] } : undefined,
      security,
    });
    return runUntilSignal(() => cp.close());
  },
};

/** The workload-identity flags, checked. */
async function securityFlags(v: { 'trust-domain'?: string; 'ca-cert'?: string; 'ca-key'?: string; 'cert-ttl'?: string; 'sidecar-auth'?: string; 'no-identity'?: boolean }) {
  if (v['no-identity']) {
    if (v['trust-domain'] || v['ca-cert'] || v['ca-key'] || v['cert-ttl'] || v['sidecar-auth']) throw new UsageError('--no-identity goes with none of --trust-domain, --ca-cert, --ca-key, --cert-ttl, --sidecar-auth');
    return { enabled: false };
  }
  if (!v['ca-cert'] !== !v['ca-key']) throw new UsageError('--ca-cert and --ca-key go together');
  const mode = v['sidecar-auth'] ?? 'permissive';
  if (mode !== 'permissive' && mode !== 'strict') throw new UsageError(`--sidecar-auth must be permissive or strict, got ${JSON.stringify(mode)}`);
  const { parseTtl } = await import('../security/duration');
  const ttl = v['cert-ttl'] === undefined ? undefined : parseTtl(v['cert-ttl']);
  if (v['cert-ttl'] !== undefined && (ttl === undefined || ttl < 60_000)) throw new UsageError(`--cert-ttl: expected a duration of at least 1m such as 24h or 90m, got ${JSON.stringify(v['cert-ttl'])}`);
  const { checkTrustDomain } = await import('../security/spiffe');
  const tdErr = v['trust-domain'] === undefined ? undefined : checkTrustDomain(v['trust-domain']);
  if (tdErr) throw new UsageError(`--trust-domain: ${tdErr}`);
  const read = (f: string) => {
    try {
      return readFileSync(f, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read ${f}: ${(e as Error).message}`);
    }
  };
  return {
    trustDomain: v['trust-domain'],
    userRoot: v['ca-cert'] && v['ca-key'] ? { certPem: read(v['ca-cert']), keyPem: read(v['ca-key']) } : undefined,
    workloadTtlMs: ttl,
    mode: mode as 'permissive' | 'strict',
  };
}
