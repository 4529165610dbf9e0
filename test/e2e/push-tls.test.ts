/**
 * TLS on the push port, with the real processes: `meshlet control-plane` (TLS by default),
 * `meshlet token create`, `meshlet sidecar` holding nothing but the token (whose CA hash it
 * checks), `--ca-file`, a wrong hash and a wrong CA refused before the credential is sent, and
 * `openssl s_client` as the outside check of the push port's certificate.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cli, eventually, portOf, start, tmpDir, apiFetch, type Proc } from '../integration/lib/meshlet';

interface Cp extends Proc {
  push: number;
  api: string;
  dir: string;
}

async function controlPlane(t: Test, extra: string[] = []): Promise<Cp> {
  const dir = tmpDir();
  const p = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--push-hostname', 'localhost', ...extra]);
  t.teardown(() => p.stop());
  const l = await p.waitFor((x) => x.msg === 'control plane started');
  return Object.assign(p, { push: portOf(l.push), api: String(l.api), dir });
}

function sidecar(t: Test, push: number, service: string, env: Record<string, string>, extra: string[] = []): Proc {
  const p = start(['sidecar', '--service', service, '--control-plane', `127.0.0.1:${push}`, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', ...extra], env, { pushTls: true });
  t.teardown(() => p.stop());
  return p;
}

function joinToken(dir: string, service: string): string {
  const r = cli(['token', 'create', '--service', service, '--data-dir', dir]);
  if (r.code !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

function sh(cmd: string, input?: string): { code: number | null; out: string } {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8', input });
  return { code: r.status, out: r.stdout + r.stderr };
}

async function registered(cp: Cp, service: string): Promise<boolean> {
  const r = await apiFetch(`${cp.api}/v1/status`);
  const st = (await r.json()) as { sidecars?: { service: string; connected: boolean }[] };
  return (st.sidecars ?? []).some((s) => s.service === service && s.connected);
}

t.test('a sidecar holding only its join token verifies the push port by the CA hash in it, and joins over TLS', async (t) => {
  const cp = await controlPlane(t);
  const token = joinToken(cp.dir, 'catalog');
  t.match(token, /^mlj_[0-9a-f]{8}\.[A-Za-z0-9_-]{43}\.sha256:[0-9a-f]{64}$/, 'the token carries the CA hash');
  // The same hash as kubeadm's discovery-token-ca-cert-hash, computed by openssl from the bundle.
  const hash = sh(`openssl x509 -pubkey -noout -in ${path.join(cp.dir, 'ca.pem')} | openssl pkey -pubin -outform der | sha256sum`);
  t.equal(token.split('.sha256:')[1], hash.out.split(' ')[0], 'sha256 of the root CA public key (openssl)');

  const sc = sidecar(t, cp.push, 'catalog', { MESHLET_JOIN_TOKEN: token });
  const cert = await sc.waitFor((l) => l.msg === 'workload certificate installed');
  t.equal(cert.spiffeId, 'spiffe://cluster.local/svc/catalog');
  t.ok(await registered(cp, 'catalog'));
  // The control plane saw the token without its hash (the hash is the sidecar's own business).
  await cp.waitFor((l) => l.msg === 'workload certificate signed' && l.spiffeId === 'spiffe://cluster.local/svc/catalog');
});

t.test('a wrong CA hash: refused before anything is sent, with a clear error', async (t) => {
  const cp = await controlPlane(t);
  const token = joinToken(cp.dir, 'catalog');
  const wrong = token.replace(/sha256:[0-9a-f]{64}$/, 'sha256:' + 'ab'.repeat(32));
  const sc = sidecar(t, cp.push, 'catalog', { MESHLET_JOIN_TOKEN: wrong });
  const l = await sc.waitFor((x) => x.msg === 'cannot verify the control plane; not sending the credential');
  t.equal(l.code, 'PUSH_TLS_PIN_MISMATCH');
  t.match(String(l.reason), `no CA in the certificate chain it presents has the pinned hash sha256:${'ab'.repeat(32)}`);
  t.equal(l.level, 50, 'logged as an error');
  t.notOk(cp.lines.some((x) => x.msg === 'workload certificate signed'), 'the control plane never saw the credential');
  t.notOk(await registered(cp, 'catalog'));
});

t.test('--ca-file verifies the push port; another CA is refused; no trust anchor at all is refused', async (t) => {
  const cp = await controlPlane(t);
  const other = await controlPlane(t);
  const bare = joinToken(cp.dir, 'catalog').replace(/\.sha256:[0-9a-f]{64}$/, '');
  const good = sidecar(t, cp.push, 'catalog', { MESHLET_JOIN_TOKEN: bare }, ['--ca-file', path.join(cp.dir, 'ca.pem')]);
  await good.waitFor((l) => l.msg === 'workload certificate installed');

  const pricing = joinToken(cp.dir, 'pricing').replace(/\.sha256:[0-9a-f]{64}$/, '');
  const bad = sidecar(t, cp.push, 'pricing', { MESHLET_JOIN_TOKEN: pricing }, ['--ca-file', path.join(other.dir, 'ca.pem')]);
  const l = await bad.waitFor((x) => x.msg === 'cannot verify the control plane; not sending the credential');
  t.match(String(l.reason), /certificate|verify/i, `the TLS reason: ${String(l.reason)}`);

  const credFile = path.join(cp.dir, 'cred');
  writeFileSync(credFile, pricing + '\n');
  const none = sidecar(t, cp.push, 'pricing', {}, ['--credential-file', credFile]);
  const n = await none.waitFor((x) => x.msg === 'cannot verify the control plane; not sending the credential');
  t.equal(n.code, 'PUSH_TLS_NO_TRUST');
  t.match(String(n.reason), '--ca-file FILE');
  t.notOk(await registered(cp, 'pricing'));
});

t.test('openssl s_client: the push port presents a mesh-CA certificate naming the control plane', async (t) => {
  const cp = await controlPlane(t);
  const r = sh(`openssl s_client -connect 127.0.0.1:${cp.push} -alpn h2 -CAfile ${path.join(cp.dir, 'ca.pem')} -verify_return_error -showcerts </dev/null`);
  t.match(r.out, 'Verify return code: 0 (ok)');
  t.match(r.out, 'ALPN protocol: h2');
  const leaf = (r.out.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/) ?? [''])[0];
  const x = sh('openssl x509 -noout -ext subjectAltName,extendedKeyUsage', leaf);
  t.match(x.out, 'URI:spiffe://cluster.local/control-plane');
  t.match(x.out, 'DNS:localhost');
  t.match(x.out, 'TLS Web Server Authentication');
  t.equal((r.out.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'leaf and root: a pinning client finds the root in the chain');

  // Plaintext gRPC to a TLS port gets nowhere; and the control plane says it serves TLS.
  t.ok(cp.lines.some((l) => l.msg === 'push server listening' && l.tls === true));
  const plain = start(['sidecar', '--service', 'x', '--control-plane', `127.0.0.1:${cp.push}`, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--insecure-push-plaintext', '--log-level', 'debug']);
  t.teardown(() => plain.stop());
  await plain.waitFor((l) => l.msg === 'sidecar started');
  await eventually('a failed plaintext attempt', async () => (plain.lines.some((l) => String(l.reason ?? '').length > 0 && l.controlPlane) ? true : undefined));
  t.notOk(await registered(cp, 'x'));
  t.ok(readFileSync(path.join(cp.dir, 'ca.pem'), 'utf8').startsWith('-----BEGIN CERTIFICATE-----'));
});

t.test('--insecure-push-plaintext on both ends still works (and the control plane warns)', async (t) => {
  const dir = tmpDir();
  const p = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--insecure-push-plaintext']);
  t.teardown(() => p.stop());
  const l = await p.waitFor((x) => x.msg === 'control plane started');
  t.ok(p.lines.some((x) => /push port is served in plaintext/.test(String(x.msg))));
  const token = joinToken(dir, 'catalog');
  const sc = sidecar(t, portOf(l.push), 'catalog', { MESHLET_JOIN_TOKEN: token }, ['--insecure-push-plaintext']);
  await sc.waitFor((x) => x.msg === 'workload certificate installed');
});

t.test('--credential-file is read again at every connect (a rotated token), and the pushed bundle verifies the reconnect', async (t) => {
  const { freePort } = await import('../integration/lib/etcd');
  const dir = tmpDir();
  const port = await freePort();
  const args = ['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', `127.0.0.1:${port}`, '--push-hostname', 'localhost'];
  const cp1 = start(args);
  t.teardown(() => cp1.stop());
  await cp1.waitFor((x) => x.msg === 'control plane started');
  const first = joinToken(dir, 'catalog');
  const credFile = path.join(dir, 'projected-token');
  writeFileSync(credFile, first + '\n');
  const sc = sidecar(t, port, 'catalog', {}, ['--credential-file', credFile]);
  await sc.waitFor((l) => l.msg === 'workload certificate installed');
  const idOf = (tok: string) => tok.slice(4, 12);
  await cp1.waitFor((l) => l.msg === 'sidecar authenticated' && l.credential === idOf(first));

  // The file is rotated (as the kubelet does), the old token revoked; the new one carries no CA
  // hash: the bundle the control plane pushed on the first stream verifies the push port now.
  const second = joinToken(dir, 'catalog').replace(/\.sha256:[0-9a-f]{64}$/, '');
  writeFileSync(credFile, second + '\n');
  t.equal(cli(['token', 'revoke', idOf(first), '--data-dir', dir]).code, 0);
  await cp1.stop();
  const cp2 = start(args);
  t.teardown(() => cp2.stop());
  const auth = await cp2.waitFor((l) => l.msg === 'sidecar authenticated', 60_000);
  t.equal(auth.credential, idOf(second), 'the reconnect presented the token now in the file');
  t.notOk(sc.lines.some((l) => l.msg === 'cannot verify the control plane; not sending the credential'), 'the push port verified with the learned bundle');
});
