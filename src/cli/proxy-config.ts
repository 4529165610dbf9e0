/**
 * `meshlet proxy-config SIDECAR [routes|endpoints|policies|all]` (like `istioctl proxy-config`):
 * what one sidecar runs, read from its admin port's /config_dump through the control plane.
 */
import { stringify } from 'yaml';
import { api, CliError, describeApiError, flags, nearest, outputFormat, serverUrl, table, UsageError, type Command } from './common';

const SECTIONS = ['routes', 'endpoints', 'policies', 'all'] as const;

interface Dump {
  id: string;
  service: string;
  source: string;
  version: string | null;
  appliedAt: string | null;
  controlPlane?: { connected: boolean; lastError: string | null };
  resources: { kind: string; metadata: { name: string }; spec: Record<string, unknown> }[];
  services: { name: string; protocol: string; loadBalancer: string; subsets: { name: string; labels: Record<string, string> }[]; endpoints: { address: string; port: number; labels: Record<string, string>; meshed?: boolean; id?: string }[] }[];
}

export const proxyConfig: Command = {
  name: 'proxy-config',
  usage: `meshlet proxy-config SIDECAR [routes|endpoints|policies|all] [-o json|yaml] [--server URL]

What one sidecar runs (its id from \`meshlet status\`), from its admin port through the control
plane: no port-forward needed.
  routes      each Route's hosts and rules (matches, backends), in the order they are tried
  endpoints   every service's endpoints, with labels and the subsets each is in
  policies    every resource the sidecar holds (kind/name)
  all         (default) the version in force, then all three
  -o, --output FORMAT   json or yaml: the sidecar's /config_dump as it is (or only its section)`,
  async run(argv) {
    const { values, positionals } = flags(argv, { output: { type: 'string', short: 'o' }, server: { type: 'string' } }, true);
    const [id, sectionArg = 'all', ...rest] = positionals;
    if (!id) throw new UsageError('SIDECAR is required (its id: `meshlet status` lists them)');
    if (rest.length) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
    if (!(SECTIONS as readonly string[]).includes(sectionArg)) {
      const near = nearest(sectionArg, SECTIONS);
      throw new UsageError(`unknown section ${JSON.stringify(sectionArg)}; use ${SECTIONS.join(', ')}${near ? ` (did you mean ${near}?)` : ''}`);
    }
    const section = sectionArg as (typeof SECTIONS)[number];
    const output = outputFormat(values.output, ['json', 'yaml'] as const);
    const res = await api(serverUrl(values.server), 'GET', `/v1/sidecars/${encodeURIComponent(id)}/config_dump`);
    if (res.status !== 200) throw new CliError(describeApiError(res));
    const d = res.body as Dump;
    if (output) {
      const part =
        section === 'all'
          ? d
          : section === 'routes'
            ? d.resources.filter((r) => r.kind === 'Route')
            : section === 'policies'
              ? d.resources
              : d.services;
      process.stdout.write(output === 'json' ? JSON.stringify(part, null, 2) + '\n' : stringify(part));
      return 0;
    }
    let out = '';
    if (section === 'all')
      out += `sidecar ${d.id} (service ${d.service}), policy ${d.version ?? 'none yet'}${d.appliedAt ? ` applied ${d.appliedAt}` : ''}, from ${d.source}${d.controlPlane && !d.controlPlane.connected ? ' (disconnected: running its last good policy)' : ''}\n\n`;
    if (section === 'routes' || section === 'all') out += routes(d) + '\n';
    if (section === 'endpoints' || section === 'all') out += endpoints(d) + '\n';
    if (section === 'policies' || section === 'all') out += policies(d);
    process.stdout.write(out.replace(/\n+$/, '\n'));
    return 0;
  },
};

function routes(d: Dump): string {
  const rows = [['ROUTE', 'HOSTS', 'RULE', 'MATCH', 'BACKENDS']];
  for (const r of d.resources.filter((x) => x.kind === 'Route')) {
    const rules = (r.spec.rules as { name: string; matches?: Record<string, unknown>[]; backends?: { service: string; subset?: string; weight?: number }[]; redirect?: unknown }[]) ?? [];
    rules.forEach((rule, i) => {
      const match = (rule.matches ?? []).map((m) => describeMatch(m)).join(' | ') || '*';
      const backends = rule.redirect ? 'redirect' : (rule.backends ?? []).map((b) => `${b.service}${b.subset ? ':' + b.subset : ''}${(rule.backends?.length ?? 0) > 1 ? ` ${b.weight ?? 1}` : ''}`).join(', ');
      rows.push([i === 0 ? r.metadata.name : '', i === 0 ? ((r.spec.hosts as string[]) ?? []).join(',') : '', rule.name, match, backends]);
    });
  }
  const implicit = d.services.filter((s) => !d.resources.some((r) => r.kind === 'Route' && ((r.spec.hosts as string[]) ?? []).includes(s.name))).map((s) => s.name);
  return (rows.length > 1 ? table(rows) + '\n' : 'no Routes\n') + (implicit.length ? `reachable by name without a Route: ${implicit.join(', ')}\n` : '');
}

export function describeMatch(m: Record<string, unknown>): string {
  const parts: string[] = [];
  const path = m.path as Record<string, string> | undefined;
  if (path) parts.push(`path ${Object.entries(path).map(([k, v]) => `${k} ${v}`).join('')}`);
  if (Array.isArray(m.methods)) parts.push(`method ${(m.methods as string[]).join('|')}`);
  for (const h of (m.headers as Record<string, unknown>[]) ?? []) parts.push(`header ${h.name}${h.exact !== undefined ? `=${h.exact}` : h.regex !== undefined ? `~${h.regex}` : ' present'}`);
  for (const q of (m.queryParams as Record<string, unknown>[]) ?? []) parts.push(`query ${q.name}${q.exact !== undefined ? `=${q.exact}` : q.regex !== undefined ? `~${q.regex}` : ' present'}`);
  return parts.join(' & ') || '*';
}

function endpoints(d: Dump): string {
  const rows = [['SERVICE', 'ENDPOINT', 'LABELS', 'SUBSETS', 'MESHED', 'LB']];
  for (const s of d.services) {
    if (s.endpoints.length === 0) rows.push([s.name, '(none)', '-', '-', '-', s.loadBalancer]);
    for (const e of s.endpoints) {
      const subsets = s.subsets.filter((x) => Object.entries(x.labels).every(([k, v]) => e.labels[k] === v)).map((x) => x.name);
      rows.push([s.name, `${e.address}:${e.port}`, Object.entries(e.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-', subsets.join(',') || '-', e.meshed === false ? 'no' : 'yes', s.loadBalancer]);
    }
  }
  return table(rows) + '\n';
}

function policies(d: Dump): string {
  if (d.resources.length === 0) return 'no policies\n';
  return table([['KIND', 'NAME'], ...d.resources.map((r) => [r.kind, r.metadata.name])]) + '\n';
}
