/**
 * mTLS under rotation, with real processes (slow: the shortest certificate life is a minute, and
 * it is renewed at half life): a steady, bounded request loop through frontend -> (mTLS) ->
 * catalog (HTTP/1.1 multiplexed over HTTP/2) and -> search (HTTP/1.1 pools over TLS) runs while
 * every sidecar's certificate is renewed, and while the root is rotated with an overlap
 * (`meshlet ca rotate --overlap`). Zero requests may fail.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { cli, eventually, portOf, sleep, start, tmpDir } from '../integration/lib/meshlet';
import { meshSidecar, metric, sourceApp } from '../integration/lib/mtls';

function token(dataDir: string, service: string): string {
  const r = cli(['token', 'create', '--service', service, '--ttl', '1h', '--data-dir', dataDir, '-o', 'json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

t.test('certificate renewal and root rotation under a steady request loop: zero failed requests', async (t) => {
  const dir = tmpDir();
  const cp = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--cert-ttl', '1m']);
  t.teardown(() => cp.stop());
  const l = await cp.waitFor((x) => x.msg === 'control plane started');
  const api = String(l.api);
  const push = portOf(l.push);
  const policy = path.join(dir, 'search.yaml');
  writeFileSync(policy, 'apiVersion: meshlet.dev/v1\nkind: DestinationPolicy\nmetadata: {name: search}\nspec: {service: search, http2Upgrade: false}\n');
  t.equal(cli(['apply', '-f', policy], { server: api }).code, 0);

  const catalogApp = await sourceApp();
  const searchApp = await sourceApp();
  t.teardown(() => catalogApp.close());
  t.teardown(() => searchApp.close());
  const catalog = await meshSidecar(push, 'catalog', token(dir, 'catalog'), ['--app-port', String(catalogApp.port)]);
  t.teardown(() => catalog.stop());
  const search = await meshSidecar(push, 'search', token(dir, 'search'), ['--app-port', String(searchApp.port)]);
  t.teardown(() => search.stop());
  const frontend = await meshSidecar(push, 'frontend', token(dir, 'frontend'));
  t.teardown(() => frontend.stop());
  for (const s of [catalog, search, frontend]) await s.waitFor((x) => x.msg === 'workload certificate installed');
  await eventually('both endpoints carry identities at the frontend', async () => {
    const d = (await (await request(`http://127.0.0.1:${frontend.admin}/config_dump`)).body.json()) as { services: { name: string; endpoints: { identity?: string }[] }[] };
    return ['catalog', 'search'].every((n) => d.services.find((s) => s.name === n)?.endpoints[0]?.identity) ? true : undefined;
  });

  // The loop: two clients, one per destination, one request at a time each, for a bounded time.
  const failures: string[] = [];
  let sent = 0;
  const until = Date.now() + 50_000;
  const loop = async (host: string) => {
    while (Date.now() < until) {
      sent++;
      try {
        const r = await request(`http://127.0.0.1:${frontend.outbound}/x`, { headers: { host } });
        const body = await r.body.text();
        if (r.statusCode !== 200 || JSON.parse(body).source !== 'frontend') failures.push(`${host}: ${r.statusCode} ${r.headers['x-meshlet-flags'] ?? ''} ${body.slice(0, 200)}`);
      } catch (err) {
        failures.push(`${host}: ${(err as Error).message}`);
      }
      await sleep(20);
    }
  };
  const loops = Promise.all([loop('catalog'), loop('search')]);
  await sleep(8000);
  const rot = cli(['ca', 'rotate', '--overlap', '1h', '--data-dir', dir]);
  t.equal(rot.code, 0, rot.stderr);
  await loops;

  t.ok(sent > 200, `${sent} requests sent`);
  t.same(failures.slice(0, 5), [], `zero failed requests (of ${sent})`);
  for (const [name, s] of [['catalog', catalog], ['search', search], ['frontend', frontend]] as const) {
    const installed = s.lines.filter((x) => x.msg === 'workload certificate installed').length;
    t.ok(installed >= 3, `${name}: ${installed} certificates installed (first, after the root rotation, at half life)`);
  }
  t.ok(catalog.lines.some((x) => x.msg === 'trust bundle updated; renewing the certificate'), 'the new root reached the sidecars');
  t.ok((await metric(catalog.admin, 'meshlet_inbound_connections_total', { security: 'tls' })) >= 1, 'catalog: mTLS');
  t.ok((await metric(search.admin, 'meshlet_inbound_connections_total', { security: 'tls' })) >= 1, 'search: mTLS (HTTP/1.1 over TLS)');
  t.equal(await metric(search.admin, 'meshlet_inbound_connections_total', { security: 'plaintext' }), 0);
  t.equal(catalogApp.sources.filter((s) => s !== 'frontend').length, 0);
});
