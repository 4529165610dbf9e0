/**
 * The CLI's views of a running mesh (a control plane and real sidecars on free ports):
 * `explain` walks a request through the caller's sidecar and agrees with where the sidecar really
 * sends it; `proxy-config` shows what one sidecar runs; `describe` a resource's references,
 * ACKs and traffic; `version` every sidecar; `check` finds what is valid but wrong (exit 1 on
 * errors), and `apply` prints its findings as warnings.
 */
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { eventually, MAIN, portOf, start, startControlPlane, startSidecar, tmpDir, tokenFor } from '../integration/lib/meshlet';

function run(args: string[], server: string, input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const c = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, MESHLET_SERVER: server, MESHLET_TOKEN: tokenFor(server) ?? '', MESHLET_CONFIG: '/nonexistent' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  c.stdin.end(input ?? '');
  return new Promise((resolve) => c.on('close', (code) => resolve({ code, stdout, stderr })));
}

async function app(t: Test, name: string): Promise<number> {
  const s = http.createServer((_req, res) => res.end(name));
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => s.close());
  return (s.address() as AddressInfo).port;
}

const POLICY = `apiVersion: meshlet.dev/v1
kind: DestinationPolicy
metadata: {name: catalog}
spec:
  service: catalog
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
    - {name: v3, labels: {version: v3}}
---
apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: catalog}
spec:
  hosts: [catalog]
  rules:
    - name: canary
      matches: [{headers: [{name: x-canary, exact: "true"}], path: {prefix: /items}}]
      backends: [{service: catalog, subset: v2}]
    - name: rest
      backends: [{service: catalog, subset: v1}]
      timeout: 3s
      retries: {attempts: 2, perTryTimeout: 1s, retryOn: [connect-failure]}
    - name: never
      matches: [{path: {prefix: /never}}]
      backends: [{service: catalog, subset: v3}]
---
apiVersion: meshlet.dev/v1
kind: RateLimitPolicy
metadata: {name: catalog}
spec:
  service: catalog
  limits:
    - {name: per-caller, routes: [catalog/rest], descriptors: [source-service], requests: 10, per: 1s}
`;

