import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
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
  --max-snapshot-bytes N  refuse writes that would make the resources pushed to sidecars larger than N bytes of
                      JSON (default 50331648: 48 MiB, within the 64 MiB push message limit)
  --repair            start even if store files are damaged (unreadable, checksum mismatch), setting them
                      aside as <file>.corrupt-<time> (what they held is gone: re-apply it); without it a
                      damaged store stops the control plane from starting, naming the files

The dashboard (http://API/ui/, read-only):
  --prometheus-url URL         link service pages to the same queries in this Prometheus
  --history-interval MS        how often sidecars' /stats are sampled for its charts (default 3000; 0: off)
Where resources and the endpoint registry live (docs/ha.md):
  --store file|etcd://HOST:PORT[,HOST:PORT...]
                      file (default): under --data-dir, for one replica; etcd (etcds:// for TLS):
                      shared by every replica pointed at the same etcd cluster
  --etcd-cacert FILE  CA certificate of the etcd members (TLS)
  --etcd-cert FILE, --etcd-key FILE   client certificate and key (etcd mutual TLS)
  --etcd-username USER                etcd user (password: --etcd-password or $MESHLET_ETCD_PASSWORD)
  --etcd-prefix P     key prefix (default /meshlet/)
  --replica-id NAME   this replica's name in \`meshlet status\` (default: host name and pid)

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
  --sidecar-auth MODE          strict (default: a sidecar without a join token or ServiceAccount token is
                               refused) or permissive (for development: it connects, with no identity, as
                               whatever service it names)
  --no-identity                no CA, no certificates

Who may use the REST API (docs/security.md): every request but GET /healthz and the dashboard's
page needs a bearer token with a role (view, edit, admin)
  (default)                    on; an admin token is written to D/admin.token (mode 0600) on the first
                               start (and whenever that one was revoked or expired); its path is logged
  --api-sa-role NS/SA=ROLE     (Kubernetes) ServiceAccount tokens, verified with TokenReview, get ROLE;
                               SA may be * for every account of NS; repeatable
  --no-api-auth                no authentication: anyone who reaches the API may change every policy

TLS on the REST API (default on: a certificate from the mesh CA, for localhost, 127.0.0.1, ::1 and the
--api host; the CA's roots are written to D/api-ca.pem for clients' --certificate-authority)
  --api-hostname NAME          also put this DNS name or IP in the certificate (e.g. the Service's
                               meshlet-control-plane.meshlet-system.svc); repeatable
  --api-tls-cert FILE, --api-tls-key FILE   serve this certificate (PEM chain) and key instead
  --insecure-plaintext         serve the API over plain HTTP (tokens readable on the network)

TLS on the push port (default on: a certificate from the mesh CA naming spiffe://TD/control-plane,
localhost, 127.0.0.1, ::1 and the --push host; sidecars verify it with --ca-file D/ca.pem, or with the CA
hash every join token carries, so \`meshlet token create\` output is all a new sidecar needs)
  --push-hostname NAME         also put this DNS name or IP in the push certificate; repeatable
  --push-tls-cert FILE, --push-tls-key FILE   serve this certificate (PEM chain) and key instead
                               (sidecars then need --ca-file with its CA)
  --insecure-push-plaintext    serve the push port in plaintext (join and ServiceAccount tokens readable
                               on the network; sidecars need --insecure-push-plaintext too)

Both ports stay on loopback unless told otherwise. SIGTERM or SIGINT stops it cleanly.`,
  async run(argv) {
    const { values } = flags(argv, {
      'data-dir': { type: 'string' },
      api: { type: 'string' },
      push: { type: 'string' },
      grace: { type: 'string' },
      store: { type: 'string' },
      'etcd-cacert': { type: 'string' },
      'etcd-cert': { type: 'string' },
      'etcd-key': { type: 'string' },
      'etcd-username': { type: 'string' },
      'etcd-password': { type: 'string' },
      'etcd-prefix': { type: 'string' },
      'replica-id': { type: 'string' },
      'log-level': { type: 'string' },
      repair: { type: 'boolean' },
      'max-snapshot-bytes': { type: 'string' },
      webhook: { type: 'string' },
      kubernetes: { type: 'boolean' },
      'k8s-namespace': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'inject-image': { type: 'string' },
      'inject-control-plane': { type: 'string' },
      'inject-mode': { type: 'string' },
      'prometheus-url': { type: 'string' },
      'history-interval': { type: 'string' },
      'trust-domain': { type: 'string' },
      'ca-cert': { type: 'string' },
      'ca-key': { type: 'string' },
      'cert-ttl': { type: 'string' },
      'sidecar-auth': { type: 'string' },
      'no-identity': { type: 'boolean' },
      'no-api-auth': { type: 'boolean' },
      'api-sa-role': { type: 'string', multiple: true },
      'api-hostname': { type: 'string', multiple: true },
      'api-tls-cert': { type: 'string' },
      'api-tls-key': { type: 'string' },
      'insecure-plaintext': { type: 'boolean' },
      'push-hostname': { type: 'string', multiple: true },
      'push-tls-cert': { type: 'string' },
      'push-tls-key': { type: 'string' },
      'insecure-push-plaintext': { type: 'boolean' },
    });
    const apiAuth = await apiAuthFlags(values['no-api-auth'], values['api-sa-role']);
    const security = await securityFlags(values);
    const apiTls = apiTlsFlags(values, security.enabled !== false);
    const pushTls = pushTlsServerFlags(values, security.enabled !== false);
    const promUrl = values['prometheus-url'];
    if (promUrl !== undefined && !/^https?:\/\/[^\s]+$/.test(promUrl)) throw new UsageError(`--prometheus-url: expected an http(s) URL, got ${JSON.stringify(promUrl)}`);
    const historyMs = values['history-interval'] === undefined ? undefined : Number(values['history-interval']);
    if (historyMs !== undefined && !(Number.isInteger(historyMs) && (historyMs === 0 || (historyMs >= 500 && historyMs <= 60_000))))
      throw new UsageError(`--history-interval: expected 0 (off) or milliseconds 500..60000, got ${JSON.stringify(values['history-interval'])}`);
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
    const etcd = etcdOptions(values as Record<string, string | boolean | undefined>);
    const log = logger(values['log-level']);
    // A file-size limit (ulimit -f) must fail a store write (EFBIG, answered "outcome unknown" like
    // a full disk), not kill the control plane between two files of a commit.
    process.on('SIGXFSZ', () => undefined);
    const { startControlPlane } = await import('../../control-plane');
    const graceMs = values.grace === undefined ? undefined : Number(values.grace);
    const cp = await startControlPlane({
      dataDir: path.resolve(values['data-dir'] ?? '.meshlet'),
      repair: values.repair === true,
      maxSnapshotBytes: snapshotBytes(values['max-snapshot-bytes']),
      api: values.api ? hostPort(values.api, '--api') : undefined,
      push: values.push ? hostPort(values.push, '--push') : undefined,
      etcd,
      graceMs: graceMs !== undefined && Number.isFinite(graceMs) ? graceMs : undefined,
      logger: log,
      webhook,
      kubernetes: values.kubernetes ? { namespace: values['k8s-namespace'] } : undefined,
      prometheusUrl: promUrl,
      historyIntervalMs: historyMs,
      security,
      apiAuth,
      apiTls,
      pushTls,
    });
    return runUntilSignal(() => cp.close());
  },
};

function etcdOptions(values: Record<string, string | boolean | undefined>): import('../../control-plane/store-etcd').EtcdConnection & { replica?: string } | undefined {
  const store = values.store as string | undefined;
  const etcdFlags = ['etcd-cacert', 'etcd-cert', 'etcd-key', 'etcd-username', 'etcd-password', 'etcd-prefix', 'replica-id'].filter((f) => values[f] !== undefined);
  if (store === undefined || store === 'file') {
    if (etcdFlags.length > 0) throw new UsageError(`--${etcdFlags[0]} goes with --store etcd://HOST:PORT`);
    return undefined;
  }
  const m = /^(etcds?):\/\/(.+)$/.exec(store);
  if (!m) throw new UsageError(`--store must be file or etcd://HOST:PORT[,HOST:PORT...], got ${JSON.stringify(store)}`);
  const endpoints = (m[2] as string).split(',').map((e) => e.trim()).filter((e) => e !== '');
  for (const e of endpoints) hostPort(e, '--store');
  if ((values['etcd-cert'] === undefined) !== (values['etcd-key'] === undefined)) throw new UsageError('--etcd-cert and --etcd-key go together');
  const tls = m[1] === 'etcds' || values['etcd-cacert'] !== undefined || values['etcd-cert'] !== undefined;
  const str = (k: string) => values[k] as string | undefined;
  return {
    endpoints: endpoints.map((e) => `${tls ? 'https' : 'http'}://${e}`),
    caFile: str('etcd-cacert'),
    certFile: str('etcd-cert'),
    keyFile: str('etcd-key'),
    username: str('etcd-username'),
    password: str('etcd-password') ?? process.env.MESHLET_ETCD_PASSWORD,
    prefix: str('etcd-prefix'),
    replica: str('replica-id'),
  };
}

/** The workload-identity flags, checked. */
async function securityFlags(v: { 'trust-domain'?: string; 'ca-cert'?: string; 'ca-key'?: string; 'cert-ttl'?: string; 'sidecar-auth'?: string; 'no-identity'?: boolean }) {
  if (v['no-identity']) {
    if (v['trust-domain'] || v['ca-cert'] || v['ca-key'] || v['cert-ttl'] || v['sidecar-auth']) throw new UsageError('--no-identity goes with none of --trust-domain, --ca-cert, --ca-key, --cert-ttl, --sidecar-auth');
    return { enabled: false };
  }
  if (!v['ca-cert'] !== !v['ca-key']) throw new UsageError('--ca-cert and --ca-key go together');
  const mode = v['sidecar-auth'] ?? 'strict';
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

/** `--api-hostname`, `--api-tls-cert/-key`, `--insecure-plaintext`, checked. */
function apiTlsFlags(v: { 'api-hostname'?: string[]; 'api-tls-cert'?: string; 'api-tls-key'?: string; 'insecure-plaintext'?: boolean }, haveCa: boolean) {
  if ((v['api-tls-cert'] === undefined) !== (v['api-tls-key'] === undefined)) throw new UsageError('--api-tls-cert and --api-tls-key go together');
  if (v['insecure-plaintext']) {
    if (v['api-tls-cert'] || v['api-hostname']?.length) throw new UsageError('--insecure-plaintext goes with none of --api-tls-cert, --api-tls-key, --api-hostname');
    return undefined;
  }
  if (v['api-tls-cert'] && v['api-tls-key']) {
    if (v['api-hostname']?.length) throw new UsageError('--api-hostname names hosts in the certificate the mesh CA issues; with --api-tls-cert, put them in your certificate');
    const read = (f: string) => {
      try {
        return readFileSync(f, 'utf8');
      } catch (e) {
        throw new CliError(`cannot read ${f}: ${(e as Error).message}`);
      }
    };
    return { certPem: read(v['api-tls-cert']), keyPem: read(v['api-tls-key']) };
  }
  if (!haveCa) throw new UsageError('with --no-identity there is no CA to issue the API certificate: give --api-tls-cert and --api-tls-key, or --insecure-plaintext');
  const { isIP } = require('node:net') as typeof import('node:net');
  for (const h of v['api-hostname'] ?? [])
    if (!isIP(h) && !/^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i.test(h)) throw new UsageError(`--api-hostname: not a DNS name or IP address: ${JSON.stringify(h)}`);
  return { hosts: v['api-hostname'] ?? [] };
}

/** `--push-hostname`, `--push-tls-cert/-key`, `--insecure-push-plaintext`, checked. */
function pushTlsServerFlags(v: { 'push-hostname'?: string[]; 'push-tls-cert'?: string; 'push-tls-key'?: string; 'insecure-push-plaintext'?: boolean }, haveCa: boolean) {
  if ((v['push-tls-cert'] === undefined) !== (v['push-tls-key'] === undefined)) throw new UsageError('--push-tls-cert and --push-tls-key go together');
  if (v['insecure-push-plaintext']) {
    if (v['push-tls-cert'] || v['push-hostname']?.length) throw new UsageError('--insecure-push-plaintext goes with none of --push-tls-cert, --push-tls-key, --push-hostname');
    return undefined;
  }
  const read = (f: string) => {
    try {
      return readFileSync(f, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read ${f}: ${(e as Error).message}`);
    }
  };
  if (v['push-tls-cert'] && v['push-tls-key']) {
    if (v['push-hostname']?.length) throw new UsageError('--push-hostname names hosts in the certificate the mesh CA issues; with --push-tls-cert, put them in your certificate');
    return { certPem: read(v['push-tls-cert']), keyPem: read(v['push-tls-key']) };
  }
  if (!haveCa) throw new UsageError('with --no-identity there is no CA to issue the push port certificate: give --push-tls-cert and --push-tls-key, or --insecure-push-plaintext');
  for (const h of v['push-hostname'] ?? [])
    if (!isIP(h) && !/^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i.test(h)) throw new UsageError(`--push-hostname: not a DNS name or IP address: ${JSON.stringify(h)}`);
  return { hosts: v['push-hostname'] ?? [] };
}

/** `--no-api-auth` / `--api-sa-role`, checked. */
async function apiAuthFlags(off: boolean | undefined, saRoles: string[] | undefined) {
  if (off) {
    if (saRoles?.length) throw new UsageError('--api-sa-role goes without --no-api-auth');
    return undefined;
  }
  const { parseServiceAccountRole } = await import('../../control-plane/api-auth');
  const roles: Record<string, 'view' | 'edit' | 'admin'> = {};
  for (const s of saRoles ?? []) {
    const r = parseServiceAccountRole(s);
    if (typeof r === 'string') throw new UsageError(`--api-sa-role: ${r}`);
    roles[r.key] = r.role;
  }
  return { bootstrapToken: true, serviceAccountRoles: roles };
}

function snapshotBytes(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,10}$/.test(v) || Number(v) < 1024) throw new UsageError(`--max-snapshot-bytes: expected a number of bytes, at least 1024, got ${JSON.stringify(v)}`);
  return Number(v);
}
