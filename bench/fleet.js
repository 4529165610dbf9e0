#!/usr/bin/env node
/**
 * A simulated fleet on the real push protocol: one `meshlet control-plane` process (file store,
 * or a given etcd store), then N sidecars simulated from this one process: N gRPC streams (one
 * connection per 50 streams), each registering a Node of one of S services and answering every
 * snapshot like a sidecar (decode the JSON, then ACK with the nonce). Then R one-route changes
 * (PUT /v1/routes/...), each measured from the PUT to the moment the last simulated sidecar whose
 * view the change touches has received its new version. A sidecar's version is its view's: in
 * `delta` mode a change to Route svcI reaches only the sidecars of the services that depend on
 * svcI; the others are sent nothing. The bench counts messages that reach any other sidecar
 * (`unexpectedMessages`, 0 when the push is right) and checks at the end, in /v1/status, that every
 * simulated sidecar holds and ACKed the version the control plane expects of it.
 *
 * Reports per change: convergence (median / p99 / max, from the PUT to the last sidecar having
 * the version, simulator side), bytes each sidecar received, the control plane's RSS, and the
 * simulator's own CPU time (so its cost, which delays the ACKs, is visible).
 *
 *   node bench/fleet.js [--sidecars 1000] [--services 100] [--rounds 20] [--mode both|sotw|delta] [--deps 2]
 *                       [--scope-sizes 10,100,1000] [--store etcd-local | etcd://h:p,...]
 *
 * Environment: FLEET_CP_NODE_ARGS (node flags of the control plane, e.g. `--cpu-prof --cpu-prof-dir=D`),
 * FLEET_CP_LOG=FILE (append the control plane's log lines there).
 *
 * `--mode sotw` is today's state-of-the-world push: no service declares dependencies and the
 * simulated sidecars do not announce deltas, so each gets the whole mesh, complete, on every
 * change. `--mode delta`: service i declares the next `--deps` services as its dependencies
 * (Service.spec.dependencies) and the sidecars announce deltas. `both` (default) runs one then
 * the other, each on a fresh control plane, and prints them side by side. Counts from the
 * control plane's /metrics (messages, bytes on the wire, distinct encodes) are load-independent.
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
    // sotw: today's state of the world (no dependencies declared, complete snapshots only);
    // delta: each service declares --deps dependencies and the sidecars take deltas; both: one after the other.
    mode: { type: 'string', default: 'both' },
    deps: { type: 'string', default: '2' },
    // Snapshot size of one sidecar with fixed dependencies, for these mesh sizes (services); '' to skip.
    'scope-sizes': { type: 'string', default: '10,100,1000' },
  },
});
const DEPS = Number(values.deps);
const N = Number(values.sidecars);
const S = Number(values.services);
const ROUNDS = Number(values.rounds);
const PER_CONN = Number(values['streams-per-connection']);

function startControlPlane(dir) {
  // Loopback only: the API in plain HTTP without tokens, the push port in plaintext and sidecars
  // without credentials (the bench measures the push path).
  const args = [MAIN, 'control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--log-level', 'warn', '--insecure-plaintext', '--no-api-auth', '--insecure-push-plaintext', '--sidecar-auth', 'permissive'];
  if (values.store && values.store !== 'file') args.push('--store', values.store, '--etcd-prefix', `/bench-${process.pid}/`);
  // 'warn' hides 'control plane started': read the addresses from an info line instead.
  args[args.indexOf('warn')] = 'info';
  const nodeArgs = process.env.FLEET_CP_NODE_ARGS ? process.env.FLEET_CP_NODE_ARGS.split(' ') : [];
  const child = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the control plane did not start')), 30_000);
    // FLEET_CP_LOG=FILE: the control plane's log lines are appended there (its own convergence per change, at info).
    const logFile = process.env.FLEET_CP_LOG;
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      if (logFile) fs.appendFileSync(logFile, line + '\n');
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

/** CPU time (user + system) a process has used, in ms (from /proc; USER_HZ is 100 on Linux). */
function cpuMs(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) * 10;
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

async function api(base, method, p, body, attempt = 0) {
  let res;
  try {
    res = await fetch(base + p, { method, headers: { 'content-type': 'application/json' }, body: body && JSON.stringify(body) });
  } catch (err) {
    // A busy control plane may close an idle keep-alive connection as a request goes out: reads are retried.
    if (method === 'GET' && attempt < 5) {
      await new Promise((r) => setTimeout(r, 500));
      return api(base, method, p, body, attempt + 1);
    }
    throw new Error(`${method} ${p}: ${err.message} (${err.cause && err.cause.message})`);
  }
  return { status: res.status, body: await res.json() };
}

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}


