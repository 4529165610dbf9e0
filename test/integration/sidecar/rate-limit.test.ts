/**
 * Rate limits end to end: real `meshlet sidecar` processes (static --config), a real redis-server
 * on a free port, real HTTP clients. Limits are enforced on the destination's inbound side; the
 * caller's sidecar stamps who is calling and through which route.
 */
import t, { type Test } from 'tap';
import { startRedis } from '../lib/redis';
import { agent, echo, h1Upstream, h2Client, h2Request, pool, rawExchange, request, route, service, startSidecar, within, type Res, type SidecarProc } from './helpers';

const API = 'meshlet.dev/v1';
const rateLimitPolicy = (spec: Record<string, unknown>) => ({ apiVersion: API, kind: 'RateLimitPolicy', metadata: { name: 'catalog-limits' }, spec: { service: 'catalog', ...spec } });

async function metrics(sc: SidecarProc): Promise<string> {
  return (await request({ port: sc.admin, path: '/metrics' })).text;
}

/** Waits (bounded) until the sidecar's /metrics says its rate-limit Redis connection is up or down. */
async function redisUp(sc: SidecarProc, up: boolean): Promise<void> {
  const want = new RegExp(`meshlet_ratelimit_redis_up\\{[^}]*\\} ${up ? 1 : 0}`);
  await within(
    (async () => {
      while (!want.test(await metrics(sc))) await new Promise((r) => setTimeout(r, 25));
    })(),
    15_000,
    `redis_up ${up ? 1 : 0} on the sidecar's /metrics`,
  );
}

function counter(text: string, decision: string, limit: string): number {
  const m = new RegExp(`meshlet_ratelimit_decisions_total\\{limit="${limit}",scope="[a-z]+",decision="${decision}"\\} (\\d+)`).exec(text);
  return m ? Number(m[1]) : 0;
}

function checkLimited(t: Test, r: Res, limit: string): void {
  t.equal(r.status, 429);
  t.equal(r.headers['x-meshlet-flags'], 'RL', 'flag RL');
  t.ok(Number(r.headers['retry-after']) >= 1, 'retry-after in seconds');
  t.match(r.headers['ratelimit-policy'], new RegExp(`^"${limit}";q=\\d+;w=\\d+$`), 'RateLimit-Policy');
  t.match(r.headers.ratelimit, new RegExp(`^"${limit}";r=0;t=\\d+$`), 'RateLimit');
}

t.test('two sidecars share one global limit; 429 with RL, retry-after and the RateLimit headers', async (t) => {
  const redis = await startRedis(t);
  const app = await h1Upstream(t, echo('catalog'));
  const policy = rateLimitPolicy({ redis: { address: redis.address, timeout: '250ms' }, limits: [{ name: 'shared', requests: 20, per: '1m', scope: 'global' }] });
  const a = await startSidecar(t, [policy], { service: 'catalog', appPort: app.port });
  const b = await startSidecar(t, [policy], { service: 'catalog', appPort: app.port });
  await Promise.all([redisUp(a, true), redisUp(b, true)]);
  const ag = agent(t, 8);
  const out = await pool(60, 6, (i) => request({ port: i % 2 === 0 ? a.inbound : b.inbound, path: `/x${i}`, agent: ag }));
  const admitted = out.filter((r) => r.status === 200).length;
  t.ok(admitted >= 20 && admitted <= 22, `admitted ${admitted} of 60 with a shared limit of 20 (tolerance 2)`);
  t.equal(app.hits, admitted, 'the app saw only the admitted ones');
  const limited = out.filter((r) => r.status !== 200);
  t.ok(limited.length > 0 && limited.every((r) => r.status === 429 && r.headers['x-meshlet-flags'] === 'RL'), 'every other one is 429 RL');
  checkLimited(t, limited[0]!, 'shared');
  const [ma, mb] = await Promise.all([metrics(a), metrics(b)]);
  t.equal(counter(ma, 'allowed', 'shared') + counter(mb, 'allowed', 'shared'), admitted, 'allowed decisions counted on /metrics');
  t.equal(counter(ma, 'limited', 'shared') + counter(mb, 'limited', 'shared'), 60 - admitted, 'limited decisions counted');
  t.match(ma, /meshlet_requests_total\{direction="inbound",[^}]*response_code_class="4xx",response_code="429",response_flags="RL"\} \d+/);
});

t.test('local limit by source service and route: the caller sidecar stamps them, the app cannot spoof them', async (t) => {
  const app = await h1Upstream(t, echo('catalog'));
  const catalogRoute = route('catalog', ['catalog'], [
    { name: 'read', matches: [{ method: 'GET' }], backends: [{ service: 'catalog' }] },
    { name: 'write', backends: [{ service: 'catalog' }] },
  ]);
  const limits = rateLimitPolicy({ limits: [{ name: 'reads-per-caller', routes: ['catalog/read'], descriptors: ['source-service'], requests: 2, per: '1m' }] });
  const callee = await startSidecar(t, [catalogRoute, limits], { service: 'catalog', appPort: app.port });
  const caller = await startSidecar(t, [catalogRoute, limits, service('catalog', [{ port: callee.inbound }])], { service: 'web' });
  const send = (method: string, headers: Record<string, string> = {}) => request({ port: caller.outbound, method, path: '/items', headers: { host: 'catalog', ...headers } });
  const first = await send('GET', { 'x-meshlet-source': 'admin', 'x-meshlet-route': 'catalog/write' });
  t.equal(first.status, 200);
  t.equal(first.json().headers['x-meshlet-source'], 'web', "the app's x-meshlet-source was replaced by the caller sidecar's service");
  t.equal(first.json().headers['x-meshlet-route'], 'catalog/read', 'and its route by the matched route/rule');
  t.equal((await send('GET', { 'x-meshlet-source': 'someone-else' })).status, 200, 'a spoofed source does not get a fresh budget');
  const third = await send('GET');
  checkLimited(t, third, 'reads-per-caller');
  t.equal((await send('POST')).status, 200, 'another route is not limited');
  t.equal(app.hits, 3);
  // Straight at the callee, without a caller sidecar: no route header, the route-scoped limit does not apply.
  t.equal((await request({ port: callee.inbound, path: '/direct' })).status, 200);
});

