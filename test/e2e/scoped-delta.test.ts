/**
 * Pushes that scale (docs/scale.md), against a real `meshlet control-plane` and sidecars on the
 * real push protocol: scoped snapshots (Service.spec.dependencies), deltas (only what changed, in
 * bytes on the wire), resync after a NACKed delta or a version gap, the push-side size guard
 * (`meshlet status` says why a sidecar got nothing), and a real `meshlet sidecar` routing on
 * deltas.
 */
import * as fs from 'node:fs';
import t from 'tap';
import { encodeSnapshotMessage, type SnapshotMessage } from '../../src/proto';
import { FakeSidecar } from '../integration/lib/fake-sidecar';
import { apiFetch, cli, cliAsync, eventually, portOf, start, startControlPlane, startSidecar, tmpDir } from '../integration/lib/meshlet';

const M = 'meshlet.dev/v1';
const route = (name: string, hosts: string[], backends: { service: string; weight?: number }[], tag = 'a') => ({
  apiVersion: M,
  kind: 'Route',
  metadata: { name, labels: { tag } },
  spec: { hosts, rules: [{ name: 'default', backends }] },
});
const dp = (service: string) => ({ apiVersion: M, kind: 'DestinationPolicy', metadata: { name: service }, spec: { service, loadBalancer: { type: 'least-request' } } });
const svc = (name: string, dependencies: string[]) => ({ apiVersion: M, kind: 'Service', metadata: { name }, spec: { dependencies } });

async function apply(api: string, items: unknown[]): Promise<void> {
  const r = await apiFetch(`${api}/v1/apply`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ items }) });
  if (r.status !== 200) throw new Error(`apply: ${r.status} ${await r.text()}`);
}

async function del(api: string, p: string): Promise<void> {
  const r = await apiFetch(`${api}${p}`, { method: 'DELETE' });
  if (r.status !== 200) throw new Error(`DELETE ${p}: ${r.status}`);
}

/** The mesh version once `n` sidecars are known, else undefined. */
async function versionWith(api: string, n: number): Promise<string | undefined> {
  const st = (await (await apiFetch(`${api}/v1/status`)).json()) as { version: string; sidecars: unknown[] };
  return st.sidecars.length === n ? st.version : undefined;
}

async function meshVersion(api: string): Promise<string> {
  return ((await (await apiFetch(`${api}/v1/status`)).json()) as { version: string }).version;
}

interface StatusRow {
  id: string;
  ackedVersion?: string;
  expectedVersion: string;
}

/** One sidecar as /v1/status shows it. */
async function statusOf(api: string, id: string): Promise<StatusRow> {
  const st = (await (await apiFetch(`${api}/v1/status`)).json()) as { sidecars: StatusRow[] };
  const s = st.sidecars.find((x) => x.id === id);
  if (!s) throw new Error(`${id} not in /v1/status`);
  return s;
}

/** The version a sidecar should run (its view's), as /v1/status says. */
async function expectedOf(api: string, id: string): Promise<string> {
  return (await statusOf(api, id)).expectedVersion;
}

/** Every message until one of `version`, each ACKed; returns them all. */
async function until(sc: FakeSidecar, version: string): Promise<SnapshotMessage[]> {
  const got: SnapshotMessage[] = [];
  for (;;) {
    const m = await sc.next();
    got.push(m);
    sc.ack(m);
    if (m.version === version) return got;
  }
}

/** The services a message carries endpoints of (complete or delta). */
function servicesIn(m: SnapshotMessage): string[] {
  if (m.baseVersion) return m.endpointsByServiceJson ? Object.keys(JSON.parse(m.endpointsByServiceJson) as object) : [];
  return [...new Set((JSON.parse(m.endpointsJson) as { service: string }[]).map((e) => e.service))];
}
function resourcesIn(m: SnapshotMessage): string[] {
  const list = m.baseVersion ? (m.resources ?? []).map((j) => JSON.parse(j) as { kind: string; metadata: { name: string } }) : (JSON.parse(m.resourcesJson) as { kind: string; metadata: { name: string } }[]);
  return list.map((r) => `${r.kind}/${r.metadata.name}`).sort();
}
/** Bytes on the wire (the protobuf encoding the control plane wrote). */
const wireBytes = (m: SnapshotMessage) => encodeSnapshotMessage(m).length;

