/** The Route's edge fields (jwt, apiKeys, ipFilter, cors, cache, aggregate): accepted shapes, and refusals with their field paths. */
import t from 'tap';
import { runCases, type Case } from './cases';
import { parseAll } from '../../../src/policy/parse';
import { compileSnapshot } from '../../../src/snapshot/compile';
import { compileApiKeys } from '../../../src/edge/api-keys';

const route = (rule: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'meshlet.dev/v1',
  kind: 'Route',
  metadata: { name: 'web' },
  spec: { hosts: ['web'], ...extra, rules: [{ backends: [{ service: 'web' }], ...rule }] },
});
const KEY = `sha256:${'a'.repeat(64)}`;
const agg = (backends: unknown[], more: Record<string, unknown> = {}) => ({ backends: undefined, aggregate: { backends, ...more } });

const cases: Case[] = [
  {
    name: 'every edge field, with defaults filled in',
    input: route(
      {
        jwt: { issuers: [{ issuer: 'https://idp', jwksUri: 'https://idp/jwks' }], scopes: ['read'], claimHeaders: [{ claim: 'sub', header: 'X-User' }] },
        apiKeys: { consumers: [{ name: 'acme', keys: [KEY] }] },
        ipFilter: { deny: ['10.0.0.0/8', '2001:db8::/32'] },
        cache: { key: { query: ['page'] } },
      },
      { cors: { allowOrigins: ['https://app.example.com'] } },
    ),
    check: (r) => {
      const rule = (r.spec as unknown as { rules: Record<string, any>[] }).rules[0]!;
      if (rule.jwt.clockSkewSeconds !== 60 || rule.jwt.claimHeaders[0].header !== 'x-user' || rule.jwt.forwardAuthorization !== false) throw new Error('jwt defaults');
      if (rule.apiKeys.from[0].header !== 'x-api-key' || rule.apiKeys.consumerHeader !== 'x-meshlet-consumer') throw new Error('apiKeys defaults');
      if (rule.cache.maxEntryBytes !== 1 << 20 || rule.cache.key.host !== true) throw new Error('cache defaults');
    },
  },
  { name: 'aggregate instead of backends', input: route(agg([{ name: 'a', service: 'users', path: '/u/{query.id}', timeout: '1s' }, { name: 'b', service: 'orders', path: '/o?u={a.id}', group: 'orders' }])) },
  { name: 'jwt: jwksUri and jwks both', input: route({ jwt: { issuers: [{ issuer: 'i', jwksUri: 'https://x/j', jwks: { keys: [{ kty: 'RSA', n: 'x', e: 'AQAB' }] } }] } }), error: { path: 'spec.rules[0].jwt.issuers[0]', message: /exactly one of jwksUri or jwks/ } },
  { name: 'jwt: an HMAC secret inline', input: route({ jwt: { issuers: [{ issuer: 'i', jwks: { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] } }] } }), error: { path: 'spec.rules[0].jwt.issuers[0].jwks.keys[0].kty', message: /HMAC secrets are not accepted/ } },
  { name: 'jwt: alg none', input: route({ jwt: { issuers: [{ issuer: 'i', jwksUri: 'https://x/j', algorithms: ['none'] }] } }), error: { path: 'spec.rules[0].jwt.issuers[0].algorithms[0]' } },
  { name: 'apiKeys: a key in clear', input: route({ apiKeys: { consumers: [{ name: 'acme', keys: ['my-secret-key'] }] } }), error: { path: 'spec.rules[0].apiKeys.consumers[0].keys[0]', message: /sha256:<64 hex digits>/ } },
  { name: 'apiKeys: one key for two consumers', input: route({ apiKeys: { consumers: [{ name: 'a', keys: [KEY] }, { name: 'b', keys: [KEY] }] } }), error: { path: 'spec.rules[0].apiKeys.consumers[1].keys[0]', message: /already given to a/ } },
  { name: 'apiKeys: ApiConsumers by name only', input: route({ apiKeys: { consumerRefs: ['partner-a'] } }) },
  { name: 'apiKeys: neither consumers nor consumerRefs', input: route({ apiKeys: {} }), error: { path: 'spec.rules[0].apiKeys', message: /set consumers .* or consumerRefs/ } },
  { name: 'apiKeys: a consumerRef named twice', input: route({ apiKeys: { consumerRefs: ['a', 'a'] } }), error: { path: 'spec.rules[0].apiKeys.consumerRefs[1]', message: /duplicate ApiConsumer "a"/ } },
  { name: 'ApiConsumer: a key twice', input: { apiVersion: 'meshlet.dev/v1', kind: 'ApiConsumer', metadata: { name: 'a' }, spec: { keys: [KEY, KEY] } }, error: { path: 'spec.keys[1]', message: /duplicate key/ } },
  { name: 'ApiConsumer: a key in clear', input: { apiVersion: 'meshlet.dev/v1', kind: 'ApiConsumer', metadata: { name: 'a' }, spec: { keys: ['secret'] } }, error: { path: 'spec.keys[0]', message: /sha256:<64 hex digits>/ } },
  { name: 'apiKeys: header and query in one source', input: route({ apiKeys: { consumers: [{ name: 'a', keys: [KEY] }], from: [{ header: 'x-k', query: 'k' }] } }), error: { path: 'spec.rules[0].apiKeys.from[0]', message: /exactly one of header or query/ } },
  { name: 'ipFilter: a bad CIDR', input: route({ ipFilter: { allow: ['10.0.0.0/40'] } }), error: { path: 'spec.rules[0].ipFilter.allow[0]' } },
  { name: 'ipFilter: empty', input: route({ ipFilter: {} }), error: { path: 'spec.rules[0].ipFilter', message: /needs allow or deny/ } },
  { name: 'cors: * with credentials', input: route({}, { cors: { allowOrigins: ['*'], allowCredentials: true } }), error: { path: 'spec.cors.allowOrigins', message: /cannot be used with allowCredentials/ } },
  { name: 'cache: query neither all, none nor a list', input: route({ cache: { key: { query: 'some' } } }), error: { path: 'spec.rules[0].cache.key.query' } },
  { name: 'aggregate: a cycle', input: route(agg([{ name: 'a', service: 'x', path: '/{b.id}' }, { name: 'b', service: 'y', path: '/{a.id}' }])), error: { path: 'spec.rules[0].aggregate.backends', message: /cycle: a -> b -> a/ } },
  { name: 'aggregate: an unknown backend in a template', input: route(agg([{ name: 'a', service: 'x', path: '/{c.id}' }])), error: { path: 'spec.rules[0].aggregate.backends[0].path', message: /names no backend/ } },
  {
    name: 'aggregate: too many backends (limit aggregateBackends)',
    input: route(agg(Array.from({ length: 17 }, (_, i) => ({ name: `b${i}`, service: 'x', path: '/' })))),
    error: { path: 'spec.rules[0].aggregate.backends', message: /limit aggregateBackends/ },
  },
  { name: 'aggregate and backends', input: route({ aggregate: { backends: [{ name: 'a', service: 'x', path: '/' }] } }), error: { path: 'spec.rules[0]', message: /only one of backends, redirect or aggregate/ } },
  { name: 'aggregate with retries', input: route({ ...agg([{ name: 'a', service: 'x', path: '/' }]), retries: { attempts: 1 } }), error: { path: 'spec.rules[0].retries', message: /does not apply to an aggregate rule/ } },
];

