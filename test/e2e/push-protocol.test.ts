/**
 * Policy push end to end, with real processes: `meshlet control-plane`, `meshlet sidecar`s
 * registering over gRPC, `meshlet apply` and `meshlet status` as users run them.
 */
import * as http from 'node:http';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { request } from 'undici';
import { policyDiscoveryService, type ReceivedSidecarMessage, type SnapshotMessage } from '../../src/proto';
import { cli, eventually, sleep, startControlPlane, startSidecar, tmpDir, type SidecarProc } from '../integration/lib/meshlet';

interface Echo {
  port: number;
  close(): Promise<void>;
}

function echoServer(name: string): Promise<Echo> {
  const server = http.createServer((req, res) => {
    const body = JSON.stringify({ name, path: req.url, host: req.headers.host });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      }),
    ),
  );
}

/** GET through a sidecar's outbound listener, by Host, as an app would. */
async function via(sc: SidecarProc, host: string, p = '/', headers: Record<string, string> = {}) {
  const r = await request(`http://127.0.0.1:${sc.outbound}${p}`, { headers: { host, ...headers } });
  const text = await r.body.text();
  return { status: r.statusCode, flags: r.headers['x-meshlet-flags'], body: r.statusCode === 200 ? (JSON.parse(text) as { name: string }) : text };
}

const SPLIT = `apiVersion: meshlet.dev/v1
kind: DestinationPolicy
metadata: {name: echo}
spec:
  service: echo
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: echo}
spec:
  hosts: [echo]
  rules:
    - name: to-v2
      matches: [{headers: [{name: x-version, exact: v2}]}]
      backends: [{service: echo, subset: v2}]
    - name: default
      backends: [{service: echo, subset: v1}]
`;

