/**
 * AuthorizationPolicy end to end: a real control plane, real sidecars (a caller and two callees),
 * real HTTP and gRPC (@grpc/grpc-js) clients. Policies go in through the REST API and `meshlet
 * apply`, reach the callee's sidecar over the push stream, and are enforced on its inbound side.
 *
 * The callers here are plaintext (no mTLS on the data path in this test): `call.peer` is
 * undefined, so a rule naming a caller identity never matches them, whatever
 * `x-meshlet-source` says.
 */
import * as grpc from '@grpc/grpc-js';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { interopClient, startInteropServer } from '../../fixtures/grpc/interop';
import { cli, eventually, startControlPlane, startSidecar, tmpDir, tokenFor, type ControlPlaneProc, type SidecarProc } from '../lib/meshlet';
import { request } from './helpers';

const API = 'meshlet.dev/v1';

interface App {
  port: number;
  seen: string[];
}

async function app(t: Test): Promise<App> {
  const a: App = { port: 0, seen: [] };
  const s = http.createServer((req, res) => {
    a.seen.push(`${req.method} ${req.url}`);
    res.end('catalog');
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => s.close());
  a.port = (s.address() as AddressInfo).port;
  return a;
}

async function api(cp: ControlPlaneProc, method: string, p: string, body?: unknown): Promise<{ status: number; json: any }> {
  const r = await request({ port: cp.apiPort, method, path: p, headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenFor(cp.api) ?? ''}` }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, json: r.text ? JSON.parse(r.text) : undefined };
}

const authzPolicy = (name: string, spec: Record<string, unknown>) => ({ apiVersion: API, kind: 'AuthorizationPolicy', metadata: { name }, spec });

async function metrics(sc: SidecarProc): Promise<string> {
  return (await request({ port: sc.admin, path: '/metrics' })).text;
}

function count(text: string, labels: string): number {
  const m = new RegExp(`meshlet_authz_requests_total\\{${labels.replace(/[{}]/g, '\\$&')}\\} (\\d+)`).exec(text);
  return m ? Number(m[1]) : 0;
}

/** Waits until the sidecar runs the control plane's current snapshot. */
async function converged(cp: ControlPlaneProc, sc: SidecarProc): Promise<void> {
  await eventually('the sidecar to apply the snapshot', async () => {
    const status = (await api(cp, 'GET', '/v1/status')).json;
    const dump = JSON.parse((await request({ port: sc.admin, path: '/config_dump' })).text);
    return status.version && dump.version === status.version ? true : undefined;
  });
}

t.test('policies from the API: deny by path, method and header (403 RBAC, the app never sees it), gRPC PERMISSION_DENIED, AUDIT counts, delete restores, bad ones refused', async (t) => {
  const dir = tmpDir('meshlet-authz-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cp = await startControlPlane(path.join(dir, 'data'));
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  const catalogApp = await app(t);
  const grpcApp = await startInteropServer(t);
  const catalog = await startSidecar(['--service', 'catalog', '--app-port', String(catalogApp.port), '--control-plane', push, '--advertise', '127.0.0.1', '--access-log', '1']);
  t.teardown(() => catalog.stop());
  const interop = await startSidecar(['--service', 'interop', '--app-port', String(grpcApp.port), '--control-plane', push, '--advertise', '127.0.0.1']);
  t.teardown(() => interop.stop());
  const frontend = await startSidecar(['--service', 'frontend', '--control-plane', push, '--advertise', '127.0.0.1']);
  t.teardown(() => frontend.stop());
  const routes = [
    { apiVersion: API, kind: 'Route', metadata: { name: 'catalog' }, spec: { hosts: ['catalog'], rules: [{ name: 'all', backends: [{ service: 'catalog' }] }] } },
  ];
  t.equal((await api(cp, 'POST', '/v1/apply', { items: routes })).status, 200);

  // Through the caller's sidecar (app -> frontend sidecar -> catalog sidecar -> app).
  const send = (method: string, p: string, headers: Record<string, string> = {}) => request({ port: frontend.outbound, method, path: p, headers: { host: 'catalog', ...headers } });
  await eventually('the route to reach frontend', async () => ((await send('GET', '/items')).status === 200 ? true : undefined));

  const policy = authzPolicy('catalog-access', {
    service: 'catalog',
    rules: [
      { name: 'no-admin', action: 'DENY', to: { paths: [{ prefix: '/admin' }] } },
      { name: 'no-delete', action: 'DENY', to: { methods: ['DELETE'] } },
      { name: 'no-debug', action: 'DENY', to: { headers: [{ name: 'x-debug', exact: 'on' }] } },
    ],
  });
  const put = await api(cp, 'PUT', '/v1/authorizationpolicies/catalog-access', policy);
  t.equal(put.status, 201, JSON.stringify(put.json));
  await converged(cp, catalog);

  const seenBefore = catalogApp.seen.length;
  for (const [what, method, p, headers, rule] of [
    ['path', 'GET', '/admin/users', {}, 'no-admin'],
    ['method', 'DELETE', '/items/1', {}, 'no-delete'],
    ['header', 'GET', '/items', { 'x-debug': 'on' }, 'no-debug'],
  ] as const) {
    const r = await send(method, p, headers);
    t.equal(r.status, 403, `denied by ${what}`);
    t.equal(r.headers['x-meshlet-flags'], 'RBAC', `${what}: x-meshlet-flags RBAC`);
    t.match(r.text, new RegExp(`denied by AuthorizationPolicy catalog-access rule ${rule}`), `${what}: the answer names the rule`);
  }
  t.equal(catalogApp.seen.length, seenBefore, 'the app never saw a denied request');
  const explained = cli(['explain', '--from', 'frontend', 'DELETE', 'http://catalog/items/1'], { server: cp.api });
  t.equal(explained.code, 0, explained.stderr);
  t.match(explained.stdout, /authorization: the callee denies this request: 403 RBAC/, 'meshlet explain: the decision');
  t.match(explained.stdout, /catalog \(policies catalog-access\): denied by AuthorizationPolicy catalog-access rule no-delete/, 'meshlet explain: the policy and rule');
  t.match(cli(['explain', '--from', 'frontend', 'GET', 'http://catalog/items'], { server: cp.api }).stdout, /the callee allows this request/);
  const ok = await send('GET', '/items', { 'x-debug': 'off' });
  t.equal(ok.status, 200, 'what no DENY rule matches passes (no ALLOW rules: default ALLOW)');
  t.equal(ok.text, 'catalog');
  const m = await metrics(catalog);
  t.equal(count(m, 'policy="catalog-access",rule="no-admin",action="DENY",result="deny"'), 1, m);
  t.equal(count(m, 'policy="catalog-access",rule="defaultAction",action="default",result="allow"'), 1);
  t.match(m, /meshlet_requests_total\{direction="inbound",[^}]*response_code="403",response_flags="RBAC"\} 3/, 'denials counted as inbound 403 RBAC');
  const denyLog = await catalog.waitFor((l) => l.msg === 'request denied by AuthorizationPolicy' && l.rule === 'no-delete');
  t.has(denyLog, { policy: 'catalog-access', method: 'DELETE', path: '/items/1', source: null });
  const access = await catalog.waitFor((l) => l.log === 'access' && l.path === '/admin/users');
  t.has(access, { response_code: 403, response_flags: 'RBAC', authz_policy: 'catalog-access', authz_rule: 'no-admin', authz_result: 'deny' }, 'the access-log line names the policy and rule');

  // gRPC: trailers-only PERMISSION_DENIED, straight at the callee's inbound listener.
  const grpcPolicy = authzPolicy('interop-access', { service: 'interop', rules: [{ name: 'no-unary', action: 'DENY', to: { paths: [{ exact: '/grpc.testing.TestService/UnaryCall' }] } }] });
  t.equal((await api(cp, 'PUT', '/v1/authorizationpolicies/interop-access', grpcPolicy)).status, 201);
  await converged(cp, interop);
  const client = interopClient(t, interop.inbound, 'interop');
  const call = (method: string) => new Promise<grpc.ServiceError | null>((resolve) => client[method]({}, (err: grpc.ServiceError | null) => resolve(err)));
  const denied = await call('unaryCall');
  t.equal(denied?.code, grpc.status.PERMISSION_DENIED, 'gRPC: PERMISSION_DENIED');
  t.match(denied?.details, /interop-access rule no-unary/);
  t.equal(denied?.metadata.get('x-meshlet-flags')[0], 'RBAC');
  t.equal(await call('emptyCall'), null, 'another method passes');
  const web = await request({ port: interop.inbound, method: 'POST', path: '/grpc.testing.TestService/UnaryCall', headers: { host: 'interop', 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' }, body: Buffer.from([0, 0, 0, 0, 0]) });
  t.equal(web.status, 200, 'gRPC-Web: HTTP 200');
  t.equal(web.headers['grpc-status'], '7', 'gRPC-Web: PERMISSION_DENIED, trailers-only');
  t.equal(web.headers['x-meshlet-flags'], 'RBAC');
  t.notOk(grpcApp.seen.some((c) => c.method === 'UnaryCall'), 'the gRPC app never saw the denied calls');

  // AUDIT first (dryRun): nothing denied, the would-be denials counted.
  const audit = authzPolicy('catalog-access', { ...policy.spec, dryRun: true });
  t.equal((await api(cp, 'PUT', '/v1/authorizationpolicies/catalog-access', audit)).status, 200);
  await converged(cp, catalog);
  t.equal((await send('GET', '/admin/users')).status, 200, 'dryRun: would be denied, passes');
  t.equal((await send('DELETE', '/items/2')).status, 200);
  const m2 = await metrics(catalog);
  t.equal(count(m2, 'policy="catalog-access",rule="no-admin",action="DENY",result="would_deny"'), 1, m2);
  t.equal(count(m2, 'policy="catalog-access",rule="no-delete",action="DENY",result="would_deny"'), 1);
  t.equal(count(m2, 'policy="catalog-access",rule="no-admin",action="DENY",result="deny"'), 1, 'the earlier denial stays counted');
  await catalog.waitFor((l) => l.msg === 'request would be denied by AuthorizationPolicy (dryRun)' && l.rule === 'no-admin');
  const stats = JSON.parse((await request({ port: catalog.admin, path: '/stats' })).text);
  t.ok(stats.authz.some((d: any) => d.result === 'would_deny' && d.rule === 'no-admin' && d.count === 1), 'the sidecar /stats carries the decisions');
  const stat = cli(['stat'], { server: cp.api });
  t.equal(stat.code, 0, stat.stderr);
  t.match(stat.stdout, /catalog\s+catalog-access\s+no-admin\s+WOULD DENY \(dryRun\)\s+1\s+1/, 'meshlet stat: the would-be denials');
  const check = cli(['check'], { server: cp.api });
  t.match(check.stdout, /MC0014/, 'meshlet check: a dryRun policy that would have denied requests');
  t.match(check.stdout, /would have denied 2 request\(s\) to catalog/);

  // Removing the policy restores access.
  t.equal((await api(cp, 'PUT', '/v1/authorizationpolicies/catalog-access', policy)).status, 200);
  await converged(cp, catalog);
  t.equal((await send('GET', '/admin/users')).status, 403, 'enforced again');
  t.equal((await api(cp, 'DELETE', '/v1/authorizationpolicies/catalog-access')).status, 200);
  await converged(cp, catalog);
  t.equal((await send('GET', '/admin/users')).status, 200, 'deleted: allowed again');

  // Bad policies are refused with field paths: the API and `meshlet apply`, nothing written.
  const bad = await api(cp, 'PUT', '/v1/authorizationpolicies/bad', authzPolicy('bad', { service: 'catalog', rules: [{ action: 'PERMIT' }, { action: 'DENY', to: { paths: [{ regex: '(a|' }] } }] }));
  t.equal(bad.status, 400);
  const text = JSON.stringify(bad.json);
  t.match(text, /spec\.rules\[0\]\.action/);
  t.match(text, /spec\.rules\[1\]\.to\.paths\[0\]\.regex/);
  const yaml = `apiVersion: meshlet.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad}\nspec:\n  rules:\n    - action: ALLOW\n      from: [{services: [frontend], unauthenticated: true}]\n`;
  const applied = cli(['apply', '-f', '-'], { server: cp.api, input: yaml });
  t.not(applied.code, 0);
  t.match(applied.stderr, /spec\.rules\[0\]\.from\[0\]\.unauthenticated: a plaintext caller has no identity/);
  t.equal((await api(cp, 'GET', '/v1/authorizationpolicies/bad')).status, 404, 'nothing written');
  const listed = cli(['get', 'authz'], { server: cp.api });
  t.equal(listed.code, 0, listed.stderr);
  t.match(listed.stdout, /interop-access/);
});
