/**
 * Scoping and deltas, in process: which resources and endpoint sets a scoped view carries, that a
 * delta applied to the sidecar's last good snapshot (applyDelta, as the subscriber does) gives
 * exactly the next view's complete snapshot, that a gap is refused, and that each distinct
 * message is encoded once.
 */
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { applyDelta, decodeSnapshot, loadMeshletProto, type SnapshotMessage } from '../../../src/proto';
import { hostMatches, PushViews, serviceOfHost, WHOLE_MESH } from '../../../control-plane/push-views';
import type { BuiltSnapshot } from '../../../control-plane/snapshot-builder';
import type { Endpoint } from '../../../src/policy/types';
import { KINDS } from '../../../src/policy/constants';
import type { WireResource } from '../../../control-plane/store';

const M = 'meshlet.dev/v1';
const route = (name: string, hosts: string[], backends: string[], tag = 'a'): WireResource => ({ apiVersion: M, kind: 'Route', metadata: { name, labels: { tag } }, spec: { hosts, rules: [{ backends: backends.map((service) => ({ service })) }] } });
const dp = (service: string): WireResource => ({ apiVersion: M, kind: 'DestinationPolicy', metadata: { name: service }, spec: { service } });
const svc = (name: string, dependencies: string[]): WireResource => ({ apiVersion: M, kind: 'Service', metadata: { name }, spec: { endpoints: [], dependencies } });
const ep = (service: string, n: number): Endpoint => ({ service, address: `10.0.0.${n}`, port: 15006, labels: {}, weight: 1, meshed: true, id: `${service}-${n}` });
let seq = 0;
/** As the store lists them: by kind (KINDS order), then name. */
const storeOrder = (l: WireResource[]) => [...l].sort((a, b) => KINDS.indexOf(a.kind) - KINDS.indexOf(b.kind) || (a.metadata.name < b.metadata.name ? -1 : 1));
const snap = (resources: WireResource[], endpoints: Endpoint[]): BuiltSnapshot => ({ version: `v${++seq}`, revision: seq, resources: storeOrder(resources), endpoints, builtAt: 0 });

const decode = (b: Buffer): SnapshotMessage => (loadMeshletProto().service.Stream as grpc.MethodDefinition<unknown, SnapshotMessage>).responseDeserialize(b);
const keys = (w: { resources: unknown[] }) => w.resources.map((r) => `${(r as WireResource).kind}/${(r as WireResource).metadata.name}`).sort();

t.test('host matching names services as the route table does', async (t) => {
  t.equal(serviceOfHost('catalog.shop.svc.cluster.local:8080'), 'catalog');
  t.ok(hostMatches('*', 'anything'));
  t.ok(hostMatches('catalog.shop', 'catalog'));
  t.ok(hostMatches('*.example.com', 'api.example.com'));
  t.ok(hostMatches('api.example.com', '*.example.com'));
  t.notOk(hostMatches('pricing', 'catalog'));
});

t.test('a scoped view, and deltas that rebuild the next one exactly', async (t) => {
  let n = 0;
  const views = new PushViews({ nonce: () => `n${++n}` });
  const base = [svc('frontend', ['catalog']), dp('catalog'), dp('pricing'), route('catalog', ['catalog'], ['catalog']), route('other', ['other.example.com'], ['other'])];
  const eps = [ep('catalog', 1), ep('pricing', 2), ep('frontend', 3), ep('other', 4)];
  const b1 = snap(base, eps);
  t.equal(views.scopeOf(b1, 'frontend'), 'frontend');
  t.equal(views.scopeOf(b1, 'pricing'), WHOLE_MESH, 'no dependencies: the whole mesh');
  const v1 = views.view(b1, 'frontend');
  t.same([...v1.resources.keys()].sort(), ['DestinationPolicy/catalog', 'Route/catalog', 'Service/frontend']);
  t.same([...v1.endpoints.keys()].sort(), ['catalog', 'frontend']);
  const full1 = decodeSnapshot(decode(views.full(v1).bytes));
  t.ok(full1.ok);
  if (!full1.ok) return;
  t.equal(views.full(v1), views.full(v1), 'encoded once');
  t.equal(views.view(b1, 'frontend'), v1, 'one view per snapshot and scope');

  // The catalog route now splits to pricing; a pricing endpoint joins; "other" goes.
  const b2 = snap([svc('frontend', ['catalog']), dp('catalog'), dp('pricing'), route('catalog', ['catalog'], ['catalog', 'pricing'], 'b')], [...eps, ep('pricing', 5)]);
  const v2 = views.view(b2, 'frontend');
  const d = decode(views.delta(v1, v2).bytes);
  t.equal(d.baseVersion, v1.version, 'a delta applies to the version of the view it was made from');
  t.not(v1.version, b1.version, "a scoped view's version is its own content's, not the mesh's");
  t.equal(views.view(b2, 'pricing').version, b2.version, 'the whole-mesh view carries the mesh version');
  // A change outside frontend's scope leaves its version as it was (its sidecars are sent nothing).
  const b1b = snap([...base, route('elsewhere', ['elsewhere'], ['elsewhere'])], [...eps, ep('elsewhere', 9)]);
  t.not(b1b.version, b1.version);
  t.equal(views.view(b1b, 'frontend').version, v1.version, 'same view, same version, whatever else changed');
  t.not(v2.version, v1.version, 'a change in its scope moves it');
  t.same(d.resources!.map((j) => `${(JSON.parse(j) as WireResource).kind}/${(JSON.parse(j) as WireResource).metadata.name}`).sort(), ['DestinationPolicy/pricing', 'Route/catalog']);
  t.same(Object.keys(JSON.parse(d.endpointsByServiceJson!) as object), ['pricing']);
  const applied = applyDelta(full1.value, d);
  t.ok(applied.ok);
  const full2 = decodeSnapshot(decode(views.full(v2).bytes));
  if (!applied.ok || !full2.ok) return;
  t.same(keys(applied.value), keys(full2.value), 'delta on the last good = the complete next snapshot (resources)');
  t.same(applied.value.resources, full2.value.resources, 'in the same order');
  const epKey = (l: Endpoint[]) => l.map((e) => `${e.service}/${e.address}`).sort();
  t.same(epKey(applied.value.endpoints), epKey(full2.value.endpoints), 'and endpoints');
  t.equal(views.delta(v1, v2), views.delta(v1, v2), 'a delta is encoded once per pair of views');

  // A delta from a version the sidecar does not have: a gap, refused.
  const gap = applyDelta({ ...full1.value, version: 'v0' }, d);
  t.notOk(gap.ok);
  if (!gap.ok) t.match(gap.errors[0]!.message, /version gap/);
  // Removal by name.
  const b3 = snap([svc('frontend', ['catalog']), dp('catalog'), route('catalog', ['catalog'], ['catalog'])], eps);
  const d3 = decode(views.delta(v2, views.view(b3, 'frontend')).bytes);
  t.same(d3.removed, ['DestinationPolicy/pricing']);
  t.same(JSON.parse(d3.endpointsByServiceJson!), { pricing: [] }, 'pricing endpoints leave the scope');
});

