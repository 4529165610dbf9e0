import { VERSION } from '../core/version';
import { api, flags, outputFormat, serverUrl, table, type Command } from './common';

export const version: Command = {
  name: 'version',
  usage: `meshlet version [--client] [-o json|yaml] [--server URL]

The client's version and, when the control plane answers, its version and every connected
sidecar's (like \`kubectl version\` / \`istioctl version\`).
  --client    the client's version only; do not ask the control plane`,
  async run(argv) {
    const { values } = flags(argv, { client: { type: 'boolean' }, output: { type: 'string', short: 'o' }, server: { type: 'string' } });
    const output = outputFormat(values.output, ['json', 'yaml'] as const);
    const client = { version: VERSION, node: process.version, platform: `${process.platform}/${process.arch}` };
    let controlPlane: { version: string; node?: string } | { error: string } | undefined;
    let sidecars: { id: string; service: string; version: string | null }[] = [];
    if (!values.client) {
      const server = serverUrl(values.server);
      try {
        const res = await api(server, 'GET', '/v1/version');
        if (res.status === 200) {
          const b = res.body as { controlPlane: { version: string; node?: string }; sidecars: typeof sidecars };
          controlPlane = { version: b.controlPlane.version, node: b.controlPlane.node };
          sidecars = b.sidecars;
        } else controlPlane = { error: `${server} answered ${res.status}` };
      } catch (e) {
        controlPlane = { error: (e as Error).message };
      }
    }
    const doc = { client, ...(controlPlane ? { controlPlane, sidecars } : {}) };
    if (output === 'json') process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
    else if (output === 'yaml') process.stdout.write((await import('yaml')).stringify(doc));
    else {
      let out = `client version: ${client.version} (node ${client.node}, ${client.platform})\n`;
      if (controlPlane && 'error' in controlPlane) out += `control plane: unreachable (${controlPlane.error.split(';')[0]})\n`;
      else if (controlPlane) {
        out += `control plane version: ${controlPlane.version}${controlPlane.node ? ` (node ${controlPlane.node})` : ''}\n`;
        if (sidecars.length === 0) out += 'sidecars: none connected\n';
        else {
          const counts = new Map<string, number>();
          for (const s of sidecars) counts.set(s.version ?? 'unknown', (counts.get(s.version ?? 'unknown') ?? 0) + 1);
          out += `sidecar versions: ${[...counts].map(([v, n]) => `${v} (${n})`).join(', ')}\n`;
          if (counts.size > 1 || !counts.has(client.version)) out += '\n' + table([['SIDECAR', 'SERVICE', 'VERSION'], ...sidecars.map((s) => [s.id, s.service, s.version ?? 'unknown'])]) + '\n';
        }
      }
      process.stdout.write(out);
    }
    return 0;
  },
};
