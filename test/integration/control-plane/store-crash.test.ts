/**
 * kill -9 a process writing to a FileStore as fast as it can, then reopen the store: every write
 * the killed process saw acknowledged must be there, multi-resource commits must be all or
 * nothing, and the store must load and keep working. Several rounds on the same data dir, so
 * recovery itself is crashed into too.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FileStore } from '../../../control-plane/store';

const WRITER = path.join(__dirname, '../../fixtures/store-writer.js');
const COMPILED = path.join(__dirname, '../../../dist/control-plane/store.js');
const ROUNDS = 4;

interface Ack {
  n: number;
  rv: number;
}

interface Run {
  readyRevision: number;
  acks: Ack[];
}

/** Runs the writer until it has acknowledged at least `minAcks` writes, then SIGKILLs it. */
function runAndKill(dataDir: string, mode: 'single' | 'batch', first: number, minAcks: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, dataDir, mode, String(first)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const run: Run = { readyRevision: -1, acks: [] };
    let buf = '';
    let stderr = '';
    let killed = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`writer made ${run.acks.length} acks in 30s; stderr: ${stderr}`));
    }, 30_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const [what, a, b] = buf.slice(0, i).split(' ');
        buf = buf.slice(i + 1);
        if (what === 'ready') run.readyRevision = Number(a);
        else if (what === mode) run.acks.push({ n: Number(a), rv: Number(b) });
      }
      if (!killed && run.acks.length >= minAcks) {
        killed = true;
        // A little jitter, so the kill lands at different points of a commit.
        setTimeout(() => child.kill('SIGKILL'), Math.random() * 4);
      }
    });
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`writer exited with ${code}: ${stderr}`));
      else resolve(run);
    });
  });
}

function tempFiles(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.includes('.tmp-') || f.endsWith('batch.json'));
}

t.before(() => {
  if (!fs.existsSync(COMPILED)) throw new Error(`${COMPILED} is missing: run \`npm run build\` first (npm test does)`);
});

t.test('single-resource writes survive kill -9', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-crash-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const acked: Ack[] = [];
  let next = 0;
  let maxRv = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const run = await runAndKill(dataDir, 'single', next, 20 + Math.floor(Math.random() * 40));
    t.ok(run.readyRevision >= maxRv, `round ${round}: the writer's store opened at revision ${run.readyRevision} >= ${maxRv}`);
    acked.push(...run.acks);
    const last = run.acks[run.acks.length - 1] as Ack;
    next = last.n + 2; // skip the one that may have been in flight
    maxRv = Math.max(maxRv, last.rv);

    t.comment(`round ${round}: killed after ${run.acks.length} acks; left behind: ${tempFiles(path.join(dataDir, 'store')).join(', ') || 'nothing'}`);
    const store = await FileStore.open(dataDir);
    const missing = acked.filter((a) => store.get('Route', `r-${a.n}`)?.metadata.resourceVersion !== String(a.rv));
    t.same(missing, [], `round ${round}: all ${acked.length} acknowledged writes present at their version`);
    t.ok(store.revision >= maxRv, `round ${round}: revision ${store.revision} >= last acknowledged ${maxRv}`);
    const unacked = store.list('Route').filter((r) => r.metadata.name.startsWith('r-')).length - acked.length;
    t.ok(unacked >= 0 && unacked <= round + 1, `round ${round}: at most one unacknowledged write per crash (${unacked})`);
    for (let i = 0; i < round; i++) t.ok(store.get('Route', `after-${i}`), `the write made after recovery ${i} is still there`);
    t.same(tempFiles(path.join(dataDir, 'store')), [], 'no temp files or journal left after load');
    // Still writable, and revisions keep going up.
    const r = await store.put({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: `after-${round}` }, spec: { hosts: [`after-${round}`], rules: [{ backends: [{ service: 'web' }] }] } });
    t.ok(Number(r.resource.metadata.resourceVersion) > maxRv, 'a write after recovery gets a later revision');
    maxRv = Number(r.resource.metadata.resourceVersion);
    await store.close();
  }
});

