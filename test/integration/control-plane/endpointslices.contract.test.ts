/**
 * Contract test: EndpointSlice discovery against a local server that answers what the
 * Kubernetes API server answers (no cluster runs here). It checks both sides of the contract:
 * the requests the control plane makes (list, then a watch from the list's resourceVersion, with
 * the bearer token of the kubeconfig), and what it does with real list and watch responses
 * (ADDED / MODIFIED / DELETED / BOOKMARK, a 410 Gone ERROR that forces a re-list).
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import type * as http from 'node:http';
import * as https from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { request } from 'undici';
import { eventually, portOf, tokenFor, start, startSidecar, tmpDir } from '../lib/meshlet';

const LIST_PATH = '/apis/discovery.k8s.io/v1/endpointslices';

/** An EndpointSlice as the API server serialises it. */
function slice(service: string, name: string, rv: string, endpoints: { ip: string; ready?: boolean; node?: string }[], ports = [{ name: 'http', port: 8080, protocol: 'TCP' }]) {
  return {
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    metadata: {
      name,
      generateName: `${service}-`,
      namespace: 'shop',
      uid: `uid-${name}`,
      resourceVersion: rv,
      generation: 1,
      creationTimestamp: '2026-11-24T10:00:00Z',
      labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
      ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: service, uid: `svc-${service}`, controller: true, blockOwnerDeletion: true }],
    },
    addressType: 'IPv4',
    endpoints: endpoints.map((e, i) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.ready ?? true, terminating: false },
      targetRef: { kind: 'Pod', namespace: 'shop', name: `${service}-${i}`, uid: `pod-${service}-${i}` },
      nodeName: e.node ?? 'node-a',
      zone: 'zone-1',
    })),
    ports,
  };
}

t.test('EndpointSlices: list, then watch, into the snapshot', async (t) => {
  const requests: { path: string; query: URLSearchParams; auth?: string }[] = [];
  let listItems: unknown[] = [slice('catalog', 'catalog-abc', '90', [{ ip: '10.0.0.5' }, { ip: '10.0.0.6', ready: false }])];
  let listRv = '100';
  const watches: http.ServerResponse[] = [];
  const dir = tmpDir();
  // The API server speaks HTTPS with its own CA, named in the kubeconfig.
  const crt = path.join(dir, 'apiserver.crt');
  const key = path.join(dir, 'apiserver.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=kube-apiserver', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', crt], { stdio: 'ignore' });
  const api = https.createServer({ cert: readFileSync(crt), key: readFileSync(key) }, (req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    requests.push({ path: u.pathname, query: u.searchParams, auth: req.headers.authorization });
    if (u.pathname !== LIST_PATH) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'the server could not find the requested resource', reason: 'NotFound', code: 404 }));
      return;
    }
    if (u.searchParams.get('watch') === 'true') {
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      res.flushHeaders();
      watches.push(res);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'EndpointSliceList', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: listRv }, items: listItems.map((i) => ({ ...(i as object), kind: undefined, apiVersion: undefined })) }));
  });
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const w of watches) w.destroy();
    api.closeAllConnections();
    api.close();
  });
  const kubeconfig = path.join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    `apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "https://127.0.0.1:${(api.address() as AddressInfo).port}", certificate-authority: "${crt}"}}]
users: [{name: u, user: {token: contract-token}}]
contexts: [{name: c, context: {cluster: fake, user: u}}]
current-context: c
`,
  );
  const cp = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--kubernetes'], { KUBECONFIG: kubeconfig });
  t.teardown(() => cp.stop());
  const l = await cp.waitFor((x) => x.msg === 'control plane started');
  const server = String(l.api);
  const endpoints = async () => {
    const r = await request(`${server}/v1/snapshot`, { headers: { authorization: `Bearer ${tokenFor(server)}` } });
    const body = (await r.body.json()) as { endpoints: { service: string; address: string; port: number; meshed: boolean }[] };
    return body.endpoints.map((e) => `${e.service} ${e.address}:${e.port}${e.meshed ? ' meshed' : ''}`).sort();
  };
  const until = (want: string[], what: string) => eventually(what, async () => ((await endpoints()).join(',') === want.join(',') ? true : undefined));

  await until(['catalog 10.0.0.5:8080'], 'the listed slice (ready endpoints only)');
  t.pass('the listed slice: ready endpoints only');
  await eventually('a watch', async () => (watches.length > 0 ? true : undefined));
  const list = requests.find((r) => !r.query.has('watch'));
  const watch = requests.find((r) => r.query.get('watch') === 'true');
  t.equal(list?.path, LIST_PATH, 'lists EndpointSlices across namespaces');
  t.equal(list?.auth, 'Bearer contract-token', 'with the kubeconfig\'s token');
  t.equal(watch?.query.get('resourceVersion'), '100', 'watches from the list\'s resourceVersion');
  t.equal(watch?.auth, 'Bearer contract-token');

  const send = (type: string, object: unknown) => watches[watches.length - 1].write(JSON.stringify({ type, object }) + '\n');
  send('ADDED', slice('pricing', 'pricing-xyz', '101', [{ ip: '10.0.1.7' }], [{ name: 'metrics', port: 9090, protocol: 'TCP' }, { name: 'http', port: 8081, protocol: 'TCP' }]));
  await until(['catalog 10.0.0.5:8080', 'pricing 10.0.1.7:8081'], 'ADDED: the port named http');
  t.pass('ADDED');
  send('MODIFIED', slice('catalog', 'catalog-abc', '102', [{ ip: '10.0.0.5' }, { ip: '10.0.0.6' }]));
  await until(['catalog 10.0.0.5:8080', 'catalog 10.0.0.6:8080', 'pricing 10.0.1.7:8081'], 'MODIFIED: 10.0.0.6 became ready');
  t.pass('MODIFIED');
  send('BOOKMARK', { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: '103' } });
  send('DELETED', slice('pricing', 'pricing-xyz', '104', [{ ip: '10.0.1.7' }]));
  await until(['catalog 10.0.0.5:8080', 'catalog 10.0.0.6:8080'], 'DELETED');
  t.pass('BOOKMARK ignored, DELETED removes the slice');

  // A sidecar registered for a pod Kubernetes also lists: its own (meshed) endpoint wins.
  const sc = await startSidecar(['--service', 'catalog', '--control-plane', `127.0.0.1:${portOf(l.push)}`, '--advertise', '10.0.0.5']);
  t.teardown(() => sc.stop());
  await until(['catalog 10.0.0.5:' + sc.inbound + ' meshed', 'catalog 10.0.0.6:8080'], 'the registered sidecar replacing the Kubernetes endpoint');
  t.pass('registered sidecar preferred over the EndpointSlice address');

  // 410 Gone: the resourceVersion is too old; the informer lists again and watches from there.
  listItems = [slice('catalog', 'catalog-abc', '200', [{ ip: '10.0.0.9' }])];
  listRv = '201';
  const watchesBefore = watches.length;
  send('ERROR', { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'too old resource version: 100 (150)', reason: 'Expired', code: 410 });
  watches[watches.length - 1].end();
  await until(['catalog 10.0.0.5:' + sc.inbound + ' meshed', 'catalog 10.0.0.9:8080'], 'the re-list after 410 Gone');
  t.pass('410 Gone: re-listed');
  await eventually('a new watch', async () => (watches.length > watchesBefore ? true : undefined));
  t.equal(requests.filter((r) => r.query.get('watch') === 'true').at(-1)?.query.get('resourceVersion'), '201', 'watching again from the new list');
});
