/**
 * A real `meshlet sidecar` and a version gap on the push stream. The real control plane never
 * makes a gap (it keeps what each stream was sent), so a scripted control plane on the real
 * protocol (the same gRPC service and messages) plays it: a complete snapshot, then a delta that
 * does not start from it. The sidecar must NACK it naming the gap, keep routing on its last good
 * snapshot, take the complete snapshot that follows (the control plane's resync), and apply
 * deltas on top of that one again.
 */
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { policyDiscoveryService, SERVER_OPTIONS, type PolicyDiscoveryStreamCall, type ReceivedSidecarMessage, type SnapshotMessage } from '../../../src/proto';
import { echo, h1Upstream, request } from '../sidecar/helpers';
import { eventually, startSidecar } from '../lib/meshlet';

const M = 'meshlet.dev/v1';
/** Route `catalog` to one of the two upstreams (`catalog-a` or `catalog-b`). */
const routeTo = (backend: string) => ({ apiVersion: M, kind: 'Route', metadata: { name: 'catalog' }, spec: { hosts: ['catalog'], rules: [{ name: 'default', backends: [{ service: backend }] }] } });
const endpoint = (service: string, port: number) => ({ service, address: '127.0.0.1', port, labels: {}, weight: 1, meshed: false });

/** A control plane that only does what the test says, on the real push protocol. */
class ScriptedControlPlane {
  private readonly server = new grpc.Server(SERVER_OPTIONS);
  private call: PolicyDiscoveryStreamCall | undefined;
  private readonly answers: ReceivedSidecarMessage[] = [];
  private waiter: (() => void) | undefined;
  private nonce = 0;
  port = 0;

  async listen(): Promise<void> {
    this.server.addService(policyDiscoveryService(), {
      Stream: (call: PolicyDiscoveryStreamCall) => {
        this.call = call;
        call.on('data', (m: ReceivedSidecarMessage) => {
          this.answers.push(m);
          this.waiter?.();
        });
        call.on('error', () => undefined);
        this.waiter?.();
      },
    });
    this.port = await new Promise<number>((resolve, reject) => this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  }

  send(m: Omit<SnapshotMessage, 'nonce'>): string {
    const nonce = `n${++this.nonce}`;
    if (!this.call) throw new Error('no sidecar stream');
    this.call.write({ ...m, nonce });
    return nonce;
  }

  /** The next message from the sidecar that matches, within 10 s. */
  async next(match: (m: ReceivedSidecarMessage) => boolean): Promise<ReceivedSidecarMessage> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const i = this.answers.findIndex(match);
      if (i >= 0) return this.answers.splice(i, 1)[0]!;
      if (Date.now() > deadline) throw new Error(`no matching message from the sidecar (got ${JSON.stringify(this.answers)})`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 200);
      });
    }
  }

  close(): void {
    this.call?.end();
    this.server.forceShutdown();
  }
}

t.test('a real sidecar NACKs a delta across a version gap, keeps routing, and recovers with the complete snapshot', async (t) => {
  const a = await h1Upstream(t, echo('catalog-a'));
  const b = await h1Upstream(t, echo('catalog-b'));
  const cp = new ScriptedControlPlane();
  await cp.listen();
  t.teardown(() => cp.close());
  const sc = await startSidecar(['--service', 'frontend', '--id', 'fe-0', '--control-plane', `127.0.0.1:${cp.port}`, '--advertise', '127.0.0.1']);
  t.teardown(() => sc.stop());
  const node = await cp.next((m) => !!m.node);
  t.equal(node.node?.acceptsDelta, true, 'the sidecar announces deltas');
  const servedBy = async () => (await request({ port: sc.outbound, path: '/', headers: { host: 'catalog' } })).headers['x-served-by'];
  const eps = JSON.stringify([endpoint('catalog-a', a.port), endpoint('catalog-b', b.port)]);

  // v1: complete, catalog -> catalog-a.
  const n1 = cp.send({ version: 'v1', resourcesJson: JSON.stringify([routeTo('catalog-a')]), endpointsJson: eps });
  t.match(await cp.next((m) => !!m.ack || !!m.nack), { ack: { version: 'v1', nonce: n1 } }, 'v1 ACKed');
  t.equal(await servedBy(), 'catalog-a', 'routes on v1');

  // A delta from a version it never had: a gap.
  const n2 = cp.send({ version: 'v3', baseVersion: 'v2', resourcesJson: '', endpointsJson: '', resources: [JSON.stringify(routeTo('catalog-b'))], removed: [], endpointsByServiceJson: '' });
  const nack = await cp.next((m) => !!m.ack || !!m.nack);
  t.match(nack, { nack: { version: 'v3', nonce: n2 } }, 'the delta is NACKed');
  t.match(nack.nack?.reason, /version gap: this delta applies to v2, the last good snapshot here is v1/, 'naming the gap');
  t.equal(await servedBy(), 'catalog-a', 'still routing on the last good snapshot (v1)');

  // The resync: the complete snapshot of v3.
  const n3 = cp.send({ version: 'v3', resourcesJson: JSON.stringify([routeTo('catalog-b')]), endpointsJson: eps });
  t.match(await cp.next((m) => !!m.ack || !!m.nack), { ack: { version: 'v3', nonce: n3 } }, 'the complete v3 is ACKed');
  await eventually('routes on v3', async () => ((await servedBy()) === 'catalog-b' ? true : undefined));
  const dump = (await (await fetch(`http://127.0.0.1:${sc.admin}/config_dump`)).json()) as { version: string };
  t.equal(dump.version, 'v3', '/config_dump shows v3');

  // And deltas apply on top of the resynced snapshot again.
  const n4 = cp.send({ version: 'v4', baseVersion: 'v3', resourcesJson: '', endpointsJson: '', resources: [JSON.stringify(routeTo('catalog-a'))], removed: [], endpointsByServiceJson: '' });
  t.match(await cp.next((m) => !!m.ack || !!m.nack), { ack: { version: 'v4', nonce: n4 } }, 'the next delta (from v3) is ACKed');
  await eventually('routes on v4', async () => ((await servedBy()) === 'catalog-a' ? true : undefined));
});
