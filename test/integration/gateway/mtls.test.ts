/**
 * The gateway as a mesh workload, with the real processes: `meshlet control-plane`, `meshlet
 * gateway --join-token` (it gets its own certificate, spiffe://cluster.local/svc/edge, over the
 * push stream) and `meshlet sidecar`s with join tokens. A service with PeerAuthentication STRICT
 * is reachable through the gateway (the hop is mTLS) and not through a gateway without a
 * credential; an AuthorizationPolicy allowing only the gateway's identity admits the gateway and
 * denies another meshed caller; the gateway's SPIFFE ID shows in `/config_dump` and in
 * `meshlet status -o json`, where sidecars' do. A `--concurrency 2` gateway's workers dial mTLS
 * with the certificate its primary got.
 */
import * as http from 'node:http';
import * as path from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { apiRequest, cli, eventually, portOf, start, startControlPlane, tmpDir, type ControlPlaneProc, type Proc } from '../lib/meshlet';
import { meshSidecar, metric, sourceApp } from '../lib/mtls';
import { closedPort } from './helpers';

const API = 'meshlet.dev/v1';
const EDGE_ID = 'spiffe://cluster.local/svc/edge';

function token(dataDir: string, service: string): string {
  const r = cli(['token', 'create', '--service', service, '--ttl', '1h', '--data-dir', dataDir, '-o', 'json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

interface GatewayProc extends Proc {
  admin: number;
}

async function gateway(cp: ControlPlaneProc, name: string, env: Record<string, string>, args: string[] = []): Promise<GatewayProc> {
  const p = start(['gateway', '--name', name, '--control-plane', `127.0.0.1:${cp.pushPort}`, '--address', '127.0.0.1', '--admin', '127.0.0.1:0', '--access-log', '0', ...args], env);
  const l = await p.waitFor((x) => x.msg === 'gateway started');
  return Object.assign(p, { admin: portOf(l.admin) });
}

async function apply(cp: ControlPlaneProc, items: unknown[]): Promise<void> {
  const r = await apiRequest(`${cp.api}/v1/apply`, { method: 'POST', body: JSON.stringify({ items }), headers: { 'content-type': 'application/json' } });
  const text = await r.body.text();
  if (r.statusCode !== 200) throw new Error(`apply: ${r.statusCode} ${text}`);
}

function get(port: number, host: string, p = '/'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, headers: { host }, agent: false }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function configDump(admin: number): Promise<any> {
  return (await request(`http://127.0.0.1:${admin}/config_dump`, { reset: true })).body.json();
}

t.test('the gateway has its own workload identity and calls services over mTLS', async (t) => {
  const dir = tmpDir('meshlet-gateway-mtls-');
  const cp = await startControlPlane(path.join(dir, 'data'));
  t.teardown(() => cp.stop());
  const data = path.join(dir, 'data');
  const app = await sourceApp();
  t.teardown(() => app.close());
  const catalog = await meshSidecar(cp.pushPort, 'catalog', token(data, 'catalog'), ['--app-port', String(app.port)]);
  t.teardown(() => catalog.stop());
  const frontend = await meshSidecar(cp.pushPort, 'frontend', token(data, 'frontend'));
  t.teardown(() => frontend.stop());
  const [securePort, plainPort, workersPort] = [await closedPort(), await closedPort(), await closedPort()];
  await apply(cp, [
    { apiVersion: API, kind: 'Gateway', metadata: { name: 'edge' }, spec: { listeners: [{ name: 'web', port: securePort, protocol: 'HTTP' }] } },
    { apiVersion: API, kind: 'Gateway', metadata: { name: 'edge-plain' }, spec: { listeners: [{ name: 'web', port: plainPort, protocol: 'HTTP' }] } },
    { apiVersion: API, kind: 'Gateway', metadata: { name: 'edge-workers' }, spec: { listeners: [{ name: 'web', port: workersPort, protocol: 'HTTP' }] } },
    { apiVersion: API, kind: 'Route', metadata: { name: 'shop' }, spec: { hosts: ['shop.example.com'], gateways: ['edge', 'edge-plain', 'edge-workers'], rules: [{ backends: [{ service: 'catalog' }] }] } },
    { apiVersion: API, kind: 'Route', metadata: { name: 'catalog' }, spec: { hosts: ['catalog'], rules: [{ backends: [{ service: 'catalog' }] }] } },
    { apiVersion: API, kind: 'PeerAuthentication', metadata: { name: 'catalog-strict' }, spec: { service: 'catalog', mode: 'STRICT' } },
  ]);
  const edge = await gateway(cp, 'edge', { MESHLET_JOIN_TOKEN: token(data, 'edge') });
  t.teardown(() => edge.stop());
  const plain = await gateway(cp, 'edge-plain', {});
  t.teardown(() => plain.stop());
  await edge.waitFor((l) => l.msg === 'workload certificate installed');
  await catalog.waitFor((l) => l.msg === 'workload certificate installed');
  await frontend.waitFor((l) => l.msg === 'workload certificate installed');
  // Both gateways run the control plane's current snapshot (their listeners are bound).
  for (const g of [edge, plain])
    await eventually('the gateway to apply the snapshot', async () => {
      const status = (await (await apiRequest(`${cp.api}/v1/status`)).body.json()) as { version: string };
      return (await configDump(g.admin)).version === status.version ? true : undefined;
    });

  await t.test("the gateway's SPIFFE ID shows where sidecars' do", async (t) => {
    const d = await configDump(edge.admin);
    t.equal(d.identity.spiffeId, EDGE_ID, '/config_dump: identity.spiffeId');
    t.match(d.identity.certificate.chainPem, /BEGIN CERTIFICATE/, 'with the public certificate');
    t.equal(d.identity.lastError, null);
    t.same(d.mtls, { certificate: true });
    const status = cli(['status', '-o', 'json'], { server: cp.api });
    t.equal(status.code, 0, status.stderr);
    const rows = (JSON.parse(status.stdout) as { sidecars: { service: string; kind?: string; spiffeId?: string }[] }).sidecars;
    t.same(
      rows.filter((r) => r.service === 'edge' || r.service === 'catalog').map((r) => [r.service, r.kind ?? 'sidecar', r.spiffeId]).sort(),
      [
        ['catalog', 'sidecar', 'spiffe://cluster.local/svc/catalog'],
        ['edge', 'gateway', EDGE_ID],
      ],
      'meshlet status -o json: the gateway row has its SPIFFE ID like the sidecar rows',
    );
    const wide = cli(['status', '-o', 'wide'], { server: cp.api });
    t.match(wide.stdout, /edge \(gateway\)[^\n]*spiffe:\/\/cluster\.local\/svc\/edge/, 'and the wide table shows it');
    const noCert = await configDump(plain.admin);
    t.equal(noCert.identity, undefined, 'a gateway without a credential has no identity');
    t.same(noCert.mtls, { certificate: false });
  });

  await t.test('a STRICT service is reachable through the gateway: the hop is mTLS and the app sees the gateway', async (t) => {
    const r = await eventually('the route through the gateway', async () => {
      const x = await get(securePort, 'shop.example.com', '/items').catch(() => undefined);
      return x && x.status !== 503 ? x : undefined;
    });
    t.equal(r.status, 200, r.body);
    t.same(JSON.parse(r.body), { source: 'edge' }, 'the callee names the caller from its certificate');
    t.ok((await metric(edge.admin, 'meshlet_tls_handshakes_total', { direction: 'outbound', result: 'ok' })) >= 1, 'the gateway counts its outbound mTLS handshake');
    t.ok((await metric(catalog.admin, 'meshlet_inbound_connections_total', { security: 'tls' })) >= 1, 'the callee admitted a TLS connection');
  });

  await t.test('a gateway without a credential dials plaintext, which STRICT refuses', async (t) => {
    const before = await metric(catalog.admin, 'meshlet_mtls_refused_total', { reason: 'plaintext_refused' });
    const r = await get(plainPort, 'shop.example.com', '/items');
    t.equal(r.status, 502, 'the callee closes the connection: upstream reset');
    t.match(r.body, /reset/);
    t.ok((await metric(catalog.admin, 'meshlet_mtls_refused_total', { reason: 'plaintext_refused' })) > before, 'the callee refused a plaintext connection');
  });

  await t.test('--concurrency 2: the primary gets the certificate, both workers dial mTLS with it', async (t) => {
    const workers = await gateway(cp, 'edge-workers', { MESHLET_JOIN_TOKEN: token(data, 'edge-workers') }, ['--concurrency', '2']);
    t.teardown(() => workers.stop());
    await eventually('ready (every worker with the snapshot and the certificate there)', async () => ((await request(`http://127.0.0.1:${workers.admin}/ready`, { reset: true })).statusCode === 200 ? true : undefined));
    const d = await configDump(workers.admin);
    t.equal(d.identity.spiffeId, 'spiffe://cluster.local/svc/edge-workers', "the primary's identity in /config_dump");
    t.equal(d.workers.length, 2);
    const perWorker = async () => Promise.all(['0', '1'].map((w) => metric(workers.admin, 'meshlet_worker_connections_total', { listener: 'web', worker: w })));
    let counts = await perWorker();
    for (let round = 0; round < 10 && !counts.every((n) => n > 0); round++) {
      const rs = await Promise.all(Array.from({ length: 20 }, () => get(workersPort, 'shop.example.com', '/items')));
      const bad = rs.find((r) => r.status !== 200 || r.body !== JSON.stringify({ source: 'edge-workers' }));
      t.notOk(bad, `every request reaches STRICT catalog as edge-workers${bad ? `: ${bad.status} ${bad.body}` : ''}`);
      counts = await perWorker();
    }
    t.ok(counts.every((n) => n > 0), `both workers served (${counts.join(' / ')})`);
    t.ok((await metric(workers.admin, 'meshlet_tls_handshakes_total', { direction: 'outbound', result: 'ok' })) >= 2, 'each worker made its own mTLS handshakes');
  });

  await t.test("an AuthorizationPolicy allowing only the gateway's identity admits it and denies another caller", async (t) => {
    await apply(cp, [
      {
        apiVersion: API,
        kind: 'AuthorizationPolicy',
        metadata: { name: 'catalog-edge-only' },
        spec: { service: 'catalog', defaultAction: 'DENY', rules: [{ name: 'the-gateway', action: 'ALLOW', from: [{ spiffeIds: [EDGE_ID] }] }] },
      },
    ]);
    const denied = await eventually('the policy in force at catalog', async () => {
      const r = await request(`http://127.0.0.1:${frontend.outbound}/items`, { headers: { host: 'catalog' } });
      const body = await r.body.text();
      return r.statusCode === 403 ? { status: r.statusCode, flags: r.headers['x-meshlet-flags'], body } : undefined;
    });
    t.equal(denied.flags, 'RBAC', 'frontend, verified over mTLS but not allowed: 403 RBAC');
    t.match(denied.body, /catalog-edge-only/);
    const seen = app.sources.length;
    const r = await get(securePort, 'shop.example.com', '/items');
    t.equal(r.status, 200, r.body);
    t.same(JSON.parse(r.body), { source: 'edge' });
    t.equal(app.sources.length, seen + 1, 'the app saw the gateway request only');
    t.ok((await metric(catalog.admin, 'meshlet_authz_requests_total', { policy: 'catalog-edge-only', result: 'allow' })) >= 1, 'the allow is counted');
  });
});
