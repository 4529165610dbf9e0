/**
 * A sidecar outlives its join token, with real processes: `meshlet token create --ttl 3s`, a
 * sidecar joins with it (TLS push port, strict registration), the token expires, the control
 * plane restarts (every stream is cut): the sidecar comes back with its workload certificate as
 * the credential, is registered again, and renews its certificate on that stream; at the next
 * restart it presents the renewed certificate. A new process with the expired token and no
 * certificate gets the clear error it always got.
 */
import t from 'tap';
import { apiFetch, cli, sleep, start, tmpDir } from '../integration/lib/meshlet';
import { freePort } from '../integration/lib/etcd';

async function registered(api: string, service: string): Promise<boolean> {
  const r = await apiFetch(`${api}/v1/status`);
  const st = (await r.json()) as { sidecars?: { service: string; connected: boolean }[] };
  return (st.sidecars ?? []).some((s) => s.service === service && s.connected);
}

t.test('after its join token expired, a sidecar reconnects with its certificate, re-registers and renews', async (t) => {
  const dir = tmpDir();
  const port = await freePort();
  const args = ['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', `127.0.0.1:${port}`, '--push-hostname', 'localhost', '--cert-ttl', '1m'];
  const up = async () => {
    const p = start(args, {}, { pushTls: true, strictSidecars: true });
    t.teardown(() => p.stop());
    const l = await p.waitFor((x) => x.msg === 'control plane started');
    return Object.assign(p, { api: String(l.api) });
  };
  const cp1 = await up();
  const made = JSON.parse(cli(['token', 'create', '--service', 'catalog', '--ttl', '3s', '--data-dir', dir, '-o', 'json']).stdout) as { token: string; id: string; expiresAt: string };
  const sc = start(['sidecar', '--service', 'catalog', '--control-plane', `127.0.0.1:${port}`, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'], { MESHLET_JOIN_TOKEN: made.token }, { pushTls: true });
  t.teardown(() => sc.stop());
  const first = await sc.waitFor((l) => l.msg === 'workload certificate installed', 30_000);
  t.equal((await cp1.waitFor((l) => l.msg === 'sidecar authenticated')).via, 'join-token');

  // The token expires; then every stream is cut.
  await sleep(Math.max(0, Date.parse(made.expiresAt) - Date.now()) + 500);
  await cp1.stop();
  const cp2 = await up();
  const again = await cp2.waitFor((l) => l.msg === 'sidecar authenticated' && l.spiffeId === 'spiffe://cluster.local/svc/catalog', 30_000);
  t.equal(again.via, 'certificate', 'authenticated by its workload certificate');
  t.equal(again.credential, `certificate ${String(first.serial).toUpperCase()}`, 'the certificate it was given under the token');
  t.ok(await registered(cp2.api, 'catalog'), 'registered again');
  t.notOk(sc.lines.some((l) => l.msg === 'the control plane refused this sidecar (credential)'), 'never refused');

  // It renews on that stream (at half of its minute), under the identity the certificate proved.
  const renewed = await cp2.waitFor((l) => l.msg === 'workload certificate signed' && l.via === 'certificate', 45_000);
  t.equal(renewed.spiffeId, 'spiffe://cluster.local/svc/catalog');
  const installed = await sc.waitFor((l) => l.msg === 'workload certificate installed' && l.serial !== first.serial, 30_000);

  // The next cut: the renewed certificate is the one presented (a new channel carries it).
  await cp2.stop();
  const cp3 = await up();
  const third = await cp3.waitFor((l) => l.msg === 'sidecar authenticated', 30_000);
  t.equal(third.via, 'certificate');
  t.not(third.credential, again.credential, 'a later certificate than the first');
  t.ok(
    sc.lines.some((l) => l.msg === 'workload certificate installed' && `certificate ${String(l.serial).toUpperCase()}` === third.credential),
    `a certificate this sidecar installed (${String(installed.serial)} or later)`,
  );
  t.ok(await registered(cp3.api, 'catalog'));

  // A new process with the expired token and no certificate: refused, with the reason.
  const late = start(['sidecar', '--service', 'catalog', '--control-plane', `127.0.0.1:${port}`, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'], { MESHLET_JOIN_TOKEN: made.token }, { pushTls: true });
  t.teardown(() => late.stop());
  const refused = await late.waitFor((l) => l.msg === 'the control plane refused this sidecar (credential)', 30_000);
  t.match(String(refused.reason), new RegExp(`join token ${made.id} expired at .*; create a new one with \`meshlet token create --service catalog\``));
});

t.test('the gateway too: after its token expired it reconnects with its certificate', async (t) => {
  const dir = tmpDir();
  const port = await freePort();
  const args = ['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', `127.0.0.1:${port}`, '--push-hostname', 'localhost'];
  const cp1 = start(args, {}, { pushTls: true, strictSidecars: true });
  t.teardown(() => cp1.stop());
  await cp1.waitFor((x) => x.msg === 'control plane started');
  const made = JSON.parse(cli(['token', 'create', '--service', 'edge', '--ttl', '3s', '--data-dir', dir, '-o', 'json']).stdout) as { token: string; expiresAt: string };
  const gw = start(['gateway', '--name', 'edge', '--control-plane', `127.0.0.1:${port}`, '--admin', '127.0.0.1:0'], { MESHLET_JOIN_TOKEN: made.token }, { pushTls: true });
  t.teardown(() => gw.stop());
  await gw.waitFor((l) => l.msg === 'workload certificate installed', 30_000);
  await sleep(Math.max(0, Date.parse(made.expiresAt) - Date.now()) + 500);
  await cp1.stop();
  const cp2 = start(args, {}, { pushTls: true, strictSidecars: true });
  t.teardown(() => cp2.stop());
  const again = await cp2.waitFor((l) => l.msg === 'sidecar authenticated', 30_000);
  t.equal(again.via, 'certificate');
  t.equal(again.spiffeId, 'spiffe://cluster.local/svc/edge');
});
