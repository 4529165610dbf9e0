/**
 * `meshlet sidecar --concurrency 2` with mTLS, real processes: a control plane, a catalog sidecar
 * and a frontend sidecar, each a primary and two workers, with join tokens. Under a mesh-wide
 * STRICT PeerAuthentication (plaintext refused) every worker of the frontend originates mTLS and
 * every worker of the catalog serves it with the one certificate the primary holds; a root
 * rotation reaches every worker; a worker restarted after it died serves mTLS at once.
 */
import { X509Certificate } from 'node:crypto';
import * as http from 'node:http';
import * as tls from 'node:tls';
import t from 'tap';
import { request } from 'undici';
import { cli, eventually, startControlPlane, tmpDir } from '../integration/lib/meshlet';
import { issue, meshSidecar, metric, sourceApp, type MeshSidecar, type Workload } from '../integration/lib/mtls';

function token(dataDir: string, service: string): string {
  const r = cli(['token', 'create', '--service', service, '--ttl', '1h', '--data-dir', dataDir, '-o', 'json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

interface Dump {
  identity?: { certificate: { serial: string; chainPem: string } | null };
  mtls?: { mode: { mode: string }; certificate: boolean };
  workers: { worker: number; pid: number | null; listening: boolean; version: string | null }[];
  version: string | null;
}

async function dump(sc: MeshSidecar): Promise<Dump> {
  return (await (await request(`http://127.0.0.1:${sc.admin}/config_dump`, { reset: true })).body.json()) as Dump;
}

/** The SHA-256 fingerprint of the certificate a sidecar's primary holds now. */
async function heldFingerprint(sc: MeshSidecar): Promise<string | undefined> {
  const pem = (await dump(sc)).identity?.certificate?.chainPem;
  return pem ? new X509Certificate(pem).fingerprint256 : undefined;
}

/** One request on a new TLS connection (the kernel picks a worker) holding `w`'s certificate: the status and the server certificate's fingerprint. */
function tlsGet(port: number, w: Workload): Promise<{ status: number; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, key: w.keyPem, cert: w.chainPem, ca: w.bundlePem, checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'] }, () => {
      const fingerprint = s.getPeerCertificate().fingerprint256;
      const req = http.request({ createConnection: () => s, path: '/', headers: { host: 'catalog', connection: 'close' } }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, fingerprint }));
      });
      req.on('error', reject);
      req.end();
    });
    s.on('error', reject);
  });
}

async function workerCounts(sc: MeshSidecar, listener: string): Promise<number[]> {
  return Promise.all([0, 1].map((w) => metric(sc.admin, 'meshlet_worker_connections_total', { listener, worker: String(w) })));
}

/**
 * New TLS connections to the catalog's inbound port until both workers took at least one (told by
 * the per-worker connection counter): what each worker answered and which certificate it showed.
 */
async function byWorker(catalog: MeshSidecar, w: Workload): Promise<Map<number, { status: number; fingerprint: string }[]>> {
  const seen = new Map<number, { status: number; fingerprint: string }[]>();
  for (let i = 0; i < 200 && seen.size < 2; i++) {
    const before = await workerCounts(catalog, 'inbound');
    const r = await tlsGet(catalog.inbound, w);
    const after = await workerCounts(catalog, 'inbound');
    const worker = after.findIndex((n, k) => n > (before[k] as number));
    if (worker < 0) continue;
    seen.set(worker, [...(seen.get(worker) ?? []), r]);
  }
  return seen;
}

