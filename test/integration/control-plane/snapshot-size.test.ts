/**
 * Bounded snapshots, against the real control plane started with `--max-snapshot-bytes 20000`:
 * writes that would make the pushed snapshot larger than the limit are refused (413, naming the
 * limit, nothing written), so no snapshot a sidecar cannot receive is ever built; writes that fit,
 * and deletes, still go through.
 */
import t from 'tap';
import * as fs from 'node:fs';
import { apiFetch, portOf, start, tmpDir } from '../lib/meshlet';

const route = (name: string) => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name }, spec: { hosts: [`${name}.example.com`], rules: [{ backends: [{ service: 'web' }] }] } });

t.test('a write that would make the snapshot too large is refused with the limit named', async (t) => {
  const dataDir = tmpDir('meshlet-snapsize-');
  const cp = start(['control-plane', '--data-dir', dataDir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--max-snapshot-bytes', '20000']);
  t.teardown(async () => {
    await cp.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const api = `http://127.0.0.1:${portOf((await cp.waitFor((l) => l.msg === 'control plane started')).api)}`;
  const apply = async (names: string[]) => {
    const r = await apiFetch(`${api}/v1/apply`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ items: names.map(route) }) });
    return { status: r.status, body: (await r.json()) as { message?: string } };
  };
  const batch = (from: number) => Array.from({ length: 40 }, (_, i) => `r-${from + i}`);
  t.equal((await apply(batch(0))).status, 200, '40 routes fit');
  const over = await apply(batch(40));
  t.equal(over.status, 413, '40 more would not');
  t.match(over.body.message, /over the limit of 20000 bytes.*nothing written/);
  const list = (await (await apiFetch(`${api}/v1/routes`)).json()) as { items: unknown[] };
  t.equal(list.items.length, 40, 'nothing of the refused batch was written');
  t.equal((await apiFetch(`${api}/v1/routes/r-0`, { method: 'DELETE' })).status, 200, 'deletes go through');
  t.equal((await apiFetch(`${api}/v1/routes/r-extra`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(route('r-extra')) })).status, 201, 'a write that fits goes through');
});
