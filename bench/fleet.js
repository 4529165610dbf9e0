#!/usr/bin/env node
/**
 * A simulated fleet on the real push protocol: one `meshlet control-plane` process (file store,
 * or a given etcd store), then N sidecars simulated from this one process: N gRPC streams (one
 * connection per 50 streams), each registering a Node of one of S services and answering every
 * snapshot like a sidecar (decode the JSON, then ACK with the nonce). Then R one-route changes
 * (PUT /v1/routes/...), each measured from the PUT to the moment the last simulated sidecar has
 * received the new version.
 *
 * Reports per change: convergence (median / p99 / max, from the PUT to the last sidecar having
 * the version, simulator side), bytes each sidecar received, the control plane's RSS, and the
 * simulator's own CPU time (so its cost, which delays the ACKs, is visible).
 *
 *   node bench/fleet.js [--sidecars 1000] [--services 100] [--rounds 20] [--store etcd-local | etcd://h:p,...]
 *
 * `--store etcd-local` starts a local 3-member etcd (free ports) for the run.
 *   (after `npm run build`; run under `flock /tmp/meshlet-bench.lock` on a shared machine)
 */
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { parseArgs } = require('node:util');

const ROOT = path.join(__dirname, '..');
const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const proto = require(path.join(ROOT, 'dist', 'src', 'proto'));

const { values } = parseArgs({
  options: {
    sidecars: { type: 'string', default: '1000' },
    services: { type: 'string', default: '100' },
    rounds: { type: 'string', default: '20' },
    store: { type: 'string' },
    'streams-per-connection': { type: 'string', default: '50' },
  },
});
const N = Number(values.sidecars);
const S = Number(values.services);
const ROUNDS = Number(values.rounds);
const PER_CONN = Number(values['streams-per-connection']);

function startControlPlane(dir) {
  const args = [MAIN, 'control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--log-level', 'warn'];
  if (values.store && values.store !== 'file') args.push('--store', values.store, '--etcd-prefix', `/bench-${process.pid}/`);
  // 'warn' hides 'control plane started': read the addresses from an info line instead.
  args[args.indexOf('warn')] = 'info';
  const nodeArgs = process.env.FLEET_CP_NODE_ARGS ? process.env.FLEET_CP_NODE_ARGS.split(' ') : [];
  const child = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the control plane did not start')), 30_000);
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const rec = JSON.parse(line);
        if (rec.msg === 'control plane started') {
          clearTimeout(t);
          resolve({ child, api: rec.api, push: rec.push });
        }
      } catch {
        // not a log line
      }
    });
  });
}

function rssMb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

const route = (i, tag) => ({
  apiVersion: 'meshlet.dev/v1',
  kind: 'Route',
  metadata: { name: `svc${i}`, labels: { tag } },
  spec: { hosts: [`svc${i}`], rules: [{ name: 'default', backends: [{ service: `svc${i}` }] }] },
});

async function api(base, method, p, body) {
  const res = await fetch(base + p, { method, headers: { 'content-type': 'application/json' }, body: body && JSON.stringify(body) }).catch((err) => {
    throw new Error(`${method} ${p}: ${err.message} (${err.cause && err.cause.message})`);
  });
  return { status: res.status, body: await res.json() };
}

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

