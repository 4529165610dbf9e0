/**
 * ApiConsumer resources and `meshlet apikey`, with the real processes: `meshlet control-plane`, a
 * `meshlet gateway` serving a Route whose apiKeys name the consumer (`consumerRefs`, beside an
 * inline consumer), and the CLI making a key against the real API. The key works (the consumer's
 * name reaches the app), only its hash is stored, and revoking it or deleting the consumer makes
 * it a 401 again.
 */
import * as http from 'node:http';
import t from 'tap';
import { apiRequest, cli, eventually, start, startControlPlane, tmpDir } from '../lib/meshlet';
import { h1Upstream, service } from '../sidecar/helpers';
import { closedPort, HOST } from './helpers';
import { hashApiKey } from '../../../src/edge/api-keys';

const API = 'meshlet.dev/v1';

function get(port: number, key?: string): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, path: '/orders', headers: { host: 'api.example.com', ...(key ? { 'x-api-key': key } : {}) }, agent: false }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('ApiConsumer: keys made by meshlet apikey, stored hashed, revoked', async (t) => {
  const dir = tmpDir('meshlet-api-consumers-');
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const up = await h1Upstream(t, (req, res) => res.end(JSON.stringify({ consumer: req.headers['x-meshlet-consumer'] ?? null, key: req.headers['x-api-key'] ?? null })));
  const port = await closedPort();
  const apply = async (items: unknown[]) => {
    const r = await apiRequest(`${cp.api}/v1/apply`, { method: 'POST', body: JSON.stringify({ items }), headers: { 'content-type': 'application/json' } });
    return { status: r.statusCode, text: await r.body.text() };
  };
  const inlineKey = 'an-inline-key-for-bob-0123456789';
  const applied = await apply([
    service('orders', [{ port: up.port }], 'http1'),
    { apiVersion: API, kind: 'ApiConsumer', metadata: { name: 'alice' }, spec: {} },
    { apiVersion: API, kind: 'Gateway', metadata: { name: 'edge' }, spec: { listeners: [{ name: 'web', port, protocol: 'HTTP' }] } },
    {
      apiVersion: API,
      kind: 'Route',
      metadata: { name: 'orders' },
      spec: { hosts: ['api.example.com'], gateways: ['edge'], rules: [{ backends: [{ service: 'orders' }], apiKeys: { consumerRefs: ['alice'], consumers: [{ name: 'bob', keys: [hashApiKey(inlineKey)] }] } }] },
    },
  ]);
  t.equal(applied.status, 200, applied.text);
  const gw = start(['gateway', '--name', 'edge', '--control-plane', `127.0.0.1:${cp.pushPort}`, '--address', HOST, '--admin', `${HOST}:0`, '--access-log', '0']);
  t.teardown(() => gw.stop());
  await gw.waitFor((l) => l.msg === 'gateway started', 30_000);
  await eventually('the listener', async () => ((await get(port)).status === 401 ? true : undefined));

  t.equal((await get(port)).status, 401, 'no key: 401');
  t.equal((await get(port, inlineKey)).body, '{"consumer":"bob","key":null}', 'an inline consumer keeps working beside consumerRefs');

  const made = cli(['apikey', 'create', '--consumer', 'alice', '-o', 'json'], { server: cp.api });
  t.equal(made.code, 0, made.stderr);
  const { key, hash } = JSON.parse(made.stdout) as { key: string; hash: string };
  t.match(key, /^mlk_[A-Za-z0-9_-]{43}$/);
  t.equal(hash, hashApiKey(key));
  const stored = cli(['get', 'apiconsumer', 'alice', '-o', 'json'], { server: cp.api });
  t.same(JSON.parse(stored.stdout).spec.keys, [hash], 'only the hash is stored');
  t.notOk(stored.stdout.includes(key), 'never the key');
  t.match(cli(['apikey', 'list', '--consumer', 'alice'], { server: cp.api }).stdout, hash);

  const ok = await eventually('the key accepted', async () => {
    const r = await get(port, key);
    return r.status === 200 ? r : undefined;
  });
  t.same(JSON.parse(ok.body), { consumer: 'alice', key: null }, "the consumer's name reaches the app, the key does not");
  t.equal((await get(port, `${key}x`)).status, 401, 'another key: 401');

  const second = JSON.parse(cli(['apikey', 'create', '--consumer', 'alice', '-o', 'json'], { server: cp.api }).stdout) as { key: string; hash: string };
  const revoked = cli(['apikey', 'revoke', '--consumer', 'alice', '--key', key], { server: cp.api });
  t.equal(revoked.code, 0, revoked.stderr);
  t.match(revoked.stdout, `key ${hash} of ApiConsumer alice revoked`);
  await eventually('the revoked key refused', async () => ((await get(port, key)).status === 401 ? true : undefined));
  t.equal((await get(port, second.key)).status, 200, 'the other key still works');
  t.not(cli(['apikey', 'revoke', '--consumer', 'alice', '--key', key], { server: cp.api }).code, 0, 'revoking it again: an error');

  // A key that expires: accepted until then, refused after (nobody revokes it), listed with its time.
  const short = cli(['apikey', 'create', '--consumer', 'alice', '--ttl', '5s', '-o', 'json'], { server: cp.api });
  t.equal(short.code, 0, short.stderr);
  const expiring = JSON.parse(short.stdout) as { key: string; hash: string; expiresAt: string };
  await eventually('the expiring key accepted', async () => ((await get(port, expiring.key)).status === 200 ? true : undefined));
  t.ok(Math.abs(Date.parse(expiring.expiresAt) - Date.now() - 5000) < 3000, `expires in about 5 s: ${expiring.expiresAt}`);
  t.same(
    (JSON.parse(cli(['get', 'apiconsumer', 'alice', '-o', 'json'], { server: cp.api }).stdout) as { spec: { keys: unknown[] } }).spec.keys,
    [second.hash, { hash: expiring.hash, expiresAt: expiring.expiresAt }],
    'stored as {hash, expiresAt}; the keys that never expire stay plain hashes',
  );
  // While the key runs out: bad expiries are refused (nothing is stored by them).
  for (const [args, re] of [
    [['--ttl', 'soon'], /--ttl: expected a duration/],
    [['--expires', '2020-01-01T00:00:00Z'], /--expires: 2020-01-01T00:00:00Z has already passed/],
    [['--expires', 'tomorrow'], /--expires: expected an RFC 3339 time/],
    [['--ttl', '1h', '--expires', '2099-01-01T00:00:00Z'], /not both/],
  ] as const) {
    const bad = cli(['apikey', 'create', '--consumer', 'alice', ...args], { server: cp.api });
    t.not(bad.code, 0);
    t.match(bad.stderr, re);
  }
  const badTime = await apply([{ apiVersion: API, kind: 'ApiConsumer', metadata: { name: 'frank' }, spec: { keys: [{ hash: hashApiKey('f'), expiresAt: '2027-13-45T00:00:00Z' }] } }]);
  t.equal(badTime.status, 400, 'an expiry that is no real time: refused');
  t.match(badTime.text, /spec\.keys\[0\]\.expiresAt/);
  const gone = await eventually('the expired key refused', async () => {
    const r = await get(port, expiring.key);
    return r.status === 401 ? r : undefined;
  }, 10_000);
  t.ok(Date.now() >= Date.parse(expiring.expiresAt), 'refused only once its time had come');
  t.match(JSON.parse(gone.body), { error: 'EDGE_API_KEY_EXPIRED' });
  const listed = JSON.parse(cli(['apikey', 'list', '--consumer', 'alice', '-o', 'json'], { server: cp.api }).stdout) as { keys: { hash: string; expiresAt?: string; expired: boolean }[] };
  t.same(listed.keys, [{ hash: second.hash, expired: false }, { hash: expiring.hash, expiresAt: expiring.expiresAt, expired: true }]);
  t.match(cli(['apikey', 'list', '--consumer', 'alice'], { server: cp.api }).stdout, /EXPIRES[\s\S]*never[\s\S]*\(expired\)/);
  t.equal(cli(['apikey', 'revoke', '--consumer', 'alice', '--hash', expiring.hash], { server: cp.api }).code, 0, 'an expiring key is revoked like any other');

  const del = cli(['delete', 'apiconsumer', 'alice'], { server: cp.api });
  t.equal(del.code, 0, del.stderr);
  const refused = await eventually('the deleted consumer refused', async () => {
    const r = await get(port, second.key);
    return r.status === 401 ? r : undefined;
  });
  t.match(refused.headers['www-authenticate'], /^ApiKey/);
  t.equal((await get(port, inlineKey)).status, 200, 'bob is unaffected');
  const check = JSON.parse(cli(['check', '-o', 'json'], { server: cp.api }).stdout) as { findings: { code: string; resource: string; field?: string }[] };
  t.ok(check.findings.some((f) => f.code === 'MC0019' && f.resource === 'Route/orders' && f.field === 'spec.rules[0].apiKeys.consumerRefs[0]'), 'meshlet check says the route names a consumer that is gone');

  const missing = cli(['apikey', 'create', '--consumer', 'carol'], { server: cp.api });
  t.not(missing.code, 0);
  t.match(missing.stderr, /ApiConsumer "carol" not found; create it/);
  const dup = await apply([{ apiVersion: API, kind: 'ApiConsumer', metadata: { name: 'dave' }, spec: { keys: [hashApiKey(inlineKey)] } }, { apiVersion: API, kind: 'ApiConsumer', metadata: { name: 'erin' }, spec: { keys: [hashApiKey(inlineKey)] } }]);
  t.equal(dup.status, 400, 'one key, two consumers: refused');
  t.match(dup.text, /the same key is already ApiConsumer \\"dave\\"'s/);
});
