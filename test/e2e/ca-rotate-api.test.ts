/**
 * Root rotation through the REST API (`meshlet ca rotate` without --data-dir), with real
 * processes and the push port over TLS (the default):
 * - under a steady request loop frontend -> (mTLS) -> catalog: zero failed requests, and both
 *   sidecars renew under the new root;
 * - a join token made before the rotation (pinning the old root) still joins a new sidecar during
 *   the overlap, as does one made after it (pinning the new root); `openssl verify` checks the push
 *   port's chain under the old root alone and under the new bundle;
 * - once an overlap has ended, a token pinning the root before it is refused with a message that
 *   says to create a new token;
 * - with the CA in etcd, a rotation through one replica reaches the other.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { apiFetch, cli, eventually, portOf, sleep, start, tmpDir, type Proc } from '../integration/lib/meshlet';
import { joinedSidecar, metric, sourceApp } from '../integration/lib/mtls';
import { startEtcdCluster, startReplica } from '../integration/lib/etcd';


function joinToken(api: string, service: string): string {
  const r = cli(['token', 'create', '--service', service], { server: api });
  if (r.code !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

async function caHash(api: string): Promise<string> {
  return ((await (await apiFetch(`${api}/v1/ca`)).json()) as { caHash: string }).caHash;
}

function sh(cmd: string): { code: number | null; out: string } {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

/** A control plane with push over TLS that refuses plaintext sidecars, in a fresh data directory. */
async function controlPlane(t: Test): Promise<{ dir: string; cp: Proc; api: string; push: number }> {
  const dir = tmpDir();
  const cp = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--push-hostname', 'localhost'], {}, { pushTls: true, strictSidecars: true });
  t.teardown(() => cp.stop());
  const l = await cp.waitFor((x) => x.msg === 'control plane started');
  return { dir, cp, api: String(l.api), push: portOf(l.push) };
}

t.test('meshlet ca rotate through the API: zero failed requests; tokens made before it join during the overlap', async (t) => {
  const { dir, api, push } = await controlPlane(t);
  const oldRoot = path.join(dir, 'old-root.pem');
  writeFileSync(oldRoot, ((await (await apiFetch(`${api}/v1/ca`)).json()) as { bundlePem: string }).bundlePem);

  const app = await sourceApp();
  t.teardown(() => app.close());
  const catalog = await joinedSidecar(t, push, 'catalog', joinToken(api, 'catalog'), ['--app-port', String(app.port)]);
  const frontend = await joinedSidecar(t, push, 'frontend', joinToken(api, 'frontend'));
  for (const s of [catalog, frontend]) await s.waitFor((x) => x.msg === 'workload certificate installed');
  await eventually('catalog reached over mTLS', async () => {
    const r = await request(`http://127.0.0.1:${frontend.outbound}/`, { headers: { host: 'catalog' } });
    return (await r.body.text()).includes('frontend') && r.statusCode === 200 ? true : undefined;
  });
  const before = await caHash(api);
  const oldToken = joinToken(api, 'search');
  t.ok(oldToken.endsWith(before), 'the token pins the root of before the rotation');

  const failures: string[] = [];
  let sent = 0;
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      sent++;
      try {
        const r = await request(`http://127.0.0.1:${frontend.outbound}/x`, { headers: { host: 'catalog' } });
        const body = await r.body.text();
        if (r.statusCode !== 200 || JSON.parse(body).source !== 'frontend') failures.push(`${r.statusCode} ${r.headers['x-meshlet-flags'] ?? ''} ${body.slice(0, 200)}`);
      } catch (err) {
        failures.push((err as Error).message);
      }
      await sleep(20);
    }
  })();
  await sleep(3000);
  const rot = cli(['ca', 'rotate', '--overlap', '1h'], { server: api });
  t.equal(rot.code, 0, rot.stderr);
  t.match(rot.stdout, /new root .* signs from now on; CA hash sha256:[0-9a-f]{64}; trusted roots: 2; the previous root is trusted until /);
  const after = await caHash(api);
  t.not(after, before, 'a new root signs');
  // Both sidecars renew under the new root while the loop runs.
  for (const s of [catalog, frontend]) await s.waitFor((x) => x.msg === 'trust bundle updated; renewing the certificate', 20_000);
  await eventually('both renewed after the rotation', async () =>
    [catalog, frontend].every((s) => s.lines.filter((x) => x.msg === 'workload certificate installed').length >= 2) ? true : undefined,
  );
  await sleep(3000);
  stop = true;
  await loop;
  t.ok(sent > 100, `${sent} requests sent`);
  t.same(failures.slice(0, 5), [], `zero failed requests (of ${sent})`);
  t.ok((await metric(catalog.admin, 'meshlet_inbound_connections_total', { security: 'tls' })) >= 1, 'the hop was mTLS');

  // During the overlap: the old token (old root's hash) joins a new sidecar, and a new one too.
  const search = await joinedSidecar(t, push, 'search', oldToken);
  const installed = await search.waitFor((x) => x.msg === 'workload certificate installed', 30_000);
  t.equal(installed.spiffeId, 'spiffe://cluster.local/svc/search', 'a token made before the rotation joins during the overlap');
  const newToken = joinToken(api, 'pricing');
  t.ok(newToken.endsWith(after), 'tokens made now pin the new root');
  const pricing = await joinedSidecar(t, push, 'pricing', newToken);
  await pricing.waitFor((x) => x.msg === 'workload certificate installed', 30_000);

  // openssl as the outside check: the push port's chain verifies under the old root alone, and under the new bundle.
  const bundle = path.join(dir, 'bundle.pem');
  writeFileSync(bundle, ((await (await apiFetch(`${api}/v1/ca`)).json()) as { bundlePem: string }).bundlePem);
  for (const [what, file] of [['the old root alone', oldRoot], ['the bundle', bundle]] as const) {
    const r = sh(`openssl s_client -connect 127.0.0.1:${push} -alpn h2 -CAfile ${file} -verify_return_error </dev/null`);
    t.match(r.out, 'Verify return code: 0 (ok)', `the push port verifies under ${what}`);
  }
});

