/**
 * Every endpoint the dashboard uses, against real processes: `meshlet control-plane` (history
 * sampled every 500 ms, a Prometheus URL), a `web` sidecar in front of an app, a `frontend`
 * sidecar calling it, a `Service` outside the mesh, and a push-stream-only sidecar that NACKs.
 *
 *   /ui/                      the built page: content types, caching, ETag, CSP; read-only
 *   /v1/graph                 nodes (endpoints and their state, policy current), edges of the last minute
 *   /v1/history/{service}     points per route and caller, responses by flag, resilience, Prometheus links
 *   /v1/rollout               resources with YAML, ACK / NACK (field-path errors) / pending
 *   /v1/tap                   live requests fanned in from both sidecars; headers only when asked;
 *                             the sidecars' watchers go when the caller does; `meshlet tap`
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { FakeSidecar } from '../lib/fake-sidecar';
import { apiFetch, eventually, MAIN, portOf, tokenFor, start, startSidecar, tmpDir } from '../lib/meshlet';

const V = 'meshlet.dev/v1';
const policies = [
  {
    apiVersion: V,
    kind: 'Route',
    metadata: { name: 'web' },
    spec: { hosts: ['web'], rules: [{ name: 'main', backends: [{ service: 'web' }], breaker: { failureRateThreshold: 95, minimumCalls: 1000, openDuration: '30s' } }] },
  },
  { apiVersion: V, kind: 'DestinationPolicy', metadata: { name: 'web' }, spec: { service: 'web', outlierDetection: { consecutive5xx: 3, interval: '10s', baseEjectionTime: '60s', maxEjectionPercent: 100 } } },
  { apiVersion: V, kind: 'RateLimitPolicy', metadata: { name: 'web' }, spec: { service: 'web', limits: [{ name: 'per-sidecar', requests: 1000, per: '1s' }] } },
  { apiVersion: V, kind: 'Service', metadata: { name: 'legacy' }, spec: { endpoints: [{ address: '127.0.0.1', port: 9 }] } },
];

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  body: any;
}

/** The admin token of the control plane at `url` (lib/meshlet.ts remembers it). */
function auth(url: string): Record<string, string> {
  const t = tokenFor(url);
  return t ? { authorization: `Bearer ${t}` } : {};
}

function get(base: string, p: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${p}`, { method: opts.method ?? 'GET', headers: { ...auth(base), ...opts.headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** An NDJSON stream: every parsed line so far, a wait for one matching, and a way to hang up. */
function stream(url: string): { lines: any[]; status: Promise<number>; waitFor(pred: (l: any) => boolean, what?: string, ms?: number): Promise<any>; close(): void } {
  const lines: any[] = [];
  const waiters: { pred: (l: any) => boolean; resolve: (l: any) => void }[] = [];
  let req: http.ClientRequest;
  const status = new Promise<number>((resolve, reject) => {
    req = http.get(url, { agent: false, headers: auth(url) }, (res) => {
      resolve(res.statusCode ?? 0);
      const rl = createInterface({ input: res });
      rl.on('error', () => undefined);
      rl.on('line', (line) => {
        const l = JSON.parse(line);
        lines.push(l);
        for (const w of [...waiters]) if (w.pred(l)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(l));
      });
      res.on('error', () => undefined);
    });
    req.on('error', (e) => (lines.length ? undefined : reject(e)));
  });
  return {
    lines,
    status,
    waitFor(pred, what = 'a matching tap line', ms = 10_000) {
      const hit = lines.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} in ${ms} ms; got ${JSON.stringify(lines)}`)), ms);
        waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      });
    },
    close: () => req.destroy(),
  };
}