t.test('a scoped sidecar gets only what it calls; a Route to another service brings its endpoints, as a delta', async (t) => {
  const cp = await startControlPlane(tmpDir());
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  await apply(cp.api, [svc('frontend', ['catalog']), dp('catalog'), dp('pricing'), route('catalog', ['catalog'], [{ service: 'catalog' }])]);
  const others = [new FakeSidecar(push, { id: 'catalog-0', service: 'catalog', address: '10.0.0.1' }), new FakeSidecar(push, { id: 'pricing-0', service: 'pricing', address: '10.0.0.2' })];
  t.teardown(() => others.forEach((o) => o.close()));
  await eventually('both registered', () => versionWith(cp.api, 2));
  const fe = new FakeSidecar(push, { id: 'frontend-0', service: 'frontend', address: '10.0.0.3', acceptsDelta: true });
  t.teardown(() => fe.close());
  const v3 = await eventually('frontend in the mesh', () => versionWith(cp.api, 3));
  const fev1 = await expectedOf(cp.api, 'frontend-0');
  t.not(fev1, v3, "a scoped sidecar's version is its view's, not the mesh's");
  const seen = await until(fe, fev1);
  t.equal(seen[0]!.baseVersion, '', 'the first message is a complete snapshot');
  t.same(resourcesIn(seen[0]!), ['DestinationPolicy/catalog', 'Route/catalog', 'Service/frontend'], 'only the route and policy of what it calls, and its own Service');
  await eventually('frontend-0 ACKed', async () => ((await statusOf(cp.api, 'frontend-0')).ackedVersion === fev1 ? true : undefined));
  // A second pricing sidecar joins: the mesh changes, frontend's view does not: it is sent nothing.
  const p2 = new FakeSidecar(push, { id: 'pricing-1', service: 'pricing', address: '10.0.0.4' });
  t.teardown(() => p2.close());
  const v4 = await eventually('pricing-1 in the mesh', () => versionWith(cp.api, 4));
  t.not(v4, v3, 'the mesh version moved');
  await t.rejects(fe.next(800), /no snapshot/, 'a change outside its scope sends it nothing');
  for (const m of seen) t.notOk(servicesIn(m).includes('pricing'), `version ${m.version}: no pricing endpoints`);
  // Status, the rollout API and describe still say it runs the policy in force for it.
  const row = await statusOf(cp.api, 'frontend-0');
  t.same([row.ackedVersion, row.expectedVersion], [fev1, fev1], '/v1/status: it ACKed the version of its view');
  t.notMatch((await cliAsync(['status'], { server: cp.api })).stdout, /frontend-0.*stale/, 'meshlet status does not call it stale');
  const rollout = (await (await apiFetch(`${cp.api}/v1/rollout`)).json()) as { version: string; summary: { acked: number; pending: number }; sidecars: { id: string; state: string; expectedVersion: string }[] };
  t.equal(rollout.version, v4);
  t.match(rollout.sidecars.find((s) => s.id === 'frontend-0'), { state: 'acked', expectedVersion: fev1 }, '/v1/rollout: acked');
  // (The three other fake sidecars never ACK: they are the ones not yet current.)
  t.match((await cliAsync(['describe', 'route', 'catalog'], { server: cp.api })).stdout, /1\/4 connected sidecars ACKed[^]*not yet: catalog-0, pricing-0, pricing-1\n/, 'meshlet describe counts it as current');

  // A Route that sends some of frontend's calls to catalog on to pricing: now it needs pricing.
  await apply(cp.api, [route('catalog', ['catalog'], [{ service: 'catalog', weight: 9 }, { service: 'pricing', weight: 1 }], 'b')]);
  const fev2 = await expectedOf(cp.api, 'frontend-0');
  t.not(fev2, fev1, 'a change in its scope moves its version');
  const pending = (await (await apiFetch(`${cp.api}/v1/rollout`)).json()) as { sidecars: { id: string; state: string }[] };
  t.equal(pending.sidecars.find((s) => s.id === 'frontend-0')?.state, 'pending', 'rollout: pending until it ACKs');
  const got = await until(fe, fev2);
  t.equal(got.length, 1, 'one message for one change');
  const d = got[got.length - 1]!;
  t.ok(d.baseVersion, 'a delta');
  t.same(resourcesIn(d), ['DestinationPolicy/pricing', 'Route/catalog'], 'the changed Route and the policy it now needs');
  t.same(servicesIn(d), ['pricing'], "pricing's endpoints, and no other endpoint set");
  t.equal((JSON.parse(d.endpointsByServiceJson!) as { pricing: unknown[] }).pricing.length, 2, 'both pricing endpoints');
});