t.test('multi-resource commits are all or nothing across kill -9', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-crash-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const acked: Ack[] = [];
  let next = 0;
  let maxRv = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const run = await runAndKill(dataDir, 'batch', next, 10 + Math.floor(Math.random() * 30));
    t.ok(run.readyRevision >= maxRv, `round ${round}: the writer's store opened at revision ${run.readyRevision} >= ${maxRv}`);
    acked.push(...run.acks);
    const last = run.acks[run.acks.length - 1] as Ack;
    next = last.n + 2;
    maxRv = Math.max(maxRv, last.rv);

    t.comment(`round ${round}: killed after ${run.acks.length} acks; left behind: ${tempFiles(path.join(dataDir, 'store')).join(', ') || 'nothing'}`);
    const store = await FileStore.open(dataDir);
    const rv = (name: string) => store.get('Route', name)?.metadata.resourceVersion;
    const missing = acked.filter((a) => rv(`a-${a.n}`) !== String(a.rv) || rv(`b-${a.n}`) !== String(a.rv));
    t.same(missing, [], `round ${round}: all ${acked.length} acknowledged commits present at their revision`);
    const torn = store
      .list('Route')
      .filter((r) => r.metadata.name.startsWith('a-'))
      .filter((r) => rv(`b-${r.metadata.name.slice(2)}`) !== r.metadata.resourceVersion)
      .map((r) => r.metadata.name);
    t.same(torn, [], 'no commit half-applied');
    const counter = store.get('Route', 'counter') as { spec: { hosts: string[] }; metadata: { resourceVersion?: string } };
    const counterN = Number(counter.spec.hosts[0]?.slice(2));
    t.ok(counterN >= last.n, `counter (c-${counterN}) reflects at least the last acknowledged commit (${last.n})`);
    t.equal(rv(`a-${counterN}`), counter.metadata.resourceVersion, 'counter was written in the same commit as its a-/b- pair');
    t.ok(store.revision >= maxRv, `revision ${store.revision} >= last acknowledged ${maxRv}`);
    t.same(tempFiles(path.join(dataDir, 'store')), [], 'no temp files or journal left after load');
    maxRv = store.revision;
    await store.close();
  }
});

t.test('a journalled commit interrupted before it was applied is finished at load', async (t) => {
  // What kill -9 leaves when it lands between the journal's rename and the resource files' renames.
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-crash-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const route = (name: string) => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route' as const, metadata: { name }, spec: { hosts: [name], rules: [{ backends: [{ service: 'web' }] }] } });
  let store = await FileStore.open(dataDir);
  await store.put(route('old'));
  await store.put(route('keep'));
  await store.close();
  const stamp = (name: string) => ({ ...route(name), metadata: { name, resourceVersion: '3', creationTimestamp: new Date().toISOString() } });
  fs.writeFileSync(
    path.join(dataDir, 'store', 'batch.json'),
    JSON.stringify({ revision: 3, entries: [{ kind: 'Route', name: 'new-1', resource: stamp('new-1') }, { kind: 'Route', name: 'new-2', resource: stamp('new-2') }, { kind: 'Route', name: 'old', resource: null }] }),
  );
  store = await FileStore.open(dataDir);
  t.equal(store.revision, 3);
  t.same(store.list('Route').map((r) => r.metadata.name), ['keep', 'new-1', 'new-2']);
  t.notOk(fs.existsSync(path.join(dataDir, 'store', 'batch.json')), 'journal removed');
  await store.close();
  store = await FileStore.open(dataDir);
  t.same(store.list('Route').map((r) => r.metadata.name), ['keep', 'new-1', 'new-2'], 'and it stays applied');
  t.equal((await store.put(route('next'))).resource.metadata.resourceVersion, '4');
  await store.close();
});
