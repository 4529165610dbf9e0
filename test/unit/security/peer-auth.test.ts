import t from 'tap';
import { PeerAuthentication, validatePeerAuthentication, type PeerAuthenticationPolicy } from '../../../src/security/peer-auth';

function p(name: string, spec: unknown): PeerAuthenticationPolicy {
  const r = validatePeerAuthentication(name, spec);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

t.test('modes: the service, else mesh-wide, else the default', async (t) => {
  const pa = new PeerAuthentication([p('mesh', { mode: 'STRICT' }), p('legacy', { service: 'legacy', mode: 'PERMISSIVE' }), p('ext', { service: 'ext', mode: 'DISABLE' })]);
  t.same(pa.mode('catalog'), { mode: 'STRICT', policy: 'mesh' });
  t.same(pa.mode('legacy'), { mode: 'PERMISSIVE', policy: 'legacy' });
  t.same(new PeerAuthentication([]).mode('x'), { mode: 'PERMISSIVE' }, 'PERMISSIVE while identity is optional');
  const plain = 'G'.charCodeAt(0);
  t.same(pa.admit('catalog', 0x16), { ok: true, tls: true });
  t.same(pa.admit('catalog', plain), { ok: false, reason: 'plaintext refused: catalog is STRICT (PeerAuthentication mesh); callers need mTLS' });
  t.same(pa.admit('legacy', plain), { ok: true, tls: false });
  t.same(pa.admit('legacy', 0x16), { ok: true, tls: true });
  t.same(pa.admit('ext', plain), { ok: true, tls: false });
  t.match(pa.admit('ext', 0x16), { ok: false, reason: /TLS refused: ext has mTLS DISABLEd/ });
  t.match(new PeerAuthentication([], 'STRICT').admit('x', plain), { ok: false, reason: /the mesh default/ });
});

t.test('bad specs', async (t) => {
  t.match(validatePeerAuthentication('x', { mode: 'ON' }), { ok: false, errors: [{ path: 'spec.mode', message: /must be STRICT, PERMISSIVE or DISABLE, got "ON"/ }] });
  t.match(validatePeerAuthentication('x', { mode: 'STRICT', service: '', port: 1 }), { ok: false, errors: [{ path: 'spec.port' }, { path: 'spec.service' }] });
  t.match(validatePeerAuthentication('x', null), { ok: false, errors: [{ path: 'spec' }] });
});
