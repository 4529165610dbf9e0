/**
 * One store contract, two implementations: the embedded file store and the etcd store (on a real
 * 3-member etcd cluster). Then what only a shared store does: two replicas on one etcd, a
 * conditional-update race between them, and etcd losing quorum.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FileStore, StoreError, type Store, type WireResource, type ChangeEvent } from '../../../control-plane/store';
import { EtcdStore, connectEtcd } from '../../../control-plane/store-etcd';
import { startEtcdCluster, type EtcdCluster } from '../lib/etcd';

const route = (name: string, host = `${name}.example`): WireResource => ({
  apiVersion: 'meshlet.dev/v1',
  kind: 'Route',
  metadata: { name },
  spec: { hosts: [host], rules: [{ name: 'rule-0', matches: [], backends: [{ service: 'web', weight: 1 }] }] },
});

const code = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e) => (e instanceof StoreError ? e.code : `unexpected: ${e}`),
  );

const until = async (what: string, check: () => boolean, ms = 10_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

type Open = (t: Test) => Promise<Store>;

function contract(name: string, open: Open): void {
  t.test(`${name}: the store contract`, async (t) => {
    t.test('create, read, update, delete with resourceVersions', async (t) => {
      const s = await open(t);
      const rev0 = s.revision;
      const c = await s.create(route('a'));
      t.equal(c.action, 'created');
      const rv1 = Number(c.resource.metadata.resourceVersion);
      t.ok(rv1 > rev0, 'the resourceVersion is a new revision');
      t.equal(s.revision, rv1, 'the store revision is the commit revision');
      t.same(s.get('Route', 'a')?.spec, route('a').spec);
      t.ok(Object.isFrozen(s.get('Route', 'a')), 'reads are frozen');
      const created = c.resource.metadata.creationTimestamp;
      t.ok(created);

      t.equal(await code(s.create(route('a'))), 'conflict', 'create of an existing resource');
      t.equal(await code(s.update(route('nope'))), 'not_found', 'update of a missing resource');
      t.equal(await code(s.delete('Route', 'nope')), 'not_found', 'delete of a missing resource');
      t.equal(await code(s.put(route('a', 'b.example'), String(rv1 - 1))), 'conflict', 'a stale expectedVersion');
      t.equal(s.get('Route', 'a')?.metadata.resourceVersion, String(rv1), 'nothing written');

      const same = await s.put(route('a'));
      t.equal(same.action, 'unchanged', 'same content');
      t.equal(s.revision, rv1, 'no new revision');

      const u = await s.put(route('a', 'b.example'), String(rv1));
      t.equal(u.action, 'updated');
      const rv2 = Number(u.resource.metadata.resourceVersion);
      t.ok(rv2 > rv1);
      t.equal(u.resource.metadata.creationTimestamp, created, 'creationTimestamp kept');
      t.equal(await code(s.delete('Route', 'a', String(rv1))), 'conflict', 'conditional delete at a stale version');
      const d = await s.delete('Route', 'a', String(rv2));
      t.equal(d.action, 'deleted');
      t.equal(s.get('Route', 'a'), undefined);
      t.same(s.list('Route'), []);
    });

    t.test('a multi-resource commit is one revision, all or nothing', async (t) => {
      const s = await open(t);
      const events: ChangeEvent[] = [];
      s.onChange((e) => events.push(e));
      const r = await s.commit(() => [
        { op: 'put', resource: route('x') },
        { op: 'put', resource: route('y') },
        { op: 'create', resource: route('z') },
      ]);
      t.same(new Set(r.results.map((x) => x.resource.metadata.resourceVersion)), new Set([String(r.revision)]), 'one revision');
      t.same(s.list('Route').map((x) => x.metadata.name), ['x', 'y', 'z']);
      await until('the change event', () => events.some((e) => e.revision === r.revision));
      const ev = events.find((e) => e.revision === r.revision)!;
      t.same(ev.changes.map((c) => `${c.action} ${c.name}`).sort(), ['created x', 'created y', 'created z']);

      const before = s.revision;
      t.equal(
        await code(s.commit(() => [{ op: 'put', resource: route('x', 'new.example') }, { op: 'create', resource: route('y') }])),
        'conflict',
        'the second op fails',
      );
      t.equal(s.get('Route', 'x')?.spec && (s.get('Route', 'x')!.spec as { hosts: string[] }).hosts[0], 'x.example', 'the first op is not applied');
      t.equal(s.revision, before);
      t.equal(
        await code(
          s.commit(() => {
            throw new StoreError('invalid', 'plan refused');
          }),
        ),
        'invalid',
        'a plan may abort',
      );
      t.equal(s.revision, before);
      t.equal(await code(s.put({ ...route('bad'), kind: 'Nope' as never })), 'invalid', 'unknown kind');
    });

    t.test('any name the store accepts: 253 characters, percent-encoded to three times that, a temp-file look-alike', async (t) => {
      const s = await open(t);
      const names = ['a'.repeat(253), '%'.repeat(253), 'é'.repeat(253), 'a b?c#d&e'.repeat(28), 'r.tmp-1-deadbeef'];
      for (const n of names) {
        t.equal((await s.put(route(n))).action, 'created', `${n.slice(0, 12)}... (${n.length}): created`);
        t.equal(s.get('Route', n)?.metadata.name, n, 'read back');
      }
      t.same(s.list('Route').map((r) => r.metadata.name), [...names].sort(), 'listed');
      for (const n of names) t.equal((await s.delete('Route', n)).action, 'deleted');
      t.same(s.list('Route'), []);
    });

    t.test('the plan sees earlier ops of the same commit', async (t) => {
      const s = await open(t);
      const r = await s.commit(() => [
        { op: 'create', resource: route('p') },
        { op: 'update', resource: route('p', 'q.example') },
      ]);
      t.equal(r.results[1]?.action, 'updated');
      t.equal((s.get('Route', 'p')!.spec as { hosts: string[] }).hosts[0], 'q.example');
    });
  });
}

contract('file', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-store-'));
  const s = await FileStore.open(dir);
  t.teardown(async () => {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return s;
});

let cluster: EtcdCluster | undefined;
let prefixes = 0;
const etcdCluster = async (): Promise<EtcdCluster> => (cluster ??= await startEtcdCluster(t));

async function openEtcd(t: Test, prefix: string): Promise<EtcdStore> {
  const c = await etcdCluster();
  const client = connectEtcd({ endpoints: c.members.map((m) => m.endpoint), requestTimeoutMs: 2000 });
  const s = await EtcdStore.open(client, { prefix });
  t.teardown(async () => {
    await s.close();
    client.close();
  });
  return s;
}

contract('etcd', (t) => openEtcd(t, `/test-${process.pid}-${++prefixes}/`));

t.test('etcd: two replicas share one store', async (t) => {
  const prefix = `/test-${process.pid}-shared/`;
  const a = await openEtcd(t, prefix);
  const b = await openEtcd(t, prefix);
  const seenAtB: ChangeEvent[] = [];
  b.onChange((e) => seenAtB.push(e));

  const w = await a.put(route('shared'));
  const rv = w.resource.metadata.resourceVersion;
  await until('B sees the write', () => b.get('Route', 'shared')?.metadata.resourceVersion === rv);
  t.equal(b.revision, a.revision, 'the same revision on both');
  t.ok(seenAtB.some((e) => e.changes.some((c) => c.name === 'shared' && c.action === 'created')), 'B emitted the change');

  // Both replicas update at the same version at once: exactly one wins.
  for (let round = 0; round < 5; round++) {
    const cur = a.get('Route', 'shared')!.metadata.resourceVersion!;
    await until('B caught up', () => b.get('Route', 'shared')?.metadata.resourceVersion === cur);
    const outcomes = await Promise.all([
      code(a.put(route('shared', `a-${round}.example`), cur)),
      code(b.put(route('shared', `b-${round}.example`), cur)),
    ]);
    t.same(outcomes.sort(), ['conflict', 'ok'], `round ${round}: one wins, the other gets a conflict`);
  }

  // A multi-resource commit from B reaches A as one event.
  const seenAtA: ChangeEvent[] = [];
  a.onChange((e) => seenAtA.push(e));
  const r = await b.commit(() => [{ op: 'put', resource: route('m1') }, { op: 'put', resource: route('m2') }]);
  await until('A sees the commit', () => seenAtA.some((e) => e.revision === r.revision));
  t.same(seenAtA.find((e) => e.revision === r.revision)!.changes.map((c) => c.name).sort(), ['m1', 'm2']);
});

t.test('etcd: without quorum, writes are refused as unavailable, reads still served; then it recovers', async (t) => {
  const c = await etcdCluster();
  const prefix = `/test-${process.pid}-quorum/`;
  const a = await openEtcd(t, prefix);
  const b = await openEtcd(t, prefix);
  await a.put(route('before'));
  await until('B sees it', () => b.get('Route', 'before') !== undefined);
  const others = [0, 1, 2].filter((i) => i !== 0);
  for (const i of others) await c.stop(i);
  const started = Date.now();
  t.equal(await code(a.put(route('during'))), 'unavailable', 'a write without quorum');
  t.ok(Date.now() - started < 15_000, 'answered within the request deadline');
  t.ok(a.get('Route', 'before'), 'reads from the cache');
  t.ok(b.get('Route', 'before'));
  for (const i of others) await c.start(i);
  // Writes come back once there is a quorum again.
  const deadline = Date.now() + 30_000;
  let result = 'unavailable';
  while (result !== 'ok' && Date.now() < deadline) {
    result = await code(a.put(route('after')));
    if (result !== 'ok') await new Promise((r) => setTimeout(r, 250));
  }
  t.equal(result, 'ok', 'writes work again');
  await until('B resynced', () => b.get('Route', 'after') !== undefined, 20_000);
  // A write refused for want of quorum was not acknowledged, which is not the same as undone: etcd
  // may still commit it when the quorum is back (as with any etcd client's timed-out request; the
  // 503 says so). What must hold: the replicas agree, and if it landed it is exactly what was sent.
  await until('A and B agree on the refused write', () => JSON.stringify(a.get('Route', 'during')) === JSON.stringify(b.get('Route', 'during')), 20_000);
  const during = b.get('Route', 'during');
  if (during) t.same((during.spec as { hosts: string[] }).hosts, ['during.example'], 'the refused write landed later, whole');
  else t.pass('the refused write did not land');
});