t.test('the dashboard API against a running mesh', async (t) => {
  const dir = tmpDir('meshlet-dash-api-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const app = http.createServer((req, res) => res.writeHead(req.url?.startsWith('/fail') ? 500 : 200, { 'content-type': 'text/plain' }).end('ok\n'));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (app.close(() => r()), app.closeAllConnections())));
  const appPort = (app.address() as net.AddressInfo).port;

  const cpProc = start([
    'control-plane',
    '--data-dir',
    path.join(dir, 'cp'),
    '--api',
    '127.0.0.1:0',
    '--push',
    '127.0.0.1:0',
    '--grace',
    '60000',
    '--history-interval',
    '500',
    '--prometheus-url',
    'http://prometheus.example:9090/',
  ]);
  t.teardown(() => cpProc.stop());
  const started = await cpProc.waitFor((x) => x.msg === 'control plane started');
  const api = String(started.api);
  const push = `127.0.0.1:${portOf(started.push)}`;
  const applied = await apiFetch(`${api}/v1/apply`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ items: policies }) });
  t.equal(applied.status, 200, await applied.text());

  const web = await startSidecar(['--service', 'web', '--id', 'web-0', '--control-plane', push, '--app-port', String(appPort), '--advertise', '127.0.0.1', '--access-log', '0']);
  t.teardown(() => web.stop());
  const fe = await startSidecar(['--service', 'frontend', '--id', 'frontend-0', '--control-plane', push, '--advertise', '127.0.0.1', '--access-log', '0']);
  t.teardown(() => fe.stop());

  const call = (p: string, headers: Record<string, string> = {}, port = fe.outbound, absolute = true) =>
    new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: absolute ? `http://web${p}` : p, headers: { host: 'web', ...headers }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
  await eventually('web through the frontend sidecar', async () => ((await call('/')) === 200 ? true : undefined));
  for (let i = 0; i < 8; i++) t.equal(await call('/'), 200);
  for (let i = 0; i < 3; i++) t.equal(await call('/fail'), 500);
  // Two requests from outside the mesh, straight to web's inbound listener.
  for (let i = 0; i < 2; i++) t.equal(await call('/', {}, web.inbound, false), 200);

  // --- a sidecar that cannot compile the snapshot: NACK with field-path errors
  const nacker = new FakeSidecar(push, { id: 'batch-0', service: 'batch' });
  t.teardown(() => nacker.close());
  const snap = await nacker.next();
  nacker.nack(snap, 'Route/web: spec.rules[0].breaker.failureRateThreshold: unsupported here\nRoute/web: spec.hosts[0]: cannot compile');

  // --- /v1/graph
  const graph = await eventually('an edge frontend -> web with all 12 requests, web-0 ejected, a sample after the NACKing sidecar came', async () => {
    const g = (await get(api, '/v1/graph')).body;
    const e = g?.edges?.find((x: any) => x.source === 'frontend' && x.destination === 'web');
    const ejected = g?.nodes.find((n: any) => n.name === 'web')?.endpoints.some((x: any) => x.state === 'ejected');
    return e && e.requests >= 12 && ejected && g.unreachable.length > 0 ? g : undefined;
  });
  const edge = graph.edges.find((x: any) => x.source === 'frontend' && x.destination === 'web');
  t.match(edge, { requests: 12, successRate: 0.75 }, 'edge: 9 good, 3 failed');
  t.ok(edge.rps > 0 && edge.p99Ms > 0 && edge.p50Ms <= edge.p99Ms, 'req/s and latency on the edge');
  t.match(
    graph.edges.find((x: any) => x.source === 'unknown'),
    { source: 'unknown', destination: 'web', requests: 2, successRate: 1 },
    'callers without a sidecar: an edge from outside the mesh',
  );
  const node = (n: string) => graph.nodes.find((x: any) => x.name === n);
  t.match(node('web'), { kind: 'mesh', policy: { current: 1, total: 1 }, inbound: { requests: 14 } });
  t.match(node('web').endpoints, [{ id: 'web-0', address: `127.0.0.1:${web.inbound}`, state: 'ejected', sidecar: true }], 'three 5xx in a row: the frontend sidecar ejected web-0');
  t.match(node('frontend'), { kind: 'mesh', endpoints: [{ id: 'frontend-0', state: 'ready' }] });
  t.match(node('legacy'), { kind: 'outside-mesh', endpoints: [{ address: '127.0.0.1:9', state: 'static', sidecar: false }] }, 'a Service outside the mesh');
  t.match(node('unknown'), { kind: 'clients' });
  t.match(node('batch'), { kind: 'mesh', policy: { current: 0, total: 1 }, endpoints: [{ id: 'batch-0', state: 'not-ready' }] }, 'the NACKing sidecar does not run the current policy');
  t.equal(graph.version, snap.version);
  t.same(graph.unreachable.map((u: any) => u.id), ['batch-0'], 'the fake sidecar has no admin port: listed, not fatal');

  // --- /v1/history/{service}
  const hist = await eventually('two samples of web', async () => {
    const h = (await get(api, '/v1/history/web')).body;
    return h?.inbound?.points?.length >= 2 ? h : undefined;
  });
  t.match(hist, { service: 'web', intervalMs: 500, retentionMs: 900000, windowSeconds: 60 });
  const last = hist.inbound.points[hist.inbound.points.length - 1];
  t.match(last, { requests: 14 });
  t.ok(last.t > Date.now() - 60_000 && last.rps > 0 && last.p50Ms > 0 && last.p90Ms >= last.p50Ms && last.p99Ms >= last.p90Ms, 'a point: time, req/s, p50 <= p90 <= p99');
  t.notOk('responses' in last, 'points carry no response breakdown; the series sums it');
  t.same(hist.inbound.responses, { '200 -': 11, '500 -': 3 }, 'responses web served, by code and flag');
  t.same(
    hist.routes.map((r: any) => r.route),
    ['web/main'],
    'per route (as the callers name it)',
  );
  t.same(hist.routes[0].responses, { '200 -': 9, '500 -': 3 });
  t.same(hist.callers.map((c: any) => c.caller).sort(), ['frontend', 'unknown'], 'per caller');
  t.match(hist.resilience.breakers, [{ route: 'web/main', state: 'closed', sidecar: 'frontend-0' }]);
  t.match(hist.resilience.ejected, [{ endpoint: `127.0.0.1:${web.inbound}`, seenBy: 'frontend-0' }]);
  t.match(hist.resilience.rateLimits, [{ limit: 'per-sidecar', scope: 'local', sidecar: 'web-0' }]);
  t.ok(hist.resilience.rateLimits[0].allowed >= 14, 'rate-limit decisions counted');
  t.match(hist.prometheus[0].url, /^http:\/\/prometheus\.example:9090\/graph\?g0\.expr=sum\(rate\(meshlet_requests_total%7Bdirection%3D%22inbound%22%2Cdestination%3D%22web%22%7D%5B1m%5D\)\)&g0\.tab=0&g0\.range_input=15m$/);
  t.match(hist.sidecars, [{ id: 'web-0', connected: true }]);
  const none = await get(api, '/v1/history/nope');
  t.equal(none.status, 404);
  t.match(none.body, { code: 'not_found', message: /no service "nope"/ });
  t.equal((await get(api, '/v1/history/legacy')).status, 200, 'a Service outside the mesh has a (quiet) page');

  // --- /v1/rollout
  const rollout = (await get(api, '/v1/rollout')).body;
  t.equal(rollout.version, snap.version);
  t.same(
    rollout.resources.map((r: any) => `${r.kind}/${r.name}`),
    ['DestinationPolicy/web', 'RateLimitPolicy/web', 'Route/web', 'Service/legacy'],
  );
  t.match(rollout.resources[2].yaml, /^apiVersion: meshlet\.dev\/v1\nkind: Route\nmetadata:\n  name: web\n/);
  t.match(rollout.resources[2].resourceVersion, /^\d+$/);
  t.same(rollout.summary, { acked: 2, nacked: 1, pending: 0, disconnected: 0 });
  t.match(
    rollout.sidecars.find((s: any) => s.id === 'batch-0'),
    {
      state: 'nacked',
      nackVersion: snap.version,
      errors: [
        { path: 'Route/web', message: 'spec.rules[0].breaker.failureRateThreshold: unsupported here' },
        { path: 'Route/web', message: 'spec.hosts[0]: cannot compile' },
      ],
    },
  );
  t.match(rollout.sidecars.find((s: any) => s.id === 'web-0'), { state: 'acked', ackedVersion: snap.version, errors: [] });

  // --- /v1/tap: both sidecars' requests to web, headers only when asked
  const tap = stream(`${api}/v1/tap?service=web&headers=x-probe&rate=50`);
  t.equal(await tap.status, 200);
  await tap.waitFor((l) => l.type === 'status' && l.sidecars === 2, 'web-0 and frontend-0 (the fake sidecar has no admin port)');
  await eventually('both sidecars watching', async () => {
    const [a, b] = await Promise.all([get(`http://127.0.0.1:${web.admin}`, '/stats'), get(`http://127.0.0.1:${fe.admin}`, '/stats')]);
    return a.body.taps === 1 && b.body.taps === 1 ? true : undefined;
  });
  t.equal(await call('/tapped', { 'x-probe': 'hello', 'user-agent': 'dash-test' }), 200);
  const outbound = await tap.waitFor((l) => l.type === 'request' && l.path === '/tapped' && l.direction === 'outbound');
  const inbound = await tap.waitFor((l) => l.type === 'request' && l.path === '/tapped' && l.direction === 'inbound');
  t.match(outbound, { sidecar: 'frontend-0', source: 'frontend', destination: 'web', route: 'web/main', method: 'GET', status: 200, flags: null, upstream: `127.0.0.1:${web.inbound}`, headers: { 'x-probe': 'hello' } });
  t.match(inbound, { sidecar: 'web-0', source: 'frontend', destination: 'web', status: 200, upstream: `127.0.0.1:${appPort}`, headers: { 'x-probe': 'hello' } });
  t.equal(inbound.traceId, outbound.traceId, 'one trace across both hops');
  t.match(outbound.traceId, /^[0-9a-f]{32}$/);
  t.ok(outbound.latencyMs > 0 && outbound.latencyMs >= inbound.latencyMs - 1, 'latency at each hop');
  t.notOk('user-agent' in outbound.headers, 'only the headers asked for');
  t.equal(await call('/fail/tapped'), 500);
  t.match(await tap.waitFor((l) => l.type === 'request' && l.path === '/fail/tapped' && l.direction === 'outbound'), { status: 500, flags: null });
  tap.close();
  await eventually('the sidecars stop watching once the caller is gone', async () => {
    const [a, b] = await Promise.all([get(`http://127.0.0.1:${web.admin}`, '/stats'), get(`http://127.0.0.1:${fe.admin}`, '/stats')]);
    return a.body.taps === 0 && b.body.taps === 0 ? true : undefined;
  });

  const routeTap = stream(`${api}/v1/tap?service=web&route=web/other`);
  await routeTap.waitFor((l) => l.type === 'status');
  t.equal(await call('/'), 200);
  const routeOk = stream(`${api}/v1/tap?service=web&route=web/main`);
  await routeOk.waitFor((l) => l.type === 'status');
  await eventually('web-0 and frontend-0 each have two watchers', async () => ((await get(`http://127.0.0.1:${fe.admin}`, '/stats')).body.taps === 2 ? true : undefined));
  t.equal(await call('/routed'), 200);
  t.match(await routeOk.waitFor((l) => l.type === 'request' && l.path === '/routed'), { route: 'web/main', direction: 'outbound' });
  t.notOk(routeTap.lines.some((l) => l.type === 'request'), 'a route filter lets nothing else through');
  routeTap.close();
  routeOk.close();

  for (const [q, why] of [
    ['', /service is required/],
    ['?service=web&headers=authorization', /authorization is never shown/],
    ['?service=web&rate=1000', /rate: expected an integer 1\.\.100/],
  ] as const) {
    const r = await get(api, `/v1/tap${q}`);
    t.equal(r.status, 400, q);
    t.match(r.body, { code: 'invalid', message: why });
  }
  const direct = await get(`http://127.0.0.1:${web.admin}`, '/tap?direction=sideways');
  t.equal(direct.status, 400, 'the sidecar checks its filter too');

  // --- meshlet tap (CLI)
  const cli = spawn(process.execPath, [MAIN, 'tap', 'web', '-o', 'json', '--count', '2', '--server', api], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MESHLET_TOKEN: tokenFor(api) ?? '' } });
  const out: string[] = [];
  let err = '';
  cli.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => cli.once('exit', (code) => r(code)));
  const ready = new Promise<void>((resolve) => createInterface({ input: cli.stdout }).on('line', (l) => (out.push(l), JSON.parse(l).type === 'status' && resolve())));
  await ready;
  await eventually('the CLI tap reached both sidecars', async () => ((await get(`http://127.0.0.1:${fe.admin}`, '/stats')).body.taps === 1 ? true : undefined));
  t.equal(await call('/cli'), 200);
  t.equal(await exited, 0, err);
  const reqs = out.map((l) => JSON.parse(l)).filter((l) => l.type === 'request');
  t.same(reqs.map((r) => `${r.direction} ${r.path} ${r.status}`).sort(), ['inbound /cli 200', 'outbound /cli 200'], 'meshlet tap -o json: the two hops of the request');
  const table = spawn(process.execPath, [MAIN, 'tap', 'web', '--count', '1', '--server', api], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MESHLET_TOKEN: tokenFor(api) ?? '' } });
  let tableOut = '';
  let tableErr = '';
  table.stdout.on('data', (c: Buffer) => (tableOut += c.toString()));
  table.stderr.on('data', (c: Buffer) => (tableErr += c.toString()));
  const tableExit = new Promise<number | null>((r) => table.once('exit', (code) => r(code)));
  await eventually('tapping', async () => (tableErr.includes('tapping web through') ? true : undefined));
  await eventually('the CLI tap reached the sidecars', async () => ((await get(`http://127.0.0.1:${fe.admin}`, '/stats')).body.taps === 1 ? true : undefined));
  t.equal(await call('/line'), 200);
  t.equal(await tableExit, 0, tableErr);
  t.match(tableOut, /^\d\d:\d\d:\d\d\.\d{3} (in |out) frontend -> web GET web\/line :status=200 flags=- latency=[\d.]+ms upstream=127\.0\.0\.1:\d+ route=\S+ trace=[0-9a-f]{32} sidecar=(web|frontend)-0\n$/);

  // --- /ui/: the page and its assets
  const page = await get(api, '/ui/');
  t.equal(page.status, 200);
  t.equal(page.headers['content-type'], 'text/html; charset=utf-8');
  t.equal(page.headers['cache-control'], 'no-cache');
  t.match(page.headers['content-security-policy'], /default-src 'self'/);
  t.equal(page.headers['x-content-type-options'], 'nosniff');
  t.notMatch(page.text, /https?:\/\//, 'nothing loaded from elsewhere');
  const js = /src="\.\/(assets\/app-[A-Z0-9]+\.js)"/.exec(page.text)?.[1];
  const css = /href="\.\/(assets\/app-[A-Z0-9]+\.css)"/.exec(page.text)?.[1];
  t.ok(js && css, 'content-hashed script and stylesheet');
  const jsRes = await get(api, `/ui/${js}`);
  t.equal(jsRes.status, 200);
  t.equal(jsRes.headers['content-type'], 'text/javascript; charset=utf-8');
  t.equal(jsRes.headers['cache-control'], 'public, max-age=31536000, immutable');
  t.notMatch(jsRes.text, /fonts\.googleapis|cdn\.jsdelivr|unpkg\.com/);
  const cssRes = await get(api, `/ui/${css}`);
  t.equal(cssRes.headers['content-type'], 'text/css; charset=utf-8');
  t.match(cssRes.text, /prefers-color-scheme:dark/, 'a dark scheme');
  t.equal((await get(api, `/ui/${js}`, { headers: { 'if-none-match': jsRes.headers.etag as string } })).status, 304, 'ETag revalidation');
  const redirect = await get(api, '/ui');
  t.equal(redirect.status, 308);
  t.equal(redirect.headers.location, '/ui/');
  t.equal((await get(api, '/ui/assets/nope.js')).status, 404);
  t.equal((await get(api, '/ui/service/web')).headers['content-type'], 'text/html; charset=utf-8', 'a reload of a page path gets the page');
  for (const p of ['/ui/', '/v1/graph', '/v1/rollout', '/v1/history/web', '/v1/tap?service=web']) {
    const r = await get(api, p, { method: 'POST' });
    t.equal(r.status, 405, `POST ${p}: the dashboard is read-only`);
    t.equal(r.headers.allow, 'GET, HEAD');
  }
  t.equal((await get(api, '/v1/routes')).status, 200, 'the rest of the API is untouched');
  const metrics = await get(api, '/metrics');
  t.match(metrics.text, /meshlet_api_requests_total\{code="200"\} \d+/);
});
