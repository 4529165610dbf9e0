/**
 * Cache purge with `meshlet sidecar --concurrency 2` (a real primary and two workers, each with
 * its own caches): `POST /cache/purge` on the primary's admin port (where the control plane's
 * `meshlet cache purge` lands) reaches every worker and answers their sum; afterwards no worker
 * answers from its cache.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { startSidecar, tmpDir } from '../lib/meshlet';

const HOST = '127.0.0.1';

/** One request on a new connection (agent: false): the kernel picks a worker each time. */
function get(port: number, p: string): Promise<{ status: number; cache: string | undefined }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: HOST, port, path: p, headers: { host: 'origin' }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, cache: res.headers['x-cache'] as string | undefined }));
      })
      .on('error', reject);
  });
}

function purge(admin: number, body: unknown): Promise<{ status: number; json: { purged?: number } }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port: admin, path: '/cache/purge', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: b ? JSON.parse(b) : {} }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

t.test('a purge on the primary reaches both workers\' caches', async (t) => {
  const dir = tmpDir('meshlet-purge-workers-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fetched: string[] = [];
  const origin = http.createServer((req, res) => {
    fetched.push(req.url ?? '');
    res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' });
    res.end(`origin ${req.url}`);
  });
  await new Promise<void>((r) => origin.listen(0, HOST, r));
  t.teardown(() => new Promise<void>((r) => (origin.close(() => r()), origin.closeAllConnections())));
  const file = path.join(dir, 'policies.yaml');
  writeFileSync(
    file,
    [
      { apiVersion: 'meshlet.dev/v1', kind: 'Service', metadata: { name: 'origin' }, spec: { protocol: 'http1', endpoints: [{ address: HOST, port: (origin.address() as AddressInfo).port }] } },
      { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'origin' }, spec: { hosts: ['origin'], rules: [{ name: 'all', backends: [{ service: 'origin' }], cache: {} }] } },
    ]
      .map((r) => JSON.stringify(r))
      .join('\n---\n'),
  );
  const sc = await startSidecar(['--service', 'client', '--config', file, '--concurrency', '2']);
  t.teardown(() => sc.stop());

  // Many new connections per path: each worker that gets one fetches it once, then answers HITs.
  for (const p of ['/items/1', '/items/2', '/other'])
    for (let i = 0; i < 12; i++) t.equal((await get(sc.outbound, p)).status, 200);
  const stored = fetched.length;
  t.ok(stored >= 3 && stored <= 6, `each path fetched once per worker that saw it (${stored})`);

  const some = await purge(sc.admin, { prefix: 'GET origin/items/' });
  t.equal(some.status, 200);
  const itemsStored = fetched.filter((u) => u.startsWith('/items/')).length;
  t.equal(some.json.purged, itemsStored, 'the answer sums what every worker removed');
  const all = await purge(sc.admin, { prefix: '' });
  t.equal(all.json.purged, stored - itemsStored, 'the rest, from every worker');
  const before = fetched.length;
  const after = await get(sc.outbound, '/other');
  t.equal(after.cache, 'MISS', 'whichever worker answers, its cache no longer has it');
  t.equal(fetched.length, before + 1, 'and it went to the origin');
});
