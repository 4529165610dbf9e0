/**
 * The CA and the tokens kept in etcd, with real processes: a 3-member etcd cluster, two
 * `meshlet control-plane --store etcd://...` replicas (push port over TLS, strict sidecar
 * registration: the defaults), and sidecars joined to different replicas.
 *
 * - one CA: both replicas serve the same bundle, and a join token made through replica A (whose
 *   CA hash was A's) verifies replica B's push port and is accepted there;
 * - one token set: an API token made on A is good on B, and revoked through B it is refused on A;
 * - a certificate signed by replica A is trusted by a sidecar of replica B: a real mTLS request.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { request } from 'undici';
import { cli, eventually } from '../integration/lib/meshlet';
import { startEtcdCluster, startReplica } from '../integration/lib/etcd';
import { joinedSidecar, metric, sourceApp } from '../integration/lib/mtls';


async function dump(admin: number): Promise<{ identity?: { certificate: { chainPem: string } | null; trustBundlePem: string | null } }> {
  return (await (await request(`http://127.0.0.1:${admin}/config_dump`)).body.json()) as never;
}

async function status(api: string, token: string): Promise<number> {
  return (await request(`${api}/v1/status`, { headers: { authorization: `Bearer ${token}` } })).statusCode;
}

t.test('replicas on one etcd share the CA and the tokens', async (t) => {
  const etcd = await startEtcdCluster(t);
  const strict = ['--push-hostname', 'localhost', '--sidecar-auth', 'strict'];
  const a = await startReplica(t, etcd, 'replica-a', strict);
  const b = await startReplica(t, etcd, 'replica-b', strict);
  t.ok(a.lines.some((l) => l.msg === 'workload identity: CA ready' && String(l.where).startsWith('etcd:')), 'the CA is in etcd');

  // One CA: the same bundle on both replicas' APIs.
  const ca = async (api: string, token: string) => (await (await request(`${api}/v1/ca`, { headers: { authorization: `Bearer ${token}` } })).body.json()) as { roots: { fingerprint?: string; sha256?: string }[] };
  t.same(await ca(b.api, b.token), await ca(a.api, a.token), 'both replicas trust the same roots');

  // One token set: A's bootstrap admin token works on B, and an API token made on A too.
  t.equal(await status(b.api, a.token), 200, "replica A's admin token is good on replica B");
  const made = cli(['token', 'create', '--role', 'view', '-o', 'json'], { server: a.api });
  t.equal(made.code, 0, made.stderr);
  const view = JSON.parse(made.stdout) as { token: string; id: string };
  t.equal(await status(b.api, view.token), 200, 'a token created through replica A works on replica B');
  const revoked = cli(['token', 'revoke', view.id], { server: b.api });
  t.equal(revoked.code, 0, revoked.stderr);
  await eventually('the revocation reaches replica A', async () => ((await status(a.api, view.token)) === 401 ? true : undefined));

  // Join tokens made through A; catalog joins replica B (its token's CA hash verifies B's push port), pricing joins A.
  const join = (service: string) => {
    const r = cli(['token', 'create', '--service', service], { server: a.api });
    if (r.code !== 0) throw new Error(r.stderr);
    return r.stdout.trim();
  };
  const app = await sourceApp();
  t.teardown(() => app.close());
  const catalog = await joinedSidecar(t, b.pushPort, 'catalog', join('catalog'));
  const pricing = await joinedSidecar(t, a.pushPort, 'pricing', join('pricing'), ['--app-port', String(app.port)]);
  await catalog.waitFor((l) => l.msg === 'workload certificate installed');
  await pricing.waitFor((l) => l.msg === 'workload certificate installed');
  t.ok(b.lines.some((l) => l.msg === 'workload certificate signed' && l.spiffeId === 'spiffe://cluster.local/svc/catalog'), 'catalog signed by replica B');
  t.ok(a.lines.some((l) => l.msg === 'workload certificate signed' && l.spiffeId === 'spiffe://cluster.local/svc/pricing'), 'pricing signed by replica A');

  // openssl: pricing's certificate (signed by A) chains to the bundle catalog got from B.
  const dc = await dump(catalog.admin);
  const dp = await dump(pricing.admin);
  t.equal(dc.identity?.trustBundlePem, dp.identity?.trustBundlePem, 'one trust bundle');
  const dir = spawnSync('mktemp', ['-d'], { encoding: 'utf8' }).stdout.trim();
  const v = spawnSync('sh', ['-c', `cat > ${dir}/b.pem <<'E'\n${dc.identity?.trustBundlePem ?? ''}E\ncat > ${dir}/l.pem <<'E'\n${dp.identity?.certificate?.chainPem ?? ''}E\nopenssl verify -CAfile ${dir}/b.pem ${dir}/l.pem`], { encoding: 'utf8' });
  t.equal(v.status, 0, `openssl verify: ${v.stdout}${v.stderr}`);

  // A real request catalog -> pricing over mTLS: the callee names the caller from its certificate.
  const res = await eventually('catalog reaches pricing over mTLS', async () => {
    const r = await request(`http://127.0.0.1:${catalog.outbound}/`, { headers: { host: 'pricing' } });
    const body = await r.body.text();
    return r.statusCode === 200 ? body : undefined;
  });
  t.same(JSON.parse(res), { source: 'catalog' });
  t.ok((await metric(pricing.admin, 'meshlet_inbound_connections_total', { security: 'tls' })) >= 1, 'the hop was mTLS');
});

t.test('two replicas starting at once make one CA; concurrent token writes lose nothing', async (t) => {
  const etcd = await startEtcdCluster(t, 1);
  const { connectEtcd } = await import('../../control-plane/store-etcd');
  const { EtcdSecret, secretKeys } = await import('../../control-plane/secrets');
  const { MeshCa } = await import('../../control-plane/ca');
  const { TokenStore } = await import('../../control-plane/tokens');
  const clients = [0, 1].map(() => connectEtcd({ endpoints: [`http://${etcd.endpoints}`] }));
  t.teardown(() => clients.forEach((c) => c.close()));
  const keys = secretKeys('/race/');
  const cas = await Promise.all(clients.map((c) => MeshCa.open({ dataDir: '/nonexistent', doc: new EtcdSecret(c, keys.ca), pollMs: 0 })));
  t.equal(cas[0]?.rootPem(), cas[1]?.rootPem(), 'the replica that lost the race loaded the winner’s CA');
  const stores = clients.map((c) => new TokenStore(new EtcdSecret(c, keys.tokens, 0)));
  const made = await Promise.all(Array.from({ length: 10 }, (_, i) => (stores[i % 2] as InstanceType<typeof TokenStore>).create({ service: `svc-${i}` })));
  for (const s of stores) for (const m of made) t.equal((await s.verify(m.token)).service, m.info.service);
  t.equal((await stores[0]?.list())?.length, 10, 'every concurrent create kept');
});
