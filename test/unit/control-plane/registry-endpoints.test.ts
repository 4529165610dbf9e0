/**
 * The endpoint registry keeps each service's endpoint array, and the flat list, the same objects
 * until that service's endpoints change: the snapshot builder serialises an array once and reuses
 * the JSON while it is handed the same array, so push status and reconnects at the same address
 * cost the push path nothing, and a change to one service re-serialises that service only.
 */
import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { EndpointRegistry } from '../../../control-plane/registry';
import { SnapshotBuilder } from '../../../control-plane/snapshot-builder';
import { canonicalJson } from '../../../control-plane/fsutil';
import { createHash } from 'node:crypto';
import type { WireResource } from '../../../control-plane/store';

const node = (id: string, service: string, port: number) => ({ id, service, address: '10.0.0.1', port, labels: { app: service }, buildVersion: 'test' });

t.test("a service's array stays the same until its endpoints change", async (t) => {
  const clock = new FakeClock();
  const reg = await EndpointRegistry.open('.', { persist: false, clock, graceMs: 1000 });
  t.teardown(() => reg.close());
  const changed: (readonly string[] | undefined)[] = [];
  reg.onChange((services) => changed.push(services));
  reg.connect(node('web-0', 'web', 1));
  reg.connect(node('web-1', 'web', 2));
  const api0 = reg.connect(node('api-0', 'api', 3));
  const flat = reg.endpoints();
  const web = reg.endpointsByService().get('web');
  const api = reg.endpointsByService().get('api');
  t.same(flat.map((e) => e.id), ['api-0', 'web-0', 'web-1'], 'sorted by service');
  t.same([...reg.endpointsByService().keys()], ['api', 'web']);
  t.same(changed, [['web'], ['web'], ['api']], 'each change names its service');

  reg.recordSent('web-0', 'v1');
  reg.recordAck('web-0', 'v1');
  reg.recordNack('web-1', 'v1', 'bad');
  t.equal(reg.endpoints(), flat, 'push status: the same flat array');
  // A reconnect at the same address (its stream blipped) changes nothing either.
  api0.disconnect();
  const again = reg.connect(node('api-0', 'api', 3));
  t.equal(reg.endpoints(), flat, 'a reconnect at the same address: the same array');
  t.equal(reg.endpointsByService().get('api'), api);

  const api1 = reg.connect(node('api-1', 'api', 4));
  t.not(reg.endpoints(), flat, 'a new api endpoint: a new flat array');
  t.equal(reg.endpointsByService().get('web'), web, 'web keeps its array');
  t.not(reg.endpointsByService().get('api'), api, 'api has a new one');
  t.same(reg.endpointsByService().get('api')?.map((e) => e.id), ['api-0', 'api-1']);

  // Grace period: the endpoint stays while disconnected, then leaves.
  const before = reg.endpointsByService().get('api');
  api1.disconnect();
  t.equal(reg.endpointsByService().get('api'), before, 'disconnected, within the grace period: the same array');
  clock.advance(1001);
  t.same(reg.endpointsByService().get('api')?.map((e) => e.id), ['api-0'], 'expired');
  t.equal(reg.endpointsByService().get('web'), web, 'web still keeps its array');
  again.leave();
  t.equal(reg.endpointsByService().has('api'), false, 'the last api sidecar left: no api entry');
  // A sidecar that comes back as another service moves between the two.
  reg.connect(node('web-1', 'api', 2));
  t.same(reg.endpointsByService().get('web')?.map((e) => e.id), ['web-0']);
  t.same(reg.endpointsByService().get('api')?.map((e) => e.id), ['web-1']);
  t.same(changed.at(-1), ['api', 'web'], 'both services named');
});

t.test('the builder serialises only the services whose array is new, and hashes the same version as the flat list', async (t) => {
  const reg = await EndpointRegistry.open('.', { persist: false, graceMs: 1000 });
  t.teardown(() => reg.close());
  for (let i = 0; i < 3; i++) reg.connect(node(`web-${i}`, 'web', 10 + i));
  reg.connect(node('api-0', 'api', 20));
  const resources = [{ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'r' }, spec: { hosts: ['r'], rules: [{ backends: [{ service: 'web' }] }] } }] as unknown as WireResource[];
  // Count the reads of web's endpoints: serialising web reads each endpoint's address.
  let webReads = 0;
  for (const e of reg.endpointsByService().get('web') ?? []) {
    const address = e.address;
    Object.defineProperty(e, 'address', { enumerable: true, get: () => (webReads++, address) });
  }
  const builder = new SnapshotBuilder({ all: () => resources, revision: 1 } as never, reg);
  const expected = () => createHash('sha256').update(canonicalJson({ resources, endpoints: reg.endpoints() })).digest('hex').slice(0, 12);
  const b1 = builder.build();
  t.equal(b1.version, expected(), 'the version of the canonical JSON of { resources, endpoints }');
  t.ok(webReads > 0, 'web serialised once');
  const reads = webReads;
  reg.connect(node('api-1', 'api', 21));
  const b2 = builder.build();
  t.equal(webReads, reads, 'web was not serialised again');
  t.equal(b2.version, expected(), 'still the same hash as the flat list gives');
  t.not(b2.version, b1.version);
  t.equal(b2.endpointsByService?.get('api'), canonicalJson(reg.endpointsByService().get('api')));
  t.equal(b2.endpointsByService?.get('web'), b1.endpointsByService?.get('web'));
  t.equal(builder.build().version, b2.version, 'nothing changed: the same version');
});