runCases(cases.map((c) => ({ ...c, input: JSON.parse(JSON.stringify(c.input)) as unknown })));


t.test('consumerRefs: the ApiConsumers\' keys as stored when the snapshot compiles; one key, one consumer', async (t) => {
  const KEY2 = `sha256:${'b'.repeat(64)}`;
  const consumer = (name: string, keys: string[]) => ({ apiVersion: 'meshlet.dev/v1', kind: 'ApiConsumer', metadata: { name }, spec: { keys } });
  const r = route({ apiKeys: { consumerRefs: ['alice', 'gone'], consumers: [{ name: 'bob', keys: [KEY2] }] } });
  const parsed = parseAll([consumer('alice', [KEY]), r]);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const snap = compileSnapshot({ version: '1', resources: parsed.value, endpoints: [] });
  const spec = snap.routes.match({ method: 'GET', path: '/', query: '', authority: 'web', header: () => undefined })?.edge?.apiKeys;
  t.same(spec?.consumers, [{ name: 'bob', keys: [{ hash: KEY2 }] }, { name: 'alice', keys: [{ hash: KEY }] }], 'inline first, then the named ones that exist');
  const p = compileApiKeys(spec);
  t.ok(p.ok);
  const dup = parseAll([consumer('alice', [KEY]), consumer('carol', [KEY])]);
  t.notOk(dup.ok);
  if (!dup.ok) t.match(dup.errors[0], { path: 'ApiConsumer/carol: spec.keys[0]', message: /already ApiConsumer "alice"'s/ });
  const clash = parseAll([consumer('alice', [KEY]), route({ apiKeys: { consumerRefs: ['alice'], consumers: [{ name: 'alice', keys: [KEY] }] } })]);
  t.notOk(clash.ok);
  if (!clash.ok) t.same(clash.errors.map((e) => e.path).sort(), ['Route/web: spec.rules[0].apiKeys.consumers[0].keys[0]', 'Route/web: spec.rules[0].apiKeys.consumers[0].name']);
});

