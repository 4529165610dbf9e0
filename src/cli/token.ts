import * as path from 'node:path';
import { api, CliError, describeApiError, flags, serverUrl, table, UsageError, type Command } from './common';

interface Listed {
  id: string;
  kind: 'join' | 'api';
  service?: string;
  role?: string;
  state: string;
  expiresAt: string;
  description?: string;
  token?: string;
}

/** The same three operations on the control plane's REST API (admin role) or on a data dir's token file. */
interface Backend {
  create(o: { service?: string; role?: 'view' | 'edit' | 'admin'; ttl?: string; ttlMs?: number; description?: string }): Promise<Listed & { token: string }>;
  list(): Promise<Listed[]>;
  revoke(id: string): Promise<boolean>;
  where: string;
}

export const token: Command = {
  name: 'token',
  usage: `meshlet token create (--role view|edit|admin | --service NAME) [--ttl DURATION] [--description TEXT] [--data-dir D] [-o json]
       meshlet token list [--data-dir D] [-o json]
       meshlet token revoke ID [--data-dir D]

API tokens (--role): bearer credentials for the control plane's REST API and this CLI
(MESHLET_TOKEN, or a context's token). view: read everything; edit: also apply and delete;
admin: also tokens and the CA. Default lifetime 90d.
Join tokens (--service): the credential a sidecar outside Kubernetes presents to get its identity
(spiffe://TRUST_DOMAIN/svc/NAME) and to register endpoints for NAME, and only NAME. Default 1h.
  --role ROLE      an API token with this role
  --service NAME   a join token for this service
  --ttl DURATION   how long it can be used, e.g. 30m, 1h, 7d
  --data-dir D     work on the token file in this data dir (the control plane need not run; only
                   hashes are stored there); without it, through the control plane's REST API
                   (--server/--context, admin role)
The token is printed once; lists show ids, never secrets. A revoked token is refused at its next use.`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      { service: { type: 'string' }, role: { type: 'string' }, ttl: { type: 'string' }, description: { type: 'string' }, 'data-dir': { type: 'string' }, output: { type: 'string', short: 'o' } },
      true,
    );
    const [sub, ...rest] = positionals;
    const json = values.output === 'json';
    if (values.output !== undefined && !json) throw new UsageError(`-o: only json, got ${JSON.stringify(values.output)}`);
    const backend = values['data-dir'] !== undefined ? await fileBackend(path.resolve(values['data-dir'])) : apiBackend(serverUrl(undefined));
    if (sub === 'create') {
      if (rest.length) throw new UsageError(`unexpected ${JSON.stringify(rest[0])}`);
      if (!values.service === !values.role) throw new UsageError('one of --role view|edit|admin (an API token) or --service NAME (a join token) is required');
      const role = values.role;
      if (role !== undefined && role !== 'view' && role !== 'edit' && role !== 'admin') throw new UsageError(`--role must be view, edit or admin, got ${JSON.stringify(role)}`);
      const { parseTtl } = await import('../security/duration');
      const ttlMs = values.ttl === undefined ? undefined : parseTtl(values.ttl);
      if (values.ttl !== undefined && ttlMs === undefined) throw new UsageError(`--ttl: expected a duration such as 30m, 1h or 7d, got ${JSON.stringify(values.ttl)}`);
      const created = await backend.create({ service: values.service, role, ttl: values.ttl, ttlMs, description: values.description });
      if (json) process.stdout.write(JSON.stringify(created, null, 2) + '\n');
      else {
        process.stdout.write(`${created.token}\n`);
        if (created.kind === 'api')
          process.stderr.write(
            `API token ${created.id} with role ${created.role}, valid until ${created.expiresAt}\nuse it as MESHLET_TOKEN=<the token above> (or a context's token; curl -H 'Authorization: Bearer <token>'); revoke it with \`meshlet token revoke ${created.id}\`\n`,
          );
        else
          process.stderr.write(
            `join token ${created.id} for service ${created.service}, valid until ${created.expiresAt}\nstart the sidecar with MESHLET_JOIN_TOKEN=<the token above>; revoke it with \`meshlet token revoke ${created.id}\`\n`,
          );
      }
      return 0;
    }
    if (values.role !== undefined || values.service !== undefined || values.ttl !== undefined || values.description !== undefined) throw new UsageError('--role, --service, --ttl and --description go with create');
    if (sub === 'list') {
      if (rest.length) throw new UsageError(`unexpected ${JSON.stringify(rest[0])}`);
      const list = await backend.list();
      if (json) process.stdout.write(JSON.stringify(list, null, 2) + '\n');
      else
        process.stdout.write(
          table([['ID', 'KIND', 'ROLE/SERVICE', 'STATE', 'EXPIRES', 'DESCRIPTION'], ...list.map((t) => [t.id, t.kind ?? 'join', (t.kind === 'api' ? t.role : t.service) ?? '', t.state, t.expiresAt, t.description ?? ''])]) + '\n',
        );
      return 0;
    }
    if (sub === 'revoke') {
      const id = rest[0];
      if (!id || rest.length > 1) throw new UsageError('revoke takes one token ID (see `meshlet token list`)');
      if (!(await backend.revoke(id))) throw new CliError(`no token ${JSON.stringify(id)} in ${backend.where}`);
      process.stdout.write(`token ${id} revoked\n`);
      return 0;
    }
    throw new UsageError(sub ? `unknown sub-command ${JSON.stringify(sub)}` : 'create, list or revoke?');
  },
};

async function fileBackend(dir: string): Promise<Backend> {
  const { TokenStore } = await import('../../control-plane/tokens');
  const { storedCaRootPem } = await import('../../control-plane/ca');
  const { caPinOf } = await import('../security/ca-pin');
  // The CA in the data dir signs the push port's certificate: join tokens carry its hash.
  const root = await storedCaRootPem(dir).catch(() => undefined);
  const store = new TokenStore(dir, undefined, () => (root ? caPinOf(root) : undefined));
  return {
    where: dir,
    async create(o) {
      try {
        const c = await store.create({ service: o.service, role: o.role, ttlMs: o.ttlMs, description: o.description });
        return { token: c.token, ...c.info };
      } catch (e) {
        throw new CliError((e as Error).message);
      }
    },
    list: () => store.list(),
    revoke: (id) => store.revoke(id),
  };
}

function apiBackend(server: string): Backend {
  return {
    where: server,
    async create(o) {
      const r = await api(server, 'POST', '/v1/tokens', { role: o.role, service: o.service, ttl: o.ttl, description: o.description });
      if (r.status !== 201) throw new CliError(`could not create the token: ${describeApiError(r)}`);
      return r.body as Listed & { token: string };
    },
    async list() {
      const r = await api(server, 'GET', '/v1/tokens');
      if (r.status !== 200) throw new CliError(`could not list the tokens: ${describeApiError(r)}`);
      return (r.body as { items: Listed[] }).items;
    },
    async revoke(id) {
      const r = await api(server, 'DELETE', `/v1/tokens/${encodeURIComponent(id)}`);
      if (r.status === 404) return false;
      if (r.status !== 200) throw new CliError(`could not revoke the token: ${describeApiError(r)}`);
      return true;
    },
  };
}
