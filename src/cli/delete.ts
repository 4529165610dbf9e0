import { kindFromName } from '../policy/parse';
import { CliError, api, describeApiError, flags, serverUrl, UsageError, type Command } from './common';

export const del: Command = {
  name: 'delete',
  usage: `meshlet delete KIND NAME [--server URL]

Refused (exit 1) when another resource still refers to it, e.g. a Route using a subset that the
DestinationPolicy defines.`,
  async run(argv) {
    const { values, positionals } = flags(argv, { server: { type: 'string' } }, true);
    const [kindArg, name, ...rest] = positionals;
    if (!kindArg || !name) throw new UsageError('KIND and NAME are required');
    if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
    const kind = kindFromName(kindArg);
    if (!kind) throw new UsageError(`unknown kind ${JSON.stringify(kindArg)}`);
    const res = await api(serverUrl(values.server), 'DELETE', `/v1/${kind.toLowerCase()}/${encodeURIComponent(name)}`);
    if (res.status === 404) throw new CliError(`${kind} ${JSON.stringify(name)} not found`);
    if (res.status !== 200 && res.status !== 204) throw new CliError(describeApiError(res));
    process.stdout.write(`${kind}/${name} deleted\n`);
    return 0;
  },
};
