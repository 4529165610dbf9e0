import t from 'tap';
import { compileSnapshot } from '../../../src/snapshot/compile';
import type { RequestView } from '../../../src/policy/compiled';
import { parseSnapshot } from '../../../src/policy/snapshot';
import type { Endpoint } from '../../../src/policy/types';

function view(authority: string, pathAndQuery = '/', method = 'GET', headers: Record<string, string> = {}): RequestView {
  const q = pathAndQuery.indexOf('?');
  return {
    method,
    authority,
    path: q < 0 ? pathAndQuery : pathAndQuery.slice(0, q),
    query: q < 0 ? '' : pathAndQuery.slice(q + 1),
    header: (n) => headers[n],
  };
}

const ep = (service: string, port: number, labels: Record<string, string> = {}): Endpoint => ({ service, address: '127.0.0.1', port, labels, weight: 1, meshed: true });

function compile(resources: unknown[], endpoints: Endpoint[] = [], random = Math.random) {
  const s = parseSnapshot({ version: 'v1', resources, endpoints });
  if (!s.ok) throw new Error(JSON.stringify(s.errors));
  return compileSnapshot(s.value, { random });
}

const R = (name: string, spec: unknown) => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name }, spec });

t.test('matching by path, method, header and query', async (t) => {
  const c = compile([
    R('web', {
      hosts: ['web', 'web.example.com:8080'],
      rules: [
        { name: 'exact', matches: [{ path: { exact: '/health' } }], backends: [{ service: 'health' }] },
        { name: 'beta', matches: [{ headers: [{ name: 'x-beta', exact: '1' }] }], backends: [{ service: 'beta' }] },
        { name: 'regex', matches: [{ path: { regex: '/v[0-9]+/items' } }], backends: [{ service: 'items' }] },
        { name: 'post', matches: [{ path: { prefix: '/api' }, method: ['POST', 'PUT'] }], backends: [{ service: 'writer' }] },
        { name: 'debug', matches: [{ queryParams: [{ name: 'debug', present: true }] }], backends: [{ service: 'debug' }] },
        { name: 'not-mobile', matches: [{ headers: [{ name: 'user-agent', regex: '.*Mobile.*', invert: true }], path: { prefix: '/api' } }], backends: [{ service: 'desktop' }] },
        { name: 'rest', backends: [{ service: 'default' }] },
      ],
    }),
  ]);
  const svc = (v: RequestView) => c.routes.match(v)?.pickBackend()?.service;
  t.equal(svc(view('web', '/health')), 'health');
  t.equal(svc(view('web', '/health/x')), 'default', 'exact is exact');
  t.equal(svc(view('web', '/x', 'GET', { 'x-beta': '1' })), 'beta');
  t.equal(svc(view('web', '/v2/items')), 'items');
  t.equal(svc(view('web', '/v2/items/1')), 'default', 'regex matches the whole path');
  t.equal(svc(view('web', '/api/x', 'POST')), 'writer');
  t.equal(svc(view('web', '/apix', 'POST')), 'default', 'a prefix matches whole segments');
  t.equal(svc(view('web', '/?debug')), 'debug');
  t.equal(svc(view('web', '/?a=1&debug=0')), 'debug');
  t.equal(svc(view('web', '/api/x', 'GET', { 'user-agent': 'Firefox' })), 'desktop');
  t.equal(svc(view('web', '/api/x', 'GET', { 'user-agent': 'Foo Mobile Bar' })), 'default');
  t.equal(svc(view('web:80', '/')), 'default', 'a port is ignored when the host has none');
  t.equal(svc(view('web.example.com:8080', '/')), 'default', 'host:port matches');
  t.equal(c.routes.match(view('web.example.com', '/')), undefined, 'without the port, no route');
  t.equal(c.routes.match(view('unknown', '/')), undefined, 'unknown host: no route');
  t.equal(c.routes.match(view('web', '/'))?.statName, 'web/rest');
});

