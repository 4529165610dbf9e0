/**
 * Aggregation through a real sidecar: three backends (one slow, one failing) each reached
 * through the mesh stack; the exact merged body, the completion header, the total time bounded by
 * the slowest required backend (a ratio against calling it alone), and one trace with a child span
 * per backend (a real HTTP span collector, zipkin JSON).
 */
import t from 'tap';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { h1Upstream, request, route, service, startSidecar } from '../sidecar/helpers';

const SLOW_MS = 600;

t.test('three backends, one slow and one failing: merged body, completion header, timing, one trace', async (t) => {
  const users = await h1Upstream(t, (req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: new URL(req.url ?? '/', 'http://x').searchParams.get('id'), name: 'Alice', secret: 's3' })));
  const recs = await h1Upstream(t, (_req, res) => setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ items: [1, 2] })), SLOW_MS));
  const inv = await h1Upstream(t, (_req, res) => res.writeHead(500, { 'content-type': 'text/plain' }).end('broken'));
  const spans: Record<string, unknown>[] = [];
  const collector = http.createServer((req, res) => {
    let b = '';
    req.on('data', (c: Buffer) => (b += c.toString()));
    req.on('end', () => {
      try {
        spans.push(...(JSON.parse(b) as Record<string, unknown>[]));
      } catch {
        /* not a batch */
      }
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => collector.close(() => r())));
  const backends = (required: boolean) => [
    { name: 'user', service: 'users', path: '/users?id={query.id}', allow: ['id', 'name'], required: true },
    { name: 'recs', service: 'recs', path: '/recs/{user.id}', group: 'recs', timeout: '5s', required: true },
    { name: 'inv', service: 'inv', path: '/stock', group: 'stock', required },
  ];
  const sc = await startSidecar(
    t,
    [
      service('users', [{ port: users.port }]),
      service('recs', [{ port: recs.port }]),
      service('inv', [{ port: inv.port }]),
      route('page', ['page'], [
        { name: 'strict', matches: [{ path: { prefix: '/strict' } }], aggregate: { backends: backends(true) } },
        { name: 'page', aggregate: { backends: backends(false) } },
      ]),
    ],
    { args: ['--trace-sampling', '100', '--trace-collector', `http://127.0.0.1:${(collector.address() as AddressInfo).port}/api/v2/spans`] },
  );

  const alone0 = Date.now();
  t.equal((await request({ port: sc.outbound, path: '/recs/u1', headers: { host: 'recs' } })).status, 200);
  const alone = Date.now() - alone0;
  const t0 = Date.now();
  const r = await request({ port: sc.outbound, path: '/page?id=u1', headers: { host: 'page' } });
  const took = Date.now() - t0;
  t.equal(r.status, 200, 'partial answer: 200');
  t.equal(r.headers['x-meshlet-completed'], 'false', 'x-meshlet-completed: false');
  t.equal(
    r.text,
    JSON.stringify({ id: 'u1', name: 'Alice', recs: { items: [1, 2] }, _errors: { inv: { code: 'EDGE_AGG_UPSTREAM_STATUS', message: 'inv: answered 500' } } }),
    'the exact merged body: user filtered, recs under its group (after user: it uses user.id), the error summary',
  );
  t.ok(took / alone < 1.6, `bounded by the slowest required backend: ${took} ms vs ${alone} ms for it alone (ratio ${(took / alone).toFixed(2)})`);

  const strict = await request({ port: sc.outbound, path: '/strict?id=u1', headers: { host: 'page' } });
  t.equal(strict.status, 502, 'a required backend failing: 502');
  t.equal(strict.headers['x-meshlet-completed'], 'false');
  t.match(strict.json(), { error: 'EDGE_AGG_REQUIRED_FAILED', _errors: { inv: { code: 'EDGE_AGG_UPSTREAM_STATUS' } } });
  t.match(strict.headers['x-meshlet-flags'], /UR/);

  // One trace: the aggregate request's span and a child span per backend call.
  let trace: Record<string, unknown>[] = [];
  for (let i = 0; i < 200; i++) {
    const root = spans.find((s) => (s.tags as Record<string, string> | undefined)?.['http.path'] === '/page');
    if (root) {
      trace = spans.filter((s) => s.traceId === root.traceId);
      if (trace.length >= 4) break;
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  const root = trace.find((s) => (s.tags as Record<string, string>)['http.path'] === '/page');
  t.ok(root, 'the request has a root span');
  const children = trace.filter((s) => root && s.parentId === root.id);
  t.equal(trace.length, 4, 'four spans in the trace');
  t.same(children.map((s) => s.name).sort(), ['GET inv/default', 'GET recs/default', 'GET users/default'], 'a child span per backend call, each on its service\u2019s route');
});

t.test('{path.NAME} from the rule\'s pathTemplate: one-segment and rest-of-path variables, decoded; a path that does not fit', async (t) => {
  const seen: string[] = [];
  const users = await h1Upstream(t, (req, res) => {
    seen.push(req.url ?? '');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ url: req.url }));
  });
  const sc = await startSidecar(t, [
    service('users', [{ port: users.port }]),
    route('api', ['api'], [
      {
        name: 'profile',
        matches: [{ path: { prefix: '/profile/' } }],
        aggregate: {
          pathTemplate: '/profile/{id}/files/{rest=**}',
          backends: [
            { name: 'user', service: 'users', path: '/users/{path.id}?lang={query.lang}' },
            { name: 'file', service: 'users', path: '/blobs/{path.rest}', group: 'file' },
          ],
        },
      },
    ]),
  ]);
  const r = await request({ port: sc.outbound, path: '/profile/al%20ice/files/a/b.txt?lang=fr', headers: { host: 'api' } });
  t.equal(r.status, 200, r.text);
  t.same(r.json(), { url: '/users/al%20ice?lang=fr', file: { url: '/blobs/a%2Fb.txt' } }, 'the values, decoded from the client path and encoded again into each backend path');
  t.equal(r.headers['x-meshlet-completed'], 'true');
  const off = await request({ port: sc.outbound, path: '/profile/x', headers: { host: 'api' } });
  t.equal(off.status, 200);
  t.same(seen.slice(-2).sort(), ['/blobs/', '/users/?lang='], 'a path that does not fit the template leaves the values empty');
});

t.test('a {path.NAME} the pathTemplate does not have is refused with its field path', async (t) => {
  const { parseAggregateConfig } = await import('../../../src/edge/aggregate');
  const r = parseAggregateConfig({ pathTemplate: '/u/{id}', backends: [{ name: 'a', service: 's', path: '/x/{path.uid}' }] });
  t.notOk(r.ok);
  t.match(!r.ok && r.errors, [{ path: 'aggregate.backends[0].path', message: /pathTemplate has no \{uid\}/ }]);
  const bad = parseAggregateConfig({ pathTemplate: '/u/{rest=**}/x', backends: [{ name: 'a', service: 's', path: '/x' }] });
  t.match(!bad.ok && bad.errors, [{ message: /must be the last segment/ }]);
});