t.test('explain, proxy-config, describe, version and check on a live mesh', async (t) => {
  const dir = tmpDir('meshlet-cli-mesh-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cp = await startControlPlane(path.join(dir, 'data'));
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  const [v1, v2] = [await app(t, 'v1'), await app(t, 'v2')];
  const sidecars = [
    await startSidecar(['--service', 'frontend', '--id', 'fe-0', '--control-plane', push, '--advertise', '127.0.0.1']),
    await startSidecar(['--service', 'catalog', '--id', 'cat-v1', '--labels', 'version=v1', '--app-port', String(v1), '--control-plane', push, '--advertise', '127.0.0.1']),
    await startSidecar(['--service', 'catalog', '--id', 'cat-v2', '--labels', 'version=v2', '--app-port', String(v2), '--control-plane', push, '--advertise', '127.0.0.1']),
  ];
  t.teardown(() => Promise.all(sidecars.map((s) => s.stop())));
  const fe = sidecars[0]!;

  const applied = await run(['apply', '-f', '-'], cp.api, POLICY);
  t.equal(applied.code, 0, applied.stderr);
  t.match(applied.stderr, /^warning: MC0003 Route\/catalog spec\.rules\[2\]: rule "never" is never used/m, 'apply warns about a shadowed rule');
  await eventually('every sidecar ACKs', async () => {
    const st = JSON.parse((await run(['status', '-o', 'json'], cp.api)).stdout) as { version: string; sidecars: { ackedVersion?: string }[] };
    return st.sidecars.length === 3 && st.sidecars.every((s) => s.ackedVersion === st.version) ? true : undefined;
  });

  // explain agrees with where the sidecar sends the request.
  const via = (headers: Record<string, string>, p = '/items'): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: fe.outbound, path: `http://catalog${p}`, headers: { host: 'catalog', ...headers } }, (res) => {
        let b = '';
        res.on('data', (c: Buffer) => (b += c.toString()));
        res.on('end', () => resolve(b));
      });
      req.on('error', reject);
      req.end();
    });
  t.equal(await via({ 'x-canary': 'true' }), 'v2');
  let r = await run(['explain', '--from', 'frontend', 'GET', 'http://catalog/items', '-H', 'x-canary: true'], cp.api);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /Route "catalog" serves "catalog"/);
  t.match(r.stdout, /rule "canary" matches/);
  t.match(r.stdout, /catalog subset v2 \(version=v2\): 1 endpoint\(s\), round-robin: 127\.0\.0\.1:\d+ \(cat-v2\)/);
  t.match(r.stdout, /inbound: .*RateLimitPolicy/);
  t.match(r.stdout, /per-caller.*does not apply/, 'the limit is on another rule');

  t.equal(await via({ 'x-canary': 'true' }, '/other'), 'v1');
  r = await run(['explain', '--from', 'frontend', 'http://catalog/other', '-H', 'x-canary: true', '-o', 'json'], cp.api);
  const ex = JSON.parse(r.stdout) as { sidecar: string; outcome: { route: string }; steps: { step: string; details?: string[] }[] };
  t.equal(ex.sidecar, 'fe-0');
  t.equal(ex.outcome.route, 'catalog/rest');
  const rules = ex.steps.find((s) => s.step === 'rules')!.details!;
  t.match(rules[0], /rule "canary": no match: path prefix \/items does not hold/, 'says which condition failed, and only that one');
  t.notMatch(rules[0], /x-canary/);
  const rest = (await run(['explain', '--from', 'frontend', 'http://catalog/other'], cp.api)).stdout;
  t.match(rest, /timeout 3s/);
  t.match(rest, /retries: up to 2 on connect-failure, 1s per try/);
  t.match(rest, /per-caller.*counts against bucket "frontend"/, 'the rate-limit bucket is the caller');
  r = await run(['explain', '--from', 'nobody', 'http://catalog/'], cp.api);
  t.equal(r.code, 1);
  t.match(r.stderr, /no connected sidecar of service "nobody"; services with sidecars: catalog, frontend/);
  r = await run(['explain', '--from', 'frontend', 'http://nothing/'], cp.api);
  t.match(r.stdout, /404 NR/);

  // explain --last: what actually happened to real requests, by their x-request-id.
  t.equal(await via({ 'x-request-id': 'last-rest-1' }, '/other'), 'v1');
  r = await run(['explain', '--last', 'last-rest-1'], cp.api);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^request last-rest-1: seen by 2 sidecar side\(s\) of 3 asked/);
  t.match(r.stdout, /outbound at frontend \(sidecar fe-0\), .*: GET catalog\/other \(http\)\n1\. route: rule "rest" of Route "catalog" \(catalog\/rest\)\n2\. backend: catalog subset v1\n3\. timeouts: route timeout 3s, 1s per try\n4\. tries: 1 try; policy: up to 2 retries on connect-failure\n     try 1 at \+[\d.]+ms: 127\.0\.0\.1:\d+ -> 200 in [\d.]+ms\n=> 200 in [\d.]+ms/);
  t.match(r.stdout, /inbound at catalog \(sidecar cat-v1\), .*\n1\. caller: frontend, no client certificate\n2\. rate limits: 1 bucket\(s\) counted\n     limit "per-caller", bucket "frontend": allowed\n3\. app: 127\.0\.0\.1:\d+\n=> 200 in/);
  t.ok(r.stdout.indexOf('outbound at frontend') < r.stdout.indexOf('inbound at catalog'), 'the hops in the order the request travelled');
  r = await run(['explain', '--last', 'last-rest-1', '--from', 'catalog', '-o', 'json'], cp.api);
  const lastJson = JSON.parse(r.stdout) as { asked: number; decisions: { sidecar: string; direction: string; status: number; rateLimits: { limit: string; outcome: string }[] }[] };
  t.equal(lastJson.asked, 2, '--from asks only that service\'s sidecars');
  t.same(lastJson.decisions.map((d) => [d.sidecar, d.direction, d.status, d.rateLimits.map((l) => l.outcome)]), [['cat-v1', 'inbound', 200, ['allowed']]]);
  const nr = await new Promise<number>((resolve, reject) =>
    http.get({ host: '127.0.0.1', port: fe.outbound, path: 'http://nothing/x', headers: { host: 'nothing', 'x-request-id': 'last-nr-1' } }, (res) => resolve(res.resume().statusCode ?? 0)).on('error', reject),
  );
  t.equal(nr, 404);
  r = await run(['explain', '--last', 'last-nr-1'], cp.api);
  t.match(r.stdout, /outbound at frontend .*: GET nothing\/x \(http\)\n1\. route: no Route serves this host and path \(NR\)\n.*\n=> 404 NR, answered by the sidecar before forwarding\n/);
  r = await run(['explain', '--last', 'never-sent'], cp.api);
  t.equal(r.code, 1);
  t.match(r.stderr, /request "never-sent" is not among the recent requests of any of the 3 connected sidecar\(s\) \(each keeps the last 1024\)/);
  t.equal((await run(['explain', '--last', 'x', 'GET', 'http://catalog/'], cp.api)).code, 2, '--last takes no URL');

  // proxy-config: what one sidecar runs.
  r = await run(['proxy-config', 'fe-0', 'routes'], cp.api);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /catalog\s+catalog\s+canary\s+path prefix \/items & header x-canary=true\s+catalog:v2/);
  r = await run(['proxy-config', 'fe-0', 'endpoints'], cp.api);
  t.match(r.stdout, /catalog\s+127\.0\.0\.1:\d+\s+version=v2\s+v2\s+yes/);
  t.equal((await run(['proxy-config', 'nope'], cp.api)).code, 1);
  t.equal((await run(['proxy-config', 'fe-0', 'rutes'], cp.api)).code, 2);

  // describe: references both ways, ACKs, traffic.
  r = await run(['describe', 'route', 'catalog'], cp.api);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /DestinationPolicy\/catalog subset v2 \(version=v2\)/);
  t.match(r.stdout, /DestinationPolicy\/catalog subset v3 \(version=v3\)/);
  t.match(r.stdout, /Referred to by:\n  RateLimitPolicy\/catalog  \(spec\.limits\[0\]\.routes\[0\]\)/);
  t.match(r.stdout, /3\/3 connected sidecars ACKed/);
  await eventually('traffic shows in describe', async () => {
    const d = (await run(['describe', 'route', 'catalog'], cp.api)).stdout;
    return /route catalog\/canary: \d+ requests/.test(d) ? d : undefined;
  });

  // version: the sidecars' too.
  r = await run(['version'], cp.api);
  t.match(r.stdout, /sidecar versions: \d+\.\d+\.\d+ \(3\)/);

  // check: an error (subset v3 selects no endpoint) exits 1; -f shows what a file would change.
  r = await run(['check'], cp.api);
  t.equal(r.code, 1, 'an error finding: exit 1');
  t.match(r.stdout, /^Error \[MC0002\] Route\/catalog spec\.rules\[2\]\.backends\[0\]\.subset: subset "v3"/m);
  t.match(r.stdout, /^Warning \[MC0003\] Route\/catalog spec\.rules\[2\]/m);
  t.match(r.stdout, /^  fix: /m);
  const fixed = POLICY.replace(/    - name: never\n.*\n.*\n/, '');
  r = await run(['check', '-f', '-'], cp.api, fixed);
  t.equal(r.code, 0, `the fixed file checks clean: ${r.stdout}`);
  t.match(r.stdout, /no problems found/);
  r = await run(['check', '-o', 'json'], cp.api);
  const findings = (JSON.parse(r.stdout) as { findings: { code: string; severity: string; resource: string; field?: string; fix?: string }[] }).findings;
  t.ok(findings.every((f) => /^MC\d{4}$/.test(f.code) && f.resource && f.fix), 'every finding has a code, a resource and a fix');
});