t.test('a delta carries only the changed resource (bytes on the wire); an old sidecar still gets complete snapshots', async (t) => {
  const cp = await startControlPlane(tmpDir());
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  await apply(cp.api, Array.from({ length: 30 }, (_, i) => route(`r${i}`, [`r${i}`], [{ service: `s${i}` }])));
  const neu = new FakeSidecar(push, { id: 'new-0', service: 'web', acceptsDelta: true });
  const old = new FakeSidecar(push, { id: 'old-0', service: 'web', address: '10.255.0.8' });
  t.teardown(() => [neu, old].forEach((s) => s.close()));
  const v1 = await eventually('both in', () => versionWith(cp.api, 2));
  const first = (await until(neu, v1))[0]!;
  await until(old, v1);
  await apply(cp.api, [route('r7', ['r7'], [{ service: 's7' }], 'changed')]);
  const v2 = await meshVersion(cp.api);
  const d = (await until(neu, v2)).pop()!;
  const full = (await until(old, v2)).pop()!;
  t.same(resourcesIn(d), ['Route/r7'], 'the delta carries the one changed Route');
  t.same([d.removed, servicesIn(d)], [[], []], 'nothing removed, no endpoints');
  t.equal(full.baseVersion, '', 'the sidecar that did not announce deltas gets a complete snapshot');
  t.equal(resourcesIn(full).length, 30);
  t.ok(wireBytes(d) * 10 < wireBytes(full), `delta ${wireBytes(d)} bytes vs complete ${wireBytes(full)} bytes (first: ${wireBytes(first)})`);
  await del(cp.api, '/v1/routes/r3');
  const rm = (await until(neu, await meshVersion(cp.api))).pop()!;
  t.same([resourcesIn(rm), rm.removed], [[], ['Route/r3']], 'a deletion is a name');
  const metrics = await (await apiFetch(`${cp.api}/metrics`)).text();
  t.match(metrics, /meshlet_push_messages_total\{type="delta"\} [1-9]/, 'deltas counted');
  t.match(metrics, /meshlet_push_encodes_total [1-9]/, 'encodes counted');
});

t.test('a NACKed delta or a version gap is answered with a complete snapshot; a NACKed complete one waits', async (t) => {
  const cp = await startControlPlane(tmpDir());
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  await apply(cp.api, [route('a', ['a'], [{ service: 'a' }])]);
  const sc = new FakeSidecar(push, { id: 'sc-0', service: 'web', acceptsDelta: true });
  t.teardown(() => sc.close());
  await until(sc, await eventually('in', () => versionWith(cp.api, 1)));
  // A delta it cannot apply (as a sidecar that missed one would say): NACK -> complete, same version.
  await apply(cp.api, [route('b', ['b'], [{ service: 'b' }])]);
  const d = await sc.next();
  t.ok(d.baseVersion, 'a delta');
  sc.nack(d, `base_version: version gap: this delta applies to ${d.baseVersion}, the last good snapshot here is 000000000000`);
  const resync = await sc.next();
  t.equal(resync.baseVersion, '', 'a complete snapshot follows');
  t.equal(resync.version, d.version, 'of the same version');
  t.not(resync.nonce, d.nonce);
  t.same(resourcesIn(resync), ['Route/a', 'Route/b']);
  // A complete snapshot NACKed (it does not compile there): nothing more until the next change.
  sc.nack(resync, 'Route/b: spec: does not compile here');
  const status = await eventually('the NACK in status', async () => {
    const out = cli(['status'], { server: cp.api }).stdout;
    return /does not compile here/.test(out) ? out : undefined;
  });
  t.match(status, /sc-0.*NACK .*does not compile here/, 'meshlet status shows the NACK');
  await t.rejects(sc.next(800), /no snapshot/, 'no resend loop');
  await apply(cp.api, [route('c', ['c'], [{ service: 'c' }])]);
  const after = await sc.next();
  t.equal(after.baseVersion, '', 'after a NACKed complete snapshot, the next change is complete too');
  sc.ack(after);
  await apply(cp.api, [route('d', ['d'], [{ service: 'd' }])]);
  const back = await sc.next();
  t.ok(back.baseVersion, 'once a complete snapshot is ACKed, deltas again');
  t.same(resourcesIn(back), ['Route/d']);
});

