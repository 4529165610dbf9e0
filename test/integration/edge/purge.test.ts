/**
 * Cache purge through the control plane: `POST /v1/cache/purge` and `meshlet cache purge` reach
 * every connected sidecar (two here, each with its own cache) at its admin port.
 */
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync } from 'node:fs';
import t from 'tap';
import { eventually, MAIN, startControlPlane, startSidecar, tmpDir, tokenFor } from '../lib/meshlet';
import { request } from '../sidecar/helpers';

function run(args: string[], server: string, input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const c = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, MESHLET_SERVER: server, MESHLET_CONFIG: '/nonexistent', MESHLET_TOKEN: tokenFor(server) ?? '' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  c.stdin.end(input ?? '');
  return new Promise((resolve) => c.on('close', (code) => resolve({ code, stdout, stderr })));
}

const POLICY = `apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: catalog}
spec:
  hosts: [catalog]
  rules:
    - name: all
      backends: [{service: catalog}]
      cache: {}
`;

t.test('purge by key and by prefix reaches every sidecar, through the API and the CLI', async (t) => {
  const dir = tmpDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  const origin = http.createServer((req, res) => res.writeHead(200, { 'cache-control': 'max-age=600' }).end(`item ${req.url}`));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  t.teardown(() => origin.close());
  const appPort = (origin.address() as AddressInfo).port;
  const catalog = await startSidecar(['--service', 'catalog', '--id', 'cat-0', '--app-port', String(appPort), '--control-plane', push, '--advertise', '127.0.0.1']);
  const a = await startSidecar(['--service', 'web', '--id', 'web-0', '--control-plane', push, '--advertise', '127.0.0.1']);
  const b = await startSidecar(['--service', 'web', '--id', 'web-1', '--control-plane', push, '--advertise', '127.0.0.1']);
  t.teardown(() => Promise.all([catalog, a, b].map((s) => s.stop())));
  const applied = await run(['apply', '-f', '-'], cp.api, POLICY);
  t.equal(applied.code, 0, applied.stderr);
  const get = (port: number, path: string) => request({ port, path, headers: { host: 'catalog' } });
  await eventually('both web sidecars route and cache', async () => {
    for (const s of [a, b]) {
      const w = await get(s.outbound, '/warm');
      if (w.headers['x-cache'] === undefined) {
        return undefined;
      }
    }
    return true;
  });
  for (const s of [a, b]) for (const p of ['/items/1', '/items/2', '/other']) await get(s.outbound, p);
  for (const s of [a, b]) t.equal((await get(s.outbound, '/items/1')).headers['x-cache'], 'HIT', 'cached on both sidecars');

  const api = (body: unknown) =>
    new Promise<{ status: number; json: any }>((resolve, reject) => {
      const u = new URL('/v1/cache/purge', cp.api.startsWith('http') ? cp.api : `http://${cp.api}`);
      const req = http.request(u, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenFor(cp.api) ?? ''}` } }, (res) => {
        let s = '';
        res.on('data', (c: Buffer) => (s += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(s) }));
      });
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  const byKey = await api({ service: 'web', key: 'GET catalog/items/1' });
  t.equal(byKey.status, 200);
  t.equal(byKey.json.purged, 2, 'the key went from both web sidecars');
  t.same(byKey.json.sidecars.map((s: { id: string; purged: number }) => `${s.id}=${s.purged}`).sort(), ['web-0=1', 'web-1=1']);
  for (const s of [a, b]) t.equal((await get(s.outbound, '/items/1')).headers['x-cache'], 'MISS', 'purged on both');
  for (const s of [a, b]) t.equal((await get(s.outbound, '/items/2')).headers['x-cache'], 'HIT', 'other keys kept');

  const cli = await run(['cache', 'purge', '--prefix', 'GET catalog/items/'], cp.api);
  t.equal(cli.code, 0, cli.stderr);
  t.match(cli.stdout, /^purged 4 cached responses \(prefix "GET catalog\/items\/"\) from 3 sidecar\(s\)/, 'the CLI sums every sidecar (the catalog sidecar has none)');
  for (const s of [a, b]) {
    t.equal((await get(s.outbound, '/items/2')).headers['x-cache'], 'MISS', 'the prefix is gone');
    t.equal((await get(s.outbound, '/other')).headers['x-cache'], 'HIT', 'outside the prefix: kept');
  }
  const bad = await api({ key: 'x', prefix: 'y' });
  t.equal(bad.status, 400);
  t.match(bad.json.message, /exactly one of key/);
  const usage = await run(['cache', 'purge'], cp.api);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /KEY or --prefix/);
});
