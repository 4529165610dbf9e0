/**
 * AuthorizationPolicy rules on caller identity, with plaintext callers (real control plane and
 * sidecars): `call.peer` is undefined without a verified TLS client certificate, so a rule
 * naming a caller identity never matches them, whatever `x-meshlet-source` says.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { eventually, startControlPlane, startSidecar, tmpDir, tokenFor, type ControlPlaneProc, type SidecarProc } from '../lib/meshlet';
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

/** Waits until the sidecar runs the control plane's current snapshot. */
async function converged(cp: ControlPlaneProc, sc: SidecarProc): Promise<void> {
  await eventually('the sidecar to apply the snapshot', async () => {
    const status = (await api(cp, 'GET', '/v1/status')).json;
    const dump = JSON.parse((await request({ port: sc.admin, path: '/config_dump' })).text);
    return status.version && dump.version === status.version ? true : undefined;
  });
}

t.test('an identity rule does not admit a plaintext caller that claims the identity in x-meshlet-source', async (t) => {
  const dir = tmpDir('meshlet-authz-id-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cp = await startControlPlane(path.join(dir, 'data'));
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  const pricingApp = await app(t);
  const pricing = await startSidecar(['--service', 'pricing', '--app-port', String(pricingApp.port), '--control-plane', push, '--advertise', '127.0.0.1']);
  t.teardown(() => pricing.stop());
  const catalog = await startSidecar(['--service', 'catalog', '--control-plane', push, '--advertise', '127.0.0.1']);
  t.teardown(() => catalog.stop());
  const items = [
    { apiVersion: API, kind: 'Route', metadata: { name: 'pricing' }, spec: { hosts: ['pricing'], rules: [{ backends: [{ service: 'pricing' }] }] } },
    authzPolicy('pricing-callers', { service: 'pricing', rules: [{ name: 'catalog', action: 'ALLOW', from: [{ services: ['catalog'] }] }] }),
  ];
  t.equal((await api(cp, 'POST', '/v1/apply', { items })).status, 200);
  await converged(cp, pricing);
  await converged(cp, catalog);
  // Through catalog's own sidecar: it stamps x-meshlet-source: catalog, but over plaintext.
  const viaSidecar = await eventually('the route to reach catalog', async () => {
    const r = await request({ port: catalog.outbound, path: '/price', headers: { host: 'pricing' } });
    return r.status === 503 ? undefined : r;
  });
  t.equal(viaSidecar.status, 403, 'the caller sidecar over plaintext proves nothing');
  t.match(viaSidecar.text, /pricing-callers rule defaultAction/);
  // Straight at the callee with the header set by hand.
  const direct = await request({ port: pricing.inbound, path: '/price', headers: { host: 'pricing', 'x-meshlet-source': 'catalog' } });
  t.equal(direct.status, 403, 'x-meshlet-source is not an identity');
  t.equal(direct.headers['x-meshlet-flags'], 'RBAC');
  t.same(pricingApp.seen, [], 'the app saw neither');
});