t.test('implicit routes, wildcards and cluster names', async (t) => {
  const c = compile([R('wild', { hosts: ['*.example.com'], rules: [{ backends: [{ service: 'ext' }] }] })], [ep('catalog', 1)]);
  t.equal(c.routes.match(view('catalog:8080'))?.pickBackend()?.service, 'catalog', 'a service with no Route is routable by name');
  t.equal(c.routes.match(view('catalog.default.svc.cluster.local'))?.pickBackend()?.service, 'catalog');
  t.equal(c.routes.match(view('a.b.example.com'))?.pickBackend()?.service, 'ext');
  t.equal(c.routes.match(view('example.com')), undefined);
  t.same([...c.services.keys()].sort(), ['catalog', 'ext']);
  t.equal(c.services.get('ext')!.picker()!.pick(view('x')), undefined, 'no endpoints: nothing picked');
});

t.test('weighted split and subsets', async (t) => {
  let seed = 1;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
  const c = compile(
    [
      { apiVersion: 'meshlet.dev/v1', kind: 'DestinationPolicy', metadata: { name: 'catalog' }, spec: { service: 'catalog', subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }] } },
      R('catalog', { hosts: ['catalog'], rules: [{ backends: [{ service: 'catalog', subset: 'v1', weight: 80 }, { service: 'catalog', subset: 'v2', weight: 20 }] }] }),
    ],
    [ep('catalog', 1, { version: 'v1' }), ep('catalog', 2, { version: 'v2' })],
    rnd,
  );
  const counts: Record<string, number> = {};
  for (let i = 0; i < 10_000; i++) {
    const rule = c.routes.match(view('catalog'))!;
    const b = rule.pickBackend()!;
    const e = c.services.get(b.service)!.picker(b.subset)!.pick(view('catalog'))!;
    counts[e.port] = (counts[e.port] ?? 0) + 1;
  }
  t.ok(Math.abs(counts[1] / 10_000 - 0.8) < 0.02, `80/20 split: ${JSON.stringify(counts)}`);
  t.equal(c.services.get('catalog')!.picker('nope'), undefined, 'unknown subset');
});

t.test('rewrite, redirect and header edits', async (t) => {
  const c = compile([
    R('web', {
      hosts: ['web'],
      rules: [
        { name: 'old', matches: [{ path: { prefix: '/old' } }], redirect: { pathPrefix: '/new', statusCode: 301 } },
        { name: 'moved', matches: [{ path: { exact: '/moved' } }], redirect: { host: 'other.example.com', scheme: 'https' } },
        {
          name: 'api',
          matches: [{ path: { prefix: '/api/' } }],
          rewrite: { pathPrefix: '/', host: 'backend' },
          requestHeaders: { set: { 'x-a': '1' }, add: { 'x-b': '2' }, remove: ['x-secret'] },
          backends: [{ service: 'backend' }],
        },
      ],
    }),
  ]);
  const old = c.routes.match(view('web:8080', '/old/page?x=1'))!;
  t.same(old.redirect!(view('web:8080', '/old/page?x=1')), { status: 301, location: 'http://web:8080/new/page?x=1' });
  const moved = c.routes.match(view('web', '/moved'))!;
  t.same(moved.redirect!(view('web', '/moved')), { status: 302, location: 'https://other.example.com/moved' });
  const api = c.routes.match(view('web', '/api/items?id=3'))!;
  t.equal(api.rewritePath!(view('web', '/api/items?id=3')), '/items?id=3');
  t.equal(api.rewriteHost, 'backend');
  const h: Record<string, string | string[] | undefined> = { 'x-secret': 's', 'x-b': '1' };
  api.requestHeaders!.apply(h);
  t.same(h, { 'x-a': '1', 'x-b': ['1', '2'] });
});

t.test('compiled snapshots are frozen', async (t) => {
  const c = compile([]);
  t.ok(Object.isFrozen(c));
  t.equal(c.version, 'v1');
});

t.test('parseSnapshot rejects bad endpoints and resources with paths', async (t) => {
  const s = parseSnapshot({ version: 'v2', resources: [{ kind: 'Route' }], endpoints: [{ service: 'a', address: 'x', port: 0 }] });
  t.notOk(s.ok);
  if (!s.ok) {
    t.ok(s.errors.some((e) => e.path === 'endpoints[0].port'));
    t.ok(s.errors.some((e) => e.path.startsWith('document[0]: ')));
  }
  t.notOk(parseSnapshot({ version: 'v', resources: [], extra: 1 }).ok, 'unknown field in snapshot');
});
