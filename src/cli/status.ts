import { age, api, CliError, describeApiError, flags, outputFormat, serverUrl, table, type Command } from './common';
import { watch } from './output';

interface SidecarRow {
  id: string;
  service: string;
  address: string;
  port: number;
  labels: Record<string, string>;
  connected: boolean;
  buildVersion?: string;
  ackedVersion?: string;
  /** The version of this sidecar's view: a sidecar whose service declares dependencies runs its scope's, not the mesh's. */
  expectedVersion?: string;
  nackVersion?: string;
  nackReason?: string;
  nackedAt?: string;
  ackedAt?: string;
  connectedAt?: string;
  expiresAt?: string;
  /** With the etcd store: the control-plane replica the sidecar is connected to. */
  replica?: string;
  /** 'gateway' for `meshlet gateway`; absent for a sidecar. */
  kind?: string;
  /** The SPIFFE ID the control plane signed it a certificate for (none: no credential, plaintext). */
  spiffeId?: string;
}

interface StatusBody {
  version: string;
  revision: number;
  convergence?: { ms: number; version: string } | null;
  sidecars: SidecarRow[];
}

export const status: Command = {
  name: 'status',
  usage: `meshlet status [-o wide|json|yaml] [-w] [--server URL]

Every sidecar the control plane knows: its service, address, labels, whether its stream is
connected, and the policy version it ACKed (or the version it NACKed, and why). Above the table:
how many sidecars hold a certificate (they call each other over mTLS), and the inbound mTLS mode
(PeerAuthentication) of the mesh and of each service that has its own.
  -o, --output FORMAT   wide (adds the sidecar's version, how long it has been connected and its SPIFFE ID), json or yaml
  -w, --watch           print the table again whenever it changes (until Ctrl-C)`,
  async run(argv) {
    const { values } = flags(argv, { output: { type: 'string', short: 'o' }, server: { type: 'string' }, watch: { type: 'boolean', short: 'w' } });
    const output = outputFormat(values.output, ['wide', 'json', 'yaml'] as const);
    const server = serverUrl(values.server);
    const fetch = async (): Promise<StatusBody> => {
      const res = await api(server, 'GET', '/v1/status');
      if (res.status !== 200) throw new CliError(describeApiError(res));
      return res.body as StatusBody;
    };
    const render = async (b: StatusBody): Promise<string> => {
      if (output === 'json') return JSON.stringify(b, null, 2) + '\n';
      if (output === 'yaml') return (await import('yaml')).stringify(b);
      // The PeerAuthentication policies in force (a role that cannot list them gets the table alone).
      const pa = await api(server, 'GET', '/v1/peerauthentication');
      return formatStatus(b, output === 'wide', pa.status === 200 ? ((pa.body as { items?: PeerAuthItem[] }).items ?? []) : undefined);
    };
    const first = await fetch();
    process.stdout.write(await render(first));
    if (!values.watch) return 0;
    // Ages change every second: compare what matters, not the rendering.
    let n = 0;
    return watch(fetch, (b) => {
      if (n++ === 0) return;
      void render(b).then((text) => process.stdout.write(`\n${new Date().toISOString()}\n${text}`));
    });
  },
};

interface PeerAuthItem {
  metadata: { name: string };
  spec: { service?: string; mode?: string };
}

/**
 * What a user who configured nothing gets, said once: which sidecars hold a certificate (they talk
 * mTLS to each other), and the inbound mode of the mesh and of each service with its own policy.
 */
export function formatMtls(b: StatusBody, policies: readonly PeerAuthItem[]): string {
  const connected = b.sidecars.filter((s) => s.connected);
  const certified = connected.filter((s) => s.spiffeId).length;
  const mesh = policies.find((p) => p.spec.service === undefined);
  const meshMode = mesh ? `${mesh.spec.mode ?? 'PERMISSIVE'} (PeerAuthentication/${mesh.metadata.name})` : 'PERMISSIVE (the default: no PeerAuthentication; plaintext callers are accepted too)';
  const own = policies
    .filter((p) => p.spec.service !== undefined)
    .map((p) => `${p.spec.service} ${p.spec.mode ?? 'PERMISSIVE'}`)
    .sort();
  return `mTLS: ${certified} of ${connected.length} connected sidecars hold a certificate and call each other over mTLS; inbound mode: ${meshMode} for the mesh${own.length ? `; ${own.join(', ')}` : ''}\n`;
}

export function formatStatus(b: StatusBody, wide: boolean, peerAuth?: readonly PeerAuthItem[]): string {
  const conv = b.convergence ? `, last change reached every sidecar in ${b.convergence.ms} ms` : '';
  const out = `policy version ${b.version} (store revision ${b.revision})${conv}\n${peerAuth ? formatMtls(b, peerAuth) : ''}\n`;
  if (b.sidecars.length === 0) return out + 'no sidecars connected\n';
  // Several replicas on one etcd store: say which one each sidecar is on.
  const replicas = b.sidecars.some((s) => s.replica);
  const rep = replicas ? ['REPLICA'] : [];
  const head = wide ? ['SIDECAR', 'SERVICE', 'ADDRESS', 'LABELS', 'STREAM', ...rep, 'VERSION', 'AGE', 'IDENTITY', 'POLICY'] : ['SIDECAR', 'SERVICE', 'ADDRESS', 'LABELS', 'STREAM', ...rep, 'POLICY'];
  const rows = [head];
  for (const s of b.sidecars) {
    const labels = Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-';
    const nackNewer = s.nackVersion && (!s.ackedAt || (s.nackedAt ?? '') > s.ackedAt);
    const policy = nackNewer
      ? `NACK ${s.nackVersion}: ${(s.nackReason ?? '').split('\n').join('; ')}${s.ackedVersion ? ` (serving ${s.ackedVersion})` : ''}`
      : s.ackedVersion
        ? `ACK ${s.ackedVersion}${s.ackedVersion === (s.expectedVersion ?? b.version) ? '' : ` (stale: current ${s.expectedVersion ?? b.version})`}`
        : 'pending';
    const service = s.kind === 'gateway' ? `${s.service} (gateway)` : s.service;
    const stream = s.connected ? 'connected' : `gone (until ${s.expiresAt ?? '?'})`;
    rows.push(
      wide
        ? [s.id, service, `${s.address}:${s.port}`, labels, stream, ...(replicas ? [s.replica ?? '-'] : []), s.buildVersion || '-', age(s.connectedAt), s.spiffeId ?? '-', policy]
        : [s.id, service, `${s.address}:${s.port}`, labels, stream, ...(replicas ? [s.replica ?? '-'] : []), policy],
    );
  }
  return out + table(rows) + '\n';
}
