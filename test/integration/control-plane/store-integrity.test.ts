/**
 * The store never silently loses a policy, tried against the real `meshlet control-plane`:
 *
 * - a truncated resource file, or one whose content was changed behind the store's back (valid
 *   JSON, wrong checksum), stops the control plane from starting, naming the file and `--repair`;
 *   it never serves (and pushes) a snapshot with that policy missing;
 * - `--repair` sets the damaged file aside and starts with the rest;
 * - a write that fails part-way (here: the file-size limit, EFBIG, as ENOSPC would) answers 503
 *   "outcome unknown; re-read before retrying", and what a re-read shows is what a restart loads.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { apiFetch, followJsonLog, MAIN, rememberToken, startControlPlane, tmpDir } from '../lib/meshlet';

const route = (name: string, host = name) => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name }, spec: { hosts: [host], rules: [{ backends: [{ service: 'web' }] }] } });
const rlp = (name: string) => ({ apiVersion: 'meshlet.dev/v1', kind: 'RateLimitPolicy', metadata: { name }, spec: { service: 'web', limits: [{ name: 'all', requests: 10, per: '1s' }] } });

async function put(api: string, plural: string, body: { metadata: { name: string } }): Promise<{ status: number; body: any }> {
  const r = await apiFetch(`${api}/v1/${plural}/${body.metadata.name}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}

async function seed(t: Test, dataDir: string): Promise<void> {
  const cp = await startControlPlane(dataDir);
  t.equal((await put(cp.api, 'routes', route('w4'))).status, 201);
  t.equal((await put(cp.api, 'routes', route('w5'))).status, 201);
  const r = await put(cp.api, 'ratelimitpolicies', rlp('protect-web'));
  t.equal(r.status, 201, `rate-limit policy stored: ${JSON.stringify(r.body)}`);
  await cp.stop();
}

/** Starts the control plane expecting it to refuse: its exit code and stderr (a bound of 20 s against hangs). */
function startRefused(dataDir: string): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, 'control-plane', '--data-dir', dataDir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0'], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stderr: r.stderr };
}

t.test('a damaged resource file stops the control plane from starting; --repair sets it aside', async (t) => {
  const dataDir = tmpDir('meshlet-integrity-');
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  await seed(t, dataDir);

  const w5 = path.join(dataDir, 'store', 'Route', 'w5.json');
  const text = fs.readFileSync(w5, 'utf8');
  fs.writeFileSync(w5, text.slice(0, Math.floor(text.length / 2)));
  let r = startRefused(dataDir);
  t.equal(r.code, 1, 'a truncated file: refuses to start');
  t.match(r.stderr, w5, 'names the file');
  t.match(r.stderr, /not valid JSON/);
  t.match(r.stderr, /--repair/, 'says how to recover');

  // Valid JSON, changed behind the store's back: the checksum catches it.
  fs.writeFileSync(w5, text);
  const policy = path.join(dataDir, 'store', 'RateLimitPolicy', 'protect-web.json');
  fs.writeFileSync(policy, fs.readFileSync(policy, 'utf8').replace('"requests": 10', '"requests": 10000'));
  r = startRefused(dataDir);
  t.equal(r.code, 1, 'an edited policy file: refuses to start');
  t.match(r.stderr, policy);
  t.match(r.stderr, /checksum mismatch/);

  // --repair: set aside, start with the rest.
  const p = spawn(process.execPath, [MAIN, 'control-plane', '--data-dir', dataDir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--repair', '--insecure-plaintext'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((res) => p.once('exit', (c) => res(c)));
  t.teardown(() => {
    p.kill('SIGKILL');
  });
  const log = followJsonLog(p, exited, 'control-plane --repair');
  const aside = await log.waitFor((l) => l.msg === 'repair: damaged store file set aside; re-apply what it held', 15_000);
  t.equal(aside.file, policy, 'the damaged file is named in the log');
  const started = await log.waitFor((l) => l.msg === 'control plane started', 15_000);
  const api = String(started.api);
  rememberToken(started, dataDir);
  t.ok(fs.readdirSync(path.dirname(policy)).some((f) => f.startsWith('protect-web.json.corrupt-')), 'kept aside for a human');
  t.equal((await apiFetch(`${api}/v1/ratelimitpolicies/protect-web`)).status, 404, 'the damaged policy is gone (to be re-applied)');
  t.equal((await apiFetch(`${api}/v1/routes/w5`)).status, 200, 'the rest is served');
  t.equal((await put(api, 'ratelimitpolicies', rlp('protect-web'))).status, 201, 're-applied');
});

t.test('a write that fails part-way answers 503 "outcome unknown", and a re-read shows what a restart loads', async (t) => {
  const dataDir = tmpDir('meshlet-efbig-');
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  await seed(t, dataDir);
  // Files over 4 KiB cannot be written: EFBIG, as a full disk fails a write part-way.
  const p = spawn('prlimit', ['--fsize=4096', process.execPath, MAIN, 'control-plane', '--data-dir', dataDir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--insecure-plaintext'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((res) => p.once('exit', (c) => res(c)));
  t.teardown(() => {
    p.kill('SIGKILL');
  });
  const log = followJsonLog(p, exited, 'control-plane under prlimit');
  const started = await log.waitFor((l) => l.msg === 'control plane started', 15_000);
  const api = String(started.api);
  rememberToken(started, dataDir);
  const big = route('w4', 'w4');
  (big.spec.rules[0] as Record<string, unknown>).name = 'x'.repeat(60);
  (big.spec as Record<string, unknown>).hosts = Array.from({ length: 90 }, (_, i) => `host-${i}-${'y'.repeat(40)}.example.com`);
  const r = await put(api, 'routes', big).catch((e: Error) => {
    throw new Error(`${e.message}; the control plane said:\n${log.output()}`);
  });
  t.equal(r.status, 503, 'the failed write answers 503');
  t.match(r.body.message, /outcome unknown; re-read before retrying/);
  const now = (await (await apiFetch(`${api}/v1/routes/w4`)).json()) as { spec: { hosts: string[] } };
  t.same(now.spec.hosts, ['w4'], 're-read: the old version');
  t.equal((await put(api, 'routes', route('w6'))).status, 201, 'small writes still work');
  p.kill('SIGTERM');
  await exited;
  const cp = await startControlPlane(dataDir);
  t.teardown(() => cp.stop());
  const after = (await (await apiFetch(`${cp.api}/v1/routes/w4`)).json()) as { spec: { hosts: string[] } };
  t.same(after.spec.hosts, ['w4'], 'after a restart: what the re-read showed');
  t.equal((await apiFetch(`${cp.api}/v1/routes/w6`)).status, 200);
});
