import { kindFromName } from '../policy/parse';
import type { Resource } from '../policy/types';
import { CliError, api, describeApiError, flags, serverUrl, UsageError, type Command } from './common';
import { readResources } from './input';

export const del: Command = {
  name: 'delete',
  usage: `meshlet delete KIND NAME [--ignore-not-found] [--server URL]
meshlet delete -f FILE|DIR|- [-f ...] [-R] [--ignore-not-found]

Refused (exit 1) when another resource still refers to it, e.g. a DestinationPolicy whose
subsets a Route uses. With -f, the resources named in the files are deleted in reverse order
(what refers comes before what is referred to, as files are usually written the other way).
  -f, --filename FILE    the resources in these files (a file, a directory, or -); repeatable
  -R, --recursive        with a directory: its sub-directories too
  --ignore-not-found     a resource that does not exist is not an error`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      { server: { type: 'string' }, filename: { type: 'string', short: 'f', multiple: true }, recursive: { type: 'boolean', short: 'R' }, 'ignore-not-found': { type: 'boolean' } },
      true,
    );
    let targets: { kind: string; name: string }[];
    if (values.filename) {
      if (positionals.length) throw new UsageError('give KIND NAME or -f FILE, not both');
      const { resources } = await readResources(values.filename, values.recursive === true);
      targets = resources.map((r: Resource) => ({ kind: r.kind, name: r.metadata.name })).reverse();
    } else {
      const [kindArg, name, ...rest] = positionals;
      if (!kindArg || !name) throw new UsageError('KIND and NAME (or -f FILE) are required');
      if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
      const kind = kindFromName(kindArg);
      if (!kind) throw new UsageError(`unknown kind ${JSON.stringify(kindArg)}`);
      targets = [{ kind, name }];
    }
    const server = serverUrl(values.server);
    let failed = 0;
    for (const { kind, name } of targets) {
      const res = await api(server, 'DELETE', `/v1/${kind.toLowerCase()}/${encodeURIComponent(name)}`);
      if (res.status === 404) {
        if (values['ignore-not-found']) continue;
        if (targets.length === 1) throw new CliError(`${kind} ${JSON.stringify(name)} not found`);
        process.stderr.write(`${kind}/${name}: not found\n`);
        failed++;
      } else if (res.status !== 200 && res.status !== 204) {
        if (targets.length === 1) throw new CliError(describeApiError(res));
        process.stderr.write(`${kind}/${name}: ${describeApiError(res)}\n`);
        failed++;
      } else process.stdout.write(`${kind}/${name} deleted\n`);
    }
    return failed > 0 ? 1 : 0;
  },
};
