/**
 * Outlier detection and health checking through the real sidecar: three backends, one killed
 * mid-run, with retries and ejection on (the issue's >= 99.9% of 5,000 requests); an ejected
 * endpoint coming back; an endpoint failing its HTTP health check taken out of rotation.
 */
import type * as http from 'node:http';
import t from 'tap';
import { agent, destinationPolicy, echo, h1Upstream, pool, request, route, service, startSidecar, within } from './helpers';

t.test('three backends, one killed mid-run: retries + outlier detection keep >= 99.9% success', async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map((n) => h1Upstream(t, echo(n))));
  const sc = await startSidecar(t, [
    service('shop', ups.map((u) => ({ port: u.port }))),
    destinationPolicy('shop', { outlierDetection: { consecutiveGatewayErrors: 2, interval: '1s', baseEjectionTime: '30s', maxEjectionPercent: 50 } }),
    route('shop', ['shop'], [{ backends: [{ service: 'shop' }], retries: { attempts: 2, retryOn: ['connect-failure', 'reset', 'gateway-error'], backoff: { baseInterval: '1ms', maxInterval: '10ms' } } }]),
  ]);
  const a = agent(t, 16);
  const N = 5000;
  let killed = false;
  const statuses = await pool(N, 16, async (i) => {
    if (i === 1500 && !killed) {
      killed = true;
      const victim = ups[1] as (typeof ups)[number];
      victim.server.closeAllConnections();
      victim.server.close();
    }
    try {
      return (await request({ port: sc.outbound, headers: { host: 'shop' }, agent: a })).status;
    } catch {
      return 0;
    }
  });
  const ok = statuses.filter((s) => s === 200).length;
  t.ok(ok / N >= 0.999, `${ok} of ${N} succeeded (${((100 * ok) / N).toFixed(2)}%)`);
  const m = (await request({ port: sc.admin, path: '/metrics' })).text;
  t.match(m, /meshlet_outlier_ejections_total\{destination="shop"\} [1-9]/, 'the dead endpoint was ejected');
  t.ok(sc.logs.some((l) => l.msg === 'endpoint ejected' && String(l.endpoint).endsWith(`:${ups[1]?.port}`)), 'the ejection names the dead endpoint');
});

t.test('an ejected endpoint comes back after baseEjectionTime', async (t) => {
  let broken = true;
  const flaky = await h1Upstream(t, (req, res) => {
    req.resume();
    res.writeHead(broken ? 500 : 200, { 'x-served-by': 'flaky' });
    res.end();
  });
  const steady = await h1Upstream(t, echo('steady'));
  const sc = await startSidecar(t, [
    service('svc', [{ port: flaky.port }, { port: steady.port }]),
    destinationPolicy('svc', { outlierDetection: { consecutive5xx: 3, interval: '10s', baseEjectionTime: '1s', maxEjectionPercent: 50 } }),
  ]);
  const a = agent(t, 4);
  const served = async (n: number) => (await pool(n, 1, () => request({ port: sc.outbound, headers: { host: 'svc' }, agent: a }))).map((r) => r.headers['x-served-by']);
  await served(6);
  t.equal(flaky.hits, 3, 'round robin gave flaky 3 of 6, all 500: ejected');
  const during = await served(10);
  t.same([...new Set(during)], ['steady'], 'while ejected, only steady serves');
  broken = false;
  await new Promise((r) => setTimeout(r, 1100));
  const after = await served(10);
  t.ok(after.filter((s) => s === 'flaky').length >= 4, `flaky is back in rotation (${after.filter((s) => s === 'flaky').length} of 10)`);
});

t.test('active HTTP health checks take a failing endpoint out and bring it back', async (t) => {
  let sick = true;
  const health = (name: string, isSick: () => boolean): http.RequestListener => (req, res) => {
    req.resume();
    if (req.url === '/healthz') {
      res.writeHead(isSick() ? 503 : 200);
      res.end();
      return;
    }
    res.writeHead(200, { 'x-served-by': name });
    res.end();
  };
  const a1 = await h1Upstream(t, health('one', () => sick));
  const a2 = await h1Upstream(t, health('two', () => false));
  const a3 = await h1Upstream(t, health('three', () => false));
  const sc = await startSidecar(t, [
    service('hc', [{ port: a1.port }, { port: a2.port }, { port: a3.port }]),
    destinationPolicy('hc', { healthCheck: { httpPath: '/healthz', interval: '100ms', timeout: '500ms', unhealthyThreshold: 2, healthyThreshold: 1 } }),
  ]);
  const a = agent(t, 4);
  const servedBy = async () => (await pool(12, 1, () => request({ port: sc.outbound, headers: { host: 'hc' }, agent: a }))).map((r) => String(r.headers['x-served-by']));
  await within(
    (async () => {
      while ((await servedBy()).includes('one')) await new Promise((r) => setTimeout(r, 100));
    })(),
    10_000,
    'the sick endpoint to leave rotation',
  );
  t.pass('the endpoint failing /healthz left rotation');
  sick = false;
  await within(
    (async () => {
      while (!(await servedBy()).includes('one')) await new Promise((r) => setTimeout(r, 100));
    })(),
    10_000,
    'the endpoint to return',
  );
  t.pass('it came back once /healthz answered 200');
});
