/**
 * Any name the store accepts is stored and read back, across restarts: names of up to 253
 * characters (a file name is at most 255 bytes on most file systems, and percent-encoding can
 * triple a name), names that percent-encode, and names that look like the store's temp files.
 * Long names get hashed file names (`@<sha256>.json`) holding the real name; files written under
 * the old long form are renamed at load, without losing a version. Then the same through the real
 * `meshlet control-plane`: a 253-character name of every kind is applied, read, listed, deleted,
 * and survives a restart.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStore, resourceFileName, type WireResource } from '../../../control-plane/store';
import { KINDS, type Kind } from '../../../src/policy/types';
import { apiFetch, ROOT, startControlPlane, tmpDir } from '../lib/meshlet';
import { makeCert } from '../gateway/helpers';

const route = (name: string, host = 'web'): WireResource => ({
  apiVersion: 'meshlet.dev/v1',
  kind: 'Route',
  metadata: { name },
  spec: { hosts: [host], rules: [{ backends: [{ service: 'web' }] }] },
});

/** Every file name under the store, by kind. */
function files(dataDir: string, kind: string): string[] {
  return fs.readdirSync(path.join(dataDir, 'store', kind));
}

const NAMES: [string, string][] = [
  ['253 plain characters', 'a'.repeat(253)],
  ['253 characters that percent-encode to 3 bytes each', '%'.repeat(253)],
  ['253 characters of 2-byte UTF-8 (6 bytes encoded each)', 'é'.repeat(253)],
  ['spaces, ?, # and &', 'a b?c#d&e '.repeat(25)],
  ['just under the file name limit', 'b'.repeat(228)],
  ['just over it', 'c'.repeat(229)],
  ['the shape of a temp file', 'r.tmp-1-deadbeef'],
  ['a .tmp- inside', 'a.tmp-b'],
];

t.test('names of every length and shape the store accepts are stored, read back and survive a restart', async (t) => {
  const dataDir = tmpDir('meshlet-names-');
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  let s = await FileStore.open(dataDir);
  for (const [what, name] of NAMES) {
    const w = await s.put(route(name));
    t.equal(w.action, 'created', `${what}: created`);
    t.equal(s.get('Route', name)?.metadata.name, name, `${what}: read back`);
  }
  await s.put(route(NAMES[0]![1], 'web-2'));
  t.same(s.list('Route').map((r) => r.metadata.name), NAMES.map(([, n]) => n).sort(), 'listed');
  for (const f of files(dataDir, 'Route')) t.ok(Buffer.byteLength(f) <= 233, `file name ${f.slice(0, 20)}... is ${Buffer.byteLength(f)} bytes`);
  t.ok(files(dataDir, 'Route').includes(`@${createHash('sha256').update('a'.repeat(253)).digest('hex')}.json`), 'a long name has a hashed file name');
  t.ok(files(dataDir, 'Route').includes(`${'b'.repeat(228)}.json`), 'a name that fits keeps its readable file name');
  await s.close();

  s = await FileStore.open(dataDir);
  t.same(s.list('Route').map((r) => r.metadata.name), NAMES.map(([, n]) => n).sort(), 'all there after a restart');
  t.same((s.get('Route', NAMES[0]![1])?.spec as { hosts: string[] }).hosts, ['web-2'], 'with their latest version');
  for (const [what, name] of NAMES.slice(0, 4)) t.equal((await s.delete('Route', name)).action, 'deleted', `${what}: deleted`);
  await s.close();

  s = await FileStore.open(dataDir);
  t.same(s.list('Route').map((r) => r.metadata.name), NAMES.slice(4).map(([, n]) => n).sort(), 'the deleted ones stay deleted');
  // A multi-resource commit (journalled) with long names.
  const r = await s.commit(() => [{ op: 'put', resource: route('x'.repeat(253)) }, { op: 'put', resource: route('ü'.repeat(253)) }]);
  t.equal(r.results.length, 2);
  await s.close();
  s = await FileStore.open(dataDir);
  t.ok(s.get('Route', 'x'.repeat(253)) && s.get('Route', 'ü'.repeat(253)), 'a journalled commit of long names survives a restart');
  await s.close();
});

/** A resource file as the store writes it (with its checksum), under `file` (default: the form before hashed names, its percent-encoded name). */
function writeLegacy(dataDir: string, res: WireResource, file = `${encodeURIComponent(res.metadata.name)}.json`): string {
  const full = path.join(dataDir, 'store', res.kind, file);
  fs.writeFileSync(full, JSON.stringify({ sha256: createHash('sha256').update(JSON.stringify(res)).digest('hex'), resource: res }, null, 2) + '\n');
  return full;
}

const stamped = (name: string, rv: number, host = 'web'): WireResource => ({ ...route(name, host), metadata: { name, resourceVersion: String(rv), creationTimestamp: '2026-12-01T00:00:00.000Z' } });

