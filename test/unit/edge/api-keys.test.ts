import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { compileApiKeys, hashApiKey, parseApiKeyConfig, type ApiKeyPolicy } from '../../../src/edge/api-keys';
import { edgeErrorResponse } from '../../../src/edge/errors';

const ALICE = 'ak_live_3b1f0c9e2d7a4c58b6e1f0a9d2c3b4e5';
const BOB = 'ak_live_9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d';
const NOW = Date.parse('2026-06-01T00:00:00Z');

function keys(raw: Record<string, unknown> = {}): ApiKeyPolicy {
  const r = compileApiKeys({ consumers: [{ name: 'alice', keys: [hashApiKey(ALICE)] }, { name: 'bob', keys: [hashApiKey(BOB), hashApiKey('old-bob-key')] }], ...raw }, 'spec.apiKeys');
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

t.test('keys stored hashed; key from the header names the consumer, forwarded and usable as a rate-limit descriptor', async (t) => {
  t.match(hashApiKey(ALICE), /^sha256:[0-9a-f]{64}$/);
  t.notMatch(JSON.stringify(keys().config), ALICE, 'the policy holds no key');
  const p = keys();
  const out = p.authenticate({ path: '/orders', headers: { 'x-api-key': ALICE, 'x-meshlet-consumer': 'bob' } }, NOW);
  t.same(out, { ok: true, consumer: 'alice', descriptor: { consumer: 'alice' }, removeHeaders: ['x-meshlet-consumer', 'x-api-key'], setHeaders: [['x-meshlet-consumer', 'alice']], path: undefined });
  const old = p.authenticate({ path: '/', headers: { 'x-api-key': 'old-bob-key' } }, NOW);
  t.equal(old.ok && old.consumer, 'bob', 'a consumer can have several keys (rotation)');
  const missing = p.authenticate({ path: '/', headers: {} }, NOW);
  t.equal(!missing.ok && missing.error.code, 'EDGE_API_KEY_MISSING');
  const bad = p.authenticate({ path: '/', headers: { 'x-api-key': `${ALICE}x` } }, NOW);
  t.equal(!bad.ok && bad.error.code, 'EDGE_API_KEY_INVALID');
  t.equal(!bad.ok && bad.error.status, 401);
  t.match(!bad.ok && bad.error.headers['www-authenticate'], /^ApiKey realm="meshlet", header="x-api-key"/);
});

t.test('key from a query parameter, removed from the forwarded path; sources tried in order; optional keys', async (t) => {
  const p = keys({ from: [{ header: 'X-Key' }, { query: 'apikey' }] });
  const q = p.authenticate({ path: `/orders?page=2&apikey=${BOB}&sort=asc`, headers: {} }, NOW);
  t.equal(q.ok && q.consumer, 'bob');
  t.equal(q.ok && q.path, '/orders?page=2&sort=asc');
  const only = p.authenticate({ path: `/orders?apikey=${BOB}`, headers: {} }, NOW);
  t.equal(only.ok && only.path, '/orders');
  const h = p.authenticate({ path: `/orders?apikey=${BOB}`, headers: { 'x-key': ALICE } }, NOW);
  t.equal(h.ok && h.consumer, 'alice', 'the header comes first');
  const kept = keys({ hideCredentials: false }).authenticate({ path: '/', headers: { 'x-api-key': ALICE } }, NOW);
  t.same(kept.ok && kept.removeHeaders, ['x-meshlet-consumer']);
  const anon = keys({ required: false }).authenticate({ path: '/', headers: { 'x-meshlet-consumer': 'alice' } }, NOW);
  t.same(anon, { ok: true, consumer: undefined, descriptor: {}, removeHeaders: ['x-meshlet-consumer'], setHeaders: [], path: undefined });
});

t.test('config errors name the field', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{}, /spec\.apiKeys: set consumers \(written here\) or consumerRefs/],
    [{ consumerRefs: ['a', 'a'] }, /consumerRefs\[1\]: duplicate ApiConsumer "a"/],
    [{ consumers: [{ name: 'a', keys: [ALICE] }] }, /consumers\[0\]\.keys\[0\]: must be a hash/],
    [{ consumers: [{ name: 'a', keys: [hashApiKey('k')] }, { name: 'b', keys: [hashApiKey('k')] }] }, /consumers\[1\]\.keys\[0\]: the same key is already given to a/],
    [{ consumers: [{ name: 'a', keys: [hashApiKey('k')] }, { name: 'a', keys: [hashApiKey('j')] }] }, /consumers\[1\]\.name: duplicate consumer/],
    [{ consumers: [{ name: 'a', keys: [hashApiKey('k')] }], from: [{ header: 'x', query: 'y' }] }, /from\[0\]: needs exactly one of header or query/],
    [{ consumers: [{ name: 'a', keys: [{ hash: hashApiKey('k'), expiresAt: 'next tuesday' }] }] }, /consumers\[0\]\.keys\[0\]\.expiresAt: must be an RFC 3339 time/],
    [{ consumers: [{ name: 'a', keys: [{ hash: ALICE }] }] }, /consumers\[0\]\.keys\[0\]\.hash: must be a hash/],
    [{ consumers: [{ name: 'a', keys: [{ hash: hashApiKey('k'), expires: '2027-01-01T00:00:00Z' }] }] }, /consumers\[0\]\.keys\[0\]/],
  ];
  for (const [input, re] of cases) {
    const r = parseApiKeyConfig(input, 'spec.apiKeys');
    t.notOk(r.ok);
    if (!r.ok) t.match(r.errors.map((e) => `${e.path}: ${e.message}`).join('\n'), re);
  }
});

