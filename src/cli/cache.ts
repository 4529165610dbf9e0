import { api, CliError, describeApiError, flags, outputFormat, serverUrl, table, UsageError, type Command } from './common';

interface PurgeBody {
  purged: number;
  sidecars: { id: string; service: string; purged?: number; error?: string }[];
}

export const cache: Command = {
  name: 'cache',
  usage: `meshlet cache purge [KEY | --prefix P] [--service S] [-o json] [--server URL]

Removes cached responses (Route rules' \`cache\`) from every connected sidecar, or from the
sidecars of one service. A key is how the cache prints it: METHOD HOST PATH[?QUERY], e.g.
"GET catalog/items/7" (every Vary variant goes); a prefix removes every key starting with it
("GET catalog/items/"; "" removes everything).
  --prefix P     remove every entry whose key starts with P
  --service S    only the sidecars of service S
  -o json        the answer as JSON: the total and each sidecar's count (or why it was not reached)`,
  async run(argv) {
    const { values, positionals } = flags(argv, { prefix: { type: 'string' }, service: { type: 'string' }, output: { type: 'string', short: 'o' }, server: { type: 'string' } }, true);
    const [sub, key, ...rest] = positionals;
    if (sub !== 'purge') throw new UsageError(sub === undefined ? 'say what to do: meshlet cache purge KEY | --prefix P' : `unknown cache command ${JSON.stringify(sub)}; use purge`);
    if (rest.length) throw new UsageError(`one key at a time; got ${positionals.length - 1}`);
    if ((key === undefined) === (values.prefix === undefined)) throw new UsageError('give a KEY or --prefix P (not both)');
    const output = outputFormat(values.output, ['json'] as const);
    const body = { ...(values.service ? { service: values.service } : {}), ...(key !== undefined ? { key } : { prefix: values.prefix }) };
    const res = await api(serverUrl(values.server), 'POST', '/v1/cache/purge', body);
    if (res.status !== 200 && res.status !== 502) throw new CliError(describeApiError(res));
    const b = res.body as PurgeBody;
    if (output === 'json') process.stdout.write(JSON.stringify(b, null, 2) + '\n');
    else {
      const what = key !== undefined ? `key ${JSON.stringify(key)}` : `prefix ${JSON.stringify(values.prefix)}`;
      let out = `purged ${b.purged} cached response${b.purged === 1 ? '' : 's'} (${what}) from ${b.sidecars.filter((s) => s.error === undefined).length} sidecar(s)\n`;
      if (b.sidecars.length === 0) out = `no connected sidecar${values.service ? ` of service ${values.service}` : ''}: nothing purged\n`;
      const failed = b.sidecars.filter((s) => s.error !== undefined);
      if (failed.length) out += '\n' + table([['SIDECAR', 'SERVICE', 'ERROR'], ...failed.map((s) => [s.id, s.service, s.error ?? ''])]) + '\n';
      process.stdout.write(out);
    }
    return b.sidecars.some((s) => s.error !== undefined) ? 1 : 0;
  },
};
