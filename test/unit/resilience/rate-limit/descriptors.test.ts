import t from 'tap';
import { compileKey, routeMatcher, type LimitRequest } from '../../../../src/resilience/rate-limit/descriptors';
import { limitedHeaders, policyHeader } from '../../../../src/resilience/rate-limit/headers';
import { ROUTE_HEADER, SOURCE_HEADER, stampIdentity } from '../../../../src/resilience/rate-limit/identity';
import type { RateLimit } from '../../../../src/policy/types';

const req = (headers: Record<string, string>, path = '/items'): LimitRequest => ({
  path,
  remoteAddress: '10.0.0.7',
  header: (n) => headers[n],
});
const limit = (l: Partial<RateLimit>): RateLimit => ({ name: 'l', descriptors: [], requests: 1, periodMs: 1000, burst: 0, scope: 'local', ...l });

t.test('descriptor keys', async (t) => {
  const k = compileKey(limit({ descriptors: [{ key: 'source-service' }, { key: 'destination-service' }, { key: 'route' }, { key: 'remote-address' }, { key: 'path' }, { header: 'x-api-key' }] }), 'catalog');
  t.equal(k(req({ [SOURCE_HEADER]: 'web', [ROUTE_HEADER]: 'r/read', 'x-api-key': 'k1' })), 'web|catalog|r/read|10.0.0.7|/items|k1');
  t.equal(k(req({ [SOURCE_HEADER]: 'web', [ROUTE_HEADER]: 'r/read' })), undefined, 'a missing header skips the limit');
  const h0: Record<string, string> = { [SOURCE_HEADER]: 'web', [ROUTE_HEADER]: 'r/read', 'x-api-key': 'k' };
  t.equal(k({ path: '/x', remoteAddress: undefined, header: (n) => h0[n] }), undefined, 'no remote address: skipped');
  t.equal(compileKey(limit({}), 'c')(req({})), '', 'no descriptors: one bucket for everyone');
  const h = compileKey(limit({ descriptors: [{ header: 'x-api-key' }, { key: 'path' }] }), 'c');
  t.not(h(req({ 'x-api-key': 'a|b' }, '/c')), h(req({ 'x-api-key': 'a' }, 'b|/c')), 'separators in values cannot make two keys collide');
  const long = h(req({ 'x-api-key': 'x'.repeat(10_000) }))!;
  t.ok(long.length < 140, `a huge value is hashed (${long.length} chars)`);
  t.not(long, h(req({ 'x-api-key': 'x'.repeat(10_001) })), 'and still distinct');
});

t.test('route-scoped limits', async (t) => {
  const m = routeMatcher(['r1/read', 'r2'])!;
  t.ok(m(req({ [ROUTE_HEADER]: 'r1/read' })));
  t.notOk(m(req({ [ROUTE_HEADER]: 'r1/write' })));
  t.ok(m(req({ [ROUTE_HEADER]: 'r2/anything' })), 'a whole route covers its rules');
  t.notOk(m(req({})), 'no route header: not on that route');
  t.equal(routeMatcher(undefined), undefined);
  t.equal(routeMatcher([]), undefined);
  const k = compileKey(limit({ routes: ['r1'] }), 'c');
  t.equal(k(req({ [ROUTE_HEADER]: 'r1/x' })), '');
  t.equal(k(req({ [ROUTE_HEADER]: 'r3/x' })), undefined);
  const kd = compileKey(limit({ routes: ['r1'], descriptors: [{ key: 'path' }] }), 'c');
  t.equal(kd(req({ [ROUTE_HEADER]: 'r3/x' })), undefined);
  t.equal(kd(req({ [ROUTE_HEADER]: 'r1/x' })), '/items');
});

t.test('identity headers: the app cannot spoof them', async (t) => {
  const flat = ['x-meshlet-source', 'admin', 'accept', '*/*', 'x-meshlet-route', 'fake/rule'];
  t.same(stampIdentity(flat, 'web', 'catalog/read'), ['accept', '*/*', SOURCE_HEADER, 'web', ROUTE_HEADER, 'catalog/read']);
  t.same(flat, ['accept', '*/*', SOURCE_HEADER, 'web', ROUTE_HEADER, 'catalog/read'], 'the list is edited in place');
  t.same(stampIdentity(['x-meshlet-source', 'admin', 'accept', '*/*'], undefined, 'catalog/read'), ['accept', '*/*'], 'outside the mesh: only removed');
  t.same(stampIdentity([], 'web', undefined), [SOURCE_HEADER, 'web']);
});

t.test('429 headers follow the IETF draft', async (t) => {
  t.equal(policyHeader({ name: 'per-key', requests: 100, periodMs: 60_000 }), '"per-key";q=100;w=60');
  t.equal(policyHeader({ name: 'fast', requests: 10, periodMs: 500 }), '"fast";q=10;w=1', 'sub-second windows round up');
  t.same(limitedHeaders({ name: 'a', requests: 5, periodMs: 1000 }, 0, 1200), {
    'retry-after': '2',
    'ratelimit-policy': '"a";q=5;w=1',
    ratelimit: '"a";r=0;t=2',
  });
  t.equal(limitedHeaders({ name: 'a', requests: 5, periodMs: 1000 }, 0, 0)['retry-after'], '1', 'never 0');
});
