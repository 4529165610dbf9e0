/**
 * `meshlet sidecar --concurrency 2`: real processes (a cluster primary and two workers). Traffic
 * is served by both workers (the per-worker connection counter is the observable, like Envoy's
 * listener.worker_N.downstream_cx_total), a policy pushed by a real control plane reaches every
 * worker, /metrics merges the workers into one count, a killed worker is restarted while the other
 * keeps serving, and SIGTERM drains every worker.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { closedPort } from './helpers';
import { apiRequest, cli, eventually, startControlPlane, startSidecar, tmpDir, type SidecarProc } from '../lib/meshlet';

const HOST = '127.0.0.1';

function app(t: Test, name: string, handler?: http.RequestListener): Promise<number> {
  const server = http.createServer(
    handler ??
      ((req, res) => {
        req.resume();
        res.end(name);
      }),
  );
  t.teardown(
    () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  );
  return new Promise((resolve) => server.listen(0, HOST, () => resolve((server.address() as AddressInfo).port)));
}

/** One request on a new connection (agent: false), so the kernel picks a worker each time. */
function get(port: number, host: string, p = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: HOST, port, path: p, headers: { host }, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

async function admin(sc: SidecarProc, p: string): Promise<{ status: number; body: string }> {
  return get(sc.admin, 'admin', p);
}

/** Sum of a metric's samples whose label set contains every `labels` pair. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

interface Dump {
  version: string | null;
  workers: { worker: number; pid: number | null; listening: boolean; version: string | null }[];
}
const dump = async (sc: SidecarProc): Promise<Dump> => JSON.parse((await admin(sc, '/config_dump')).body) as Dump;

const staticPolicies = (appPort: number, deadPort: number) =>
  [
    { apiVersion: 'meshlet.dev/v1', kind: 'Service', metadata: { name: 'echo' }, spec: { endpoints: [{ address: HOST, port: appPort }] } },
    { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'echo' }, spec: { hosts: ['echo'], rules: [{ backends: [{ service: 'echo' }] }] } },
    { apiVersion: 'meshlet.dev/v1', kind: 'Service', metadata: { name: 'dead' }, spec: { endpoints: [{ address: HOST, port: deadPort }] } },
    { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'dead' }, spec: { hosts: ['dead'], rules: [{ backends: [{ service: 'dead' }] }] } },
  ]
    .map((r) => JSON.stringify(r))
    .join('\n---\n');

async function staticSidecar(t: Test, appPort: number, extra: string[] = []): Promise<SidecarProc> {
  const dir = tmpDir();
  const file = path.join(dir, 'policies.yaml');
  writeFileSync(file, staticPolicies(appPort, await closedPort()));
  const sc = await startSidecar(['--service', 'client', '--config', file, '--concurrency', '2', ...extra]);
  t.teardown(() => sc.stop());
  return sc;
}

t.test('--concurrency 2 with --config: both workers serve, /metrics counts every request once', async (t) => {
  const port = await app(t, 'echo');
  const sc = await staticSidecar(t, port);
  t.equal((await admin(sc, '/ready')).status, 200, 'ready once both workers applied the snapshot');
  const d = await dump(sc);
  t.equal(d.workers.length, 2, 'two workers');
  t.ok(
    d.workers.every((w) => w.listening && w.version === d.version && w.pid !== null),
    'each worker listens with the snapshot in force',
  );
  t.not(d.workers[0]!.pid, d.workers[1]!.pid, 'in two processes');

  // Bounded: batches of 20 concurrent connections until both workers accepted some.
  let sent = 0;
  let perWorker = [0, 0];
  for (let round = 0; round < 10 && !perWorker.every((n) => n > 0); round++) {
    const rs = await Promise.all(Array.from({ length: 20 }, () => get(sc.outbound, 'echo')));
    sent += rs.length;
    t.ok(
      rs.every((r) => r.status === 200 && r.body === 'echo'),
      'every request answered',
    );
    const m = (await admin(sc, '/metrics')).body;
    perWorker = [0, 1].map((w) => metric(m, 'meshlet_worker_connections_total', { listener: 'outbound', worker: String(w) }));
  }
  t.ok(perWorker[0]! > 0 && perWorker[1]! > 0, `connections landed on both workers (${perWorker.join(' / ')})`);
  const m = (await admin(sc, '/metrics')).body;
  t.equal(metric(m, 'meshlet_worker_connections_total', { listener: 'outbound' }), sent, 'every connection counted by exactly one worker');
  t.equal(metric(m, 'meshlet_requests_total', { direction: 'outbound', destination: 'echo', response_code: '200' }), sent, `the merged counter shows exactly ${sent} requests`);
  t.equal(metric(m, 'meshlet_request_duration_seconds_count', { destination: 'echo' }), sent, 'histogram counts merged');
  t.equal(metric(m, 'meshlet_request_duration_window_seconds_count', { destination: 'echo' }), sent, 'sliding-window summaries merged');
  t.equal(m.split('\n').filter((l) => l.startsWith('meshlet_requests_total{')).length, new Set(m.split('\n').filter((l) => l.startsWith('meshlet_requests_total{')).map((l) => l.slice(0, l.lastIndexOf(' ')))).size, 'no duplicate series');
  t.equal(metric(m, 'meshlet_policy_acks_total'), 1, 'one policy stream: one ACK, not one per worker');
  t.equal(m.split('\n').filter((l) => l.startsWith('# TYPE meshlet_requests_total ')).length, 1, 'one family header');
  const om = await new Promise<string>((resolve, reject) =>
    http
      .get({ host: HOST, port: sc.admin, path: '/metrics', headers: { accept: 'application/openmetrics-text' } }, (res) => {
        let b = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (b += c));
        res.on('end', () => resolve(b));
      })
      .on('error', reject),
  );
  t.match(om, /# TYPE meshlet_requests counter\n/, 'OpenMetrics names the counter family without _total');
  t.ok(om.endsWith('# EOF\n'), 'OpenMetrics ends with # EOF');
  const stats = JSON.parse((await admin(sc, '/stats')).body) as { routes: { count: number }[] };
  t.equal(
    stats.routes.reduce((n, r) => n + r.count, 0),
    sent,
    '/stats (meshlet stat) covers both workers',
  );

  // A log level change reaches every worker: each logs its failed upstream attempts at debug.
  const failing = async (): Promise<Set<unknown>> => {
    const from = sc.lines.length;
    const rs = await Promise.all(Array.from({ length: 20 }, () => get(sc.outbound, 'dead')));
    t.ok(
      rs.every((r) => r.status === 503),
      'a dead upstream: 503',
    );
    await new Promise((r) => setTimeout(r, 100));
    return new Set(sc.lines.slice(from).filter((l) => l.msg === 'upstream request failed').map((l) => l.worker));
  };
  t.equal((await failing()).size, 0, 'at info, no debug lines');
  const set = await new Promise<number>((resolve) =>
    http.request({ host: HOST, port: sc.admin, path: '/logging?level=debug', method: 'POST' }, (r) => (r.resume(), resolve(r.statusCode ?? 0))).end(),
  );
  t.equal(set, 200, 'POST /logging?level=debug');
  const workers = new Set<unknown>();
  for (let i = 0; i < 10 && workers.size < 2; i++) for (const w of await failing()) workers.add(w);
  t.same([...workers].sort(), [0, 1], 'both workers log at debug now');
});

t.test('a killed worker is restarted; the other keeps serving meanwhile', async (t) => {
  const port = await app(t, 'echo');
  const sc = await staticSidecar(t, port);
  const d = await dump(sc);
  const victim = d.workers[0]!.pid!;
  process.kill(victim, 'SIGKILL');
  const during = await Promise.all(Array.from({ length: 10 }, () => get(sc.outbound, 'echo')));
  t.ok(
    during.every((r) => r.status === 200),
    'requests keep succeeding while the worker is down',
  );
  await sc.waitFor((l) => l.msg === 'worker died; restarting it' && l.workerPid === victim);
  const after = await eventually('the worker is back with the snapshot', async () => {
    const x = await dump(sc);
    const w = x.workers[0]!;
    return w.pid !== null && w.pid !== victim && w.listening && w.version === x.version ? x : undefined;
  });
  t.not(after.workers[0]!.pid, victim, 'a new process in the slot');
  t.equal((await admin(sc, '/ready')).status, 200, 'ready again');
  const rs = await Promise.all(Array.from({ length: 20 }, () => get(sc.outbound, 'echo')));
  t.ok(
    rs.every((r) => r.status === 200),
    'traffic continues',
  );
  t.equal(metric((await admin(sc, '/metrics')).body, 'meshlet_worker_restarts_total'), 1, 'the restart is counted');
});

t.test('SIGTERM drains every worker: the request in flight finishes, then all exit', async (t) => {
  let release: () => void = () => undefined;
  let arrived: () => void = () => undefined;
  const there = new Promise<void>((r) => (arrived = r));
  const port = await app(t, 'slow', (req, res) => {
    req.resume();
    release = () => res.end('late');
    arrived();
  });
  const sc = await staticSidecar(t, port);
  const pids = (await dump(sc)).workers.map((w) => w.pid!);
  const inflight = get(sc.outbound, 'echo');
  await there;
  const exited = new Promise<number | null>((r) => sc.child.once('exit', (code) => r(code)));
  sc.child.kill('SIGTERM');
  await sc.waitFor((l) => l.msg === 'draining the workers');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(sc.child.exitCode, null, 'the sidecar waits for the request in flight');
  release();
  t.same(await inflight, { status: 200, body: 'late' }, 'the request in flight completed');
  t.equal(await exited, 0, 'the sidecar exits 0');
  for (const pid of pids)
    t.throws(
      () => process.kill(pid, 0),
      { code: 'ESRCH' },
      `worker ${pid} is gone`,
    );
});

t.test('a policy pushed by the control plane reaches every worker', async (t) => {
  const dir = tmpDir();
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const a = await app(t, 'a');
  const b = await app(t, 'b');
  const sc = await startSidecar(['--service', 'client', '--control-plane', `127.0.0.1:${cp.pushPort}`, '--concurrency', '2']);
  t.teardown(() => sc.stop());
  const file = path.join(dir, 'p.yaml');
  const policy = (target: string) => `apiVersion: meshlet.dev/v1
kind: Service
metadata: {name: a}
spec: {endpoints: [{address: 127.0.0.1, port: ${a}}]}
---
apiVersion: meshlet.dev/v1
kind: Service
metadata: {name: b}
spec: {endpoints: [{address: 127.0.0.1, port: ${b}}]}
---
apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: web}
spec:
  hosts: [web]
  rules: [{backends: [{service: ${target}}]}]
`;
  const converged = async (): Promise<string> => {
    // What `meshlet status -o json` prints, from the API (a CLI start per poll made this subtest the file's slowest).
    const st = (await (await apiRequest(`${cp.api}/v1/status`)).body.json()) as { version: string; sidecars: { ackedVersion?: string }[] };
    const d = await dump(sc);
    return st.sidecars.length === 1 && st.sidecars[0]!.ackedVersion === st.version && d.version === st.version && d.workers.every((w) => w.version === st.version) && (await admin(sc, '/ready')).status === 200
      ? st.version
      : (undefined as unknown as string);
  };
  for (const target of ['a', 'b']) {
    writeFileSync(file, policy(target));
    t.equal(cli(['apply', '-f', file], { server: cp.api }).code, 0, `apply route -> ${target}`);
    const version = await eventually(`the primary ACKs and both workers apply the route to ${target}`, converged);
    const m0 = (await admin(sc, '/metrics')).body;
    const rs = await Promise.all(Array.from({ length: 40 }, () => get(sc.outbound, 'web')));
    t.same(
      [...new Set(rs.map((r) => `${r.status} ${r.body}`))],
      [`200 ${target}`],
      `all 40 connections see the route to ${target} (version ${version})`,
    );
    const m1 = (await admin(sc, '/metrics')).body;
    const served = [0, 1].map((w) => metric(m1, 'meshlet_worker_connections_total', { listener: 'outbound', worker: String(w) }) - metric(m0, 'meshlet_worker_connections_total', { listener: 'outbound', worker: String(w) }));
    t.equal(served[0]! + served[1]!, 40, `those connections were spread ${served.join(' / ')} over the workers`);
  }
});

t.test('--concurrency: bad values are usage errors', async (t) => {
  for (const v of ['0', 'two', '129', '1.5', '']) {
    const r = cli(['sidecar', '--service', 's', '--config', '/nonexistent', '--concurrency', v]);
    t.equal(r.code, 2, `--concurrency ${v}: exit 2`);
    t.match(r.stderr, /--concurrency: expected an integer from 1 to 128 or auto/);
  }
});