t.test('a store written before hashed names opens with every resource; long names move to hashed files', async (t) => {
  const dataDir = tmpDir('meshlet-names-legacy-');
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  let s = await FileStore.open(dataDir);
  await s.put(route('short'));
  await s.close();
  // Names whose percent-encoded file name fitted then (< 255 bytes) but is now over the limit.
  const long = 'l'.repeat(240);
  const both = 'm'.repeat(240);
  const legacyLong = writeLegacy(dataDir, stamped(long, 5));
  // One name under both forms (a copy made by hand, say): the newer version wins, whichever file holds it.
  const legacyBoth = writeLegacy(dataDir, stamped(both, 7, 'newer'));
  writeLegacy(dataDir, stamped(both, 6, 'older'), resourceFileName(both));
  s = await FileStore.open(dataDir);
  t.same(s.list('Route').map((r) => r.metadata.name), [long, both, 'short'].sort(), 'every resource loaded');
  t.equal(s.get('Route', long)?.metadata.resourceVersion, '5');
  t.same((s.get('Route', both)?.spec as { hosts: string[] }).hosts, ['newer'], 'the newer copy kept');
  t.ok(s.revision >= 7, 'the revision accounts for them');
  t.notOk(fs.existsSync(legacyLong), 'the old long file name is gone');
  t.notOk(fs.existsSync(legacyBoth));
  t.ok(fs.existsSync(path.join(dataDir, 'store', 'Route', resourceFileName(long))), 'renamed to its hashed name');
  t.ok(resourceFileName(long).startsWith('@'));
  // They keep working: update, delete, and a restart does not bring a deleted one back.
  t.equal((await s.put(route(long, 'updated'), '5')).action, 'updated');
  t.equal((await s.delete('Route', both)).action, 'deleted');
  await s.close();
  s = await FileStore.open(dataDir);
  t.same((s.get('Route', long)?.spec as { hosts: string[] }).hosts, ['updated']);
  t.equal(s.get('Route', both), undefined, 'deleted stays deleted');
  await s.close();
});

t.test('through meshlet control-plane: a 253-character name of every kind is applied, read, listed, deleted, and survives a restart', async (t) => {
  const dataDir = tmpDir('meshlet-names-api-');
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const name = (kind: string) => `${kind.toLowerCase()}-`.padEnd(253, 'x');
  const PROTOS = path.join(ROOT, 'test', 'fixtures', 'transcode');
  const cert = makeCert(dataDir, 'names', ['names.example.com']);
  const specs: Record<Kind, unknown> = {
    Route: { hosts: ['web'], rules: [{ backends: [{ service: 'web' }] }] },
    DestinationPolicy: { service: 'web' },
    RateLimitPolicy: { service: 'web', limits: [{ name: 'all', requests: 10, per: '1s' }] },
    Service: { dependencies: ['web'] },
    GrpcTranscoding: { service: 'library', protos: ['library.proto', 'shelf.proto'].map((name) => ({ name, source: fs.readFileSync(path.join(PROTOS, name), 'utf8') })), services: ['meshlet.test.library.v1.Library'] },
    AuthorizationPolicy: { service: 'web', defaultAction: 'DENY', rules: [{ name: 'all', action: 'ALLOW', from: [{ spiffeIds: ['spiffe://cluster.local/svc/a'] }] }] },
    PeerAuthentication: { service: 'web', mode: 'STRICT' },
    Gateway: { listeners: [{ name: 'web', port: 18080, protocol: 'HTTP' }] },
    ApiConsumer: { keys: [`sha256:${'a'.repeat(64)}`] },
    TLSCertificate: { certificate: fs.readFileSync(cert.certFile, 'utf8'), privateKey: fs.readFileSync(cert.keyFile, 'utf8') },
  };
  let cp = await startControlPlane(dataDir);
  t.teardown(() => cp.stop());
  const get = async (kind: string, n: string) => (await apiFetch(`${cp.api}/v1/${kind}/${encodeURIComponent(n)}`)).status;
  const list = async (kind: string) => ((await (await apiFetch(`${cp.api}/v1/${kind}`)).json()) as { items: { metadata: { name: string } }[] }).items.map((i) => i.metadata.name);
  for (const kind of KINDS) {
    const body = { apiVersion: 'meshlet.dev/v1', kind, metadata: { name: name(kind) }, spec: specs[kind] };
    const r = await apiFetch(`${cp.api}/v1/${kind}/${name(kind)}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    t.equal(r.status, 201, `${kind}: PUT with a 253-character name: ${r.status === 201 ? 'created' : await r.text()}`);
    t.equal(await get(kind, name(kind)), 200, `${kind}: GET`);
    t.ok((await list(kind)).includes(name(kind)), `${kind}: listed`);
  }
  // And in one /v1/apply (one journalled commit).
  const applied = await apiFetch(`${cp.api}/v1/apply`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ items: [route('y'.repeat(253), 'y'), route('z'.repeat(253), 'z')] }) });
  t.equal(applied.status, 200, `a /v1/apply of two 253-character names: ${applied.status === 200 ? 'applied' : await applied.text()}`);
  await cp.stop();

  cp = await startControlPlane(dataDir);
  for (const kind of KINDS) t.equal(await get(kind, name(kind)), 200, `${kind}: there after a restart`);
  t.equal(await get('Route', 'y'.repeat(253)), 200);
  for (const kind of KINDS) {
    const r = await apiFetch(`${cp.api}/v1/${kind}/${name(kind)}`, { method: 'DELETE' });
    t.equal(r.status, 200, `${kind}: DELETE`);
    t.equal(await get(kind, name(kind)), 404, `${kind}: gone`);
  }
  await cp.stop();

  cp = await startControlPlane(dataDir);
  for (const kind of KINDS) t.equal(await get(kind, name(kind)), 404, `${kind}: still gone after a restart`);
  t.same((await list('Route')).sort(), ['y'.repeat(253), 'z'.repeat(253)]);
});
