import { stringify } from 'yaml';
import { kindFromName, KIND_ALIASES } from '../policy/parse';
import { CliError, api, describeApiError, flags, serverUrl, table, UsageError, type Command } from './common';

const KIND_LIST = [...new Set(Object.keys(KIND_ALIASES))].join(', ');

export const get: Command = {
  name: 'get',
  usage: `meshlet get KIND [NAME] [-o yaml|json] [--server URL]

KIND is one of: ${KIND_LIST}.
Without NAME, lists every resource of that kind as a table (or all of them as YAML/JSON with -o).`,
  async run(argv) {
    const { values, positionals } = flags(argv, { output: { type: 'string', short: 'o' }, server: { type: 'string' } }, true);
    const [kindArg, name, ...rest] = positionals;
    if (!kindArg) throw new UsageError('KIND is required');
    if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
    const kind = kindFromName(kindArg);
    if (!kind) throw new UsageError(`unknown kind ${JSON.stringify(kindArg)}; use one of: ${KIND_LIST}`);
    const output = values.output;
    if (output !== undefined && output !== 'yaml' && output !== 'json') throw new UsageError(`-o must be yaml or json, got ${JSON.stringify(output)}`);
    const path = `/v1/${kind.toLowerCase()}${name ? '/' + encodeURIComponent(name) : ''}`;
    const res = await api(serverUrl(values.server), 'GET', path);
    if (res.status === 404) throw new CliError(name ? `${kind} ${JSON.stringify(name)} not found` : describeApiError(res));
    if (res.status !== 200) throw new CliError(describeApiError(res));
    const body = res.body as { items?: Record<string, unknown>[] } & Record<string, unknown>;
    const items = name ? [body] : body.items ?? [];
    if (output === 'json') {
      process.stdout.write(JSON.stringify(name ? body : { apiVersion: 'meshlet.dev/v1', kind: 'List', items }, null, 2) + '\n');
    } else if (output === 'yaml') {
      process.stdout.write(items.map((i) => stringify(i)).join('---\n'));
    } else {
      if (items.length === 0) {
        process.stdout.write(`no ${kind} resources\n`);
        return 0;
      }
      const rows = [['NAME', 'VERSION', 'CREATED', 'SUMMARY']];
      for (const i of items) {
        const md = i.metadata as { name: string; resourceVersion?: string; creationTimestamp?: string };
        rows.push([md.name, md.resourceVersion ?? '', md.creationTimestamp ?? '', summary(kind, i.spec as Record<string, unknown>)]);
      }
      process.stdout.write(table(rows) + '\n');
    }
    return 0;
  },
};

function summary(kind: string, spec: Record<string, unknown>): string {
  switch (kind) {
    case 'Route':
      return `hosts=${(spec.hosts as string[]).join(',')} rules=${(spec.rules as unknown[]).length}`;
    case 'DestinationPolicy':
      return `service=${spec.service} lb=${(spec.loadBalancer as { type: string })?.type ?? 'round-robin'} subsets=${((spec.subsets as unknown[]) ?? []).length}`;
    case 'RateLimitPolicy':
      return `service=${spec.service} limits=${(spec.limits as unknown[]).length} failureMode=${spec.failureMode ?? 'open'}`;
    case 'Service':
      return `endpoints=${(spec.endpoints as unknown[]).length}`;
  }
  return '';
}
