/**
 * API keys through real sidecars: the caller's outbound rule checks the key (hashed in the policy)
 * and forwards the consumer; the callee's inbound rate limit is keyed by the descriptor
 * `consumer`, so each client has its own budget. A client cannot claim another consumer.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { echo, h1Upstream, request, route, service, startSidecar } from '../sidecar/helpers';

const hash = (k: string) => `sha256:${createHash('sha256').update(k).digest('hex')}`;

t.test('API keys: 401 without a valid key; consumer forwarded; per-consumer rate limit', async (t) => {
  const app = await h1Upstream(t, echo('catalog'));
  const limits = { apiVersion: 'meshlet.dev/v1', kind: 'RateLimitPolicy', metadata: { name: 'per-consumer' }, spec: { service: 'catalog', limits: [{ name: 'per-client', descriptors: ['consumer'], requests: 2, per: '1m' }] } };
  const callee = await startSidecar(t, [limits], { service: 'catalog', appPort: app.port });
  const apiRoute = route('catalog', ['catalog'], [
    {
      name: 'api',
      backends: [{ service: 'catalog' }],
      apiKeys: { consumers: [{ name: 'mobile', keys: [hash('key-mobile')] }, { name: 'partner', keys: [hash('key-partner-old'), hash('key-partner')] }], from: [{ header: 'x-api-key' }, { query: 'apikey' }] },
    },
  ]);
  const caller = await startSidecar(t, [apiRoute, service('catalog', [{ port: callee.inbound }])], { service: 'gateway' });
  const send = (headers: Record<string, string>, path = '/items') => request({ port: caller.outbound, path, headers: { host: 'catalog', ...headers } });

  const none = await send({});
  t.equal(none.status, 401, 'no key: 401');
  t.match(none.headers['www-authenticate'], /^ApiKey realm="meshlet", header="x-api-key", query="apikey"$/, 'with the ApiKey challenge');
  t.match(none.json(), { error: 'EDGE_API_KEY_MISSING' });
  const wrong = await send({ 'x-api-key': 'guess' });
  t.equal(wrong.status, 401, 'unknown key: 401');
  t.match(wrong.json(), { error: 'EDGE_API_KEY_INVALID' });
  t.equal(app.hits, 0, 'nothing reached the service');

  const ok = await send({ 'x-api-key': 'key-mobile', 'x-meshlet-consumer': 'partner' });
  t.equal(ok.status, 200);
  const seen = ok.json();
  t.equal(seen.headers['x-meshlet-consumer'], 'mobile', 'the consumer is forwarded (a client-sent one replaced)');
  t.equal(seen.headers['x-api-key'], undefined, 'the key itself is not forwarded');
  const q = await send({}, '/items?apikey=key-partner&page=2');
  t.equal(q.status, 200, 'a key in the query parameter');
  t.equal(q.json().url, '/items?page=2', 'removed from the forwarded query');
  t.equal(q.json().headers['x-meshlet-consumer'], 'partner');

  // Budget of 2 per consumer: mobile used 1, partner 1.
  t.equal((await send({ 'x-api-key': 'key-mobile' })).status, 200, 'mobile: 2nd');
  const limited = await send({ 'x-api-key': 'key-mobile' });
  t.equal(limited.status, 429, 'mobile: 3rd is rate limited');
  t.equal(limited.headers['x-meshlet-flags'], 'RL');
  t.equal((await send({ 'x-api-key': 'key-partner-old' })).status, 200, 'partner has its own budget (and either of its keys works)');
  t.equal((await send({ 'x-api-key': 'key-partner' })).status, 429, 'partner: 3rd is rate limited');
  const dump = (await request({ port: caller.admin, path: '/config_dump' })).text;
  t.notOk(dump.includes('key-mobile'), 'config dumps hold hashes only, never a key');
});
