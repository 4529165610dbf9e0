#!/usr/bin/env node
/**
 * gRPC and multiplexing figures, each against its reference measured in the same run:
 *
 *   node bench/grpc.js [--quick] [--seconds N] [--concurrency N]
 *
 * 1. gRPC unary req/s: a closed loop of @grpc/grpc-js UnaryCall (100-byte request and response)
 *    straight at a grpc-js server ("direct"), then through one sidecar's outbound listener, then
 *    through two sidecars (outbound -> inbound, as across the mesh). Reported: req/s, p50/p99
 *    latency, ratio to direct.
 * 2. HTTP/1.1 between two sidecars, multiplexed over HTTP/2 (DestinationPolicy http2Upgrade: true) and not (the default,
 *    http2Upgrade: false): req/s, p50/p99 and the TCP connections into the server sidecar.
 *
 * The load generator is node itself (one process, the harness), so absolute figures are bounded
 * by it; the ratios are what to compare. Needs `npm run build` first (dist/).
 */
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { createInterface } = require('node:readline');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const { meshletArgv } = require('./lib/node-flags');

const ROOT = path.resolve(__dirname, '..');
const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const PROTO = path.join(ROOT, 'test', 'fixtures', 'grpc', 'test.proto');

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SECONDS = opt('--seconds', quick ? 2 : 8);
const CONCURRENCY = opt('--concurrency', quick ? 16 : 64);

if (!fs.existsSync(MAIN)) {
  console.error(`${MAIN} is missing: run \`npm run build\` first`);
  process.exit(2);
}

const procs = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-bench-grpc-'));
function cleanup() {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

function startMeshlet(argv, readyMsg) {
  const child = spawn(process.execPath, meshletArgv(MAIN, argv), { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, MESHLET_LOG_LEVEL: 'info' } });
  procs.push(child);
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const rec = JSON.parse(line);
        if (rec.msg === readyMsg) resolve(rec);
      } catch {
        // not JSON
      }
    });
    child.once('exit', (code) => reject(new Error(`meshlet ${argv[0]} exited (${code})`)));
  });
}
const portOf = (s) => Number(String(s).slice(String(s).lastIndexOf(':') + 1));
const res = (kind, name, spec) => ({ apiVersion: 'meshlet.dev/v1', kind, metadata: { name }, spec });

async function sidecar(resources, extra = []) {
  const file = path.join(tmp, `p${procs.length}.yaml`);
  fs.writeFileSync(file, resources.map((r) => JSON.stringify(r)).join('\n---\n'));
  const l = await startMeshlet(['sidecar', '--service', 'bench', '--config', file, '--outbound', '127.0.0.1:0', '--inbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', ...extra], 'sidecar started');
  return { outbound: portOf(l.outbound), inbound: portOf(l.inbound) };
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
}

/** A closed loop: CONCURRENCY callers, each issuing `once()` back to back for SECONDS. */
async function closedLoop(once) {
  for (let i = 0; i < 200; i++) await once(); // warm-up
  const lat = [];
  let errors = 0;
  const end = Date.now() + SECONDS * 1000;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < end) {
        const s = process.hrtime.bigint();
        try {
          await once();
          lat.push(Number(process.hrtime.bigint() - s) / 1e6);
        } catch {
          errors++;
        }
      }
    }),
  );
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((a, b) => a - b);
  return { rps: lat.length / secs, p50: percentile(lat, 50), p99: percentile(lat, 99), errors };
}

const fmt = (r) => `${r.rps.toFixed(0).padStart(7)} req/s   p50 ${r.p50.toFixed(2)} ms   p99 ${r.p99.toFixed(2)} ms   errors ${r.errors}`;