t.test('over real HTTP: 401 with a challenge, or the consumer forwarded and the key hidden', async (t) => {
  const p = keys();
  const server = http.createServer((req, res) => {
    const out = p.authenticate({ path: req.url!, headers: req.headers }, NOW);
    if (!out.ok) {
      const r = edgeErrorResponse(out.error);
      return void res.writeHead(r.status, r.headers).end(r.body);
    }
    const fwd: Record<string, unknown> = { ...req.headers };
    for (const h of out.removeHeaders) delete fwd[h];
    for (const [h, v] of out.setHeaders) fwd[h] = v;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(fwd));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const no = await request(url);
  t.equal(no.statusCode, 401);
  t.ok(no.headers['www-authenticate']);
  t.match(await no.body.json(), { error: 'EDGE_API_KEY_MISSING' });
  const yes = await request(url, { headers: { 'x-api-key': BOB } });
  const seen = (await yes.body.json()) as Record<string, string>;
  t.equal(seen['x-meshlet-consumer'], 'bob');
  t.notOk('x-api-key' in seen);
});

t.test('a key with an expiry is accepted until then and refused from then on (401 EDGE_API_KEY_EXPIRED); others never expire', async (t) => {
  const at = '2026-06-01T12:00:00Z';
  const r = compileApiKeys({ consumers: [{ name: 'ci', keys: [{ hash: hashApiKey(ALICE), expiresAt: at }, hashApiKey(BOB)] }] }, 'spec.apiKeys');
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  const before = r.value.authenticate({ path: '/', headers: { 'x-api-key': ALICE } }, Date.parse(at) - 1);
  t.equal(before.ok && before.consumer, 'ci', 'a millisecond before: accepted');
  const after = r.value.authenticate({ path: '/', headers: { 'x-api-key': ALICE } }, Date.parse(at));
  t.equal(!after.ok && after.error.code, 'EDGE_API_KEY_EXPIRED', 'at the time: refused');
  t.equal(!after.ok && after.error.status, 401);
  t.match(!after.ok && after.error.headers['www-authenticate'], /^ApiKey realm="meshlet"/);
  const other = r.value.authenticate({ path: '/', headers: { 'x-api-key': BOB } }, Date.parse('2100-01-01T00:00:00Z'));
  t.equal(other.ok && other.consumer, 'ci', 'a key without expiresAt never expires');
});
