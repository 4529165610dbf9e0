/**
 * Workload identity end to end, with the real processes: `meshlet control-plane`, `meshlet token
 * create`, `meshlet sidecar` with a join token, `meshlet ca rotate`. The certificate the sidecar
 * shows in /config_dump is checked from outside with `openssl verify`.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { request } from 'undici';
import { apiFetch, cli, eventually, portOf, sleep, start, startControlPlane, tmpDir, type Proc } from '../integration/lib/meshlet';

interface Dump {
  identity?: { spiffeId: string | null; certificate: { serial: string; notAfter: string; chainPem: string } | null; trustBundlePem: string | null; lastError: string | null };
}

async function sidecar(t: Test, push: number, service: string, env: Record<string, string>): Promise<Proc & { admin: number }> {
  const p = start(['sidecar', '--service', service, '--control-plane', `127.0.0.1:${push}`, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'], env);
  t.teardown(() => p.stop());
  const l = await p.waitFor((x) => x.msg === 'sidecar started');
  return Object.assign(p, { admin: portOf(l.admin) });
}

async function dump(admin: number): Promise<Dump> {
  const r = await request(`http://127.0.0.1:${admin}/config_dump`);
  return (await r.body.json()) as Dump;
}

function openssl(args: string[], files: Record<string, string>, dir: string): { code: number | null; out: string } {
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(dir, name), content);
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

function token(dataDir: string, service: string, ttl = '1h'): { token: string; id: string } {
  const r = cli(['token', 'create', '--service', service, '--ttl', ttl, '--data-dir', dataDir, '-o', 'json']);
  if (r.code !== 0) throw new Error(r.stderr);
  const j = JSON.parse(r.stdout) as { token: string; id: string };
  return j;
}

t.test('a sidecar with a join token gets a certificate for its service, renews it when the root rotates', async (t) => {
  const dir = tmpDir();
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const tok = token(dir, 'catalog');
  t.match(tok.token, /^mlj_[0-9a-f]{8}\./);
  const stored = readFileSync(path.join(dir, 'tokens.json'), 'utf8');
  t.notOk(stored.includes(tok.token.split('.')[1] as string), 'the secret is not stored, only its hash');
  t.equal(statSync(path.join(dir, 'tokens.json')).mode & 0o777, 0o600);
  t.equal(statSync(path.join(dir, 'ca', 'ca.json')).mode & 0o777, 0o600, 'the CA key file is private');

  const sc = await sidecar(t, cp.pushPort, 'catalog', { MESHLET_JOIN_TOKEN: tok.token });
  await sc.waitFor((l) => l.msg === 'workload certificate installed');
  const d = await dump(sc.admin);
  t.equal(d.identity?.spiffeId, 'spiffe://cluster.local/svc/catalog');
  const cert = d.identity?.certificate;
  t.ok(cert);
  const bundle = cli(['ca', 'bundle', '--data-dir', dir]).stdout;
  const v = openssl(['verify', '-CAfile', 'bundle.pem', 'leaf.pem'], { 'bundle.pem': bundle, 'leaf.pem': cert?.chainPem ?? '' }, dir);
  t.equal(v.code, 0, `openssl verify: ${v.out}`);
  t.equal(d.identity?.trustBundlePem, bundle, 'the sidecar has the trust bundle');
  const x = openssl(['x509', '-noout', '-ext', 'subjectAltName', '-dates', '-in', 'leaf.pem'], {}, dir);
  t.match(x.out, 'URI:spiffe://cluster.local/svc/catalog');
  t.ok(Math.abs(Date.parse(cert?.notAfter ?? '') - Date.now() - 86_400_000) < 120_000, 'valid for 24 h');
  await cp.waitFor((l) => l.msg === 'workload certificate signed' && l.spiffeId === 'spiffe://cluster.local/svc/catalog');

  // Root rotation by the CLI: the running control plane picks it up, the sidecar gets both roots and a certificate from the new one.
  const rot = cli(['ca', 'rotate', '--overlap', '1h', '--data-dir', dir]);
  t.equal(rot.code, 0, rot.stderr);
  t.match(rot.stdout, /trusted roots: 2/);
  const after = await eventually('a certificate from the new root', async () => {
    const d2 = await dump(sc.admin);
    return d2.identity?.certificate && d2.identity.certificate.serial !== cert?.serial ? d2 : undefined;
  });
  const newBundle = cli(['ca', 'bundle', '--data-dir', dir]).stdout;
  t.equal((newBundle.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'old and new root during the overlap');
  t.equal(after.identity?.trustBundlePem, newBundle);
  const newRoot = (newBundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [])[0] as string;
  t.equal(openssl(['verify', '-CAfile', 'new-root.pem', 'leaf2.pem'], { 'new-root.pem': newRoot, 'leaf2.pem': after.identity?.certificate?.chainPem ?? '' }, dir).code, 0, 'signed by the new root');
  t.equal(openssl(['verify', '-CAfile', 'bundle2.pem', 'leaf.pem'], { 'bundle2.pem': newBundle }, dir).code, 0, 'the old certificate is still trusted during the overlap');
  t.equal(sc.child.exitCode, null, 'no restart');
});

t.test('credentials refused: another service, expired, revoked, garbage; no credential is admitted only with --sidecar-auth permissive', async (t) => {
  const dir = tmpDir();
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const catalog = token(dir, 'catalog');
  const short = token(dir, 'pricing', '1s');
  const revoked = token(dir, 'pricing');
  t.equal(cli(['token', 'revoke', revoked.id, '--data-dir', dir]).code, 0);
  const list = cli(['token', 'list', '--data-dir', dir]);
  t.match(list.stdout, new RegExp(`${revoked.id}\\s+join\\s+pricing\\s+revoked`));
  await sleep(1100);
  const cases: [string, string, string, RegExp][] = [
    ['another service', 'pricing', catalog.token, /join token [0-9a-f]{8} is for service catalog, not pricing/],
    ['expired', 'pricing', short.token, /expired at/],
    ['revoked', 'pricing', revoked.token, /was revoked/],
    ['garbage', 'pricing', 'mlj_nope', /not a meshlet join token/],
    ['unknown', 'pricing', `mlj_00000000.${'A'.repeat(43)}`, /not known to this control plane/],
  ];
  // One at a time: five sidecars starting at once on a loaded 2-core CI machine can take longer than the wait.
  for (const [name, service, tk, reason] of cases) {
    const sc = await sidecar(t, cp.pushPort, service, { MESHLET_JOIN_TOKEN: tk });
    const lost = await sc.waitFor((l) => l.msg === 'the control plane refused this sidecar (credential)' && reason.test(String(l.reason)));
    t.match(String(lost.reason), reason, name);
    await sc.stop();
  }
  await cp.waitFor((l) => l.msg === 'push stream refused: credential not accepted' && l.code === 'CREDENTIAL_WRONG_SERVICE');
  const st = cli(['status'], { server: cp.api });
  t.notMatch(st.stdout, /pricing/, 'no pricing endpoint was registered by a refused sidecar');

  // No credential: admitted without an identity (PERMISSIVE, the migration default).
  const plain = await sidecar(t, cp.pushPort, 'pricing', { MESHLET_JOIN_TOKEN: '' });
  await eventually('ready', async () => ((await request(`http://127.0.0.1:${plain.admin}/ready`)).statusCode === 200 ? true : undefined));
  t.equal((await dump(plain.admin)).identity, undefined, 'no identity without a credential');
  await cp.waitFor((l) => l.msg === 'sidecar without a credential admitted (PERMISSIVE): no identity, no certificate');
});

t.test('by default (strict) a sidecar without a credential is refused, with how to get one', async (t) => {
  const dir = tmpDir();
  // No --sidecar-auth: the default.
  const cp = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--trust-domain', 'shop.example'], {}, { strictSidecars: true });
  t.teardown(() => cp.stop());
  const l = await cp.waitFor((x) => x.msg === 'control plane started');
  const sc = await sidecar(t, portOf(l.push), 'catalog', { MESHLET_JOIN_TOKEN: '' });
  const lost = await sc.waitFor((x) => x.msg === 'the control plane refused this sidecar (credential)' && /no credential/.test(String(x.reason)));
  t.match(String(lost.reason), 'start the sidecar with MESHLET_JOIN_TOKEN from `meshlet token create --service catalog`');
  t.match(String(lost.reason), '--sidecar-auth permissive', 'names the development opt-out');
  const refused = await cp.waitFor((x) => x.msg === 'push stream refused: credential not accepted');
  t.equal(refused.code, 'CREDENTIAL_MISSING');
  const st = await apiFetch(`${String(l.api)}/v1/status`);
  t.notOk(((await st.json()) as { sidecars?: { service: string }[] }).sidecars?.some((x) => x.service === 'catalog'), 'never registered');
  const tok = token(dir, 'catalog');
  const ok = await sidecar(t, portOf(l.push), 'catalog', { MESHLET_JOIN_TOKEN: tok.token });
  const installed = await ok.waitFor((x) => x.msg === 'workload certificate installed');
  t.equal(installed.spiffeId, 'spiffe://shop.example/svc/catalog', 'the trust domain given');
});
