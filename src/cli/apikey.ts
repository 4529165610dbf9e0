/**
 * `meshlet apikey create|list|revoke --consumer NAME`: API keys of an ApiConsumer (Kong's
 * `key-auth` credentials). A key is made here (32 random bytes, base64url, prefixed `mlk_`),
 * printed once, and only its SHA-256 is stored, in the ApiConsumer's `spec.keys`, through the
 * REST API (edit role) with the resource version read (a concurrent change is retried, never
 * overwritten). The Routes that name the consumer (`apiKeys.consumerRefs`) accept the key as soon
 * as their sidecars and gateways have the new snapshot; revoking removes the hash the same way.
 * A key made with `--ttl` or `--expires` is stored as `{hash, expiresAt}` and refused from then on
 * (401 EDGE_API_KEY_EXPIRED), without anyone having to revoke it.
 */
import { randomBytes } from 'node:crypto';
import { hashApiKey } from '../edge/api-keys';
import { parseTtl } from '../security/duration';
import { api, CliError, describeApiError, flags, serverUrl, table, UsageError, type Command } from './common';

interface Consumer {
  apiVersion: string;
  kind: 'ApiConsumer';
  metadata: { name: string; resourceVersion?: string } & Record<string, unknown>;
  spec: { keys?: StoredKey[] } & Record<string, unknown>;
}

/** A key as the API serves it: the hash alone, or with its expiry. */
type StoredKey = string | { hash: string; expiresAt?: string };
const hashOf = (k: StoredKey): string => (typeof k === 'string' ? k : k.hash);
const expiryOf = (k: StoredKey): string | undefined => (typeof k === 'string' ? undefined : k.expiresAt);
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

const KEY_PREFIX = 'mlk_';