t.test('an apply reaches every sidecar, which ACKs it; status shows it; routing follows it', async (t) => {
  const dir = tmpDir();
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const apps = [await echoServer('echo-v1'), await echoServer('echo-v2')];
  t.teardown(() => Promise.all(apps.map((a) => a.close())));
  const push = `127.0.0.1:${cp.pushPort}`;
  const sidecars = [
    await startSidecar(['--service', 'client', '--id', 'client-0', '--control-plane', push, '--advertise', '127.0.0.1']),
    await startSidecar(['--service', 'echo', '--id', 'echo-v1', '--labels', 'version=v1', '--app-port', String(apps[0]!.port), '--control-plane', push, '--advertise', '127.0.0.1']),
    await startSidecar(['--service', 'echo', '--id', 'echo-v2', '--labels', 'version=v2', '--app-port', String(apps[1]!.port), '--control-plane', push, '--advertise', '127.0.0.1']),
  ];
  t.teardown(() => Promise.all(sidecars.map((s) => s.stop())));
  const client = sidecars[0]!;

  // Before any policy: the implicit route spreads over both replicas.
  const seen = new Set<string>();
  await eventually('both replicas reachable', async () => {
    const r = await via(client, 'echo');
    if (r.status === 200) seen.add((r.body as { name: string }).name);
    return seen.size === 2 ? true : undefined;
  });
  t.same([...seen].sort(), ['echo-v1', 'echo-v2'], 'implicit route reaches both endpoints');

  const file = path.join(dir, 'split.yaml');
  writeFileSync(file, SPLIT);
  const applied = cli(['apply', '-f', file], { server: cp.api });
  t.equal(applied.code, 0, `apply exits 0 (${applied.stderr})`);
  t.match(applied.stdout, /DestinationPolicy\/echo created/);
  t.match(applied.stdout, /Route\/echo created/);

  const status = await eventually('every sidecar ACKs the new version', async () => {
    const st = cli(['status', '-o', 'json'], { server: cp.api });
    const b = JSON.parse(st.stdout) as { version: string; convergence: { ms: number; sidecars: number } | null; sidecars: { id: string; ackedVersion?: string; service: string }[] };
    return b.sidecars.length === 3 && b.sidecars.every((s) => s.ackedVersion === b.version) ? b : undefined;
  });
  t.same(status.sidecars.map((s) => `${s.id}:${s.service}`).sort(), ['client-0:client', 'echo-v1:echo', 'echo-v2:echo']);
  t.ok(status.convergence, 'the control plane measured convergence');
  t.comment(`convergence (change -> last ACK), ${status.convergence?.sidecars} sidecars: ${status.convergence?.ms} ms`);
  const table = cli(['status'], { server: cp.api });
  t.match(table.stdout, /echo-v2\s+echo\s+127\.0\.0\.1:\d+\s+version=v2\s+connected\s+ACK /, 'the table shows each sidecar ACKing');

  for (let i = 0; i < 20; i++) {
    t.equal(((await via(client, 'echo')).body as { name: string }).name, 'echo-v1', 'default rule -> v1');
    t.equal(((await via(client, 'echo', '/', { 'x-version': 'v2' })).body as { name: string }).name, 'echo-v2', 'header rule -> v2');
  }

  // A change that makes no sense is refused by the API with the field path, and nothing moves.
  writeFileSync(file, SPLIT.replace('subset: v2}]', 'subset: v3}]'));
  const bad = cli(['apply', '-f', file], { server: cp.api });
  t.equal(bad.code, 1, 'apply of an invalid policy exits 1');
  t.match(bad.stderr, /Route\/echo: spec\.rules\[0\]\.backends\[0\]\.subset/, 'the error names the field');

  // Convergence of a single change, measured by the control plane, over a few rounds.
  const rounds: number[] = [];
  for (let i = 0; i < 5; i++) {
    writeFileSync(file, SPLIT.replace('exact: v2', `exact: v2-${i}`));
    t.equal(cli(['apply', '-f', file], { server: cp.api }).code, 0);
    const b = await eventually('convergence', async () => {
      const st = cli(['status', '-o', 'json'], { server: cp.api });
      const s = JSON.parse(st.stdout) as { version: string; convergence: { ms: number; version: string } | null };
      return s.convergence && s.convergence.version === s.version ? s : undefined;
    });
    rounds.push(b.convergence!.ms);
  }
  t.comment(`convergence over 5 applies to 3 sidecars (ms): ${rounds.join(', ')}`);
});

t.test('a snapshot the sidecar cannot accept is NACKed with the reason; traffic stays on the last good one', async (t) => {
  const app = await echoServer('static-echo');
  t.teardown(() => app.close());
  const good = [
    { apiVersion: 'meshlet.dev/v1', kind: 'Service', metadata: { name: 'echo' }, spec: { endpoints: [{ address: '127.0.0.1', port: app.port }] } },
  ];
  const bad = [
    ...good,
    {
      apiVersion: 'meshlet.dev/v1',
      kind: 'Route',
      metadata: { name: 'broken' },
      spec: { hosts: ['echo'], rules: [{ matches: [{ path: { regex: '(' } }], backends: [{ service: 'echo' }] }] },
    },
  ];
  // A control plane that pushes whatever it is told to: one good snapshot, then a bad one.
  const answers: ReceivedSidecarMessage[] = [];
  let stream: grpc.ServerDuplexStream<ReceivedSidecarMessage, SnapshotMessage> | undefined;
  const server = new grpc.Server();
  server.addService(policyDiscoveryService(), {
    Stream: (call: grpc.ServerDuplexStream<ReceivedSidecarMessage, SnapshotMessage>) => {
      stream = call;
      call.on('data', (m: ReceivedSidecarMessage) => {
        if (m.node) call.write({ version: 'good-1', nonce: 'n1', resourcesJson: JSON.stringify(good), endpointsJson: '[]' });
        else answers.push(m);
      });
      call.on('error', () => undefined);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  t.teardown(() => server.forceShutdown());
  const sc = await startSidecar(['--service', 'client', '--control-plane', `127.0.0.1:${port}`]);
  t.teardown(() => sc.stop());

  await eventually('ACK of the good snapshot', async () => (answers.some((a) => a.ack?.version === 'good-1') ? true : undefined));
  t.equal((await via(sc, 'echo')).status, 200, 'traffic flows on the good snapshot');

  // Keep traffic going while the bad snapshot arrives.
  let failures = 0;
  let sent = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const r = await via(sc, 'echo').catch(() => ({ status: 0 }));
      sent++;
      if (r.status !== 200) failures++;
    }
  })();
  await sleep(100);
  stream!.write({ version: 'bad-2', nonce: 'n2', resourcesJson: JSON.stringify(bad), endpointsJson: '[]' });
  const nack = await eventually('NACK', async () => answers.find((a) => a.nack)?.nack ?? undefined);
  await sleep(100);
  running = false;
  await loop;
  t.equal(nack!.version, 'bad-2');
  t.equal(nack!.nonce, 'n2', 'the NACK echoes the nonce');
  t.match(nack!.reason, /Route\/broken: spec\.rules\[0\]\.matches\[0\]\.path\.regex: invalid regular expression/, 'the NACK carries the field path');
  t.equal(failures, 0, `no request failed across the NACK (${sent} sent)`);
  const dump = (await (await request(`http://127.0.0.1:${sc.admin}/config_dump`)).body.json()) as { version: string };
  t.equal(dump.version, 'good-1', 'the last good snapshot stays in force');
});

