/**
 * Certificate renewal at half life, in process (the CLI's TTL floor is a minute): the real
 * control plane with 4 s certificates, the real push stream, the sidecar's identity. The stream
 * stays the same one; the key is new each time.
 */
import t from 'tap';
import pino from 'pino';
import { startControlPlane } from '../../../control-plane';
import { Subscriber } from '../../../src/snapshot/subscriber';
import { WorkloadIdentity, type IdentityMaterial } from '../../../src/security/workload-identity';
import { ok } from '../../../src/core/result';
import { eventually, tmpDir } from '../lib/meshlet';

t.test('renewed at half life, on the same stream, with a new key each time', async (t) => {
  const dir = tmpDir();
  const cp = await startControlPlane({ dataDir: dir, api: { port: 0 }, push: { port: 0 }, security: { workloadTtlMs: 4000, trustDomain: 'td.test' } });
  t.teardown(() => cp.close());
  const { token } = await cp.tokens!.create({ service: 'catalog' });
  const log = pino({ level: 'silent' });
  let sub: Subscriber | undefined = undefined;
  const identity = new WorkloadIdentity({ request: (csr) => sub?.requestCertificate(csr) ?? false, logger: log });
  const seen: IdentityMaterial[] = [];
  identity.onChange((m) => seen.push(m));
  sub = new Subscriber({
    target: `127.0.0.1:${cp.pushAddress.port}`,
    node: { id: 'catalog-0', service: 'catalog', address: '127.0.0.1', inboundPort: 9, labels: {}, buildVersion: 'test' },
    apply: () => ok(undefined),
    logger: log,
    credential: () => token,
    onIdentity: (m) => identity.handle(m),
  });
  sub.start();
  t.teardown(() => {
    identity.close();
    sub?.close();
  });
  await eventually('three certificates', async () => (seen.length >= 3 ? true : undefined), 10_000);
  const [a, b, c] = seen as [IdentityMaterial, IdentityMaterial, IdentityMaterial];
  t.equal(a.spiffeId, 'spiffe://td.test/svc/catalog');
  t.not(a.serial, b.serial);
  t.not(a.keyPem, b.keyPem, 'a new key for each certificate');
  const gap = b.receivedAt - a.receivedAt;
  t.ok(gap >= 1500 && gap < 3500, `renewed at about half of 4 s (after ${gap} ms)`);
  t.ok(b.receivedAt < a.notAfter, 'before the old one expired');
  t.ok(c.receivedAt < b.notAfter);
  t.ok((cp.identity?.counts.signed ?? 0) >= seen.length);
  t.equal(cp.push.streamCount(), 1, 'one stream all along');
  t.equal(cp.registry.sidecars().length, 1);
});
