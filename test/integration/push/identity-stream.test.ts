/**
 * The identity messages on the push stream, driven by a raw gRPC client (a sidecar that
 * misbehaves): CSRs that are malformed, oversized, for another identity, or sent without a
 * credential are answered with a coded error, and the stream goes on.
 */
import t from 'tap';
import { startControlPlane } from '../../../control-plane';
import { createPolicyDiscoveryClient, type IdentityMessage, type SnapshotMessage } from '../../../src/proto';
import { createCsr } from '../../../src/security/csr';
import { generateKeyPair } from '../../../src/security/keys';
import { serviceSpiffeId } from '../../../src/security/spiffe';
import { tmpDir } from '../lib/meshlet';

t.test('CSRs over the stream: refused with a reason, signed only for the proven identity', async (t) => {
  // permissive: the anonymous stream at the end is admitted (without a certificate).
  const cp = await startControlPlane({ dataDir: tmpDir(), api: { port: 0 }, push: { port: 0 }, security: { trustDomain: 'td.test', mode: 'permissive' } });
  t.teardown(() => cp.close());
  const { token } = await cp.tokens!.create({ service: 'catalog' });
  const client = createPolicyDiscoveryClient(`127.0.0.1:${cp.pushAddress.port}`);
  t.teardown(() => client.close());

  const open = (credential: string) => {
    const call = client.Stream();
    const identities: IdentityMessage[] = [];
    const snapshots: SnapshotMessage[] = [];
    const waiters: (() => void)[] = [];
    call.on('data', (m: SnapshotMessage) => {
      if (m.identity) identities.push(m.identity);
      else snapshots.push(m);
      for (const w of waiters.splice(0)) w();
    });
    call.on('error', () => undefined);
    const next = async (n: number) => {
      while (identities.length < n) await new Promise<void>((r) => waiters.push(r));
      return identities[n - 1] as IdentityMessage;
    };
    return { call, identities, snapshots, next, node: (service: string) => call.write({ node: { id: `${service}-${credential.length}`, service, address: '127.0.0.1', inboundPort: 9, labels: {}, buildVersion: 't', credential } }) };
  };

  const s = open(token);
  s.node('catalog');
  // Sent before the credential is verified: queued, answered after.
  s.call.write({ csr: { csrPem: 'garbage' } });
  const first = await s.next(1);
  t.equal(first.spiffeId, 'spiffe://td.test/svc/catalog', 'first the identity the credential proved');
  t.equal(first.certificateChainPem, '');
  t.match(first.trustBundlePem, /BEGIN CERTIFICATE/);
  t.match((await s.next(2)).error, /^CSR_MALFORMED: not a PEM certificate request/);
  const keys = await generateKeyPair();
  s.call.write({ csr: { csrPem: await createCsr(keys, serviceSpiffeId('td.test', 'pricing')) } });
  t.match((await s.next(3)).error, /^CSR_WRONG_IDENTITY: the CSR asks for URI:spiffe:\/\/td.test\/svc\/pricing; its credential proves only spiffe:\/\/td.test\/svc\/catalog/);
  s.call.write({ csr: { csrPem: 'x'.repeat(9000) } });
  t.match((await s.next(4)).error, /^CSR_TOO_LARGE/);
  s.call.write({ csr: { csrPem: await createCsr(keys, serviceSpiffeId('td.test', 'catalog')) } });
  const signed = await s.next(5);
  t.equal(signed.error, '');
  t.match(signed.certificateChainPem, /^-----BEGIN CERTIFICATE-----/);
  t.ok(s.snapshots.length >= 1, 'snapshots flow as usual');
  t.equal(cp.identity?.counts.signed, 1);
  t.equal(cp.identity?.counts.refused, 3);
  s.call.end();

  // No credential (--sidecar-auth permissive): connected, but a CSR gets an error, not a certificate.
  const anon = open('');
  anon.node('pricing');
  anon.call.write({ csr: { csrPem: await createCsr(keys, serviceSpiffeId('td.test', 'pricing')) } });
  t.match((await anon.next(1)).error, /no certificate without a credential/);
  t.equal(anon.identities[0]?.spiffeId, '');
  anon.call.end();
});
