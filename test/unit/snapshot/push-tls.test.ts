/**
 * The CA pin through a root rotation, over real TLS (node:tls servers presenting the chains the
 * push port presents): during the overlap the chain `leaf <- new root's cross-certificate <- old
 * root` satisfies a pin of either root, and the real connection verifies under the root found and
 * passes the pinned-key check; a pin of neither, a chain whose cross-certificate expired, and the
 * chain after the overlap (old pin) are refused with PUSH_TLS_PIN_MISMATCH.
 */
import t, { type Test } from 'tap';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { FakeClock } from '../../../src/core/clock';
import { MeshCa } from '../../../control-plane/ca';
import { caPinOf, controlPlaneSpiffeUri, pemCertificates } from '../../../src/security/ca-pin';
import { controlPlaneIdentity, discoverPinnedRoot, pinnedChainError, PushTlsError } from '../../../src/snapshot/push-tls';
import { tmpDir } from '../../integration/lib/meshlet';

/** A TLS server presenting a push-port certificate from `ca`, followed by `tail` (default: its cross chain, else its root). */
async function pushPort(t: Test, ca: MeshCa, tail?: string[]): Promise<string> {
  const c = await ca.issueServing(['localhost', '127.0.0.1'], 3600_000, [controlPlaneSpiffeUri(ca.trustDomain)]);
  const chain = [...pemCertificates(c.chainPem), ...(tail ?? ca.crossChain() ?? pemCertificates(ca.rootPem()))].join('');
  const server = tls.createServer({ cert: chain, key: c.keyPem, ALPNProtocols: ['h2'] }, (s) => s.end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** The real connection: verified against `root`, then the same checks the push channel makes. */
function connect(target: string, root: string, pins: string[]): Promise<void> {
  const [host, port] = target.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host, port: Number(port), ca: root, ALPNProtocols: ['h2'], checkServerIdentity: (h, c) => controlPlaneIdentity(h, c) ?? pinnedChainError(c, pins) }, () => {
      s.end();
      resolve();
    });
    s.on('error', reject);
  });
}

async function rotated(t: Test, clock = new FakeClock(Date.now())): Promise<{ ca: MeshCa; oldPin: string; newPin: string; oldRoot: string; clock: FakeClock }> {
  const ca = await MeshCa.open({ dataDir: tmpDir(), pollMs: 0, clock });
  t.teardown(() => ca.close());
  const oldRoot = ca.rootPem();
  const oldPin = caPinOf(oldRoot);
  t.equal(ca.crossChain(), undefined, 'no rotation: no cross-certificate');
  await ca.rotateRoot({ overlapMs: 3600_000 });
  return { ca, oldPin, newPin: caPinOf(ca.rootPem()), oldRoot, clock };
}

t.test('during the overlap a pin of the old root and a pin of the new root both verify the push port', async (t) => {
  const { ca, oldPin, newPin, oldRoot } = await rotated(t);
  t.not(oldPin, newPin);
  const cross = ca.crossChain();
  t.equal(cross?.length, 2, 'the cross-certificate and the old root');
  t.equal(caPinOf(cross?.[0] as string), newPin, "the cross-certificate carries the new root's key");
  const target = await pushPort(t, ca);

  for (const [what, pin] of [['old', oldPin], ['new', newPin]] as const) {
    const root = await discoverPinnedRoot(target, [pin], 5000);
    t.equal(caPinOf(root), oldPin, `${what} pin: the chain's self-signed root (the old one) anchors the real connection`);
    t.equal(root.replace(/\s+/g, ''), oldRoot.replace(/\s+/g, ''));
    await t.resolves(connect(target, root, [pin]), `${what} pin: the real connection verifies and passes the pinned-key check`);
  }
  // A pin that is in no chain: refused at discovery, and the pinned-key check on its own refuses too.
  const stranger = 'sha256:' + 'ab'.repeat(32);
  await t.rejects(discoverPinnedRoot(target, [stranger], 5000), { code: 'PUSH_TLS_PIN_MISMATCH' });
  await t.rejects(connect(target, oldRoot, [stranger]), /passes through no CA with the pinned hash/);
});

t.test('after the overlap the push port presents the new root only: the old pin is refused with what to do', async (t) => {
  // The CA's clock starts an hour (and a little) behind and is moved past the overlap: back to about now.
  const { ca, oldPin, newPin, clock } = await rotated(t, new FakeClock(Date.now() - 3600_000 - 10_000));
  clock.advance(3600_000 + 1);
  t.equal(ca.crossChain(), undefined, 'the cross-certificate is gone with the overlap');
  const target = await pushPort(t, ca);
  const err = (await discoverPinnedRoot(target, [oldPin], 5000).catch((e: unknown) => e)) as PushTlsError;
  t.equal(err.code, 'PUSH_TLS_PIN_MISMATCH');
  t.match(err.message, "made before the mesh's CA was rotated, the rotation's overlap has ended: create a new one (`meshlet token create --service NAME`)");
  t.equal(caPinOf(await discoverPinnedRoot(target, [newPin], 5000)), newPin, 'the new pin finds the new root');
});

t.test('a cross-certificate that expired does not satisfy a pin', async (t) => {
  // The CA's clock runs two hours behind: the cross-certificate (one hour of overlap) expired an hour ago in real time.
  const { ca, oldPin, newPin } = await rotated(t, new FakeClock(Date.now() - 2 * 3600_000));
  t.ok(ca.crossChain(), 'still in its overlap by the CA clock');
  const target = await pushPort(t, ca);
  for (const pin of [oldPin, newPin]) {
    const err = (await discoverPinnedRoot(target, [pin], 5000).catch((e: unknown) => e)) as PushTlsError;
    t.equal(err.code, 'PUSH_TLS_PIN_MISMATCH');
    t.match(err.message, 'expired on the way to the pinned one');
  }
});

t.test('no cross-certificate for a rotation to a root the user brings', async (t) => {
  const ca = await MeshCa.open({ dataDir: tmpDir(), pollMs: 0 });
  t.teardown(() => ca.close());
  const { execFileSync } = await import('node:child_process');
  const dir = tmpDir();
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${dir}/k.pem`, '-out', `${dir}/c.pem`, '-days', '30', '-subj', '/CN=user root', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], { stdio: 'ignore' });
  const { readFileSync } = await import('node:fs');
  await ca.rotateRoot({ userRoot: { certPem: readFileSync(`${dir}/c.pem`, 'utf8'), keyPem: readFileSync(`${dir}/k.pem`, 'utf8') } });
  t.equal(ca.crossChain(), undefined);
  t.equal(ca.trustBundle().roots.length, 2, 'both roots trusted during the overlap all the same');
});