t.test('check: an endpoint ejected for long (MC0015), from the control plane\'s samples of the sidecars', async (t) => {
  const dir = tmpDir('meshlet-cli-eject-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cp = start(['control-plane', '--data-dir', path.join(dir, 'data'), '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--history-interval', '500']);
  const l = await cp.waitFor((x) => x.msg === 'control plane started');
  t.teardown(() => cp.stop());
  const api = String(l.api);
  const push = `127.0.0.1:${portOf(l.push)}`;
  const failing = http.createServer((_req, res) => res.writeHead(503).end('down'));
  await new Promise<void>((r) => failing.listen(0, '127.0.0.1', r));
  t.teardown(() => failing.close());
  const sidecars = [
    await startSidecar(['--service', 'frontend', '--id', 'fe-0', '--control-plane', push, '--advertise', '127.0.0.1']),
    await startSidecar(['--service', 'catalog', '--id', 'cat-0', '--app-port', String((failing.address() as AddressInfo).port), '--control-plane', push, '--advertise', '127.0.0.1']),
  ];
  t.teardown(() => Promise.all(sidecars.map((s) => s.stop())));
  const policy = `apiVersion: meshlet.dev/v1
kind: DestinationPolicy
metadata: {name: catalog}
spec:
  service: catalog
  outlierDetection: {consecutive5xx: 1, baseEjectionTime: 10m, interval: 10m, maxEjectionPercent: 100}
---
apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: catalog}
spec:
  hosts: [catalog]
  rules: [{backends: [{service: catalog}]}]
`;
  const applied = await run(['apply', '-f', '-'], api, policy);
  t.equal(applied.code, 0, applied.stderr);
  let r = await run(['check', '--ejected-for', '1s'], api);
  t.notMatch(r.stdout, /MC0015/, 'nothing ejected yet');
  await eventually('the frontend sidecar runs the policy and the endpoint', async () => {
    const st = JSON.parse((await run(['status', '-o', 'json'], api)).stdout) as { version: string; sidecars: { ackedVersion?: string }[] };
    return st.sidecars.length === 2 && st.sidecars.every((s) => s.ackedVersion === st.version) ? true : undefined;
  });
  // One 503 ejects the only endpoint for 10 minutes.
  const status = await new Promise<number>((resolve, reject) =>
    http.get({ host: '127.0.0.1', port: sidecars[0]!.outbound, path: 'http://catalog/', headers: { host: 'catalog' } }, (res) => resolve(res.resume().statusCode ?? 0)).on('error', reject),
  );
  t.equal(status, 503);
  const found = await eventually('check reports the ejected endpoint', async () => {
    const c = await run(['check', '--ejected-for', '1s', '-o', 'json'], api);
    return (JSON.parse(c.stdout) as { findings: { code: string; resource: string; field?: string; message: string }[] }).findings.find((x) => x.code === 'MC0015');
  });
  t.equal(found.resource, 'DestinationPolicy/catalog');
  t.equal(found.field, 'spec.outlierDetection');
  t.match(found.message, /^endpoint 127\.0\.0\.1:\d+ of catalog has been ejected for \d+s \(by fe-0\)$/);
  r = await run(['check'], api);
  t.notMatch(r.stdout, /MC0015/, 'not at the default threshold (5m)');
  r = await run(['check', '--ejected-for', 'soon'], api);
  t.equal(r.code, 2);
  t.match(r.stderr, /--ejected-for: expected a duration/);
});
