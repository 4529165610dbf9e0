import { api, CliError, describeApiError, flags, serverUrl, table, type Command } from './common';

interface SidecarRow {
  id: string;
  service: string;
  address: string;
  port: number;
  labels: Record<string, string>;
  connected: boolean;
  ackedVersion?: string;
  nackVersion?: string;
  nackReason?: string;
  nackedAt?: string;
  ackedAt?: string;
  expiresAt?: string;
  /** With the etcd store: the control-plane replica the sidecar is connected to. */
  replica?: string;
}

export const status: Command = {
  name: 'status',
  usage: `meshlet status [-o json] [--server URL]`,
  async run(argv) {
    const { values } = flags(argv, { output: { type: 'string', short: 'o' }, server: { type: 'string' } });
    const res = await api(serverUrl(values.server), 'GET', '/v1/status');
    if (res.status !== 200) throw new CliError(describeApiError(res));
    if (values.output === 'json') {
      process.stdout.write(JSON.stringify(res.body, null, 2) + '\n');
      return 0;
    }
    const b = res.body as { version: string; revision: number; convergence?: { ms: number; version: string } | null; sidecars: SidecarRow[] };
    const conv = b.convergence ? `, last change reached every sidecar in ${b.convergence.ms} ms` : '';
    process.stdout.write(`policy version ${b.version} (store revision ${b.revision})${conv}\n\n`);
    if (b.sidecars.length === 0) {
      process.stdout.write('no sidecars connected\n');
      return 0;
    }
    // Several replicas on one etcd store: say which one each sidecar is on.
    const replicas = b.sidecars.some((s) => s.replica);
    const rows = [['SIDECAR', 'SERVICE', 'ADDRESS', 'LABELS', 'STREAM', ...(replicas ? ['REPLICA'] : []), 'POLICY']];
    for (const s of b.sidecars) {
      const labels = Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-';
      const nackNewer = s.nackVersion && (!s.ackedAt || (s.nackedAt ?? '') > s.ackedAt);
      const policy = nackNewer
        ? `NACK ${s.nackVersion}: ${(s.nackReason ?? '').split('\n').join('; ')}${s.ackedVersion ? ` (serving ${s.ackedVersion})` : ''}`
        : s.ackedVersion
          ? `ACK ${s.ackedVersion}${s.ackedVersion === b.version ? '' : ' (stale)'}`
          : 'pending';
      const stream = s.connected ? 'connected' : `gone (until ${s.expiresAt ?? '?'})`;
      rows.push([s.id, s.service, `${s.address}:${s.port}`, labels, stream, ...(replicas ? [s.replica ?? '-'] : []), policy]);
    }
    process.stdout.write(table(rows) + '\n');
    return 0;
  },
};
