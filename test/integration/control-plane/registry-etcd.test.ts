/**
 * The endpoint registry on etcd, in process, against a real 3-member cluster: what one replica
 * registers, every replica sees; a sidecar taken over by another replica is not removed by the
 * first; a replica that dies loses its sidecars after the grace period (its lease); stale
 * registrations are collected by the elected replica only.
 */
import t, { type Test } from 'tap';
import type { Etcd3 } from 'etcd3';
import { connectEtcd } from '../../../control-plane/store-etcd';
import { EtcdRegistry } from '../../../control-plane/registry-etcd';
import type { SidecarIdentity } from '../../../control-plane/registry';
import { startEtcdCluster, type EtcdCluster } from '../lib/etcd';

const GRACE = 2000;
let cluster: EtcdCluster | undefined;
let n = 0;

const until = async (what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

const sidecar = (id: string, port: number): SidecarIdentity => ({ id, service: 'web', address: '127.0.0.1', port, labels: {}, buildVersion: 'test' });

/**
 * The registries' own clients, closed when the file ends, before the cluster stops. Not in each
 * test's teardown: a replica still waiting in the election watches the leader's key, and etcd3
 * retries a watch of a closed client forever (a ref'd timer: the file never ended). Closed
 * registries' clients are closed once every registry of the file is closed and the leaders' key
 * deletions have reached the waiting ones.
 */
const clients: Etcd3[] = [];

async function setup(st: Test): Promise<{ client: Etcd3; prefix: string; open(replica: string): Promise<EtcdRegistry> }> {
  // One cluster for the whole file, stopped when it ends.
  if (!cluster) {
    cluster = await startEtcdCluster(t);
    // Registered after the cluster's teardown, so it runs before it (teardowns run last first).
    t.teardown(async () => {
      await new Promise((r) => setTimeout(r, 500));
      for (const c of clients) c.close();
    });
  }
  const c = cluster;
  const prefix = `/reg-${process.pid}-${++n}/`;
  const client = connectEtcd({ endpoints: c.members.map((m) => m.endpoint) });
  st.teardown(() => client.close());
  return {
    client,
    prefix,
    async open(replica) {
      const own = connectEtcd({ endpoints: c.members.map((m) => m.endpoint) });
      const r = await EtcdRegistry.open(own, { prefix, replica, graceMs: GRACE, syncDelayMs: 20 });
      clients.push(own);
      st.teardown(() => r.close());
      return r;
    },
  };
}

t.test('what one replica registers, every replica sees, with the replica it is on', async (t) => {
  const { open } = await setup(t);
  const a = await open('a');
  const b = await open('b');
  let changes = 0;
  b.onChange(() => changes++);
  const s = a.connect(sidecar('web-0', 8080));
  await until('B sees web-0', () => b.endpoints().some((e) => e.id === 'web-0'));
  t.ok(changes > 0, 'B emitted a change');
  t.match(b.get('web-0'), { connected: true, replica: 'a', service: 'web', port: 8080 });
  a.recordSent('web-0', 'v1');
  a.recordAck('web-0', 'v1');
  await until('B sees the ACK', () => b.get('web-0')?.ackedVersion === 'v1');
  t.equal(b.connectedCount(), 1);
  s.leave();
  await until('B sees it leave', () => b.get('web-0') === undefined);
  t.same(b.endpoints(), []);
});

t.test('a sidecar that moves to another replica is not removed by the first', async (t) => {
  const { open } = await setup(t);
  const a = await open('a');
  const b = await open('b');
  const sa = a.connect(sidecar('web-1', 8081));
  await until('B sees web-1 on a', () => b.get('web-1')?.replica === 'a');
  sa.disconnect();
  b.connect(sidecar('web-1', 8081));
  await until('A sees web-1 on b', () => a.get('web-1')?.replica === 'b' && a.get('web-1')?.connected === true);
  // A's grace period for its (now closed) stream ends: it must not delete B's registration.
  await new Promise((r) => setTimeout(r, GRACE + 1000));
  t.match(a.get('web-1'), { connected: true, replica: 'b' });
  t.match(b.get('web-1'), { connected: true, replica: 'b' });
  t.equal(a.endpoints().length, 1);
});

t.test("a replica that dies: its sidecars' endpoints expire with its lease", async (t) => {
  const { open } = await setup(t);
  const a = await open('a');
  const b = await open('b');
  a.connect(sidecar('web-2', 8082));
  await until('B sees web-2', () => b.get('web-2') !== undefined);
  const diedAt = Date.now();
  // close() does not revoke the lease (a dying replica cannot either): the keys outlive it by the TTL.
  await a.close();
  t.ok(b.get('web-2'), 'still there right after');
  await until('web-2 expired at B', () => b.get('web-2') === undefined, 15_000);
  const after = Date.now() - diedAt;
  t.ok(after >= GRACE - 500, `not before the grace period (${after} ms)`);
});

t.test('stale registrations are collected by the elected replica', async (t) => {
  const { client, prefix, open } = await setup(t);
  const a = await open('a');
  const b = await open('b');
  // A registration whose grace period ended long ago, on no lease (its replica lost etcd when it should have deleted it).
  const stale = { ...sidecar('web-3', 8083), connected: false, replica: 'gone', disconnectedAt: new Date(Date.now() - 60_000).toISOString(), expiresAt: new Date(Date.now() - 50_000).toISOString() };
  await client.put(`${prefix}sidecars/web-3`).value(JSON.stringify(stale));
  await until('both see it', () => a.get('web-3') !== undefined && b.get('web-3') !== undefined);
  await until('it is collected', () => a.get('web-3') === undefined && b.get('web-3') === undefined, 15_000);
  t.equal(await client.get(`${prefix}sidecars/web-3`).string(), null, 'gone from etcd');
  const leaders = await client.election(`${prefix}election/gc`).leader().catch(() => undefined);
  t.ok(leaders === 'a' || leaders === 'b', `one elected replica (${leaders})`);
});

t.test("endpoints keep their arrays until a service's set changes (the push path serialises an array once)", async (t) => {
  const { open } = await setup(t);
  const a = await open('a');
  const b = await open('b');
  const api = (id: string, port: number): SidecarIdentity => ({ ...sidecar(id, port), service: 'api' });
  a.connect(sidecar('web-10', 8090));
  a.connect(sidecar('web-11', 8091));
  b.connect(api('api-10', 9090));
  for (const r of [a, b]) await until(`${r.replica} sees all three`, () => r.endpoints().length === 3);

  for (const r of [a, b]) {
    const flat = r.endpoints();
    const byService = r.endpointsByService();
    t.equal(r.endpoints(), flat, `${r.replica}: the same array on the next call`);
    t.equal(r.endpointsByService(), byService, `${r.replica}: the same map on the next call`);
    t.same([...byService.keys()], ['api', 'web'], 'services in name order');
    t.same(flat, [...byService.values()].flat(), 'the flat list is the services, one after the other');
  }
  const flatA = a.endpoints();
  const flatB = b.endpoints();
  const webAtB = b.endpointsByService().get('web');
  const apiAtB = b.endpointsByService().get('api');
  const webAtA = a.endpointsByService().get('web');
  let changesAtB = 0;
  b.onChange(() => changesAtB++);

  // Push status (sent, ACK, NACK) is written to etcd and watched by B: not an endpoint change.
  a.recordSent('web-10', 'v1');
  a.recordAck('web-10', 'v1');
  a.recordNack('web-11', 'v1', 'bad');
  await until('B sees the ACK and the NACK', () => b.get('web-10')?.ackedVersion === 'v1' && b.get('web-11')?.nackVersion === 'v1');
  t.equal(b.endpoints(), flatB, 'B: the same array after watched status writes');
  t.equal(a.endpoints(), flatA, 'A: the same array after its own status writes');
  t.equal(changesAtB, 0, 'B emitted no change for them');

  // One more api sidecar, on A: B's api array is new, its web array the same.
  a.connect(api('api-11', 9091));
  await until('B sees api-11', () => b.endpoints().some((e) => e.id === 'api-11'));
  t.not(b.endpoints(), flatB, 'a new flat array');
  t.equal(b.endpointsByService().get('web'), webAtB, 'web: the same array (its set did not change)');
  t.not(b.endpointsByService().get('api'), apiAtB, 'api: a new array');
  t.same(b.endpointsByService().get('api')?.map((e) => e.id), ['api-10', 'api-11']);
  t.ok(changesAtB >= 1, 'B emitted a change');
  t.not(a.endpoints(), flatA, 'A: a new flat array too');
  t.equal(a.endpointsByService().get('web'), webAtA, 'A: web kept');
});