export const apikey: Command = {
  name: 'apikey',
  usage: `meshlet apikey create --consumer NAME [--ttl DURATION | --expires TIME] [--create] [-o json]
       meshlet apikey list --consumer NAME [-o json]
       meshlet apikey revoke --consumer NAME (--key KEY | --hash sha256:HEX)

The API keys of an ApiConsumer (Routes accept them where their apiKeys.consumerRefs name it).
create makes a random key, stores only its hash (sha256:HEX) in the consumer's spec.keys and
prints the key once: it cannot be shown again. A key made with --ttl or --expires is refused from
then on (401 EDGE_API_KEY_EXPIRED). list shows the hashes and when each expires; revoke removes one
(by the key, or its hash). Needs the edit role.
  --consumer NAME   the ApiConsumer
  --ttl DURATION    create: the key expires this long from now, e.g. 12h, 90d
  --expires TIME    create: the key expires at this RFC 3339 time, e.g. 2027-01-31T00:00:00Z
  --create          create: make the ApiConsumer first when it does not exist
  --key KEY         revoke: the key itself (hashed here; never sent)
  --hash HASH       revoke: the key's hash, as list shows it
  -o json           create: {consumer, key, hash, expiresAt?}; list: {consumer, keys: [{hash, expiresAt?, expired}]}`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      {
        consumer: { type: 'string' },
        create: { type: 'boolean' },
        key: { type: 'string' },
        hash: { type: 'string' },
        ttl: { type: 'string' },
        expires: { type: 'string' },
        output: { type: 'string', short: 'o' },
        server: { type: 'string' },
      },
      true,
    );
    const [sub, ...rest] = positionals;
    if (rest.length) throw new UsageError(`unexpected ${JSON.stringify(rest[0])}`);
    if (sub !== 'create' && sub !== 'list' && sub !== 'revoke') throw new UsageError('expected create, list or revoke');
    const name = values.consumer;
    if (!name) throw new UsageError('--consumer NAME is required');
    const json = values.output === 'json';
    if (values.output !== undefined && !json) throw new UsageError(`-o: only json, got ${JSON.stringify(values.output)}`);
    if (sub !== 'revoke' && (values.key !== undefined || values.hash !== undefined)) throw new UsageError('--key and --hash go with revoke');
    if (sub !== 'create' && values.create) throw new UsageError('--create goes with create');
    if (sub !== 'create' && (values.ttl !== undefined || values.expires !== undefined)) throw new UsageError('--ttl and --expires go with create');
    if (values.ttl !== undefined && values.expires !== undefined) throw new UsageError('give --ttl or --expires, not both');
    let expiresAt: string | undefined;
    if (values.ttl !== undefined) {
      const ms = parseTtl(values.ttl);
      if (ms === undefined) throw new UsageError(`--ttl: expected a duration such as 12h or 90d, got ${JSON.stringify(values.ttl)}`);
      expiresAt = new Date(Date.now() + ms).toISOString();
    } else if (values.expires !== undefined) {
      if (!RFC3339.test(values.expires) || Number.isNaN(Date.parse(values.expires))) throw new UsageError(`--expires: expected an RFC 3339 time such as 2027-01-31T00:00:00Z, got ${JSON.stringify(values.expires)}`);
      if (Date.parse(values.expires) <= Date.now()) throw new UsageError(`--expires: ${values.expires} has already passed`);
      expiresAt = values.expires;
    }
    const server = serverUrl(values.server);
    const path = `/v1/apiconsumers/${encodeURIComponent(name)}`;

    const read = async (): Promise<Consumer | undefined> => {
      const r = await api(server, 'GET', path);
      if (r.status === 404) return undefined;
      if (r.status !== 200) throw new CliError(describeApiError(r));
      return r.body as Consumer;
    };
    /** Reads, changes and writes back with the version read; retried when someone else wrote in between. */
    const update = async (change: (keys: StoredKey[]) => StoredKey[], createMissing: boolean): Promise<void> => {
      for (let attempt = 0; ; attempt++) {
        const cur = await read();
        if (!cur && !createMissing) throw new CliError(`ApiConsumer ${JSON.stringify(name)} not found; create it (\`meshlet apply -f\`), or pass --create`);
        const body: Consumer = cur
          ? { ...cur, spec: { ...cur.spec, keys: change(cur.spec.keys ?? []) } }
          : { apiVersion: 'meshlet.dev/v1', kind: 'ApiConsumer', metadata: { name }, spec: { keys: change([]) } };
        const r = await api(server, cur ? 'PUT' : 'POST', cur ? path : '/v1/apiconsumers', body);
        if (r.status === 200 || r.status === 201) return;
        if (r.status === 409 && attempt < 5) continue;
        throw new CliError(describeApiError(r));
      }
    };

    if (sub === 'list') {
      const cur = await read();
      if (!cur) throw new CliError(`ApiConsumer ${JSON.stringify(name)} not found`);
      const now = Date.now();
      const keys = (cur.spec.keys ?? []).map((k) => {
        const at = expiryOf(k);
        return { hash: hashOf(k), ...(at ? { expiresAt: at } : {}), expired: at !== undefined && Date.parse(at) <= now };
      });
      if (json) process.stdout.write(JSON.stringify({ consumer: name, keys }, null, 2) + '\n');
      else
        process.stdout.write(
          keys.length === 0 ? `ApiConsumer ${name} has no keys\n` : table([['HASH', 'EXPIRES'], ...keys.map((k) => [k.hash, k.expiresAt ? `${k.expiresAt}${k.expired ? ' (expired)' : ''}` : 'never'])]) + '\n',
        );
      return 0;
    }
    if (sub === 'create') {
      const key = KEY_PREFIX + randomBytes(32).toString('base64url');
      const hash = hashApiKey(key);
      await update((keys) => [...keys, expiresAt ? { hash, expiresAt } : hash], values.create === true);
      if (json) process.stdout.write(JSON.stringify({ consumer: name, key, hash, ...(expiresAt ? { expiresAt } : {}) }, null, 2) + '\n');
      else {
        process.stdout.write(key + '\n');
        process.stderr.write(`API key for ApiConsumer ${name} created (stored as ${hash}${expiresAt ? `, expires ${expiresAt}` : ''}); it is shown only now\n`);
      }
      return 0;
    }
    if ((values.key === undefined) === (values.hash === undefined)) throw new UsageError('revoke needs --key KEY or --hash sha256:HEX');
    const hash = values.key !== undefined ? hashApiKey(values.key) : (values.hash as string).trim().toLowerCase();
    if (!/^sha256:[0-9a-f]{64}$/.test(hash)) throw new UsageError(`--hash: expected sha256: and 64 hex digits, got ${JSON.stringify(values.hash)}`);
    const cur = await read();
    if (!cur) throw new CliError(`ApiConsumer ${JSON.stringify(name)} not found`);
    if (!(cur.spec.keys ?? []).some((k) => hashOf(k) === hash)) throw new CliError(`ApiConsumer ${name} has no key ${hash} (\`meshlet apikey list --consumer ${name}\`)`);
    await update((keys) => keys.filter((k) => hashOf(k) !== hash), false);
    process.stdout.write(`key ${hash} of ApiConsumer ${name} revoked\n`);
    return 0;
  },
};
