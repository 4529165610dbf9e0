/**
 * Smoke test of `npm start`: `meshlet up` brings up the local mesh, a request goes
 * frontend -> catalog -> pricing, Ctrl-C stops everything, and a second start works at once.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { cli, eventually, MAIN, tmpDir } from './lib/meshlet';

interface Up {
  stdout: () => string;
  pids: () => number[];
  stop(): Promise<number | null>;
  frontend: number;
  outbound: number;
  /** The edge gateway's HTTP listener. */
  gateway: number;
  api: string;
}

async function up(dataDir: string): Promise<Up> {
  // `up` writes its context (server, admin token) to the CLI's config file: a test one.
  const child = spawn(process.execPath, [MAIN, 'up', '--ephemeral-ports', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MESHLET_CONFIG: path.join(dataDir, 'config.yaml') } });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`meshlet up did not come up in 60 s:\n${out}\n${err}`)), 60_000);
    const check = () => {
      if (out.includes('Ctrl-C stops everything')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`meshlet up exited (${code}):\n${out}\n${err}`));
    });
  });
  const frontend = Number(/curl -s http:\/\/127\.0\.0\.1:(\d+)\/\n/.exec(out)?.[1]);
  const gateway = Number(/gateway\s+http:\/\/127\.0\.0\.1:(\d+)\//.exec(out)?.[1]);
  const api = /API (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1] as string;
  const outbound = Number(/curl -s -x http:\/\/127\.0\.0\.1:(\d+) /.exec(out)?.[1]);
  return {
    stdout: () => out,
    // The sidecar processes `up` started, from its own process table (children of `up`).
    pids: () => sidecarPids(child.pid as number),
    frontend,
    outbound,
    gateway,
    api,
    stop: async () => {
      child.kill('SIGINT');
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

function sidecarPids(parent: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

t.test('meshlet up: a local mesh in one command', async (t) => {
  const dataDir = path.join(tmpDir(), '.meshlet');
  const mesh = await up(dataDir);
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await mesh.stop();
  });
  t.match(mesh.stdout(), /control plane\s+API http:\/\/127\.0\.0\.1:\d+/, 'prints the control plane');
  t.match(mesh.stdout(), /pricing-0 .* admin http:\/\/127\.0\.0\.1:\d+\/config_dump/, 'prints every admin port');
  t.ok(mesh.frontend > 0, 'prints a ready curl line');
  t.match(mesh.stdout(), /first request: 200 /);
  const sidecars = mesh.pids();
  t.equal(sidecars.length, 5, 'one sidecar process per service instance, and the gateway');

  // The edge: the gateway's URL reaches frontend -> catalog -> pricing, with the mesh's headers kept inside.
  t.ok(mesh.gateway > 0, 'prints the gateway URL');
  const edge = await request(`http://127.0.0.1:${mesh.gateway}/`);
  t.equal(edge.statusCode, 200, 'the gateway answers');
  t.equal(edge.headers['x-meshlet-flags'], undefined, 'no x-meshlet-* header reaches the client');
  const eb = (await edge.body.json()) as { service: string; catalog: { service: string; items: { service: string }[] } };
  t.equal(eb.service, 'frontend', 'through the gateway to the frontend');
  t.match(eb.catalog.service, /^catalog-v[12]$/, 'which called catalog');
  t.ok(eb.catalog.items.length > 0 && eb.catalog.items.every((x) => x.service === 'pricing'), 'which called pricing');
  // The admin token `up` made (and wrote to the CLI context): the API needs one.
  const adminToken = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const st = await request(`${mesh.api}/v1/status`, { headers: { authorization: `Bearer ${adminToken}` } });
  const gw = ((await st.body.json()) as { sidecars: { id: string; kind?: string }[] }).sidecars.find((x) => x.id === 'gateway-0');
  t.equal(gw?.kind, 'gateway', 'meshlet status lists the gateway as such');
  // The gateway has its own identity (up gives it a join token) and calls frontend over mTLS.
  const gwAdmin = Number(/gateway\s+http:\/\/127\.0\.0\.1:\d+\/\s+admin http:\/\/127\.0\.0\.1:(\d+)\//.exec(mesh.stdout())?.[1]);
  const gwDump = (await (await request(`http://127.0.0.1:${gwAdmin}/config_dump`)).body.json()) as { identity?: { spiffeId: string }; mtls: { certificate: boolean } };
  t.equal(gwDump.identity?.spiffeId, 'spiffe://cluster.local/svc/gateway', "the gateway's SPIFFE ID in its config_dump");
  t.same(gwDump.mtls, { certificate: true }, 'with its certificate in use');
  const gwMetrics = await (await request(`http://127.0.0.1:${gwAdmin}/metrics`)).body.text();
  t.match(gwMetrics, /meshlet_tls_handshakes_total\{[^}]*direction="outbound"[^}]*result="ok"[^}]*\} [1-9]/, 'the gateway dialled frontend over mTLS');
  t.notMatch(gwMetrics, /meshlet_tls_handshakes_total\{[^}]*result="(failed|wrong_identity)"[^}]*\} [1-9]/, 'and no handshake failed');

  const versions = new Set<string>();
  for (let i = 0; i < 30; i++) {
    const r = await request(`http://127.0.0.1:${mesh.frontend}/`);
    t.equal(r.statusCode, 200);
    const b = (await r.body.json()) as { service: string; catalog: { service: string; items: { service: string; price: number }[] } };
    t.equal(b.service, 'frontend');
    t.match(b.catalog.service, /^catalog-v[12]$/);
    t.ok(b.catalog.items.every((x) => x.service === 'pricing' && typeof x.price === 'number'), 'catalog asked pricing');
    versions.add(b.catalog.service);
  }
  t.ok(versions.has('catalog-v1'), 'the 80/20 split reaches v1');
  const canary = await request(`http://127.0.0.1:${mesh.frontend}/`, { headers: { 'x-canary': 'true' } });
  t.equal(((await canary.body.json()) as { catalog: { service: string } }).catalog.service, 'catalog-v2', 'x-canary: true goes to v2');
  const proxied = await request(`http://127.0.0.1:${mesh.outbound}/items`, { headers: { host: 'catalog' } });
  t.equal(proxied.statusCode, 200, 'the frontend sidecar outbound routes by Host');
  await proxied.body.dump();
  // pricing is a gRPC service: plain HTTP/JSON reaches it through transcoding, gRPC errors map to HTTP.
  const price = await request(`http://127.0.0.1:${mesh.outbound}/price/teapot`, { headers: { host: 'pricing' } });
  t.same(await price.body.json(), { service: 'pricing', item: 'teapot', price: 31.53 }, 'HTTP/JSON -> gRPC pricing');
  const badItem = await request(`http://127.0.0.1:${mesh.outbound}/price/tea%20pot`, { headers: { host: 'pricing' } });
  t.equal(badItem.statusCode, 400, 'INVALID_ARGUMENT from the gRPC app is a 400');
  await badItem.body.dump();

  // stat / top show pricing (gRPC behind transcoding), and catalog's calls to it are counted as
  // calls to pricing, not to an unknown destination.
  const server = mesh.api;
  t.match(mesh.stdout(), server, 'up prints the control plane to use');
  const stats = await eventually('pricing in meshlet stat', async () => {
    const s = JSON.parse(cli(['stat', '-o', 'json'], { server, token: adminToken }).stdout) as { services: { service: string; requests: number }[]; routes: { service: string; route?: string; requests: number }[] };
    return s.services.some((r) => r.service === 'pricing' && r.requests > 0) && s.routes.some((r) => r.service === 'pricing' && r.requests > 0) ? s : undefined;
  });
  t.ok(stats.routes.every((r) => r.service !== 'unknown'), `no route counted to an unknown destination: ${JSON.stringify(stats.routes.map((r) => `${r.service} ${r.route}`))}`);
  const topOut = cli(['top', '--count', '1'], { server, token: adminToken }).stdout;
  t.match(topOut, /^pricing\s+\d/m, 'top shows pricing as a service');
  t.match(topOut, /^pricing\s+pricing\/\S+\s+\d/m, "top shows the route catalog's sidecars call pricing by");
  for (const id of ['catalog-v1-0', 'catalog-v2-0']) {
    const admin = new RegExp(`${id} .* admin (http://127\\.0\\.0\\.1:\\d+)/config_dump`).exec(mesh.stdout())?.[1];
    const metrics = await (await request(`${admin}/metrics`)).body.text();
    t.notMatch(metrics, /meshlet_requests_total\{direction="outbound"[^}]*destination="unknown"/, `${id}: no outbound request counted to destination="unknown"`);
    if (id === 'catalog-v1-0') t.match(metrics, /meshlet_requests_total\{direction="outbound",source="catalog",destination="pricing"/, `${id}: its calls to pricing are counted as such`);
  }

  // explain --last follows one request id across the sidecars it crossed.
  const traced = await request(`http://127.0.0.1:${mesh.frontend}/`, { headers: { 'x-request-id': 'up-test-last-1' } });
  t.equal(traced.statusCode, 200);
  await traced.body.dump();
  const last = await eventually('explain --last finds the request', async () => {
    const r = cli(['explain', '--last', 'up-test-last-1', '-o', 'json'], { server, token: adminToken });
    return r.code === 0 ? (JSON.parse(r.stdout) as { decisions: { service: string; direction: string; status: number }[] }) : undefined;
  });
  const hops = last.decisions.map((d) => `${d.service} ${d.direction}`);
  t.same(hops.slice(0, 3), ['frontend inbound', 'frontend outbound', 'catalog inbound'], 'the hops in the order the request travelled');
  t.ok(hops.includes('catalog outbound') && hops.includes('pricing inbound'), `and on to pricing (the apps propagate x-request-id): ${hops.join(', ')}`);
  t.ok(last.decisions.every((d) => d.status === 200));

  // Every sidecar proved its service with the join token `up` made for it, and holds a certificate.
  for (const [id, service] of [['frontend-0', 'frontend'], ['pricing-0', 'pricing']]) {
    const admin = new RegExp(`${id} .* admin (http://127\\.0\\.0\\.1:\\d+)/config_dump`).exec(mesh.stdout())?.[1];
    const ident = await eventually(`${id}'s certificate`, async () => {
      const d = (await (await request(`${admin}/config_dump`)).body.json()) as { identity?: { spiffeId: string; certificate: unknown } };
      return d.identity?.certificate ? d.identity : undefined;
    });
    t.equal(ident.spiffeId, `spiffe://cluster.local/svc/${service}`, `${id} has its identity`);
  }

  const code = await mesh.stop();
  stopped = true;
  t.match(cli(['token', 'list', '--data-dir', dataDir]).stdout, /revoked/, "up's join tokens are revoked when it stops");
  t.notMatch(cli(['token', 'list', '--data-dir', dataDir]).stdout, /join .*active/, 'no join token is left active');
  t.match(cli(['token', 'list', '--data-dir', dataDir]).stdout, /api\s+admin\s+active/, "the local user's admin token (DATA_DIR/admin.token) stays, for the next `up`");
  t.equal(code, 0, 'Ctrl-C exits 0');
  t.match(mesh.stdout(), /meshlet: stopped/);
  t.same(sidecars.filter((p) => existsSync(`/proc/${p}`) && !/\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8'))), [], 'no sidecar outlives it');

  // A second start straight after, on the same data dir.
  const again = await up(dataDir);
  t.teardown(() => again.stop());
  const r = await request(`http://127.0.0.1:${again.frontend}/`);
  t.equal(r.statusCode, 200, 'a second start works straight after');
  await r.body.dump();
  t.equal(await again.stop(), 0);
});