t.test('after the overlap, a token made before the rotation is refused: create a new one', async (t) => {
  const { cp, api, push } = await controlPlane(t);
  const oldToken = joinToken(api, 'search');
  const rot = cli(['ca', 'rotate', '--overlap', '3s'], { server: api });
  t.equal(rot.code, 0, rot.stderr);
  await sleep(3500);
  const search = await joinedSidecar(t, push, 'search', oldToken);
  const e = await search.waitFor((x) => x.msg === 'cannot verify the control plane; not sending the credential', 30_000);
  t.equal(e.code, 'PUSH_TLS_PIN_MISMATCH');
  t.match(String(e.reason), 'made before the mesh\'s CA was rotated, the rotation\'s overlap has ended: create a new one (`meshlet token create --service NAME`)');
  t.notOk(cp.lines.some((x) => x.msg === 'sidecar authenticated'), 'the token never reached the control plane');
  // A new token joins.
  const fresh = await joinedSidecar(t, push, 'search', joinToken(api, 'search'));
  await fresh.waitFor((x) => x.msg === 'workload certificate installed', 30_000);

  // Bad requests get clear errors.
  const bad = async (body: unknown) => (await apiFetch(`${api}/v1/ca/rotate`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } })).json() as Promise<{ code: string; message: string }>;
  t.match(await bad({ overlap: 'soon' }), { code: 'invalid', message: /overlap: expected a duration such as 48h/ });
  t.match(await bad({ overlpa: '1h' }), { code: 'invalid', message: /unknown field "overlpa"/ });
  t.match(await bad({ caCertPem: 'x' }), { code: 'invalid', message: /caCertPem and caKeyPem go together/ });
  t.match(await bad({ caCertPem: 'x', caKeyPem: 'y' }), { code: 'invalid', message: /no PEM certificate/ });
  const view = JSON.parse(cli(['token', 'create', '--role', 'view', '-o', 'json'], { server: api }).stdout) as { token: string };
  const denied = cli(['ca', 'rotate'], { server: api, token: view.token });
  t.equal(denied.code, 1);
  t.match(denied.stderr, /POST \/v1\/ca\/rotate needs the admin role/);
});

t.test('with the CA in etcd, a rotation through one replica reaches the other', async (t) => {
  const etcd = await startEtcdCluster(t, 1);
  const strict = ['--push-hostname', 'localhost', '--sidecar-auth', 'strict'];
  const a = await startReplica(t, etcd, 'replica-a', strict);
  const b = await startReplica(t, etcd, 'replica-b', strict);
  const before = await caHash(b.api);
  const oldToken = joinToken(a.api, 'search');
  const rot = cli(['ca', 'rotate', '--overlap', '1h'], { server: a.api });
  t.equal(rot.code, 0, rot.stderr);
  const after = await caHash(a.api);
  t.not(after, before);
  await eventually('replica B loads the rotated CA', async () => ((await caHash(b.api)) === after ? true : undefined), 10_000);
  // B's push port proves the new root under the old one too: the old token joins there.
  await sleep(500);
  const search = await joinedSidecar(t, b.pushPort, 'search', oldToken);
  await search.waitFor((x) => x.msg === 'workload certificate installed', 30_000);
  t.ok(b.lines.some((x) => x.msg === 'workload certificate signed' && x.spiffeId === 'spiffe://cluster.local/svc/search'), 'signed by replica B');
});