t.test('HTTP/2 callers are limited too, and keep-alive connections survive a 429', async (t) => {
  const app = await h1Upstream(t, echo('catalog'));
  const policy = rateLimitPolicy({ limits: [{ name: 'tiny', requests: 2, per: '1m' }] });
  const sc = await startSidecar(t, [policy], { service: 'catalog', appPort: app.port, args: ['--app-protocol', 'http1'] });
  const session = h2Client(t, sc.inbound);
  const get = () => h2Request(session, { ':method': 'GET', ':path': '/h2', ':authority': 'catalog' });
  t.equal((await get()).status, 200);
  t.equal((await get()).status, 200);
  const third = await get();
  t.equal(third.status, 429);
  t.equal(third.headers['x-meshlet-flags'], 'RL');
  t.equal(third.headers['ratelimit-policy'], '"tiny";q=2;w=60');
  t.match(third.headers.ratelimit, /^"tiny";r=0;t=\d+$/);
  // HTTP/1.1 keep-alive: three requests on one connection, three 429s; a 429 does not close it.
  const get1 = 'GET / HTTP/1.1\r\nhost: catalog\r\n\r\n';
  const raw = await rawExchange(sc.inbound, get1 + get1 + 'GET / HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n\r\n', { maxMs: 5000 });
  t.equal(raw.text.match(/^HTTP\/1\.1 429 /gm)?.length, 3, 'three answers on one connection');
  t.notOk(raw.timedOut);
  t.equal(app.hits, 2);
});

t.test('Redis killed mid-traffic with failureMode open: zero 5xx; limits work again once Redis is back', async (t) => {
  const redis = await startRedis(t);
  const app = await h1Upstream(t, echo('catalog'));
  const policy = rateLimitPolicy({
    failureMode: 'open',
    redis: { address: redis.address, timeout: '250ms' },
    limits: [{ name: 'per-key', descriptors: [{ header: 'x-api-key' }], requests: 30, per: '1m', scope: 'global' }],
  });
  const sc = await startSidecar(t, [policy], { service: 'catalog', appPort: app.port });
  await redisUp(sc, true);
  const ag = agent(t, 4);
  let done = 0;
  let killed: Promise<void> | undefined;
  const out = await pool(200, 4, async (i) => {
    const r = await request({ port: sc.inbound, path: '/', headers: { 'x-api-key': `k${i}` }, agent: ag });
    if (++done === 50) killed = redis.stop();
    return r;
  });
  await killed;
  t.same(out.filter((r) => r.status >= 500).map((r) => `${r.status} ${r.headers['x-meshlet-flags']}`), [], 'zero 5xx');
  t.equal(out.filter((r) => r.status === 200).length, 200, 'every request admitted (none was over its limit)');
  t.ok(counter(await metrics(sc), 'failed_open', 'per-key') > 0, 'fail-open decisions counted');
  t.ok(sc.alive(), 'the sidecar is still running');
  await redis.start();
  await redisUp(sc, true);
  const after = await pool(40, 4, () => request({ port: sc.inbound, path: '/', headers: { 'x-api-key': 'after' }, agent: ag }));
  const ok = after.filter((r) => r.status === 200).length;
  t.ok(ok >= 30 && ok <= 32, `limits work again: ${ok} of 40 admitted for a limit of 30`);
  t.ok(after.filter((r) => r.status === 429).length >= 8, 'the rest limited');
});

t.test('failureMode closed denies while Redis is down', async (t) => {
  const redis = await startRedis(t);
  const app = await h1Upstream(t, echo('catalog'));
  const policy = rateLimitPolicy({
    failureMode: 'closed',
    redis: { address: redis.address, timeout: '250ms' },
    limits: [{ name: 'g', requests: 1000, per: '1m', scope: 'global' }],
  });
  const sc = await startSidecar(t, [policy], { service: 'catalog', appPort: app.port });
  await redisUp(sc, true);
  t.equal((await request({ port: sc.inbound })).status, 200, 'Redis up: allowed');
  await redis.stop();
  await redisUp(sc, false);
  const down = await pool(5, 1, () => request({ port: sc.inbound }));
  t.same(down.map((r) => r.status), [429, 429, 429, 429, 429], 'Redis down: denied');
  t.equal(down[0]!.headers['x-meshlet-flags'], 'RL');
  t.match(down[0]!.text, /failureMode closed/);
  t.equal(counter(await metrics(sc), 'failed_closed', 'g'), 5, 'counted as failed_closed');
  t.equal(app.hits, 1);
  await redis.start();
  await redisUp(sc, true);
  t.equal((await request({ port: sc.inbound })).status, 200, 'allowed again once Redis is back');
});
