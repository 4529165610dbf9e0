/**
 * The sidecar's two admin listeners (as Istio's 15000 / 15020): `--status` (the pod address)
 * serves /ready /live /metrics /stats only; config_dump, logging, quitquitquit, tap and explain
 * are on the loopback admin port alone. The control plane reads stats and lists Prometheus
 * targets on the status port.
 */
import * as http from 'node:http';
import t from 'tap';
import { apiFetch, eventually, portOf, startControlPlane, startSidecar, tmpDir } from '../lib/meshlet';

function req(port: number, path: string, method = 'GET'): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      // /tap streams: the status is enough.
      if (path.startsWith('/tap') && res.statusCode === 200) {
        resolve({ status: 200, text: '' });
        r.destroy();
        return;
      }
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    r.on('error', reject);
    r.end();
  });
}

t.test('--status serves /ready /live /metrics /stats; the admin paths stay on the loopback admin port', async (t) => {
  const cp = await startControlPlane(tmpDir());
  t.teardown(() => cp.stop());
  const sc = await startSidecar(['--service', 'web', '--id', 'web-1', '--control-plane', `127.0.0.1:${cp.pushPort}`, '--status', '127.0.0.1:0']);
  t.teardown(() => sc.stop());
  const started = sc.lines.find((l) => l.msg === 'sidecar started') as Record<string, unknown>;
  t.ok(started.status, 'the status listener is in the start line');
  const status = portOf(started.status);
  t.not(status, sc.admin);
  await eventually('ready', async () => ((await req(status, '/ready')).status === 200 ? true : undefined));

  for (const p of ['/ready', '/live', '/metrics', '/stats']) t.equal((await req(status, p)).status, 200, `status port: ${p}`);
  for (const [p, m] of [['/config_dump', 'GET'], ['/logging', 'GET'], ['/logging?level=debug', 'POST'], ['/quitquitquit', 'POST'], ['/tap?service=web', 'GET'], ['/explain?url=http://web/', 'GET']] as const) {
    const r = await req(status, p, m);
    t.equal(r.status, 404, `status port: ${m} ${p} is not served`);
    t.match(r.text, /loopback admin port only/);
  }
  t.equal((await req(sc.admin, '/config_dump')).status, 200, 'the admin port has config_dump');
  t.equal((await req(sc.admin, '/logging')).status, 200, 'and logging');

  // The control plane: Prometheus targets and stats on the status port.
  const sd = await eventually('the sidecar registered', async () => {
    const groups = (await (await apiFetch(`${cp.api}/v1/sd/prometheus`)).json()) as { targets: string[]; labels: Record<string, string> }[];
    return groups.find((g) => g.labels.sidecar === 'web-1');
  });
  t.same(sd.targets, [`127.0.0.1:${status}`], 'Prometheus scrapes the status port');
  const stats = (await (await apiFetch(`${cp.api}/v1/stats`)).json()) as { unreachable: unknown[] };
  t.same(stats.unreachable, [], 'the control plane reads /stats there');
  t.equal(sc.child.exitCode, null, 'quitquitquit on the status port did nothing');
});
