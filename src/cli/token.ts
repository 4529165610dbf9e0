import * as path from 'node:path';
import { CliError, flags, table, UsageError, type Command } from './common';

export const token: Command = {
  name: 'token',
  usage: `meshlet token create --service NAME [--ttl DURATION] [--description TEXT] [--data-dir D] [-o json]
       meshlet token list [--data-dir D] [-o json]
       meshlet token revoke ID [--data-dir D]

Join tokens: the credential a sidecar outside Kubernetes presents to get its identity
(spiffe://TRUST_DOMAIN/svc/NAME) and to register endpoints for NAME, and only NAME.
  --service NAME   the service the token admits (required for create)
  --ttl DURATION   how long it can be used, e.g. 30m, 1h, 7d (default 1h)
  --data-dir D     the control plane's data dir (default .meshlet/); only the hash is stored there
The token is printed once; give it to the sidecar as MESHLET_JOIN_TOKEN (or --join-token).
A running control plane sees new and revoked tokens at the next connection.`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      { service: { type: 'string' }, ttl: { type: 'string' }, description: { type: 'string' }, 'data-dir': { type: 'string' }, output: { type: 'string', short: 'o' } },
      true,
    );
    const [sub, ...rest] = positionals;
    const { TokenStore } = await import('../../control-plane/tokens');
    const store = new TokenStore(path.resolve(values['data-dir'] ?? '.meshlet'));
    const json = values.output === 'json';
    if (values.output !== undefined && !json) throw new UsageError(`-o: only json, got ${JSON.stringify(values.output)}`);
    if (sub === 'create') {
      if (rest.length) throw new UsageError(`unexpected ${JSON.stringify(rest[0])}`);
      if (!values.service) throw new UsageError('--service NAME is required');
      const { parseTtl } = await import('../security/duration');
      const ttlMs = values.ttl === undefined ? undefined : parseTtl(values.ttl);
      if (values.ttl !== undefined && ttlMs === undefined) throw new UsageError(`--ttl: expected a duration such as 30m, 1h or 7d, got ${JSON.stringify(values.ttl)}`);
      let created;
      try {
        created = await store.create({ service: values.service, ttlMs, description: values.description });
      } catch (e) {
        throw new CliError((e as Error).message);
      }
      if (json) process.stdout.write(JSON.stringify({ token: created.token, ...created.info }, null, 2) + '\n');
      else {
        process.stdout.write(`${created.token}\n`);
        process.stderr.write(`join token ${created.info.id} for service ${created.info.service}, valid until ${created.info.expiresAt}\nstart the sidecar with MESHLET_JOIN_TOKEN=<the token above>; revoke it with \`meshlet token revoke ${created.info.id}\`\n`);
      }
      return 0;
    }
    if (sub === 'list') {
      const list = await store.list();
      if (json) process.stdout.write(JSON.stringify(list, null, 2) + '\n');
      else process.stdout.write(table([['ID', 'SERVICE', 'STATE', 'EXPIRES', 'DESCRIPTION'], ...list.map((t) => [t.id, t.service, t.state, t.expiresAt, t.description ?? ''])]) + '\n');
      return 0;
    }
    if (sub === 'revoke') {
      const id = rest[0];
      if (!id || rest.length > 1) throw new UsageError('revoke takes one token ID (see `meshlet token list`)');
      if (!(await store.revoke(id))) throw new CliError(`no token ${JSON.stringify(id)} in ${path.resolve(values['data-dir'] ?? '.meshlet')}`);
      process.stdout.write(`token ${id} revoked\n`);
      return 0;
    }
    throw new UsageError(sub ? `unknown sub-command ${JSON.stringify(sub)}` : 'create, list or revoke?');
  },
};
