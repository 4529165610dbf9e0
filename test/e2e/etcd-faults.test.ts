/**
 * (In test/e2e: about 35 s, too slow for `npm test`; needs no root.)
 *
 * The etcd store's failures, with real processes: the etcd leader killed under writes, and the
 * cluster losing its quorum under traffic.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { apiRequest, eventually, sleep, startSidecar, type ControlPlaneProc, type SidecarProc } from '../integration/lib/meshlet';
import { startEtcdCluster, startReplica } from '../integration/lib/etcd';

const route = (name: string) =>
  JSON.stringify({
    apiVersion: 'meshlet.dev/v1',
    kind: 'Route',
    metadata: { name },
    spec: { hosts: [`${name}.example`], rules: [{ name: 'r', backends: [{ service: 'echo' }] }] },
  });

async function create(cp: ControlPlaneProc, name: string): Promise<{ status: number; body: string }> {
  const r = await apiRequest(`${cp.api}/v1/routes`, { method: 'POST', body: route(name), headers: { 'content-type': 'application/json' } });
  return { status: r.statusCode, body: await r.body.text() };
}

async function names(cp: ControlPlaneProc): Promise<string[]> {
  const r = await apiRequest(`${cp.api}/v1/routes`);
  return ((await r.body.json()) as { items: { metadata: { name: string } }[] }).items.map((i) => i.metadata.name);
}

function echoServer(t: Test): Promise<number> {
  const server = http.createServer((_req, res) => res.end('echo'));
  t.teardown(
    () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  );
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

t.test('the etcd leader killed under writes: no acknowledged write lost, none applied twice', async (t) => {
  const etcd = await startEtcdCluster(t);
  const a = await startReplica(t, etcd, 'replica-a');
  const b = await startReplica(t, etcd, 'replica-b');
  const acked: string[] = [];
  const unavailable: string[] = [];
  const other: string[] = [];
  let running = true;
  const writers = [a, b].map(async (cp, w) => {
    for (let n = 0; running; n++) {
      const name = `w${w}-${n}`;
      const r = await create(cp, name);
      if (r.status === 201) acked.push(name);
      else if (r.status === 503) unavailable.push(name);
      else other.push(`${name}: ${r.status} ${r.body}`);
    }
  });
  await sleep(700);
  const leader = etcd.leader();
  const before = acked.length;
  await etcd.stop(leader);
  await sleep(3000);
  await etcd.start(leader);
  await sleep(1000);
  running = false;
  await Promise.all(writers);
  t.ok(acked.length > before + 5, `writes went on after the leader died (${before} before, ${acked.length} in all, ${unavailable.length} refused with 503)`);
  t.same(other, [], 'no write failed any other way (a 409 would be a write applied twice)');
  for (const cp of [a, b]) {
    const stored = await eventually('both replicas converge', async () => {
      const n = await names(cp);
      return acked.every((x) => n.includes(x)) ? n : undefined;
    });
    t.equal(new Set(stored).size, stored.length, 'each name once');
    t.same(stored.filter((x) => !acked.includes(x) && !unavailable.includes(x)), [], 'nothing that was not written');
  }
});

t.test('etcd loses its quorum: writes get 503, reads and traffic go on; it recovers when etcd does', async (t) => {
  const etcd = await startEtcdCluster(t);
  const a = await startReplica(t, etcd, 'replica-a');
  const b = await startReplica(t, etcd, 'replica-b');
  const app = await echoServer(t);
  const pushes = `127.0.0.1:${a.pushPort},127.0.0.1:${b.pushPort}`;
  const sidecars: SidecarProc[] = [
    await startSidecar(['--service', 'client', '--id', 'client-0', '--control-plane', pushes, '--advertise', '127.0.0.1']),
    await startSidecar(['--service', 'echo', '--id', 'echo-0', '--app-port', String(app), '--control-plane', pushes, '--advertise', '127.0.0.1']),
  ];
  t.teardown(() => Promise.all(sidecars.map((s) => s.stop('SIGKILL'))));
  const client = sidecars[0]!;
  t.equal((await create(a, 'before')).status, 201);
  await eventually('B has it', async () => ((await names(b)).includes('before') ? true : undefined));
  await eventually('traffic flows', async () => {
    const r = await request(`http://127.0.0.1:${client.outbound}/`, { headers: { host: 'echo' } });
    return (await r.body.text()) === 'echo' ? true : undefined;
  });

  let ok = 0;
  const failures: string[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const r = await request(`http://127.0.0.1:${client.outbound}/`, { headers: { host: 'echo' } });
        const text = await r.body.text();
        if (r.statusCode === 200 && text === 'echo') ok++;
        else failures.push(`${r.statusCode} ${text}`);
      } catch (err) {
        failures.push(String(err));
      }
      await sleep(5);
    }
  })();

  await etcd.stop(1);
  await etcd.stop(2);
  const w = await create(a, 'during');
  t.equal(w.status, 503, 'a write without quorum is refused');
  const body = JSON.parse(w.body) as { code: string; message: string };
  t.equal(body.code, 'unavailable');
  t.match(body.message, /etcd store is unavailable/, `a clear message: ${body.message}`);
  t.equal((await create(b, 'during-b')).status, 503, 'on either replica');
  const read = await apiRequest(`${b.api}/v1/routes/before`);
  t.equal(read.statusCode, 200, 'reads are served from the watch cache');
  await read.body.text();
  // Longer than the lease TTL: nothing expires while etcd has no leader.
  await sleep(4000);

  await etcd.start(1);
  await etcd.start(2);
  const created = await eventually(
    'writes work again',
    async () => {
      // PUT: an attempt refused with 503 may still have been applied (its answer was lost).
      const r = await apiRequest(`${a.api}/v1/routes/after`, { method: 'PUT', body: route('after'), headers: { 'content-type': 'application/json' } });
      const res = { status: r.statusCode, body: await r.body.text() };
      return r.statusCode === 201 || r.statusCode === 200 ? res : undefined;
    },
    30_000,
  );
  t.ok(created.status === 201 || created.status === 200, 'written');
  await eventually('B resynced', async () => ((await names(b)).includes('after') ? true : undefined), 20_000);
  running = false;
  await loop;
  t.same(failures, [], 'traffic unaffected');
  t.ok(ok > 100, `requests flowed throughout (${ok})`);
  // Refused (503) is not acknowledged, which is not the same as undone: etcd may still commit such a
  // write when the quorum is back (the 503 says so). The replicas must agree on what landed.
  await eventually('A and B agree on the refused writes', async () => {
    const [na, nb] = [(await names(a)).filter((n) => n.startsWith('during')).sort(), (await names(b)).filter((n) => n.startsWith('during')).sort()];
    return JSON.stringify(na) === JSON.stringify(nb) ? true : undefined;
  }, 20_000);
  t.pass('the replicas agree on the refused writes');
  // The endpoint registry is intact on both replicas after the outage.
  for (const cp of [a, b]) {
    const st = (await (await apiRequest(`${cp.api}/v1/status`)).body.json()) as { sidecars: { id: string; connected: boolean }[] };
    t.same(st.sidecars.map((s) => `${s.id}:${s.connected}`).sort(), ['client-0:true', 'echo-0:true']);
  }
});