let cpChild;
process.on('exit', () => cpChild && cpChild.kill('SIGKILL'));
(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-fleet-'));
  let etcd;
  if (values.store === 'etcd-local') {
    etcd = await require(path.join(ROOT, 'dist', 'src', 'cli', 'up-etcd')).startLocalEtcd(path.join(dir, 'etcd'), true);
    process.on('exit', () => etcd.stop());
    values.store = `etcd://${etcd.endpoints.join(',')}`;
  }
  const cp = await startControlPlane(dir);
  cpChild = cp.child;
  const base = cp.api;
  const seeded = await api(base, 'POST', '/v1/apply', { items: Array.from({ length: S }, (_, i) => route(i, 'seed')) });
  if (seeded.status !== 200) throw new Error(`seeding failed: ${JSON.stringify(seeded.body)}`);

  // The simulated sidecars.
  const clients = [];
  const sims = [];
  let waiting; // { version, left, since, times: [] }
  for (let i = 0; i < N; i++) {
    if (i % PER_CONN === 0) clients.push(proto.createPolicyDiscoveryClient(cp.push, undefined, { 'grpc.use_local_subchannel_pool': 1 }));
    const call = clients[clients.length - 1].Stream();
    const sim = { id: `sim-${i}`, version: undefined, bytes: 0, lastBytes: 0 };
    sims.push(sim);
    call.on('data', (msg) => {
      // What a sidecar does before it ACKs: decode (the compile is left out: it is the sidecar's cost).
      const size = msg.resourcesJson.length + msg.endpointsJson.length;
      JSON.parse(msg.resourcesJson);
      JSON.parse(msg.endpointsJson);
      sim.bytes += size;
      sim.lastBytes = size;
      sim.version = msg.version;
      call.write({ ack: { version: msg.version, nonce: msg.nonce } });
      if (waiting && msg.version === waiting.version && !sim.counted) {
        sim.counted = true;
        waiting.times.push(performance.now() - waiting.since);
        if (--waiting.left === 0) waiting.done();
      }
    });
    call.on('error', () => undefined);
    const svc = i % S;
    call.write({ node: { id: sim.id, service: `svc${svc}`, address: `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`, inboundPort: 15006, labels: {}, buildVersion: 'fleet-sim', adminPort: 0 } });
  }
  // Until every simulated sidecar has the snapshot that contains all of them.
  for (;;) {
    const st = await api(base, 'GET', '/v1/status');
    if (st.body.sidecars.filter((s) => s.connected).length === N && sims.every((s) => s.version === st.body.version)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 500));
  process.stderr.write(`fleet: ${N} simulated sidecars connected and converged\n`);

  const results = [];
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  for (let r = 0; r < ROUNDS; r++) {
    const i = r % S;
    const cur = (await api(base, 'GET', `/v1/routes/svc${i}`)).body;
    for (const s of sims) s.counted = false;
    const since = performance.now();
    const done = new Promise((resolve) => {
      waiting = { version: undefined, left: N, since, times: [], done: resolve };
    });
    const put = await api(base, 'PUT', `/v1/routes/svc${i}`, { ...route(i, `round-${r}`), metadata: { name: `svc${i}`, labels: { tag: `round-${r}` }, resourceVersion: cur.metadata.resourceVersion } });
    if (put.status !== 200) throw new Error(`PUT failed: ${JSON.stringify(put.body)}`);
    // The version is known once the control plane built it: read it, then count the sidecars that have it.
    let version;
    for (;;) {
      const st = (await api(base, 'GET', '/v1/status')).body;
      if (st.revision >= Number(put.body.metadata.resourceVersion)) {
        version = st.version;
        break;
      }
    }
    waiting.version = version;
    for (const s of sims)
      if (s.version === version && !s.counted) {
        s.counted = true;
        waiting.times.push(performance.now() - since); // arrived before we knew the version: an upper bound
        waiting.left--;
      }
    if (waiting.left === 0) waiting.done();
    await done;
    results.push({ last: Math.max(...waiting.times), bytes: sims[0].lastBytes });
  }
  const wall = performance.now() - wall0;
  const cpu = process.cpuUsage(cpu0);
  const lasts = results.map((x) => x.last);
  const out = {
    store: values.store && values.store !== 'file' ? 'etcd' : 'file',
    sidecars: N,
    services: S,
    rounds: ROUNDS,
    convergenceMs: { median: +pct(lasts, 50).toFixed(1), p99: +pct(lasts, 99).toFixed(1), max: +Math.max(...lasts).toFixed(1) },
    bytesPerSidecarPerChange: results[results.length - 1].bytes,
    controlPlaneRssMb: rssMb(cp.child.pid),
    simulatorCpuPercentOfWall: +(((cpu.user + cpu.system) / 1000 / wall) * 100).toFixed(1),
  };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  for (const c of clients) c.close();
  cp.child.kill('SIGTERM');
  // Let it exit on its own (a --cpu-prof profile is written at exit), within 10 s.
  await new Promise((r) => {
    cp.child.once('exit', r);
    setTimeout(r, 10_000);
  });
  cpChild = undefined;
  if (etcd) await etcd.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
})().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
