/**
 * Routing through the outbound listener of the real sidecar: by path (exact, prefix, regex),
 * header and method, addressed by Host and by absolute-form (HTTP_PROXY style); and the mesh's
 * own answers when it cannot route: 404 NR, 503 UH, 503 UF.
 */
import t from 'tap';
import { closedPort, echo, h1Upstream, request, route, service, startSidecar } from './helpers';

t.test('routing through the outbound listener', async (t) => {
  const names = ['health', 'api', 'items', 'beta', 'writer', 'fallback', 'strict'] as const;
  const ups = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await h1Upstream(t, echo(n))] as const)));
  const refused = await closedPort();
  const sc = await startSidecar(t, [
    ...names.map((n) => service(n, [{ port: ups[n].port }])),
    service('down', [{ port: refused }]),
    route('web', ['web'], [
      { name: 'health', matches: [{ path: { exact: '/health' } }], backends: [{ service: 'health' }] },
      { name: 'beta', matches: [{ headers: [{ name: 'x-beta', exact: '1' }] }], backends: [{ service: 'beta' }] },
      { name: 'items', matches: [{ path: { regex: '/v[0-9]+/items' } }], backends: [{ service: 'items' }] },
      { name: 'writer', matches: [{ path: { prefix: '/api' }, method: ['POST', 'PUT'] }], backends: [{ service: 'writer' }] },
      { name: 'api', matches: [{ path: { prefix: '/api' } }], backends: [{ service: 'api' }] },
      { name: 'rest', backends: [{ service: 'fallback' }] },
    ]),
    route('strict', ['strict'], [{ matches: [{ path: { exact: '/only' } }], backends: [{ service: 'strict' }] }]),
    route('ghost', ['ghost'], [{ backends: [{ service: 'nobody-home' }] }]),
    route('down', ['down'], [{ backends: [{ service: 'down' }] }]),
  ]);
  const via = (path: string, headers: Record<string, string> = {}, method = 'GET') =>
    request({ port: sc.outbound, path, method, headers: { host: 'web', ...headers }, body: method === 'GET' ? undefined : 'x' });

  const cases: { name: string; path: string; headers?: Record<string, string>; method?: string; want: string }[] = [
    { name: 'exact path', path: '/health', want: 'health' },
    { name: 'exact is exact', path: '/health/x', want: 'fallback' },
    { name: 'regex path', path: '/v2/items', want: 'items' },
    { name: 'regex matches the whole path', path: '/v2/items/7', want: 'fallback' },
    { name: 'prefix path', path: '/api/users?id=1', want: 'api' },
    { name: 'prefix matches whole segments', path: '/apix', want: 'fallback' },
    { name: 'method', path: '/api/users', method: 'POST', want: 'writer' },
    { name: 'method PUT', path: '/api', method: 'PUT', want: 'writer' },
    { name: 'header', path: '/api/users', headers: { 'x-beta': '1' }, want: 'beta' },
    { name: 'header value must match', path: '/api/users', headers: { 'x-beta': '2' }, want: 'api' },
    { name: 'header names match in any case', path: '/api/users', headers: { 'X-Beta': '1' }, want: 'beta' },
    { name: 'catch-all rule', path: '/', want: 'fallback' },
  ];
  for (const c of cases) {
    const r = await via(c.path, c.headers, c.method);
    t.equal(r.status, 200, `${c.name}: 200`);
    t.equal(r.headers['x-served-by'], c.want, `${c.name}: ${c.method ?? 'GET'} ${c.path} -> ${c.want}`);
    t.equal(r.json().url, c.path, `${c.name}: the upstream sees the path and query unchanged`);
    t.equal(r.json().headers.host, 'web', `${c.name}: the upstream sees Host: web`);
  }

  t.test('absolute-form, as an HTTP_PROXY client sends it', async (t) => {
    // The Host header names the proxy, as a client configured with HTTP_PROXY sends it; the
    // absolute URI's authority decides (RFC 9112 §3.2.2).
    const r = await request({ port: sc.outbound, path: 'http://web/v7/items?x=1', headers: { host: `127.0.0.1:${sc.outbound}` } });
    t.equal(r.status, 200);
    t.equal(r.headers['x-served-by'], 'items');
    t.equal(r.json().url, '/v7/items?x=1', 'upstream gets origin-form');
    t.equal(r.json().headers.host, 'web', 'upstream Host is the URI authority');
    const r2 = await request({ port: sc.outbound, path: 'http://WEB/health', headers: { host: 'strict' } });
    t.equal(r2.headers['x-served-by'], 'health', 'the URI authority overrides Host, case-insensitively');
    const r3 = await request({ port: sc.outbound, method: 'POST', path: 'http://web/api/orders', headers: { host: 'web' }, body: 'hello' });
    t.equal(r3.headers['x-served-by'], 'writer');
    t.equal(r3.json().bodyBytes, 5, 'the body arrives');
  });

  t.test('no route: 404 NR, and nothing reaches an upstream', async (t) => {
    const before = Object.values(ups).reduce((n, u) => n + u.hits, 0);
    for (const [host, path] of [
      ['nowhere.example', '/'],
      ['strict', '/other'],
    ]) {
      const r = await request({ port: sc.outbound, path, headers: { host } });
      t.equal(r.status, 404, `${host}${path}: 404`);
      t.equal(r.headers['x-meshlet-flags'], 'NR', `${host}${path}: flag NR`);
    }
    const abs = await request({ port: sc.outbound, path: 'http://nowhere.example/x', headers: { host: 'web' } });
    t.equal(abs.status, 404, 'absolute-form to an unknown host: 404');
    t.equal(abs.headers['x-meshlet-flags'], 'NR');
    t.equal(Object.values(ups).reduce((n, u) => n + u.hits, 0), before, 'no upstream saw these');
    const ok = await request({ port: sc.outbound, path: '/only', headers: { host: 'strict' } });
    t.equal(ok.headers['x-served-by'], 'strict', 'the same route still serves the path it has');
  });

  t.test('service without endpoints: 503 UH', async (t) => {
    const r = await request({ port: sc.outbound, path: '/', headers: { host: 'ghost' } });
    t.equal(r.status, 503);
    t.equal(r.headers['x-meshlet-flags'], 'UH');
  });

  t.test('endpoint refusing connections: 503 UF', async (t) => {
    const r = await request({ port: sc.outbound, path: '/', headers: { host: 'down' } });
    t.equal(r.status, 503);
    t.equal(r.headers['x-meshlet-flags'], 'UF');
    const r2 = await request({ port: sc.outbound, method: 'POST', path: '/', headers: { host: 'down' }, body: 'payload' });
    t.equal(r2.status, 503, 'with a body too');
    t.equal(r2.headers['x-meshlet-flags'], 'UF');
  });

  t.test('an upstream answer carries no mesh flag', async (t) => {
    const r = await request({ port: sc.outbound, path: '/health', headers: { host: 'web' } });
    t.equal(r.headers['x-meshlet-flags'], undefined);
  });
});

t.test("the mesh's own instant answers keep the client's connection alive", async (t) => {
  const http = await import('node:http');
  const sc = await startSidecar(t, [service('known', [{ port: await closedPort() }])]);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const one = (): Promise<{ status: number; reused: boolean }> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: sc.outbound, path: '/', headers: { host: 'nowhere' }, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
      });
      req.on('error', reject);
      req.end();
    });
  const a = await one();
  const b = await one();
  const c = await one();
  t.same([a.status, b.status, c.status], [404, 404, 404]);
  t.same([b.reused, c.reused], [true, true], 'a 404 NR answered inside the header callback does not close the connection');
});
