import t from 'tap';
import { k8sSpiffeId, parseSpiffeId, serviceOf, serviceSpiffeId } from '../../../src/security/spiffe';

t.test('SPIFFE IDs: the two forms meshlet uses', async (t) => {
  const k = k8sSpiffeId('cluster.local', 'shop', 'catalog');
  t.same({ ...k }, { uri: 'spiffe://cluster.local/ns/shop/sa/catalog', trustDomain: 'cluster.local', path: '/ns/shop/sa/catalog', namespace: 'shop', serviceAccount: 'catalog' });
  t.equal(serviceOf(k), 'catalog');
  const s = serviceSpiffeId('mesh.local', 'pricing');
  t.same({ ...s }, { uri: 'spiffe://mesh.local/svc/pricing', trustDomain: 'mesh.local', path: '/svc/pricing', service: 'pricing' });
  t.equal(serviceOf(s), 'pricing');
  const other = parseSpiffeId('spiffe://td/some/where/else');
  t.ok(other.ok);
  t.equal(other.ok && serviceOf(other.value), undefined, 'another path names no service');
  t.throws(() => serviceSpiffeId('mesh.local', 'bad name'), /invalid SPIFFE ID: .*may hold only letters/);
});

t.test('SPIFFE IDs refused, with the reason', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /must not be empty/],
    ['http://td/x', /starts with 'spiffe:\/\/'/],
    ['spiffe://TD/x', /lowercase/],
    ['spiffe://td', /has a path/],
    ['spiffe://td/', /must not be empty/],
    ['spiffe://td/a//b', /must not be empty/],
    ['spiffe://td/a/../b', /'\.' or '\.\.'/],
    ['spiffe://td/a?x=1', /no query or fragment/],
    ['spiffe://td:443/a', /no port or user info/],
    ['spiffe://user@td/a', /no port or user info/],
    ['spiffe://td/a%20b', /may hold only letters/],
    [`spiffe://td/${'a'.repeat(2100)}`, /longer than 2048 bytes/],
    ['spiffe:///x', /trust domain must not be empty/],
  ];
  for (const [uri, message] of cases) {
    const r = parseSpiffeId(uri);
    t.notOk(r.ok, uri.slice(0, 40));
    if (!r.ok) t.match(r.errors[0]?.message, message, uri.slice(0, 40));
  }
});
