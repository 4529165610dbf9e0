/**
 * `meshlet status` says what a user who configured nothing gets: how many sidecars hold a
 * certificate (they call each other over mTLS) and the inbound mode, PERMISSIVE by default, then
 * whatever PeerAuthentication policies say, against a real control plane and sidecar.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { cli, eventually, portOf, start, tmpDir } from '../lib/meshlet';

t.test('meshlet status: certificates held and the inbound mTLS mode, default and per policy', async (t) => {
  const dir = tmpDir();
  const cp = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--push-hostname', 'localhost'], {}, { pushTls: true, strictSidecars: true });
  t.teardown(() => cp.stop());
  const l = await cp.waitFor((x) => x.msg === 'control plane started');
  const api = String(l.api);

  const empty = cli(['status'], { server: api });
  t.equal(empty.code, 0, empty.stderr);
  t.match(empty.stdout, 'mTLS: 0 of 0 connected sidecars hold a certificate and call each other over mTLS; inbound mode: PERMISSIVE (the default: no PeerAuthentication; plaintext callers are accepted too) for the mesh\n');

  const token = cli(['token', 'create', '--service', 'catalog', '--data-dir', dir]).stdout.trim();
  const sc = start(['sidecar', '--service', 'catalog', '--control-plane', `127.0.0.1:${portOf(l.push)}`, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'], { MESHLET_JOIN_TOKEN: token }, { pushTls: true });
  t.teardown(() => sc.stop());
  await sc.waitFor((x) => x.msg === 'workload certificate installed');

  const policy = path.join(dir, 'pa.yaml');
  writeFileSync(
    policy,
    'apiVersion: meshlet.dev/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mode: STRICT}\n---\napiVersion: meshlet.dev/v1\nkind: PeerAuthentication\nmetadata: {name: legacy}\nspec: {service: batch, mode: PERMISSIVE}\n',
  );
  t.equal(cli(['apply', '-f', policy], { server: api }).code, 0);
  const out = await eventually('the certificate shows in the status', async () => {
    const r = cli(['status'], { server: api });
    return r.stdout.includes('1 of 1 connected') ? r.stdout : undefined;
  });
  t.match(out, 'mTLS: 1 of 1 connected sidecars hold a certificate and call each other over mTLS; inbound mode: STRICT (PeerAuthentication/default) for the mesh; batch PERMISSIVE\n');
  const json = cli(['status', '-o', 'json'], { server: api });
  t.notMatch(json.stdout, 'mTLS:', 'json stays the API body');
});