t.test('killing and restarting the control plane fails no request', async (t) => {
  const dir = tmpDir();
  let cp = await startControlPlane(dir);
  const ports = { api: cp.apiPort, push: cp.pushPort };
  t.teardown(() => cp.stop());
  const app = await echoServer('echo');
  t.teardown(() => app.close());
  const push = `127.0.0.1:${cp.pushPort}`;
  const client = await startSidecar(['--service', 'client', '--control-plane', push, '--advertise', '127.0.0.1']);
  const server = await startSidecar(['--service', 'echo', '--app-port', String(app.port), '--control-plane', push, '--advertise', '127.0.0.1']);
  t.teardown(() => Promise.all([client.stop(), server.stop()]));
  await eventually('echo reachable', async () => ((await via(client, 'echo')).status === 200 ? true : undefined));

  let failures = 0;
  let sent = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const r = await via(client, 'echo').catch((e: Error) => ({ status: 0, flags: e.message }));
      sent++;
      if (r.status !== 200) failures++;
    }
  })();
  await sleep(200);
  await cp.stop('SIGKILL');
  await sleep(1000);
  const duringOutage = sent;
  cp = await startControlPlane(dir, ports);
  await eventually('both sidecars reconnect', async () => {
    const st = JSON.parse(cli(['status', '-o', 'json'], { server: cp.api }).stdout) as { version: string; sidecars: { connected: boolean; ackedVersion?: string }[] };
    return st.sidecars.length === 2 && st.sidecars.every((s) => s.connected && s.ackedVersion === st.version) ? true : undefined;
  });
  await sleep(200);
  running = false;
  await loop;
  t.ok(duringOutage > 10, `requests kept flowing during the outage (${duringOutage} by the restart)`);
  t.equal(failures, 0, `zero failed requests out of ${sent}`);

  // And the restarted control plane still drives routing.
  const dir2 = path.join(dir, 'redirect.yaml');
  writeFileSync(
    dir2,
    `apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: echo}
spec:
  hosts: [echo]
  rules:
    - matches: [{path: {prefix: /old}}]
      redirect: {path: /new, statusCode: 301}
    - backends: [{service: echo}]
`,
  );
  t.equal(cli(['apply', '-f', dir2], { server: cp.api }).code, 0);
  const r = await eventually('the new route in force', async () => {
    const x = await via(client, 'echo', '/old');
    return x.status === 301 ? x : undefined;
  });
  t.equal(r.status, 301, 'a policy applied after the restart takes effect');
});
