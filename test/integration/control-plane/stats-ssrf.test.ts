/**
 * The control plane fetches sidecar /stats, and lists Prometheus targets, only at the address the
 * sidecar's push connection came from: a sidecar that advertises another host (`--advertise`)
 * cannot make the control plane call it (SSRF). Real control plane, real sidecar, and a "victim"
 * HTTP server on the advertised address.
 */
import t from 'tap';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { apiFetch, eventually, startControlPlane, startSidecar, tmpDir } from '../lib/meshlet';

t.test('stats and Prometheus targets use the connection address, not the advertised one', async (t) => {
  const dataDir = tmpDir('meshlet-ssrf-');
  const cp = await startControlPlane(dataDir);
  t.teardown(async () => {
    await cp.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const sc = await startSidecar(['--service', 'web', '--id', 'web-1', '--control-plane', `127.0.0.1:${cp.pushPort}`, '--advertise', '127.0.0.2']);
  t.teardown(() => sc.stop());
  // The victim: listening where the sidecar claims to be, on its admin port number.
  let victimHits = 0;
  const victim = http.createServer((_req, res) => {
    victimHits++;
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"routes":[]}');
  });
  await new Promise<void>((r) => victim.listen(sc.admin, '127.0.0.2', r));
  t.teardown(() => new Promise<void>((r) => victim.close(() => r())));

  const sd = await eventually('the sidecar registered', async () => {
    const groups = (await (await apiFetch(`${cp.api}/v1/sd/prometheus`)).json()) as { targets: string[]; labels: Record<string, string> }[];
    return groups.find((g) => g.labels.sidecar === 'web-1') ? groups : undefined;
  });
  const stats = (await (await apiFetch(`${cp.api}/v1/stats`)).json()) as { unreachable: unknown[] };
  t.equal(victimHits, 0, 'the advertised address was never fetched');
  t.same(stats.unreachable, [], `the sidecar itself answered: ${JSON.stringify(stats).slice(0, 300)}`);
  const mine = sd.find((g) => g.labels.sidecar === 'web-1');
  t.same(mine?.targets, [`127.0.0.1:${sc.admin}`], 'the Prometheus target is the connection address');
});