async function grpcBench() {
  const def = loader.loadSync(PROTO, { defaults: true });
  const TestService = grpc.loadPackageDefinition(def).grpc.testing.TestService;
  const server = new grpc.Server();
  server.addService(TestService.service, {
    unaryCall: (call, cb) => cb(null, { payload: { body: Buffer.alloc(call.request.responseSize) } }),
  });
  const port = await new Promise((r, j) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? j(e) : r(p))));
  const b = await sidecar([res('Service', 'unused', { endpoints: [{ address: '127.0.0.1', port: 9 }] })], ['--app-port', String(port), '--app-protocol', 'http2']);
  const route = res('Route', 'bench', { hosts: ['bench'], rules: [{ backends: [{ service: 'bench' }] }] });
  const one = await sidecar([res('Service', 'bench', { endpoints: [{ address: '127.0.0.1', port }] }), route]);
  const two = await sidecar([res('Service', 'bench', { endpoints: [{ address: '127.0.0.1', port: b.inbound }] }), route]);
  const req = { responseSize: 100, payload: { body: Buffer.alloc(100) } };
  const out = {};
  for (const [name, p] of [
    ['direct', port],
    ['1 sidecar', one.outbound],
    ['2 sidecars', two.outbound],
  ]) {
    const c = new TestService(`127.0.0.1:${p}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'bench' });
    const once = () => new Promise((resolve, reject) => c.unaryCall(req, (e) => (e ? reject(e) : resolve())));
    out[name] = await closedLoop(once);
    c.close();
  }
  server.forceShutdown();
  console.log(`\ngRPC unary (UnaryCall, 100 B each way), ${CONCURRENCY} concurrent calls, ${SECONDS} s each`);
  for (const [k, r] of Object.entries(out)) console.log(`  ${k.padEnd(11)} ${fmt(r)}   ${k === 'direct' ? '' : `${((r.rps / out.direct.rps) * 100).toFixed(0)}% of direct`}`);
}

function established(port) {
  let n = 0;
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length > 3 && parseInt(c[1].slice(c[1].lastIndexOf(':') + 1), 16) === port && c[3] === '01') n++;
    }
  }
  return n;
}

async function muxBench() {
  const app = http.createServer((q, s) => s.end('hello from the app'));
  await new Promise((r) => app.listen(0, '127.0.0.1', r));
  const cp = await startMeshlet(['control-plane', '--data-dir', path.join(tmp, 'cp'), '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--insecure-plaintext', '--insecure-push-plaintext', '--sidecar-auth', 'permissive'], 'control plane started');
  const push = `127.0.0.1:${portOf(cp.push)}`;
  const client = await startMeshlet(['sidecar', '--service', 'client', '--control-plane', push, '--insecure-push-plaintext', '--advertise', '127.0.0.1', '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'], 'sidecar started');
  const server = await startMeshlet(['sidecar', '--service', 'echo', '--app-port', String(app.address().port), '--control-plane', push, '--insecure-push-plaintext', '--advertise', '127.0.0.1', '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'], 'sidecar started');
  const outbound = portOf(client.outbound);
  const inbound = portOf(server.inbound);
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const get = () =>
    new Promise((resolve, reject) => {
      const r = http.request({ host: '127.0.0.1', port: outbound, path: '/', headers: { host: 'echo' }, agent }, (s) => {
        s.resume();
        s.on('end', () => (s.statusCode === 200 ? resolve() : reject(new Error(String(s.statusCode)))));
      });
      r.on('error', reject);
      r.end();
    });
  for (let i = 0; i < 300; i++) {
    try {
      await get();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const upgrade = async (on) => {
    const yaml = `apiVersion: meshlet.dev/v1\nkind: DestinationPolicy\nmetadata: {name: echo}\nspec: {service: echo, http2Upgrade: ${on}}\n`;
    const applied = spawnSync(process.execPath, [MAIN, 'apply', '-f', '-'], { input: yaml, env: { ...process.env, MESHLET_SERVER: cp.api, MESHLET_TOKEN: fs.readFileSync(path.join(tmp, 'cp', 'admin.token'), 'utf8').trim() }, encoding: 'utf8' });
    if (applied.status !== 0) throw new Error(`apply failed: ${applied.stderr}`);
    await new Promise((r) => setTimeout(r, 1500)); // push + compile
  };
  // Multiplexing is off by default (docs/performance.md): turned on for the first run.
  await upgrade(true);
  const on = await closedLoop(get);
  const onConns = established(inbound);
  await upgrade(false);
  const off = await closedLoop(get);
  // (The idle HTTP/2 connection from the first run is still open: counted too.)
  const offConns = established(inbound);
  agent.destroy();
  app.close();
  app.closeAllConnections();
  console.log(`\nHTTP/1.1 client -> sidecar -> sidecar -> HTTP/1.1 app, ${CONCURRENCY} keep-alive connections, ${SECONDS} s each`);
  console.log(`  multiplexed (h2)   ${fmt(on)}   connections into the server sidecar: ${onConns}`);
  console.log(`  http2Upgrade:false ${fmt(off)}   connections into the server sidecar: ${offConns} (incl. the idle h2 one)`);
}

(async () => {
  console.log(`meshlet gRPC bench (${quick ? 'quick' : 'default'}), node ${process.version}, ${os.cpus().length} cpus`);
  await grpcBench();
  await muxBench();
  process.exit(0);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
