/**
 * A workload certificate as the push stream's credential, against a real `meshlet control-plane`
 * (TLS push port, strict sidecar registration): a gRPC client presenting a certificate the mesh
 * CA signed registers the service it names and no other; an expired certificate or one from
 * another CA proves nothing (the token decides, as before); a revoked token stays refused even
 * with a valid certificate.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import type { SnapshotMessage } from '../../src/proto';
import { splitJoinToken } from '../../src/security/ca-pin';
import { cli, portOf, start, tmpDir, type Proc } from '../integration/lib/meshlet';
import { firstPushMessage, issue, type Workload } from '../integration/lib/mtls';

interface Cp extends Proc {
  push: number;
  dir: string;
}

async function controlPlane(t: Test): Promise<Cp> {
  const dir = tmpDir();
  const p = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--push-hostname', 'localhost'], {}, { pushTls: true, strictSidecars: true });
  t.teardown(() => p.stop());
  const l = await p.waitFor((x) => x.msg === 'control plane started');
  return Object.assign(p, { push: portOf(l.push), dir });
}

/** Opens a push stream as `service`, presenting `cert` (and `token`, if any); resolves with the first message or the error. */
function register(cp: Cp, service: string, cert: Workload | undefined, token?: string): Promise<{ msg?: SnapshotMessage; error?: grpc.ServiceError }> {
  const ca = readFileSync(path.join(cp.dir, 'ca.pem'));
  const creds = grpc.credentials.createSsl(ca, cert ? Buffer.from(cert.keyPem) : null, cert ? Buffer.from(cert.chainPem) : null);
  return firstPushMessage(cp.push, creds, { id: `${service}-${Math.random().toString(36).slice(2, 8)}`, service, credential: token ? splitJoinToken(token).credential : '' });
}

t.test('a workload certificate registers its own service, and only it', async (t) => {
  const cp = await controlPlane(t);
  const catalog = await issue(cp.dir, 'catalog');

  const own = await register(cp, 'catalog', catalog);
  t.notOk(own.error, own.error?.details ?? 'no error');
  t.equal(own.msg?.identity?.spiffeId, 'spiffe://cluster.local/svc/catalog', 'authenticated by its certificate alone: no token sent');
  const auth = await cp.waitFor((l) => l.msg === 'sidecar authenticated' && l.spiffeId === 'spiffe://cluster.local/svc/catalog');
  t.equal(auth.via, 'certificate');
  t.match(String(auth.credential), /^certificate [0-9A-F]+$/i, 'logged by serial');

  const other = await register(cp, 'pricing', catalog);
  t.equal(other.error?.code, grpc.status.PERMISSION_DENIED, 'a certificate for catalog cannot register pricing');
  t.match(other.error?.details, 'the workload certificate of spiffe://cluster.local/svc/catalog may register only service catalog, not pricing');

  // Even with a valid join token for pricing beside it: the certificate is the process's identity.
  const pricingToken = cli(['token', 'create', '--service', 'pricing', '--data-dir', cp.dir]).stdout.trim();
  const both = await register(cp, 'pricing', catalog, pricingToken);
  t.equal(both.msg?.identity?.spiffeId, 'spiffe://cluster.local/svc/pricing', 'a valid token is the credential first (it is what revocation acts on)');
});

t.test('an expired certificate, or one from another CA, proves nothing: the token decides, with the usual errors', async (t) => {
  const cp = await controlPlane(t);
  const other = await controlPlane(t);

  const expired = await issue(cp.dir, 'catalog', { offsetMs: -2 * 3600_000, ttlMs: 3600_000 });
  const r1 = await register(cp, 'catalog', expired);
  t.equal(r1.error?.code, grpc.status.UNAUTHENTICATED);
  t.match(r1.error?.details, /^no credential: /, 'the handshake did not verify it: as if no certificate were sent');

  const foreign = await issue(other.dir, 'catalog');
  const r2 = await register(cp, 'catalog', foreign);
  t.equal(r2.error?.code, grpc.status.UNAUTHENTICATED);
  t.match(r2.error?.details, /^no credential: /);

  // A foreign certificate beside a good token: the token still works.
  const token = cli(['token', 'create', '--service', 'catalog', '--data-dir', cp.dir]).stdout.trim();
  const r3 = await register(cp, 'catalog', foreign, token);
  t.equal(r3.msg?.identity?.spiffeId, 'spiffe://cluster.local/svc/catalog');
  t.notOk(cp.lines.some((l) => l.msg === 'sidecar authenticated' && l.via === 'certificate'), 'no stream was authenticated by a certificate');
});

t.test('a revoked token stays refused even beside a valid certificate; an expired one lets the certificate decide', async (t) => {
  const cp = await controlPlane(t);
  const cert = await issue(cp.dir, 'catalog');
  const made = JSON.parse(cli(['token', 'create', '--service', 'catalog', '--ttl', '1s', '--data-dir', cp.dir, '-o', 'json']).stdout) as { token: string; id: string };
  await new Promise((r) => setTimeout(r, 1100));
  const expired = await register(cp, 'catalog', cert, made.token);
  t.equal(expired.msg?.identity?.spiffeId, 'spiffe://cluster.local/svc/catalog', 'expired token + valid certificate: admitted');
  const alone = await register(cp, 'catalog', undefined, made.token);
  t.equal(alone.error?.code, grpc.status.UNAUTHENTICATED);
  t.match(alone.error?.details, new RegExp(`join token ${made.id} expired at .*; create a new one`), 'expired token, no certificate: the clear error of before');

  const revokedTok = JSON.parse(cli(['token', 'create', '--service', 'catalog', '--data-dir', cp.dir, '-o', 'json']).stdout) as { token: string; id: string };
  t.equal(cli(['token', 'revoke', revokedTok.id, '--data-dir', cp.dir]).code, 0);
  const revoked = await register(cp, 'catalog', cert, revokedTok.token);
  t.equal(revoked.error?.code, grpc.status.UNAUTHENTICATED);
  t.match(revoked.error?.details, `join token ${revokedTok.id} was revoked`);
});
