/**
 * The mesh with real interception: pods as network namespaces on a bridge, each with its own IP,
 * deploy/meshlet-init.sh inside, the sidecar as uid 1337, and unmodified apps that call
 * `http://catalog:8080` and plain TCP ports, resolved through the pod's /etc/hosts. The apps
 * know nothing of the mesh: what they see proves the interception.
 *
 *   frontend (sidecar) --> catalog (sidecar, v1; the name `catalog` resolves to it)
 *                      --> catalog2 (sidecar, service catalog, v2)
 *                      --> plain (no sidecar)
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cli, eventually, start, tmpDir, portOf } from '../integration/lib/meshlet';
import { Cluster, get, INIT_SCRIPT, startAppIn, startSidecarIn, type Pod, type Proc } from './lib/pods';

const cluster = new Cluster(2);
cluster.setup();
t.teardown(async () => {
  await cluster.stopAll();
  cluster.cleanup();
});

const frontend = cluster.addPod('frontend');
const catalog = cluster.addPod('catalog');
const catalog2 = cluster.addPod('catalog2');
const plain = cluster.addPod('plain');
cluster.writeHosts();

let server = '';
const procs: Record<string, { sidecar?: Proc; app: Proc }> = {};

async function meshed(pod: Pod, service: string, init: string[], sidecarArgs: string[], appEnv: Record<string, string>, push: string) {
  pod.exec(['sh', INIT_SCRIPT, '--exclude-inbound-ports', '15000', ...init]);
  const sidecar = startSidecarIn(pod, service, push, ['--app-port', '8080', ...sidecarArgs]);
  await sidecar.waitFor((l) => l.msg === 'sidecar started');
  // The app starts once its proxy is up, as the native sidecar's startup probe arranges.
  const app = startAppIn(pod, appEnv);
  await app.waitFor((l) => l.msg === 'app listening');
  procs[pod.name] = { sidecar, app };
}

const call = (url: string, headers: Record<string, string> = {}) =>
  get(`http://${frontend.ip}:8080/call?url=${encodeURIComponent(url)}${Object.entries(headers).map(([k, v]) => `&${k}=${encodeURIComponent(v)}`).join('')}`);
const tcp = (from: Pod, host: string, port: number) => get(`http://${from.ip}:8080/tcp?host=${host}&port=${port}`);

t.before(async () => {
  const cp = start(['control-plane', '--data-dir', tmpDir(), '--api', '127.0.0.1:0', '--push', `${cluster.gateway}:0`, '--grace', '60000']);
  const l = await cp.waitFor((x) => x.msg === 'control plane started');
  server = `http://127.0.0.1:${portOf(l.api)}`;
  t.teardown(() => cp.stop());
  const push = `${cluster.gateway}:${portOf(l.push)}`;
  await meshed(frontend, 'frontend', ['--exclude-outbound-ports', '7001'], [], {}, push);
  // Each catalog pod also has an app listening on loopback only (7002) and one on the pod's address
  // only (7003); catalog2's sidecar runs as `meshlet.dev/inbound-localhost: "true"` makes it.
  const bind = (pod: Pod) => `127.0.0.1:7002,${pod.ip}:7003`;
  await meshed(catalog, 'catalog', ['--exclude-inbound-ports', '7001'], ['--labels', 'version=v1', '--drain-ms', '2000'], { ECHO_PORTS: '7000,7001', ECHO_BIND: bind(catalog), GRACE_MS: '4000' }, push);
  await meshed(catalog2, 'catalog', [], ['--labels', 'version=v2', '--drain-ms', '2000', '--inbound-localhost'], { ECHO_BIND: bind(catalog2), GRACE_MS: '4000' }, push);
  procs.plain = { app: startAppIn(plain) };
  await procs.plain.app.waitFor((l) => l.msg === 'app listening');
  // Both catalog pods registered, and the frontend's sidecar knows them.
  await eventually('the frontend sidecar to see both catalog pods', async () => {
    const r = await get(`http://${frontend.ip}:15000/config_dump`);
    const svc = (r.body.services as { name: string; endpoints: unknown[] }[]).find((s) => s.name === 'catalog');
    return svc && svc.endpoints.length === 2 ? true : undefined;
  });
});

t.test('outbound and inbound interception, then a policy taking effect', async (t) => {
  // No policy names port 8080 yet: the frontend's sidecar passes the connection through as
  // opaque TCP to the address the app dialled; catalog's sidecar takes it in (inbound, app port: HTTP).
  const before = await call('http://catalog:8080/');
  t.equal(before.body.status, 200, JSON.stringify(before.body));
  t.equal(before.body.body.pod, 'catalog', 'the name resolves to the catalog pod');
  t.equal(before.body.body.headers.via, '1.1 meshlet', 'one sidecar hop: catalog\'s inbound');

  const policies = path.join(tmpDir(), 'policies.yaml');
  writeFileSync(
    policies,
    `apiVersion: meshlet.dev/v1
kind: DestinationPolicy
metadata: {name: catalog}
spec:
  service: catalog
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: catalog}
spec:
  hosts: ["catalog:8080"]
  rules:
    - name: canary
      matches: [{headers: [{name: x-canary, exact: "true"}]}]
      backends: [{service: catalog, subset: v2}]
      responseHeaders: {set: {x-route: canary}}
    - name: default
      backends: [{service: catalog}]
`,
  );
  const r = cli(['apply', '-f', policies], { server });
  t.equal(r.code, 0, r.stderr);
  // The route makes catalog:8080 HTTP: the frontend's sidecar now routes by it.
  const canary = await eventually('the canary rule to take effect', async () => {
    const c = await call('http://catalog:8080/', { 'x-canary': 'true' });

    return c.body.body?.pod === "catalog2" ? c : undefined;
  });
  t.equal(canary.body.headers['x-route'], 'canary', 'the route\'s response header edit applied');
  // The sidecar-to-sidecar hop is HTTP/1.1 (multiplexing over HTTP/2 is off by default), and Via says what each hop received.
  t.equal(canary.body.body.headers.via, '1.1 meshlet, 1.1 meshlet', 'two sidecar hops: frontend outbound, catalog2 inbound');
  t.equal(canary.body.body.headers['x-canary'], 'true');
  for (let i = 0; i < 5; i++) {
    const c = await call('http://catalog:8080/', { 'x-canary': 'true' });
    t.equal(c.body.body.pod, 'catalog2', 'x-canary: true always reaches v2, though the name resolves to v1');
  }
  const seen = new Set<string>();
  for (let i = 0; i < 8; i++) seen.add((await call('http://catalog:8080/')).body.body.pod);
  t.same([...seen].sort(), ['catalog', 'catalog2'], 'the default rule balances over both pods');
});

t.test('opaque TCP through both sidecars; excluded ports bypass them', async (t) => {
  const viaMesh = await tcp(frontend, 'catalog', 7000);
  t.equal(viaMesh.body.reply, `catalog:ping:from ${catalog.ip}`, 'port 7000 (no policy makes it HTTP) passed as opaque TCP; catalog\'s sidecar delivered it to the pod\'s address');
  const direct = await tcp(frontend, 'catalog', 7001);
  t.equal(direct.body.reply, `catalog:ping:from ${frontend.ip}`, 'port 7001 is excluded on both sides: straight from the frontend pod');
  const metrics = await get(`http://${catalog.ip}:15000/ready`);
  t.equal(metrics.status, 200, 'the admin port (excluded inbound) answers probes from outside the pod');
});

t.test('inbound interception of non-app ports goes to the pod address: loopback-only apps stay private unless the pod opts in', async (t) => {
  const podAddress = await tcp(frontend, 'catalog', 7003);
  t.equal(podAddress.body.reply, `catalog:ping:from ${catalog.ip}`, 'an app on the pod address is reached through interception');
  const loopback = await tcp(frontend, 'catalog', 7002);
  t.notOk(loopback.body.reply, `an app listening only on 127.0.0.1 is not reachable from another pod by default: ${JSON.stringify(loopback.body)}`);
  const optedIn = await tcp(frontend, 'catalog2', 7002);
  t.equal(optedIn.body.reply, 'catalog2:ping:from 127.0.0.1', 'with meshlet.dev/inbound-localhost: "true" (--inbound-localhost) it is, as before');
  const optedInPod = await tcp(frontend, 'catalog2', 7003);
  t.notOk(optedInPod.body.reply, 'and then only loopback: the opt-in is the old behaviour, whole');
});

t.test('a pod without a sidecar reaches and is reached', async (t) => {
  const toPlain = await call('http://plain:8080/');
  t.equal(toPlain.body.status, 200, JSON.stringify(toPlain.body));
  t.equal(toPlain.body.body.pod, 'plain');
  t.notOk(toPlain.body.body.headers.via, 'passed through as TCP: no sidecar on the far side');
  const fromPlain = await get(`http://${plain.ip}:8080/call?url=${encodeURIComponent('http://catalog:8080/')}`);
  t.equal(fromPlain.body.status, 200);
  t.equal(fromPlain.body.body.pod, 'catalog');
  t.equal(fromPlain.body.body.headers.via, '1.1 meshlet', 'taken in by catalog\'s inbound interception');
  const fromHost = await get(`http://${catalog.ip}:8080/`);
  t.equal(fromHost.body.pod, 'catalog', 'and from outside the mesh (the node)');
});

t.test('SIGTERM to a pod under steady load: zero failed requests', async (t) => {
  const results: { ok: boolean; pod?: string; detail?: string }[] = [];
  let stopped = false;
  let extra = 0;
  const MAX = 20_000; // bounded whatever happens
  const worker = async () => {
    while (results.length < MAX && (!stopped || extra < 40)) {
      if (stopped) extra++;
      try {
        const r = await call('http://catalog:8080/');
        results.push(r.status === 200 && r.body.status === 200 ? { ok: true, pod: r.body.body.pod } : { ok: false, detail: JSON.stringify(r.body).slice(0, 300) });
      } catch (e) {
        results.push({ ok: false, detail: (e as Error).message });
      }
    }
  };
  const load = Promise.all([worker(), worker(), worker(), worker()]);
  await eventually('load to reach catalog2', async () => (results.some((r) => r.pod === 'catalog2') ? true : undefined));
  const p = procs.catalog2;
  // A pod's termination: every container gets SIGTERM.
  const codes = Promise.all([p.sidecar!.stop('SIGTERM'), p.app.stop('SIGTERM')]);
  t.same(await codes, [0, 0], 'sidecar and app exit cleanly');
  stopped = true;
  await load;
  const failed = results.filter((r) => !r.ok);
  t.equal(failed.length, 0, `failed: ${JSON.stringify(failed.slice(0, 3))}`);
  t.ok(results.length >= 40, `${results.length} requests`);
  t.same(results.slice(-20).map((r) => r.pod), Array(20).fill('catalog'), 'after the pod is gone, catalog serves everything');
});
