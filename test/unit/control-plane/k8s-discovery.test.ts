import t from 'tap';
import { mergeEndpoints, sliceEndpoints } from '../../../control-plane/k8s-discovery';

const base = {
  metadata: { name: 's', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'catalog' } },
  addressType: 'IPv4',
  endpoints: [{ addresses: ['10.0.0.1', '10.0.0.2'], conditions: { ready: true }, zone: 'z1', nodeName: 'n1' }, { addresses: ['10.0.0.3'] }],
  ports: [{ port: 9090, protocol: 'UDP' }, { name: 'grpc', port: 9000 }, { name: 'http', port: 8080 }],
};

t.test('sliceEndpoints', async (t) => {
  t.same(
    sliceEndpoints(base as never).map((e) => `${e.address}:${e.port} ${JSON.stringify(e.labels)}`),
    ['10.0.0.1:8080 {"topology.kubernetes.io/zone":"z1","kubernetes.io/hostname":"n1"}', '10.0.0.2:8080 {"topology.kubernetes.io/zone":"z1","kubernetes.io/hostname":"n1"}', '10.0.0.3:8080 {}'],
    'the port named http; no ready condition means ready',
  );
  t.same(sliceEndpoints({ ...base, ports: [{ port: 9090, protocol: 'UDP' }, { name: 'grpc', port: 9000 }] } as never)[0].port, 9000, 'else the first TCP port');
  t.same(sliceEndpoints({ ...base, ports: [] } as never), [], 'no port: nothing');
  t.same(sliceEndpoints({ ...base, addressType: 'FQDN' } as never), [], 'FQDN slices are skipped');
  t.same(sliceEndpoints({ ...base, metadata: { name: 's' } } as never), [], 'no service label: nothing');
  t.same(sliceEndpoints({ ...base, endpoints: [{ addresses: ['10.0.0.1'], conditions: { ready: false } }] } as never), [], 'not ready: left out');
  t.equal(sliceEndpoints(base as never)[0].meshed, false);
});

t.test('mergeEndpoints: a registered sidecar stands for its pod', async (t) => {
  const k = (service: string, address: string, port: number) => ({ service, address, port, labels: {}, weight: 1, meshed: false });
  const merged = mergeEndpoints([{ ...k('catalog', '10.0.0.1', 15006), meshed: true, id: 'x' }], [k('catalog', '10.0.0.1', 8080), k('catalog', '10.0.0.2', 8080), k('catalog', '10.0.0.2', 8080), k('other', '10.0.0.1', 8080)]);
  t.same(merged.map((e) => `${e.service} ${e.address}:${e.port}${e.meshed ? ' meshed' : ''}`), ['catalog 10.0.0.1:15006 meshed', 'catalog 10.0.0.2:8080', 'other 10.0.0.1:8080']);
});
