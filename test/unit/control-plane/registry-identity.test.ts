/** Endpoint identity: a sidecar's endpoint carries the SPIFFE ID it was issued a certificate for, kept across reconnects, persisted, and parsed by the sidecar. */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { FakeClock } from '../../../src/core/clock';
import { EndpointRegistry } from '../../../control-plane/registry';
import { parseSnapshot } from '../../../src/policy';

const node = { id: 'catalog-1', service: 'catalog', address: '10.0.0.1', port: 15006, labels: {}, buildVersion: 'test' };

t.test('an endpoint has an identity once its certificate is signed; reconnects keep it; a restart restores it', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'meshlet-reg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const clock = new FakeClock(Date.parse('2026-12-01T00:00:00Z'));
  const reg = await EndpointRegistry.open(dir, { clock });
  let changes = 0;
  reg.onChange(() => changes++);
  const s = reg.connect(node);
  t.equal(reg.endpoints()[0]?.identity, undefined, 'no certificate yet: plaintext');
  const before = changes;
  s.certified('spiffe://cluster.local/svc/catalog');
  t.equal(reg.endpoints()[0]?.identity, 'spiffe://cluster.local/svc/catalog');
  t.equal(changes, before + 1, 'a change: a new snapshot goes out');
  s.certified('spiffe://cluster.local/svc/catalog');
  t.equal(changes, before + 1, 'the same identity again changes nothing');
  s.disconnect();
  reg.connect(node);
  t.equal(reg.endpoints()[0]?.identity, 'spiffe://cluster.local/svc/catalog', 'a reconnect keeps the identity');
  await reg.flush();
  await reg.close();
  const reg2 = await EndpointRegistry.open(dir, { clock });
  t.equal(reg2.endpoints()[0]?.identity, 'spiffe://cluster.local/svc/catalog', 'restored from disk');
  // The same sidecar id as another service loses the old identity.
  reg2.connect({ ...node, service: 'pricing' });
  t.equal(reg2.endpoints()[0]?.identity, undefined);
  await reg2.close();
});

t.test('the sidecar parses endpoint identities and refuses what is not a SPIFFE ID', async (t) => {
  const ok = parseSnapshot({ version: 'v1', resources: [], endpoints: [{ service: 'a', address: '127.0.0.1', port: 1, identity: 'spiffe://td/svc/a' }] });
  t.ok(ok.ok);
  if (ok.ok) t.equal(ok.value.endpoints[0]?.identity, 'spiffe://td/svc/a');
  const bad = parseSnapshot({ version: 'v1', resources: [], endpoints: [{ service: 'a', address: '127.0.0.1', port: 1, identity: 'https://x' }] });
  t.notOk(bad.ok);
  if (!bad.ok) t.match(bad.errors[0], { path: 'endpoints[0].identity', message: /SPIFFE ID/ });
});
