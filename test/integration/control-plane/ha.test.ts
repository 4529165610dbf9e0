/**
 * A highly available control plane: two `meshlet control-plane` replicas on one real 3-member
 * etcd cluster, real sidecars, real traffic.
 */
import * as http from 'node:http';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { apiRequest, cli, eventually, sleep, startSidecar, tmpDir, type ControlPlaneProc, type SidecarProc } from '../lib/meshlet';
import { startEtcdCluster, startReplica, HA_GRACE_MS as GRACE_MS } from '../lib/etcd';

function echoServer(t: Test, name: string): Promise<number> {
  const server = http.createServer((req, res) => {
    const body = JSON.stringify({ name });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  t.teardown(
    () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  );
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

async function via(sc: SidecarProc, host: string, headers: Record<string, string> = {}): Promise<{ status: number; name?: string }> {
  const r = await request(`http://127.0.0.1:${sc.outbound}/`, { headers: { host, ...headers } });
  const text = await r.body.text();
  return { status: r.statusCode, name: r.statusCode === 200 ? (JSON.parse(text) as { name: string }).name : text };
}

interface StatusBody {
  version: string;
  sidecars: { id: string; service: string; connected: boolean; replica?: string; ackedVersion?: string }[];
}

async function status(cp: ControlPlaneProc): Promise<StatusBody> {
  const r = await apiRequest(`${cp.api}/v1/status`);
  return (await r.body.json()) as StatusBody;
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

t.test('two replicas on one etcd', async (t) => {
  const etcd = await startEtcdCluster(t);
  const a = await startReplica(t, etcd, 'replica-a');
  const b = await startReplica(t, etcd, 'replica-b');
  const pushA = `127.0.0.1:${a.pushPort}`;
  const pushB = `127.0.0.1:${b.pushPort}`;
  const v1 = await echoServer(t, 'echo-v1');
  const v2 = await echoServer(t, 'echo-v2');
  // The client's sidecar is on A, the echo sidecars on B; each knows both replicas.
  const sidecars = [
    await startSidecar(['--service', 'client', '--id', 'client-0', '--control-plane', `${pushA},${pushB}`, '--advertise', '127.0.0.1']),
    await startSidecar(['--service', 'echo', '--id', 'echo-v1', '--labels', 'version=v1', '--app-port', String(v1), '--control-plane', `${pushB},${pushA}`, '--advertise', '127.0.0.1']),
    await startSidecar(['--service', 'echo', '--id', 'echo-v2', '--labels', 'version=v2', '--app-port', String(v2), '--control-plane', `${pushB},${pushA}`, '--advertise', '127.0.0.1']),
  ];
  t.teardown(() => Promise.all(sidecars.map((s) => s.stop('SIGKILL'))));
  const client = sidecars[0]!;

  await t.test('a change applied through A reaches, and is ACKed by, every sidecar on B', async (t) => {
    const file = path.join(tmpDir(), 'split.yaml');
    writeFileSync(file, SPLIT);
    const applied = cli(['apply', '-f', file], { server: a.api });
    t.equal(applied.code, 0, `apply through A exits 0 (${applied.stderr})`);
    for (const cp of [a, b]) {
      const st = await eventually(`every sidecar ACKs, as ${cp === a ? 'A' : 'B'} sees it`, async () => {
        const s = await status(cp);
        return s.sidecars.length === 3 && s.sidecars.every((x) => x.ackedVersion === s.version && x.connected) ? s : undefined;
      });
      t.same(
        st.sidecars.map((s) => `${s.id}@${s.replica}`).sort(),
        ['client-0@replica-a', 'echo-v1@replica-b', 'echo-v2@replica-b'],
        'status lists every sidecar of every replica, with its replica',
      );
    }
    t.equal((await status(a)).version, (await status(b)).version, 'both replicas push the same version');
    const table = cli(['status'], { server: b.api });
    t.match(table.stdout, /REPLICA/);
    t.match(table.stdout, /client-0\s+client\s+\S+\s+-\s+connected\s+replica-a\s+ACK /, 'the table names the replica');
    // The client (on A) routes by the policy to endpoints registered on B.
    await eventually('routing follows the policy', async () => ((await via(client, 'echo', { 'x-version': 'v2' })).name === 'echo-v2' ? true : undefined));
    for (let i = 0; i < 10; i++) {
      t.equal((await via(client, 'echo')).name, 'echo-v1');
      t.equal((await via(client, 'echo', { 'x-version': 'v2' })).name, 'echo-v2');
    }
  });

  await t.test('a conditional update racing through both replicas: exactly one wins', async (t) => {
    for (let round = 0; round < 5; round++) {
      const cur = (await (await apiRequest(`${a.api}/v1/routes/echo`)).body.json()) as { metadata: { resourceVersion: string }; spec: unknown };
      await eventually('B has the same version', async () => {
        const r = (await (await apiRequest(`${b.api}/v1/routes/echo`)).body.json()) as { metadata: { resourceVersion: string } };
        return r.metadata.resourceVersion === cur.metadata.resourceVersion ? true : undefined;
      });
      const body = (replica: string) =>
        JSON.stringify({ ...cur, metadata: { name: 'echo', resourceVersion: cur.metadata.resourceVersion, labels: { by: `${replica}-${round}` } } });
      const codes = await Promise.all(
        [a, b].map(async (cp, i) => {
          const r = await apiRequest(`${cp.api}/v1/routes/echo`, { method: 'PUT', body: body(i === 0 ? 'a' : 'b'), headers: { 'content-type': 'application/json' } });
          await r.body.text();
          return r.statusCode;
        }),
      );
      t.same(codes.sort(), [200, 409], `round ${round}: one 200, one 409`);
    }
  });

  await t.test('kill -9 a replica under a steady request loop: its sidecars move to the other, no request fails', async (t) => {
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const loop = (async () => {
      while (running) {
        try {
          const r = await via(client, 'echo');
          if (r.status === 200) ok++;
          else failures.push(`${r.status} ${r.name}`);
        } catch (err) {
          failures.push(String(err));
        }
        await sleep(5);
      }
    })();
    await sleep(500);
    b.child.kill('SIGKILL');
    // The echo sidecars (on B) reconnect to A with the same ids.
    await eventually(
      'the sidecars of B are on A',
      async () => {
        const s = await status(a);
        return s.sidecars.filter((x) => x.service === 'echo').every((x) => x.connected && x.replica === 'replica-a') && s.sidecars.length === 3 ? true : undefined;
      },
      20_000,
    );
    // Past B's lease: its keys would have expired now, had the sidecars not moved.
    await sleep(GRACE_MS + 1500);
    running = false;
    await loop;
    t.same(failures, [], 'zero failed requests');
    t.ok(ok > 100, `requests kept flowing (${ok})`);
    const s = await status(a);
    t.same(s.sidecars.map((x) => `${x.id}@${x.replica}:${x.connected}`).sort(), ['client-0@replica-a:true', 'echo-v1@replica-a:true', 'echo-v2@replica-a:true']);
    // And A still pushes changes to them.
    const r = await apiRequest(`${a.api}/v1/routes/echo`);
    const cur = (await r.body.json()) as Record<string, unknown>;
    const put = await apiRequest(`${a.api}/v1/routes/echo`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...cur, metadata: { name: 'echo', labels: { after: 'failover' } } }),
    });
    t.equal(put.statusCode, 200, await put.body.text());
    await eventually('every sidecar ACKs the change after failover', async () => {
      const st = await status(a);
      return st.sidecars.length === 3 && st.sidecars.every((x) => x.ackedVersion === st.version) ? true : undefined;
    });
  });
});