let cpChild;
process.on('exit', () => cpChild && cpChild.kill('SIGKILL'));

const service = (i, deps) => ({ apiVersion: 'meshlet.dev/v1', kind: 'Service', metadata: { name: `svc${i}` }, spec: { dependencies: deps } });
const depsOf = (i, s) => Array.from({ length: DEPS }, (_, k) => `svc${(i + 1 + k) % s}`);

function metric(text, name, labels = '') {
  const m = new RegExp(`^${name}${labels.replace(/[{}"=]/g, (c) => '\\' + c)} ([0-9.e+]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}
async function pushCounts(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  return {
    messages: metric(text, 'meshlet_push_messages_total', '{type="full"}') + metric(text, 'meshlet_push_messages_total', '{type="delta"}'),
    deltas: metric(text, 'meshlet_push_messages_total', '{type="delta"}'),
    bytes: metric(text, 'meshlet_push_bytes_total', '{type="full"}') + metric(text, 'meshlet_push_bytes_total', '{type="delta"}'),
    encodes: metric(text, 'meshlet_push_encodes_total'),
  };
}

/** N simulated sidecars on one control plane; `delta`: they announce deltas. */
function connectSims(push, n, s, delta, opts = {}) {
  const clients = [];
  const sims = [];
  const state = { waiting: undefined };
  for (let i = 0; i < n; i++) {
    if (i % PER_CONN === 0) clients.push(proto.createPolicyDiscoveryClient(push, undefined, { 'grpc.use_local_subchannel_pool': 1 }));
    const call = clients[clients.length - 1].Stream();
    const sim = { id: `${opts.prefix ?? 'sim'}-${i}`, service: i % s, version: undefined, bytes: 0, lastBytes: 0, firstBytes: 0, counted: false, affected: false, got: 0 };
    sims.push(sim);
    call.on('data', (msg) => {
      // What a sidecar does before it ACKs: decode (the compile is left out: it is the sidecar's cost).
      let size = msg.version.length + msg.nonce.length + (msg.baseVersion || '').length;
      if (msg.baseVersion) {
        for (const r of msg.resources) {
          JSON.parse(r);
          size += r.length;
        }
        for (const r of msg.removed) size += r.length;
        if (msg.endpointsByServiceJson) JSON.parse(msg.endpointsByServiceJson);
        size += msg.endpointsByServiceJson.length;
      } else {
        JSON.parse(msg.resourcesJson);
        JSON.parse(msg.endpointsJson);
        size += msg.resourcesJson.length + msg.endpointsJson.length;
        if (!sim.firstBytes) sim.firstBytes = size;
      }
      sim.bytes += size;
      sim.lastBytes = size;
      sim.version = msg.version;
      call.write({ ack: { version: msg.version, nonce: msg.nonce } });
      const w = state.waiting;
      if (!w) return;
      sim.got++;
      if (!sim.affected) w.unexpected++;
      else if (!sim.counted) {
        sim.counted = true;
        w.times.push(performance.now() - w.since);
        if (--w.left === 0) w.done();
      }
    });
    call.on('error', () => undefined);
    const svc = typeof opts.service === 'string' ? opts.service : `svc${opts.service ?? i % s}`;
    call.write({ node: { id: sim.id, service: svc, address: `127.${1 + Math.floor(i / 62500)}.${1 + Math.floor(i / 250) % 250}.${1 + (i % 250)}`, inboundPort: 15006, labels: {}, buildVersion: 'fleet-sim', adminPort: 0, acceptsDelta: delta } });
  }
  return { clients, sims, state };
}

/** Every simulated sidecar holds, and ACKed, the version of its own view (expectedVersion in /v1/status). */
function allCurrent(status, sims) {
  const byId = new Map(status.sidecars.map((s) => [s.id, s]));
  return sims.every((s) => {
    const row = byId.get(s.id);
    return row && row.connected && s.version === row.expectedVersion && row.ackedVersion === row.expectedVersion;
  });
}

async function converged(base, sims, n) {
  const t0 = performance.now();
  for (;;) {
    const st = await api(base, 'GET', '/v1/status');
    if (st.body.sidecars.filter((s) => s.connected).length >= n && allCurrent(st.body, sims)) return performance.now() - t0;
    if (performance.now() - t0 > 900_000) throw new Error('the fleet did not converge within 900 s');
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function stopControlPlane(cp) {
  cp.child.kill('SIGTERM');
  // Let it exit on its own (a --cpu-prof profile is written at exit), within 10 s.
  await new Promise((r) => {
    cp.child.once('exit', r);
    setTimeout(r, 10_000);
  });
  cpChild = undefined;
}

async function phase(mode, dir) {
  const delta = mode === 'delta';
  const cp = await startControlPlane(path.join(dir, mode));
  cpChild = cp.child;
  const base = cp.api;
  const items = Array.from({ length: S }, (_, i) => route(i, 'seed'));
  if (delta) for (let i = 0; i < S; i++) items.push(service(i, depsOf(i, S)));
  const seeded = await api(base, 'POST', '/v1/apply', { items });
  if (seeded.status !== 200) throw new Error(`seeding failed: ${JSON.stringify(seeded.body)}`);
  const c0 = await pushCounts(base);
  const cpu00 = process.cpuUsage();
  const t00 = performance.now();
  const { clients, sims, state } = connectSims(cp.push, N, S, delta);
  await converged(base, sims, N);
  const connectMs = performance.now() - t00;
  const connectCpu = process.cpuUsage(cpu00);
  const c1 = await pushCounts(base);
  await new Promise((r) => setTimeout(r, 500));
  process.stderr.write(`fleet[${mode}]: ${N} simulated sidecars connected and converged in ${(connectMs / 1000).toFixed(1)} s\n`);

  const results = [];
  const c2 = await pushCounts(base);
  const cpu0 = process.cpuUsage();
  const cpCpu0 = cpuMs(cp.child.pid);
  const wall0 = performance.now();
  let unexpected = 0;
  let reached = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const i = r % S;
    const cur = (await api(base, 'GET', `/v1/routes/svc${i}`)).body;
    // The sidecars whose view Route svcI is in: every one (sotw), or those of the services that
    // depend on svcI (delta). Measured on arrival, without polling the control plane while it pushes.
    let left = 0;
    for (const s of sims) {
      s.counted = false;
      s.got = 0;
      s.affected = !delta || depsOf(s.service, S).includes(`svc${i}`);
      if (s.affected) left++;
    }
    reached += left;
    const since = performance.now();
    const done = new Promise((resolve) => {
      state.waiting = { left, since, times: [], unexpected: 0, done: resolve };
    });
    const waiting = state.waiting;
    if (left === 0) waiting.done();
    const put = await api(base, 'PUT', `/v1/routes/svc${i}`, { ...route(i, `round-${r}`), metadata: { name: `svc${i}`, labels: { tag: `round-${r}` }, resourceVersion: cur.metadata.resourceVersion } });
    if (put.status !== 200) throw new Error(`PUT failed: ${JSON.stringify(put.body)}`);
    await done;
    // Messages to sidecars the change does not concern would come with the same flush: let it finish.
    await new Promise((r) => setTimeout(r, 50));
    unexpected += waiting.unexpected;
    state.waiting = undefined;
    const sizes = sims.filter((s) => s.affected).map((s) => s.lastBytes);
    results.push({ last: Math.max(0, ...waiting.times), maxBytes: Math.max(0, ...sizes), meanBytes: sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length) });
  }
  const wall = performance.now() - wall0;
  const cpu = process.cpuUsage(cpu0);
  // The control plane's CPU per change (the PUT, the build, the pushes, the ACKs): unlike wall
  // times, hardly affected by the machine's load.
  const cpCpuPerChange = (cpuMs(cp.child.pid) - cpCpu0) / ROUNDS;
  const c3 = await pushCounts(base);
  const st = (await api(base, 'GET', '/v1/status')).body;
  if (!allCurrent(st, sims)) throw new Error('after the rounds, some simulated sidecar does not hold or has not ACKed the version /v1/status expects of it');
  const lasts = results.map((x) => x.last);
  const out = {
    mode,
    convergenceMs: { median: +pct(lasts, 50).toFixed(1), p99: +pct(lasts, 99).toFixed(1), max: +Math.max(...lasts).toFixed(1) },
    // Each change's, in order (p99 of 20 is the slowest one: this says which).
    convergenceMsByRound: lasts.map((x) => +x.toFixed(1)),
    // Convergence over the sidecars each change concerns (all of them in sotw), measured by the simulator;
    // the control plane's own measure of the last change (`/v1/status` convergence) beside it.
    sidecarsReachedPerChange: Math.round(reached / ROUNDS),
    unexpectedMessages: unexpected,
    controlPlaneLastConvergence: st.convergence ? { ms: st.convergence.ms, sidecars: st.convergence.sidecars } : null,
    perChange: {
      wireBytesPerSidecar: Math.round((c3.bytes - c2.bytes) / ROUNDS / N),
      wireBytesPerReachedSidecar: Math.round((c3.bytes - c2.bytes) / Math.max(1, reached)),
      wireBytesTotal: Math.round((c3.bytes - c2.bytes) / ROUNDS),
      payloadBytesMaxSidecar: Math.round(Math.max(...results.map((x) => x.maxBytes))),
      messages: Math.round((c3.messages - c2.messages) / ROUNDS),
      distinctEncodes: Math.round((c3.encodes - c2.encodes) / ROUNDS),
    },
    connect: {
      seconds: +(connectMs / 1000).toFixed(1),
      messages: c1.messages - c0.messages,
      wireBytes: c1.bytes - c0.bytes,
      distinctEncodes: c1.encodes - c0.encodes,
      simulatorCpuPercentOfWall: +(((connectCpu.user + connectCpu.system) / 1000 / connectMs) * 100).toFixed(1),
    },
    firstSnapshotBytes: Math.round(sims.reduce((a, s) => a + s.firstBytes, 0) / sims.length),
    controlPlaneRssMb: rssMb(cp.child.pid),
    controlPlaneCpuMsPerChange: Math.round(cpCpuPerChange),
    simulatorCpuPercentOfWall: +(((cpu.user + cpu.system) / 1000 / wall) * 100).toFixed(1),
  };
  for (const c of clients) c.close();
  await stopControlPlane(cp);
  return out;
}

/** The first (complete) snapshot of one sidecar of svc0 with fixed dependencies, in a mesh of `s` services (one sidecar each). */
async function scopeSize(s, dir) {
  const cp = await startControlPlane(path.join(dir, `scope-${s}`));
  cpChild = cp.child;
  // s services, each with a Route, dependencies and one (scoped, delta) sidecar.
  const items = Array.from({ length: s }, (_, i) => route(i, 'seed'));
  for (let i = 0; i < s; i++) items.push(service(i, depsOf(i, s)));
  const seeded = await api(cp.api, 'POST', '/v1/apply', { items });
  if (seeded.status !== 200) throw new Error(`seeding failed: ${JSON.stringify(seeded.body)}`);
  const fleet = connectSims(cp.push, s, s, true);
  await converged(cp.api, fleet.sims, s);
  // Two probes: one of svc0 (fixed dependencies), one of a service that declares none (the whole mesh).
  const scoped = connectSims(cp.push, 1, s, true, { service: 0, prefix: 'probe-scoped' });
  const whole = connectSims(cp.push, 1, s, true, { service: 'without-dependencies', prefix: 'probe-whole' });
  await converged(cp.api, [...fleet.sims, ...scoped.sims, ...whole.sims], s + 2);
  const bytes = { wholeMesh: whole.sims[0].firstBytes, scoped: scoped.sims[0].firstBytes };
  for (const c of [...fleet.clients, ...scoped.clients, ...whole.clients]) c.close();
  await stopControlPlane(cp);
  return bytes;
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-fleet-'));
  let etcd;
  if (values.store === 'etcd-local') {
    etcd = await require(path.join(ROOT, 'dist', 'src', 'cli', 'up-etcd')).startLocalEtcd(path.join(dir, 'etcd'), true);
    process.on('exit', () => etcd.stop());
    values.store = `etcd://${etcd.endpoints.join(',')}`;
  }
  const modes = values.mode === 'both' ? ['sotw', 'delta'] : [values.mode];
  const out = { store: values.store && values.store !== 'file' ? 'etcd' : 'file', sidecars: N, services: S, rounds: ROUNDS, deps: DEPS, loadavg: os.loadavg().map((x) => +x.toFixed(1)), cpus: os.cpus().length };
  for (const m of modes) {
    out[m] = await phase(m, dir);
    process.stderr.write(`${JSON.stringify(out[m])}\n`);
  }
  const sizes = values['scope-sizes'] ? values['scope-sizes'].split(',').map(Number) : [];
  if (sizes.length > 0) {
    out.firstSnapshotBytesBySize = {};
    for (const s of sizes) {
      out.firstSnapshotBytesBySize[s] = await scopeSize(s, dir);
      process.stderr.write(`scope ${s}: ${JSON.stringify(out.firstSnapshotBytesBySize[s])}\n`);
    }
  }
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  if (etcd) await etcd.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
})().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
