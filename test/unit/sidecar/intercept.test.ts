import t from 'tap';
import { compileSnapshot } from '../../../src/snapshot/compile';
import { parseSnapshot } from '../../../src/policy/snapshot';
import { httpPorts, meshAddresses } from '../../../sidecar/intercept';

function compile(resources: unknown[], endpoints: unknown[] = []) {
  const s = parseSnapshot({ version: 'v1', resources, endpoints });
  if (!s.ok) throw new Error(JSON.stringify(s.errors));
  return compileSnapshot(s.value, {});
}

const route = (name: string, hosts: string[]) => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name }, spec: { hosts, rules: [{ backends: [{ service: 'catalog' }] }] } });

t.test('ports the policies make HTTP: Route hosts with a port, and 80', async (t) => {
  t.same([...httpPorts(undefined)], [80], 'no snapshot yet: 80');
  const snap = compile([route('a', ['catalog:8080', 'catalog', 'catalog.shop:9090']), route('b', ['*.example.com:8443'])], [{ service: 'catalog', address: '10.0.0.5', port: 15006, labels: {}, weight: 1, meshed: true }]);
  t.same([...httpPorts(snap)].sort((a, b) => a - b), [80, 8080, 8443, 9090]);
  t.equal(httpPorts(snap), httpPorts(snap), 'computed once per snapshot');
  t.same([...meshAddresses(snap)], ['10.0.0.5']);
  t.same([...meshAddresses(undefined)], []);
});