t.test('--concurrency 2: every worker serves and originates mTLS with the one identity; rotation and restarts reach every worker', async (t) => {
  const dir = tmpDir();
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const app = await sourceApp();
  t.teardown(() => app.close());
  const catalog = await meshSidecar(cp.pushPort, 'catalog', token(dir, 'catalog'), ['--app-port', String(app.port), '--concurrency', '2']);
  t.teardown(() => catalog.stop());
  const frontend = await meshSidecar(cp.pushPort, 'frontend', token(dir, 'frontend'), ['--concurrency', '2']);
  t.teardown(() => frontend.stop());
  for (const s of [catalog, frontend]) await s.waitFor((l) => l.msg === 'workload certificate sent to the workers');

  const strict = cli(['apply', '-f', '-'], { server: cp.api, input: 'apiVersion: meshlet.dev/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mode: STRICT}\n' });
  t.equal(strict.code, 0, strict.stderr);
  await eventually('STRICT in force at the catalog, with a certificate', async () => {
    const d = await dump(catalog);
    return d.mtls?.mode.mode === 'STRICT' && d.mtls.certificate && d.workers.every((w) => w.version === d.version) ? true : undefined;
  });
  await eventually('the catalog endpoint carries its identity at the frontend', async () => {
    const d = (await (await request(`http://127.0.0.1:${frontend.admin}/config_dump`, { reset: true })).body.json()) as { services: { name: string; endpoints: { identity?: string }[] }[] };
    return d.services.find((s) => s.name === 'catalog')?.endpoints[0]?.identity ? true : undefined;
  });

  // Originating: requests on new connections to the frontend until both of its workers took some.
  const answers: string[] = [];
  for (let i = 0; i < 300; i++) {
    const counts = await workerCounts(frontend, 'outbound');
    if (counts.every((n) => n >= 3)) break;
    const r = await request(`http://127.0.0.1:${frontend.outbound}/`, { headers: { host: 'catalog' }, reset: true });
    answers.push(`${r.statusCode} ${JSON.parse(await r.body.text()).source}`);
  }
  t.ok((await workerCounts(frontend, 'outbound')).every((n) => n >= 3), 'both frontend workers took requests');
  t.same([...new Set(answers)], ['200 frontend'], `every request through both frontend workers reached the STRICT catalog over mTLS (${answers.length})`);
  t.ok((await metric(frontend.admin, 'meshlet_tls_handshakes_total', { direction: 'outbound', result: 'ok' })) >= 2, 'each frontend worker made its own mTLS connection');
  t.equal(await metric(catalog.admin, 'meshlet_mtls_refused_total', { reason: 'plaintext_refused' }), 0, 'no plaintext reached the catalog');

  // Serving: both catalog workers answer TLS with the primary's certificate.
  const caller = await issue(dir, 'frontend');
  const held = await heldFingerprint(catalog);
  t.ok(held, 'the catalog primary holds a certificate');
  let seen = await byWorker(catalog, caller);
  t.equal(seen.size, 2, 'both catalog workers took TLS connections');
  for (const [w, rs] of seen) t.same([...new Set(rs.map((r) => `${r.status} ${r.fingerprint === held ? 'held' : r.fingerprint}`))], ['200 held'], `catalog worker ${w} serves mTLS with the primary's certificate`);

  // Root rotation: the primary renews, every worker switches.
  const rot = cli(['ca', 'rotate', '--overlap', '1h', '--data-dir', dir]);
  t.equal(rot.code, 0, rot.stderr);
  const renewed = await eventually('the catalog primary holds a renewed certificate', async () => {
    const f = await heldFingerprint(catalog);
    return f && f !== held ? f : undefined;
  });
  // A caller that trusts the new root (the renewed certificate chains to it).
  const caller2 = await issue(dir, 'frontend');
  await eventually('every catalog worker shows the renewed certificate', async () => {
    const s = await byWorker(catalog, caller2);
    return s.size === 2 && [...s.values()].every((rs) => rs.every((r) => r.status === 200 && r.fingerprint === renewed)) ? true : undefined;
  }, 30_000);
  t.pass('the renewed certificate reached both catalog workers');

  // A worker restarted after it died gets the certificate with its start.
  const victim = (await dump(catalog)).workers[0]?.pid as number;
  process.kill(victim, 'SIGKILL');
  await eventually('the worker is back', async () => {
    const d = await dump(catalog);
    return d.workers.every((w) => w.listening && w.pid !== victim && w.version === d.version) ? true : undefined;
  }, 30_000);
  seen = await byWorker(catalog, caller2);
  t.equal(seen.size, 2, 'both catalog workers (one restarted) took TLS connections');
  for (const [w, rs] of seen) t.same([...new Set(rs.map((r) => `${r.status} ${r.fingerprint === renewed ? 'renewed' : r.fingerprint}`))], ['200 renewed'], `catalog worker ${w} serves mTLS with the certificate in force`);
  const after = await request(`http://127.0.0.1:${frontend.outbound}/`, { headers: { host: 'catalog' }, reset: true });
  t.equal(after.statusCode, 200, 'the frontend still reaches the catalog');
  await after.body.text();
});
