import t from 'tap';
import { parseAll } from '../../../src/policy';
import { compileSnapshot } from '../../../src/snapshot/compile';
import { PeerAuthentication, type PeerAuthenticationPolicy } from '../../../src/security/peer-auth';

function pa(name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return { apiVersion: 'meshlet.dev/v1', kind: 'PeerAuthentication', metadata: { name }, spec };
}

function p(name: string, spec: Record<string, unknown>): PeerAuthenticationPolicy {
  const r = parseAll([pa(name, spec)]);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  const res = r.value[0] as { metadata: { name: string }; spec: PeerAuthenticationPolicy['spec'] };
  return { name: res.metadata.name, spec: res.spec };
}

t.test('modes: the service, else mesh-wide, else the default', async (t) => {
  const pa = new PeerAuthentication([p('mesh', { mode: 'STRICT' }), p('legacy', { service: 'legacy', mode: 'PERMISSIVE' }), p('ext', { service: 'ext', mode: 'DISABLE' })]);
  t.same(pa.mode('catalog'), { mode: 'STRICT', policy: 'mesh' });
  t.same(pa.mode('legacy'), { mode: 'PERMISSIVE', policy: 'legacy' });
  t.same(new PeerAuthentication([]).mode('x'), { mode: 'PERMISSIVE' }, 'PERMISSIVE when there is no policy');
  const plain = 'G'.charCodeAt(0);
  t.same(pa.admit('catalog', 0x16), { ok: true, tls: true });
  t.same(pa.admit('catalog', plain), { ok: false, reason: 'plaintext refused: catalog is STRICT (PeerAuthentication mesh); callers need mTLS' });
  t.same(pa.admit('legacy', plain), { ok: true, tls: false });
  t.same(pa.admit('legacy', 0x16), { ok: true, tls: true });
  t.same(pa.admit('ext', plain), { ok: true, tls: false });
  t.match(pa.admit('ext', 0x16), { ok: false, reason: /TLS refused: ext has mTLS DISABLEd/ });
  t.match(new PeerAuthentication([], 'STRICT').admit('x', plain), { ok: false, reason: /the mesh default/ });
});

t.test('compiled per snapshot: each service carries its mode', async (t) => {
  const r = parseAll([pa('default', { mode: 'STRICT' }), pa('legacy', { service: 'legacy', mode: 'DISABLE' })]);
  t.ok(r.ok);
  if (!r.ok) return;
  const c = compileSnapshot({ version: 'v', resources: r.value, endpoints: [{ service: 'legacy', address: '127.0.0.1', port: 1, labels: {}, weight: 1, meshed: true }, { service: 'catalog', address: '127.0.0.1', port: 2, labels: {}, weight: 1, meshed: true }] });
  t.equal(c.services.get('legacy')?.peerAuthMode, 'DISABLE');
  t.equal(c.services.get('catalog')?.peerAuthMode, 'STRICT');
  t.same(c.peerAuth.mode('catalog'), { mode: 'STRICT', policy: 'default' });
  const none = compileSnapshot({ version: 'v', resources: [], endpoints: [{ service: 'a', address: '127.0.0.1', port: 1, labels: {}, weight: 1, meshed: true }] });
  t.equal(none.services.get('a')?.peerAuthMode, 'PERMISSIVE', 'no policy: PERMISSIVE (and mTLS between sidecars with identities)');
});

t.test('bad specs: field-path errors', async (t) => {
  t.match(parseAll([pa('x', { mode: 'ON' })]), { ok: false, errors: [{ path: /spec\.mode/, message: /STRICT/ }] });
  t.match(parseAll([pa('x', { mode: 'STRICT', service: '', port: 1 })]), { ok: false });
  t.match(parseAll([pa('x', {})]), { ok: false, errors: [{ path: /spec\.mode/ }] });
  t.match(parseAll([pa('a', { mode: 'STRICT' }), pa('b', { mode: 'PERMISSIVE' })]), { ok: false, errors: [{ message: /mesh-wide PeerAuthentication/ }] });
  t.match(parseAll([pa('a', { service: 's', mode: 'STRICT' }), pa('b', { service: 's', mode: 'PERMISSIVE' })]), { ok: false, errors: [{ message: /already has PeerAuthentication/ }] });
});