t.test('the size guard: nothing over the limit is sent, deltas still fit, and meshlet status says why', async (t) => {
  const dir = tmpDir();
  const cp = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0'], { MESHLET_MAX_PUSH_BYTES: '3000' });
  t.teardown(async () => {
    await cp.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const l = await cp.waitFor((x) => x.msg === 'control plane started');
  const api = String(l.api);
  const push = `127.0.0.1:${portOf(l.push)}`;
  const early = new FakeSidecar(push, { id: 'early', service: 'web', acceptsDelta: true });
  t.teardown(() => early.close());
  await until(early, await eventually('in', () => versionWith(api, 1)));
  // Grow the mesh one Route at a time well past the limit: each delta is small and fits.
  for (let i = 0; i < 20; i++) {
    await apply(api, [route(`route-number-${i}`, [`host-number-${i}.example.com`], [{ service: `backend-${i}` }])]);
    const v = await meshVersion(api);
    const got = await until(early, v);
    t.ok(got.every((m) => m.baseVersion && wireBytes(m) <= 3000), `change ${i}: deltas under the limit`);
  }
  // A sidecar connecting now would need it complete: too large, never written; status says why.
  const late = new FakeSidecar(push, { id: 'late', service: 'web', address: '10.255.0.9', acceptsDelta: true });
  t.teardown(() => late.close());
  const status = await eventually('status names the reason', async () => {
    const out = cli(['status'], { server: api }).stdout;
    return /late.*not sent.*over the 3000-byte push message limit/.test(out) ? out : undefined;
  });
  t.match(status, /late .*NACK/);
  await t.rejects(late.next(500), /no snapshot/, 'nothing was written to it');
  // The stream survived: once the mesh fits again, it gets it.
  for (let i = 0; i < 16; i++) await del(api, `/v1/routes/route-number-${i}`);
  const v = await meshVersion(api);
  const got = await until(late, v);
  t.equal(got[0]!.baseVersion, '', 'the first message it gets is a complete snapshot, once one fits');
  t.ok(got.every((m) => wireBytes(m) <= 3000), 'every message under the limit');
  await eventually('status shows the ACK', async () => (/late .*ACK/.test(cli(['status'], { server: api }).stdout) ? true : undefined));
  const metrics = await (await apiFetch(`${api}/metrics`)).text();
  t.match(metrics, /meshlet_push_refused_total [1-9]/, 'refusals counted');
});

t.test('a real sidecar with dependencies routes on deltas', async (t) => {
  const cp = await startControlPlane(tmpDir());
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  await apply(cp.api, [svc('frontend', ['catalog'])]);
  const sc = await startSidecar(['--service', 'frontend', '--id', 'fe-0', '--control-plane', push, '--advertise', '127.0.0.1']);
  t.teardown(() => sc.stop());
  const other = new FakeSidecar(push, { id: 'catalog-0', service: 'catalog', address: '127.0.0.9' });
  t.teardown(() => other.close());
  for (let i = 0; i < 3; i++) await apply(cp.api, [route('catalog', ['catalog'], [{ service: 'catalog' }], `t${i}`)]);
  const v = await expectedOf(cp.api, 'fe-0');
  await eventually('the real sidecar ACKs the latest version', async () => {
    const st = (await (await apiFetch(`${cp.api}/v1/status`)).json()) as { sidecars: { id: string; ackedVersion?: string }[] };
    return st.sidecars.find((s) => s.id === 'fe-0')?.ackedVersion === v ? true : undefined;
  });
  const text = await (await fetch(`http://127.0.0.1:${sc.admin}/config_dump`)).text();
  t.match(text, /"t2"/, 'the sidecar runs the Route from the last delta');
  const metrics = await (await apiFetch(`${cp.api}/metrics`)).text();
  t.match(metrics, /meshlet_push_messages_total\{type="delta"\} [1-9]/, 'it was sent deltas');
});

t.test('a delta over the limit: the complete snapshot instead when that fits; else nothing, and status says why', async (t) => {
  const dir = tmpDir();
  const cp = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0'], { MESHLET_MAX_PUSH_BYTES: '4000' });
  t.teardown(async () => {
    await cp.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const l = await cp.waitFor((x) => x.msg === 'control plane started');
  const api = String(l.api);
  const push = `127.0.0.1:${portOf(l.push)}`;
  // frontend calls the hosts under *.a.test: six Routes, with long names (about 1,150 bytes of names).
  const long = (i: number) => `a-${'x'.repeat(180)}-${i}`;
  await apply(api, [svc('frontend', ['*.a.test']), ...Array.from({ length: 6 }, (_, i) => route(long(i), [`h${i}.a.test`], [{ service: 'a' }]))]);
  const fe = new FakeSidecar(push, { id: 'fe-0', service: 'frontend', acceptsDelta: true });
  t.teardown(() => fe.close());
  await eventually('fe-0 in', () => versionWith(api, 1));
  const first = (await until(fe, await expectedOf(api, 'fe-0')))[0]!;
  t.ok(first.baseVersion === '' && wireBytes(first) <= 4000, `the first complete snapshot fits (${wireBytes(first)} bytes)`);

  // frontend now calls `b` instead, whose one Route is large: the delta names the seven removed
  // Routes besides carrying the new one, and is over the limit; the complete snapshot is not.
  const hosts = ['b', ...Array.from({ length: 99 }, (_, i) => `b-alias-${i}.example.com`)];
  await apply(api, [svc('frontend', ['b']), route('b', hosts, [{ service: 'b' }])]);
  const v2 = await expectedOf(api, 'fe-0');
  const got = await until(fe, v2);
  t.equal(got.length, 1, 'one message');
  t.equal(got[0]!.baseVersion, '', 'a complete snapshot instead of the oversized delta');
  t.ok(wireBytes(got[0]!) <= 4000, `under the limit (${wireBytes(got[0]!)} bytes)`);
  const refused = Number(/meshlet_push_refused_total (\d+)/.exec(await (await apiFetch(`${api}/metrics`)).text())?.[1] ?? 'NaN');
  t.equal(refused, 0, 'nothing refused');
  t.same(resourcesIn(got[0]!), ['Route/b', 'Service/frontend'], 'of the new view');
  await eventually('status shows the ACK', async () => ((await statusOf(api, 'fe-0')).ackedVersion === v2 ? true : undefined));

  // One change neither a delta nor a complete snapshot can carry: nothing is sent; status says why.
  const huge = Array.from({ length: 99 }, (_, i) => `b-huge-alias-number-${i}.subdomain.example.com`);
  await apply(api, [route('b', huge.concat('b'), [{ service: 'b' }], 'huge')]);
  const v3 = await expectedOf(api, 'fe-0');
  const status = await eventually('status names the reason', async () => {
    const out = (await cliAsync(['status'], { server: api })).stdout;
    return /fe-0.*not sent: the delta is \d+ bytes \(the complete snapshot \d+\), over the 4000-byte push message limit/.test(out) ? out : undefined;
  });
  t.match(status, new RegExp(`fe-0 .*NACK ${v3}`), `NACK ${v3} in meshlet status`);
  const rollout = (await (await apiFetch(`${api}/v1/rollout`)).json()) as { sidecars: { id: string; state: string }[] };
  t.equal(rollout.sidecars.find((s) => s.id === 'fe-0')?.state, 'nacked', '/v1/rollout: nacked');
  await t.rejects(fe.next(500), /no snapshot/, 'nothing was written to it');
  // The stream survived: the next change that fits arrives, complete (what the sidecar has is v2).
  await apply(api, [route('b', ['b'], [{ service: 'b' }], 'small')]);
  const v4 = await expectedOf(api, 'fe-0');
  const back = await until(fe, v4);
  t.same([back.length, back[0]!.baseVersion], [1, ''], 'a complete snapshot');
  t.same(resourcesIn(back[0]!), ['Route/b', 'Service/frontend']);
  await eventually('status shows the ACK', async () => ((await statusOf(api, 'fe-0')).ackedVersion === v4 ? true : undefined));
});