t.test('catch-all and wildcard Routes, wildcard dependencies, unknown kinds', async (t) => {
  const views = new PushViews({ nonce: () => 'n' });
  const other = { apiVersion: M, kind: 'AuthorizationPolicy', metadata: { name: 'x' }, spec: {} } as unknown as WireResource;
  const b = snap(
    [svc('edge', ['*.example.com']), svc('web', ['catalog']), route('all', ['*'], ['fallback']), route('api', ['api.example.com'], ['api']), route('wild', ['*.shop.local'], ['shop']), route('catalog', ['catalog'], ['catalog']), other],
    [ep('api', 1), ep('fallback', 2), ep('catalog', 3), ep('shop', 4)],
  );
  const edge = views.view(b, views.scopeOf(b, 'edge'));
  t.same([...edge.resources.keys()].sort(), ['AuthorizationPolicy/x', 'Route/all', 'Route/api', 'Service/edge'], 'a wildcard dependency picks the Routes under it; * always; unknown kinds always');
  t.same([...edge.endpoints.keys()], ['api', 'fallback']);
  const web = views.view(b, views.scopeOf(b, 'web'));
  t.same([...web.resources.keys()].sort(), ['AuthorizationPolicy/x', 'Route/all', 'Route/catalog', 'Service/web']);
  t.same([...web.endpoints.keys()], ['catalog', 'fallback']);
});

t.test('TLSCertificates: only in the view of a gateway entitled to them', async (t) => {
  const views = new PushViews({ nonce: () => 'n' });
  const cert = (name: string, body: string): WireResource => ({ apiVersion: M, kind: 'TLSCertificate', metadata: { name }, spec: { certificate: `CERT ${body}`, privateKey: `KEY ${body}` } });
  const gateway = (name: string, secrets: string[]): WireResource => ({
    apiVersion: M,
    kind: 'Gateway',
    metadata: { name },
    spec: { listeners: [{ name: 'https', port: 8443, protocol: 'HTTPS', tls: { certificates: [...secrets.map((secret) => ({ secret })), { certFile: '/c', keyFile: '/k' }] } }] },
  });
  const base = [gateway('edge', ['a']), gateway('files', []), route('web', ['web'], ['web']), svc('scoped', ['web'])];
  const b1 = snap([...base, cert('a', '1'), cert('unused', '1')], [ep('web', 1)]);
  const whole = views.view(b1, WHOLE_MESH);
  t.notOk([...whole.resources.keys()].some((k) => k.startsWith('TLSCertificate/')), 'not in the whole mesh');
  t.notOk([...views.view(b1, 'scoped').resources.keys()].some((k) => k.startsWith('TLSCertificate/')), 'nor in a scoped view');
  t.equal(views.scopeOf(b1, 'edge'), WHOLE_MESH, 'a gateway not entitled: the view a sidecar of its name gets');
  t.equal(views.scopeOf(b1, 'files', true), WHOLE_MESH, 'a gateway with file certificates only: the same');
  const scope = views.scopeOf(b1, 'edge', true);
  const gv = views.view(b1, scope);
  t.same([...gv.resources.keys()].filter((k) => k.startsWith('TLSCertificate/')), ['TLSCertificate/a'], 'only the one its Gateway names');
  t.same([...gv.resources.keys()].filter((k) => !k.startsWith('TLSCertificate/')), [...whole.resources.keys()], 'on top of its ordinary view');
  t.not(gv.version, whole.version, 'versioned by its own content');
  t.same(views.secretsOf(b1, 'edge'), ['a']);

  // The key changes (the mesh version does not, snapshot-builder.ts): only the gateway's view moves.
  const b2 = { ...snap([...base, cert('a', '2'), cert('unused', '1')], [ep('web', 1)]), version: b1.version };
  t.equal(views.view(b2, WHOLE_MESH).version, whole.version, "the sidecars' view keeps its version: they are sent nothing");
  const gv2 = views.view(b2, views.scopeOf(b2, 'edge', true));
  t.not(gv2.version, gv.version);
  const d = decode(views.delta(gv, gv2).bytes);
  t.equal(d.resources?.length, 1, 'the delta carries the one certificate');
  t.match(d.resources?.[0], /KEY 2/);
});
