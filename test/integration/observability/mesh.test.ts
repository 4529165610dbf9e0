/**
 * The mesh-wide view with real processes: a control plane, a `web` sidecar in front of an app
 * and a `frontend` sidecar calling it. `meshlet stat` (table and -o json) and `meshlet top`
 * show what the control plane merged from both sidecars' /stats; the control plane's /metrics
 * (convergence histogram, pushes, connected sidecars) passes promtool; and Debian's `prometheus`,
 * run with deploy/prometheus.yml (targets from the control plane's HTTP SD endpoint), scrapes
 * the sidecars and answers a golden metric through its query API.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import t from 'tap';
import { apiFetch, cli, eventually, ROOT, startControlPlane, startSidecar, tmpDir } from '../lib/meshlet';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

async function getJson(url: string): Promise<any> {
  const r = await apiFetch(url);
  if (r.status !== 200) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.json();
}

t.test('meshlet stat/top, control-plane metrics, Prometheus through HTTP SD', async (t) => {
  const dir = tmpDir('meshlet-obs-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const app = http.createServer((req, res) => res.writeHead(req.url === '/fail' ? 500 : 200, { 'content-type': 'text/plain' }).end('ok\n'));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { app.close(() => r()); app.closeAllConnections(); }));
  const appPort = (app.address() as net.AddressInfo).port;

  const cpDir = path.join(dir, 'cp');
  const cp = await startControlPlane(cpDir);
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  const web = await startSidecar(['--service', 'web', '--control-plane', push, '--app-port', String(appPort), '--advertise', '127.0.0.1', '--access-log', '0']);
  t.teardown(() => web.stop());
  const fe = await startSidecar(['--service', 'frontend', '--control-plane', push, '--advertise', '127.0.0.1', '--access-log', '0']);
  t.teardown(() => fe.stop());

  const call = (p: string) =>
    new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: fe.outbound, path: `http://web${p}`, headers: { host: 'web' }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
  await eventually('web reachable through the frontend sidecar', async () => ((await call('/')) === 200 ? true : undefined));
  let ok = 1;
  for (let i = 0; i < 8; i++) if ((await call('/')) === 200) ok++;
  t.equal(ok, 9, 'nine answered');
  t.equal(await call('/fail'), 500, 'and one failure');

  // The web sidecar knows its caller: the frontend sidecar says who it is (x-meshlet-source), and
  // `frontend` is a service of the snapshot, so it is a bounded label value.
  const wm = await fetch(`http://127.0.0.1:${web.admin}/metrics`).then((r) => r.text());
  t.match(wm, /^meshlet_requests_total\{direction="inbound",source="frontend",destination="web",route="unknown",response_code_class="2xx",response_code="200",response_flags="-"\} 9$/m, 'inbound requests labelled with the calling service');

  // meshlet stat -o json: merged by the control plane from both sidecars.
  const stat = cli(['stat', '-o', 'json'], { server: cp.api });
  t.equal(stat.code, 0, stat.stderr);
  const s = JSON.parse(stat.stdout) as { services: any[]; routes: any[]; unreachable: unknown[] };
  t.same(s.unreachable, [], 'every sidecar answered');
  const svc = s.services.find((r) => r.service === 'web');
  t.match(svc, { service: 'web', sidecars: 1, requests: 10, successRate: 0.9 }, 'web as it served: 10 requests, 9 good');
  t.ok(svc.p50Ms > 0 && svc.p99Ms >= svc.p50Ms, 'p50 and p99 from the merged hdr histograms');
  t.ok(svc.rps > 0, 'req/s over the window');
  const rt = s.routes.find((r) => r.service === 'web');
  t.match(rt, { service: 'web', sidecars: 1, requests: 10, successRate: 0.9 }, 'the route as the frontend saw it');
  t.type(rt.route, 'string');
  const table = cli(['stat'], { server: cp.api });
  t.equal(table.code, 0);
  t.match(table.stdout, /SERVICE\s+SUCCESS\s+RPS\s+P50\s+P99/);
  t.match(table.stdout, /^web\s+90\.00%/m);
  const top = cli(['top', '--count', '2', '--interval', '0.2'], { server: cp.api });
  t.equal(top.code, 0, top.stderr);
  t.equal(top.stdout.match(/meshlet top/g)?.length, 2, 'top redrew twice');
  t.equal(cli(['top', '--interval', 'fast'], { server: cp.api }).code, 2, 'a bad interval is a usage error');

  // The control plane's own metrics.
  const cpm = await apiFetch(`${cp.api}/metrics`).then((r) => r.text());
  const check = spawnSync('promtool', ['check', 'metrics'], { input: cpm, encoding: 'utf8' });
  t.equal(check.status, 0, `promtool check metrics (control plane): ${check.stdout}${check.stderr}`);
  t.match(cpm, /^meshlet_push_convergence_duration_seconds_count [1-9]\d*$/m, 'convergence histogram');
  t.match(cpm, /^meshlet_connected_sidecars 2$/m);
  t.match(cpm, /^meshlet_push_snapshots_total [1-9]\d*$/m);
  t.match(cpm, /^meshlet_api_requests_total\{code="200"\} [1-9]\d*$/m);

  // HTTP SD: the control plane and both sidecars' admin ports.
  const sd = (await getJson(`${cp.api}/v1/sd/prometheus`)) as { targets: string[]; labels: Record<string, string> }[];
  t.same(
    sd.map((g) => [g.labels.job_role, g.labels.service, g.targets[0]]).sort(),
    [
      ['control-plane', 'meshlet-control-plane', `127.0.0.1:${cp.apiPort}`],
      ['sidecar', 'frontend', `127.0.0.1:${fe.admin}`],
      ['sidecar', 'web', `127.0.0.1:${web.admin}`],
    ].sort(),
  );

  // Real Prometheus, with deploy/prometheus.yml pointed at this control plane.
  const promPort = await freePort();
  const conf = readFileSync(path.join(ROOT, 'deploy', 'prometheus.yml'), 'utf8')
    .replace('http://127.0.0.1:15080/v1/sd/prometheus', `${cp.api}/v1/sd/prometheus`)
    .replace(/scrape_interval: 5s/, 'scrape_interval: 1s')
    .replace(/refresh_interval: 5s/, 'refresh_interval: 1s')
    .replaceAll('../.meshlet/admin.token', path.join(cpDir, 'admin.token'));
  t.not(conf, readFileSync(path.join(ROOT, 'deploy', 'prometheus.yml'), 'utf8'));
  const confFile = path.join(dir, 'prometheus.yml');
  writeFileSync(confFile, conf);
  const prom = spawn('prometheus', [`--config.file=${confFile}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let promErr = '';
  prom.stderr.on('data', (c: Buffer) => (promErr = (promErr + c.toString()).slice(-4000)));
  const promExited = new Promise<void>((r) => prom.once('exit', () => r()));
  t.teardown(async () => {
    if (prom.exitCode === null) prom.kill('SIGTERM');
    await promExited;
  });
  const q = encodeURIComponent('sum(meshlet_requests_total{direction="inbound",destination="web",role="sidecar"})');
  const value = await eventually(
    'Prometheus to answer the golden metric',
    async () => {
      if (prom.exitCode !== null) throw new Error(`prometheus exited: ${promErr}`);
      const r = await getJson(`http://127.0.0.1:${promPort}/api/v1/query?query=${q}`);
      const v = r?.data?.result?.[0]?.value?.[1];
      return v === '10' ? v : undefined;
    },
    45_000,
  );
  t.equal(value, '10', 'Prometheus scraped the web sidecar and counts its 10 inbound requests');
  let targets: { labels: Record<string, string>; health: string; lastError: string }[] = [];
  await eventually(
    'three healthy targets',
    async () => {
      targets = (await getJson(`http://127.0.0.1:${promPort}/api/v1/targets`)).data.activeTargets;
      return targets.length === 3 && targets.every((x) => x.health === 'up') ? true : undefined;
    },
    30_000,
  ).catch(() => undefined);
  t.same(
    targets.map((x) => `${x.labels.role}/${x.labels.service}: ${x.health} ${x.lastError}`).sort(),
    ['control-plane/meshlet-control-plane: up ', 'sidecar/frontend: up ', 'sidecar/web: up '],
    'Prometheus scrapes the control plane and both sidecars, labelled by role and service',
  );
});
