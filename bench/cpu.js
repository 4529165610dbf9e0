#!/usr/bin/env node
'use strict';
/**
 * CPU per request of the sidecar, per path, with a fixed number of requests: the A/B tool for the
 * HTTP/2, gRPC and mesh-hop paths (bench/ab.sh does HTTP/1.1 only). CPU time (utime + stime from
 * /proc/PID/stat, summed over the proxy processes) ÷ requests is far less sensitive to the other
 * load on the machine than req/s or latency; run it alternating two builds (`--dist`) for an A/B.
 *
 *   node bench/cpu.js [--paths h1,h2,grpc,hop,hop-h1,hop-h2] [-n 20000] [-r 3] [--dist DIR] [--prof DIR] [--gc] [--callgrind] [--soak SECONDS]
 *
 * Paths (the upstream is nginx on core 0, the load h2load on core 0, the sidecars on core 1):
 *   h1      HTTP/1.1 through the full-chain sidecar (bench/lib/configs.js `full`), h2load --h1, 64 conns
 *   h2      h2c through it (16 connections x 16 streams), upstream HTTP/1.1
 *   grpc    gRPC unary through it (h2c both ways), 16 x 16
 *   hop     HTTP/1.1 client -> sidecar A -> sidecar B -> app (nginx), two sidecars registered
 *           through a control plane, the hop as the default makes it; CPU summed over A and B
 *   hop-h1  the same with `http2Upgrade: false` (HTTP/1.1 between the sidecars)
 *   hop-h2  the same with `http2Upgrade: true` (HTTP/1.1 multiplexed over HTTP/2)
 *   cache   a response-cache HIT: a sidecar whose one Route rule has `cache: {defaultTtlSeconds: 3600}`,
 *           HTTP/1.1, 16 connections (bench/cache-hit.js's load), every measured request a HIT
 *   hop-mtls  the default hop between two sidecars that have certificates (join tokens): mTLS
 *   hop-plain the same two sidecars with a mesh-wide PeerAuthentication DISABLE (plaintext)
 * --dist DIR[|NODEFLAGS[|ENV]][,DIR2[|NODEFLAGS2[|ENV2]]]: the checkout(s) whose dist/ to run (default
 * this one), alternated round by round (an A/B), optionally with extra Node flags and environment
 * variables each (ENV: 'KEY=VALUE KEY2=VALUE'; e.g. '.,.||MESHLET_H2_FRAMING=meshlet' for HTTP/2 framings). --prof DIR: node --cpu-prof
 * into DIR (one .cpuprofile per sidecar process). --node-flags '...': extra Node flags. Every sidecar and
 * control plane runs with its build's own flags first (the main.js shebang: bench/lib/node-flags.js).
 * --gc: the sidecars run with --trace-gc-nvp; each round also prints the bytes V8 allocated per
 * request (its `allocated=`, summed over the GCs of the measured run), the bytes its scavenges promoted to
 * the old generation per request (`promoted=`: what later costs mark-compacts), scavenges per 10k requests
 * and their pauses (median, max; wall time, so stretched when the core is shared)
 * (load-independent, like the instruction counts).
 * --callgrind: the sidecars run under valgrind's callgrind and the figure is instructions per
 * request (load-independent: the instructions of an idle window as long as the run are subtracted;
 * a few requests at a time; warm the request path: -n 12000 with --single-threaded, see
 * bench/README.md), read with callgrind_control. --callgrind-keep DIR keeps the
 * dumps (numbered in order: warm-up, measured, idle window, per process), names uncompressed, for
 * bench/callgrind-self.js (where the measured window's instructions go, by function and kind).
 * --soak SECONDS [--soak-rate 1000] [--soak-warmup S]: a soak instead of N requests (one build, -r 1):
 * each path at a fixed rate for SECONDS, RSS of each proxy sampled every second, and the verdict per
 * proxy (flat within ±5 %: bench/lib/soak.js). E.g. `--paths grpc,hop-h2 --soak 600 -r 1` soaks
 * meshlet's HTTP/2 framing, server and client.
 * Prints one line per path and round (CPU µs per request, and in brackets the part of it spent in the
 * kernel: stime; system calls and the loopback TCP work they run), then the median per path, as text
 * and (--json) JSON.
 * --openloop RATE [--openloop-seconds 10]: latency at a fixed rate instead of CPU per request:
 * bench/native/openloop.c (the fixed-rate phase's generator, 32 connections) sends RATE req/s to
 * the path's entry and RATE to the upstream direct, schedules interleaved, for a 2 s warm-up and
 * then the seconds; prints the added latency p50/p99/p99.9 (proxy - direct) and the paired
 * estimator's (bench/README.md), and the proxies' CPU per request. HTTP/1.1 paths only (h1, hop,
 * hop-h1, hop-h2). E.g. `--paths hop-h1,hop-h2 --openloop 5000 -r 3`: the two ways between two
 * sidecars, alternated, at the same load.
 * --h1-conns N (default 64), --h2-conns CxM (default 16x16): the load's concurrency on the h1 path,
 * and on the h2 and grpc paths (C connections, M streams each). --config NAME (default full): the
 * sidecar's policies for the h1, h2 and grpc paths, a variant of bench/lib/configs.js (e.g. off);
 * --sidecar-args='...': extra flags for that sidecar (e.g. '--sidecar-args=--metrics off --tracing off').
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');
const procs = require('./lib/procs');
const configs = require('./lib/configs');
const openloopLib = require('./lib/openloop');
const grpcLib = require('./lib/grpc');
const soakLib = require('./lib/soak');
const { nodeFlagsOf, meshletArgv } = require('./lib/node-flags');

const { values: o } = parseArgs({
  options: {
    paths: { type: 'string', default: 'h1,h2,grpc,hop' },
    n: { type: 'string', short: 'n', default: '20000' },
    rounds: { type: 'string', short: 'r', default: '3' },
    dist: { type: 'string', default: path.resolve(__dirname, '..') },
    prof: { type: 'string' },
    'node-flags': { type: 'string', default: '' },
    json: { type: 'boolean', default: false },
    callgrind: { type: 'boolean', default: false },
    gc: { type: 'boolean', default: false },
    'callgrind-keep': { type: 'string' },
    soak: { type: 'string' },
    'soak-rate': { type: 'string', default: '1000' },
    'soak-warmup': { type: 'string' },
    'h1-conns': { type: 'string', default: '64' },
    'h2-conns': { type: 'string', default: '16x16' },
    config: { type: 'string', default: 'full' },
    'sidecar-args': { type: 'string', default: '' },
    openloop: { type: 'string' },
    'openloop-seconds': { type: 'string', default: '10' },
  },
});
/** The load's concurrency: HTTP/1.1 connections (h1); HTTP/2 connections x streams each (h2, grpc). */
const H1_CONNS = `-c${Number(o['h1-conns'])}`;
const [H2_CONNS, H2_STREAMS] = o['h2-conns'].split('x').map(Number);
const N = Number(o.n);
const ROUNDS = Number(o.rounds);
// DIR, DIR|NODEFLAGS (extra Node flags for that contender, e.g. '.|--max-semi-space-size=16') or
// DIR|NODEFLAGS|ENV (environment variables for it, e.g. '.||MESHLET_H2_FRAMING=meshlet').
const DISTS = o.dist.split(',');
const mainOf = (spec) => path.join(path.resolve(spec.split('|')[0]), 'dist/src/cli/main.js');
const flagsOf = (spec) => (spec.split('|')[1] ?? '').split(' ').filter(Boolean);
const envOf = (spec) =>
  Object.fromEntries(
    (spec.split('|')[2] ?? '')
      .split(' ')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
const MAIN = mainOf(DISTS[0]);
const UNIT = o.callgrind ? 'instr/req' : 'us/req';
// Each build's own Node flags (its shebang: bench/lib/node-flags.js) come first, in sidecar(); then these.
const NODE_FLAGS = [...o['node-flags'].split(' ').filter(Boolean), ...(o.gc ? ['--trace-gc-nvp'] : []), ...(o.prof ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(o.prof)}`] : [])];
const PROXY_CPU = 1;
const LOAD_CPU = 0;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-cpu-'));
procs.installCleanup(() => fs.rmSync(tmp, { recursive: true, force: true }));

function log(s) {
  process.stderr.write(`${s}\n`);
}

function h2load(args) {
  const r = spawnSync('taskset', ['-c', String(LOAD_CPU), 'h2load', ...args], { encoding: 'utf8', timeout: 300_000 });
  return h2loadSummary(`${r.stdout}${r.stderr}`);
}

function h2loadSummary(out) {
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  if (!m) throw new Error(`h2load: no summary\n${out}`);
  const s = /status codes: (\d+) 2xx/.exec(out);
  return { done: Number(m[3]), ok: Number(s ? s[1] : 0), failed: Number(m[5]) + Number(m[6]), out };
}

async function sidecar(name, argv, spec = DISTS[0], env = {}) {
  const main = mainOf(spec);
  const admin = await procs.freePort();
  const logFile = path.join(tmp, `${name}.log`);
  // Kept dumps name every function in full (no compressed names that only an earlier part of the
  // run defines), so each file reads alone: bench/callgrind-self.js.
  const keep = o['callgrind-keep'] ? ['--compress-strings=no'] : [];
  if (o['callgrind-keep']) fs.mkdirSync(path.resolve(o['callgrind-keep']), { recursive: true });
  const cg = o.callgrind ? ['valgrind', '--tool=callgrind', ...keep, `--callgrind-out-file=${path.join(tmp, `${name}.cg.%p`)}`, process.execPath] : [process.execPath];
  const p = procs.start(name, cg[0], [...cg.slice(1), ...nodeFlagsOf(main), ...NODE_FLAGS, ...flagsOf(spec), main, 'sidecar', ...argv, '--admin', `127.0.0.1:${admin}`], {
    cpu: PROXY_CPU,
    logFile,
    env: { ...process.env, MESHLET_LOG_LEVEL: 'warn', ...envOf(spec), ...env },
  });
  await procs.waitForHttp(`http://127.0.0.1:${admin}/ready`, { proc: p, timeoutMs: o.callgrind ? 300_000 : 30_000 });
  p.logFile = logFile;
  return p;
}

const cpuOf = (ps) => ps.reduce((a, p) => a + procs.cpuSeconds(p.pid), 0);
/** Kernel CPU seconds (stime) of the processes: the part of the figure spent in system calls (and the softirqs they run). */
function sysOf(ps) {
  let ticks = 0;
  for (const p of ps) {
    try {
      const s = fs.readFileSync(`/proc/${p.pid}/stat`, 'utf8');
      ticks += Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[12]);
    } catch {
      /* gone */
    }
  }
  return ticks / procs.CLK_TCK;
}

let kept = 0;
/** Callgrind: instructions executed by `ps` since the last zeroing (dumps, reads the totals, zeroes). */
function instructions(ps) {
  let total = 0;
  for (const p of ps) {
    const before = new Set(fs.readdirSync(tmp));
    spawnSync('callgrind_control', ['-d', String(p.pid)], { encoding: 'utf8', timeout: 120_000 });
    const files = fs.readdirSync(tmp).filter((f) => f.includes('.cg.') && !before.has(f));
    for (const f of files) {
      const m = /^(?:summary|totals): (\d+)/m.exec(fs.readFileSync(path.join(tmp, f), 'utf8'));
      if (m) total += Number(m[1]);
      if (o['callgrind-keep']) fs.copyFileSync(path.join(tmp, f), path.join(path.resolve(o['callgrind-keep']), `${++kept}-${f}`));
      fs.rmSync(path.join(tmp, f));
    }
    spawnSync('callgrind_control', ['-z', String(p.pid)], { encoding: 'utf8', timeout: 120_000 });
  }
  return total;
}

/** The q-quantile (0..1) of xs, 0 for none. */
const pctl = (xs, q) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] : 0);

/** --gc: the size of each process's log (its --trace-gc-nvp lines), to read what a run added. */
const logSizes = (ps) => ps.map((p) => fs.statSync(p.logFile).size);

/** --gc: bytes allocated (V8's `allocated=`, summed over the GCs) and GCs by kind in the log since `sizes`. */
function gcSince(ps, sizes) {
  const g = { allocated: 0, promoted: 0, scavenges: 0, marks: 0, scavengePauses: [] };
  ps.forEach((p, i) => {
    const fd = fs.openSync(p.logFile, 'r');
    const len = fs.fstatSync(fd).size - sizes[i];
    const buf = Buffer.alloc(Math.max(0, len));
    fs.readSync(fd, buf, 0, buf.length, sizes[i]);
    fs.closeSync(fd);
    for (const line of buf.toString('latin1').split('\n')) {
      const kind = / gc=(\w+)/.exec(line);
      if (!kind) continue;
      if (kind[1] === 's') g.scavenges++;
      else g.marks++;
      const a = / allocated=(\d+)/.exec(line);
      if (a) g.allocated += Number(a[1]);
      // What scavenges moved to the old generation: the garbage that makes mark-compacts.
      const pr = kind[1] === 's' ? / promoted=(\d+)/.exec(line) : null;
      if (pr) g.promoted += Number(pr[1]);
      const pause = kind[1] === 's' ? / pause=([\d.]+)/.exec(line) : null;
      if (pause) g.scavengePauses.push(Number(pause[1]));
    }
  });
  return g;
}

/**
 * --soak SECONDS: instead of N requests, h2load at a fixed rate (--soak-rate, 1,000 req/s, spread
 * over its connections with --rps) for SECONDS, while each process's RSS is sampled every second
 * and printed every 30 s; the verdict per process is bench/lib/soak.js's (least-squares trend and
 * floor within ±5 % after --soak-warmup, default min(60 s, a quarter)). A leak in the upstream
 * HTTP/2 client shows on sidecar A of the hop-h2 path, one in the server on B, and both on the
 * full-chain sidecar of the grpc path.
 */
async function soakMeasure(ps, args) {
  const seconds = Number(o.soak);
  const warmupS = o['soak-warmup'] !== undefined ? Number(o['soak-warmup']) : Math.min(60, seconds / 4);
  if (!(seconds >= 60 && warmupS >= 0 && warmupS <= seconds - 30)) throw new Error('--soak needs >= 60 s, and --soak-warmup must leave 30 s after it');
  const clients = Number(/^-c(\d+)$/.exec(args.find((a) => /^-c\d+$/.test(a)))[1]);
  const rps = Math.max(1, Math.round(Number(o['soak-rate']) / clients));
  const samples = ps.map(() => []);
  const t0 = Date.now();
  const c0 = cpuOf(ps);
  const sample = () => ps.forEach((p, i) => samples[i].push({ t: (Date.now() - t0) / 1000, v: procs.memory(p.pid).rssKb }));
  const mb = (kb) => (kb / 1024).toFixed(1);
  let last = 0;
  const report = () => {
    const t = (Date.now() - t0) / 1000;
    const w = samples.map((xs) => xs.filter((x) => x.t > last && x.t <= t).map((x) => x.v));
    last = t;
    log(`  soak t=${String(Math.round(t)).padStart(5)} s  ${ps.map((p, i) => `${p.name} RSS ${mb(Math.min(...w[i]))}..${mb(Math.max(...w[i]))} MB`).join('  ')}  CPU ${(cpuOf(ps) - c0).toFixed(1)} s`);
  };
  sample();
  const fine = setInterval(sample, 1000);
  const every = setInterval(report, 30_000);
  let r;
  try {
    const res = await procs.run('h2load', ['-D', String(seconds), '--rps', String(rps), ...args], { cpu: LOAD_CPU, timeoutMs: (seconds + 120) * 1000 });
    r = h2loadSummary(`${res.stdout}${res.stderr}`);
  } finally {
    clearInterval(fine);
    clearInterval(every);
  }
  sample();
  if ((Date.now() - t0) / 1000 - last > 5) report();
  const cpu = cpuOf(ps) - c0;
  if (r.failed || r.ok < r.done) throw new Error(`soak: ${r.ok}/${r.done} 2xx, ${r.failed} failed\n${r.out}`);
  const procsOut = ps.map((p, i) => ({ name: p.name, ...soakLib.rssVerdict(samples[i], warmupS) }));
  // h2load's own line: min, max, mean and sd of a request's time (from send to the response's end).
  const t = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)/.exec(r.out);
  const requestTime = t ? { min: t[1], max: t[2], mean: t[3], sd: t[4] } : undefined;
  return { soak: true, seconds, warmupS, rate: rps * clients, done: r.done, reqPerSec: r.done / seconds, usPerReq: (cpu * 1e6) / r.done, procs: procsOut, requestTime };
}

/**
 * --openloop: RATE req/s to the path's entry (`args`' last word, an http://127.0.0.1:PORT/ URL) and
 * RATE to the upstream direct, paired; the added latency and the CPU per request over `ps`.
 */
async function openloopMeasure(ps, args) {
  const rate = Number(o.openloop);
  const seconds = Number(o['openloop-seconds']);
  const port = Number(new URL(args[args.length - 1]).port);
  const host = args[args.indexOf('-H') + 1].replace(/^:authority: /, '');
  const c0 = cpuOf(ps);
  const t0 = process.hrtime.bigint();
  const ph = (await openloopLib.run([port, upstreamPorts[0]], { rates: [rate], seconds, warmup: 2, host, cpu: LOAD_CPU })).phases[0];
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuOf(ps) - c0;
  const [t, d] = ph.targets;
  const bad = t.errors + t.non2xx + t.unfinished;
  if (bad || !t.latencyUs) throw new Error(`openloop: ${bad} errors, non-2xx or unfinished of ${t.sent}`);
  const pick = (x) => ({ p50: x.p50, p99: x.p99, p999: x.p999 });
  return {
    openloop: true,
    rate,
    // Every request sent in the warm-up and the measured seconds, both on the proxy's side.
    usPerReq: (cpu * 1e6) / (rate * (seconds + 2)),
    reqPerSec: rate,
    coreBusyPct: (100 * cpu) / wall,
    added: Object.fromEntries(['p50', 'p99', 'p999'].map((k) => [k, t.latencyUs[k] - d.latencyUs[k]])),
    paired: t.pairedAddedUs ? pick(t.pairedAddedUs) : null,
    proxyUs: pick(t.latencyUs),
    directUs: pick(d.latencyUs),
    sendLagP999Us: d.sendLagUs?.p999,
  };
}

/** Warm-up (N/4, not measured), then N requests; CPU µs per request over `ps` (or --soak, --openloop). */
function measure(ps, args) {
  if (o.soak) return soakMeasure(ps, args);
  if (o.openloop) return openloopMeasure(ps, args);
  h2load(['-n', String(o.callgrind ? N : Math.max(1000, N >> 2)), ...args]);
  if (o.callgrind) instructions(ps);
  const c0 = cpuOf(ps);
  const s0 = sysOf(ps);
  const sizes = o.gc ? logSizes(ps) : undefined;
  const t0 = process.hrtime.bigint();
  const r = h2load(['-n', String(N), ...args]);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuOf(ps) - c0;
  const sys = sysOf(ps) - s0;
  if (r.ok < N || r.failed) throw new Error(`only ${r.ok}/${N} 2xx, ${r.failed} failed\n${r.out}`);
  if (o.callgrind) {
    // What the process does per second whatever the load (timers, metrics, the control-plane
    // stream) weighs a lot at ~5-20 req/s: measured over an idle window as long as the run, and
    // subtracted.
    const loaded = instructions(ps);
    spawnSync('sleep', [String(wall)]);
    const idle = instructions(ps);
    return { usPerReq: (loaded - idle) / r.done, reqPerSec: r.done / wall, coreBusyPct: (100 * cpu) / wall, loaded: loaded / r.done, idle: idle / r.done };
  }
  const res = { usPerReq: (cpu * 1e6) / r.done, sysUsPerReq: (sys * 1e6) / r.done, reqPerSec: r.done / wall, coreBusyPct: (100 * cpu) / wall };
  if (sizes) {
    const g = gcSince(ps, sizes);
    Object.assign(res, { bytesPerReq: g.allocated / r.done, promotedPerReq: g.promoted / r.done, scavengePauseMs: pctl(g.scavengePauses, 0.5), scavengePauseMaxMs: pctl(g.scavengePauses, 1), scavengesPer10k: (g.scavenges * 10_000) / r.done, marks: g.marks });
  }
  return res;
}

let upstreamPorts;
let grpc;
let paths;

async function onePass(dist, add) {
  if (paths.some((p) => ['h1', 'h2', 'grpc'].includes(p))) {
    const file = path.join(tmp, 'full.json');
    fs.writeFileSync(file, configs.meshletPolicies(o.config, upstreamPorts, grpc.ports));
    const out = await procs.freePort();
    const sc = await sidecar('full', ['--service', 'bench', '--config', file, '--inbound', '127.0.0.1:0', '--outbound', `127.0.0.1:${out}`, ...o['sidecar-args'].split(' ').filter(Boolean)], dist);
    await procs.waitForPort(out, { proc: sc, timeoutMs: o.callgrind ? 300_000 : 15_000 });
    // Under callgrind the first calls can outlast the route's per-try timeout (JIT, first connection).
    for (let i = 0; paths.includes('grpc'); i++) {
      try {
        await grpcLib.checkGrpc(out, 'the full-chain sidecar', o.callgrind ? 120_000 : 5000);
        break;
      } catch (err) {
        if (!o.callgrind || i >= 5) throw err;
      }
    }
    const url = `http://127.0.0.1:${out}/`;
    {
      // Under callgrind (~20 req/s) a few requests at a time, or they queue past the route's timeout.
      const c = o.callgrind ? ['-c2', '-m2'] : [`-c${H2_CONNS}`, `-m${H2_STREAMS}`];
      if (paths.includes('h1')) add('h1', await measure([sc], ['--h1', '-t1', o.callgrind ? '-c4' : H1_CONNS, '-m1', '-H', ':authority: upstream', url]));
      if (paths.includes('h2')) add('h2', await measure([sc], ['-t1', ...c, '-H', ':authority: upstream', url]));
      if (paths.includes('grpc')) {
        const a = ['-t1', ...c, '-d', grpc.requestFile, '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-H', `:authority: ${grpcLib.AUTHORITY}`, `http://127.0.0.1:${out}${grpcLib.METHOD_PATH}`];
        add('grpc', await measure([sc], a));
      }
    }
    await sc.stop(5000);
  }

  if (paths.includes('cache')) {
    const file = path.join(tmp, 'cache.json');
    const policies = [
      { apiVersion: 'meshlet.dev/v1', kind: 'Service', metadata: { name: 'upstream' }, spec: { endpoints: [{ address: '127.0.0.1', port: upstreamPorts[0] }], protocol: 'http1' } },
      { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'upstream' }, spec: { hosts: ['upstream'], rules: [{ name: 'all', backends: [{ service: 'upstream' }], cache: { defaultTtlSeconds: 3600 } }] } },
    ];
    fs.writeFileSync(file, policies.map((x) => JSON.stringify(x)).join('\n---\n'));
    const out = await procs.freePort();
    const sc = await sidecar('cache', ['--service', 'bench', '--config', file, '--inbound', '127.0.0.1:0', '--outbound', `127.0.0.1:${out}`, ...o['sidecar-args'].split(' ').filter(Boolean)], dist);
    await procs.waitForPort(out, { proc: sc, timeoutMs: o.callgrind ? 300_000 : 15_000 });
    const url = `http://127.0.0.1:${out}/item`;
    const first = spawnSync('curl', ['-s', '-o', '/dev/null', '-D', '-', '-H', 'host: upstream', url, url], { encoding: 'utf8', timeout: 120_000 }).stdout;
    if (!/x-cache: HIT/i.test(first)) throw new Error(`cache path: the second request is not a HIT:\n${first}`);
    add('cache', await measure([sc], ['--h1', '-t1', o.callgrind ? '-c4' : '-c16', '-m1', '-H', ':authority: upstream', url]));
    await sc.stop(5000);
  }

  const plainHops = paths.filter((p) => ['hop', 'hop-h1', 'hop-h2'].includes(p));
  const tlsHops = paths.filter((p) => ['hop-mtls', 'hop-plain'].includes(p));
  if (plainHops.length) await hopPass(dist, add, plainHops, false);
  if (tlsHops.length) await hopPass(dist, add, tlsHops, true);
}

/**
 * Control plane + sidecar A (client) + sidecar B (echo, the app nginx). With `identities`, both
 * sidecars get join tokens (certificates: the hop is mTLS unless a PeerAuthentication DISABLEs it).
 */
async function hopPass(dist, add, hops, identities) {
  const cpDir = fs.mkdtempSync(path.join(tmp, 'cp-'));
  const api = await procs.freePort();
  const push = await procs.freePort();
  const cp = procs.start('cp', process.execPath, meshletArgv(MAIN, ['control-plane', '--data-dir', cpDir, '--api', `127.0.0.1:${api}`, '--push', `127.0.0.1:${push}`, '--insecure-plaintext', '--insecure-push-plaintext', ...(identities ? [] : ['--sidecar-auth', 'permissive'])]), { cpu: LOAD_CPU, logFile: path.join(tmp, 'cp.log') });
  await procs.waitForPort(api, { proc: cp });
  const cliEnv = { ...process.env, MESHLET_SERVER: `http://127.0.0.1:${api}`, MESHLET_TOKEN: fs.readFileSync(path.join(cpDir, 'admin.token'), 'utf8').trim() };
  const joinToken = (svc) => {
    if (!identities) return {};
    const r = spawnSync(process.execPath, [MAIN, 'token', 'create', '--service', svc, '--ttl', '1h', '--data-dir', cpDir, '-o', 'json'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`token create: ${r.stderr}`);
    return { MESHLET_JOIN_TOKEN: JSON.parse(r.stdout).token };
  };
  const out = await procs.freePort();
  const reg = ['--control-plane', `127.0.0.1:${push}`, '--insecure-push-plaintext', '--advertise', '127.0.0.1'];
  const a = await sidecar('hop-a', ['--service', 'client', ...reg, '--inbound', '127.0.0.1:0', '--outbound', `127.0.0.1:${out}`], dist, joinToken('client'));
  const b = await sidecar('hop-b', ['--service', 'echo', '--app-port', String(upstreamPorts[0]), '--app-protocol', 'http1', ...reg, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0'], dist, joinToken('echo'));
  const cli = (args, input) => {
    const r = spawnSync(process.execPath, [MAIN, ...args], { input, env: cliEnv, encoding: 'utf8' });
    if (r.status !== 0 && args[0] !== 'delete') throw new Error(`${args.join(' ')}: ${r.stderr}`);
  };
  const apply = (h) => {
    if (h === 'hop-plain') return cli(['apply', '-f', '-'], 'apiVersion: meshlet.dev/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mode: DISABLE}\n');
    if (h === 'hop-mtls') return cli(['delete', 'peerauthentication', 'default']);
    if (h === 'hop') return cli(['delete', 'destinationpolicy', 'echo']);
    cli(['apply', '-f', '-'], `apiVersion: meshlet.dev/v1\nkind: DestinationPolicy\nmetadata: {name: echo}\nspec: {service: echo, http2Upgrade: ${h === 'hop-h2'}}\n`);
  };
  const url = `http://127.0.0.1:${out}/`;
  // Wait until A knows B (the control plane pushed B's endpoint, and its identity).
  for (let i = 0; ; i++) {
    const r = h2load(['--h1', '-n', '10', '-c1', '-H', ':authority: echo', url]);
    if (r.ok === 10) break;
    if (i > 100) throw new Error(`the hop never answered 200\n${r.out}`);
    await procs.sleep(100);
  }
  for (const h of hops) {
    apply(h);
    await procs.sleep(1500);
    add(h, await measure([a, b], ['--h1', '-t1', o.callgrind ? '-c4' : '-c64', '-m1', '-H', ':authority: echo', url]));
  }
  await a.stop(5000);
  await b.stop(5000);
  await cp.stop(5000);
}

async function main() {
  upstreamPorts = [await procs.freePort(), await procs.freePort()];
  grpc = { ...grpcLib.writeFixtures(tmp), ports: [await procs.freePort(), await procs.freePort()] };
  const conf = path.join(tmp, 'upstream.conf');
  fs.writeFileSync(conf, configs.upstreamNginx(tmp, upstreamPorts, undefined, grpc));
  const up = procs.start('upstream', 'nginx', ['-c', conf, '-e', path.join(tmp, 'upstream.error.log')], { cpu: LOAD_CPU, logFile: path.join(tmp, 'upstream.log') });
  for (const p of [...upstreamPorts, ...grpc.ports]) await procs.waitForPort(p, { proc: up });

  paths = o.paths.split(',');
  const results = {};
  const add = (k, r) => {
    (results[k] ??= []).push(r);
    if (r.openloop) {
      const f = (x) => (x ? `${x.p50}/${x.p99}/${x.p999}` : '-');
      log(`${k.padEnd(8)} at ${r.rate} req/s: added p50/p99/p99.9 ${f(r.added)} us, paired ${f(r.paired)} us (proxy ${f(r.proxyUs)}, direct ${f(r.directUs)}, send lag p99.9 ${r.sendLagP999Us}); ${r.usPerReq.toFixed(1)} ${UNIT}, core ${r.coreBusyPct.toFixed(0)}%`);
      return;
    }
    if (r.soak) {
      for (const p of r.procs) log(`${k.padEnd(8)} soak ${p.name}: ${p.pass ? 'PASS' : 'FAIL'} ${p.summary} (RSS ${(p.rssMinKb / 1024).toFixed(1)}..${(p.rssMaxKb / 1024).toFixed(1)} MB after warm-up)`);
      const rt = r.requestTime ? `; request time min ${r.requestTime.min} mean ${r.requestTime.mean} sd ${r.requestTime.sd} max ${r.requestTime.max} (h2load)` : '';
      log(`${k.padEnd(8)} soak: ${r.done} requests in ${r.seconds} s at ${r.rate} req/s asked, all 2xx; ${r.usPerReq.toFixed(1)} us/req${rt}`);
      return;
    }
    const gc = r.bytesPerReq === undefined ? '' : `  ${Math.round(r.bytesPerReq)} B/req allocated, ${r.promotedPerReq.toFixed(1)} B/req promoted, ${r.scavengesPer10k.toFixed(1)} scavenges/10k req, ${r.marks} mark-compact, scavenge pause p50 ${r.scavengePauseMs.toFixed(2)} ms max ${r.scavengePauseMaxMs.toFixed(2)}`;
    const sys = r.sysUsPerReq === undefined ? '' : ` (kernel ${r.sysUsPerReq.toFixed(1)})`;
    log(`${k.padEnd(8)} ${r.usPerReq.toFixed(1).padStart(7)} ${UNIT}${sys}  ${Math.round(r.reqPerSec).toString().padStart(6)} req/s  core ${r.coreBusyPct.toFixed(0)}%${gc}`);
  };

  if (o.soak && (ROUNDS !== 1 || DISTS.length !== 1 || o.callgrind)) throw new Error('--soak runs one build, one round (-r 1), without --callgrind');
  for (let round = 0; round < ROUNDS; round++) {
    for (const dist of DISTS) {
      const tag = DISTS.length > 1 ? `${dist}:` : '';
      await onePass(dist, (k, r) => add(`${tag}${k}`, r));
    }
  }
  await procs.stopAll();
  if (o.soak) {
    const all = Object.values(results).flat();
    if (o.json) console.log(JSON.stringify({ dist: o.dist, soak: Object.fromEntries(Object.entries(results).map(([k, rs]) => [k, rs[0]])) }));
    const failed = all.flatMap((r) => r.procs.filter((p) => !p.pass).map((p) => p.name));
    console.log(failed.length ? `soak FAIL: ${failed.join(', ')}` : `soak PASS: ${Object.keys(results).join(', ')}`);
    fs.rmSync(tmp, { recursive: true, force: true });
    if (failed.length) process.exitCode = 1;
    return;
  }
  const median = (xs) => [...xs].sort((x, y) => x - y)[xs.length >> 1];
  const summary = Object.fromEntries(Object.entries(results).map(([k, rs]) => [k, { usPerReq: median(rs.map((r) => r.usPerReq)), reqPerSec: median(rs.map((r) => r.reqPerSec)), rounds: rs.map((r) => +r.usPerReq.toFixed(1)), ...(o.gc ? { bytesPerReq: Math.round(median(rs.map((r) => r.bytesPerReq))), scavengesPer10k: +median(rs.map((r) => r.scavengesPer10k)).toFixed(1) } : {}) }]));
  if (o.json) console.log(JSON.stringify({ dist: o.dist, n: N, loadavg: os.loadavg(), summary }));
  else if (o.openloop)
    for (const [k, rs] of Object.entries(results)) {
      const m = (f) => ['p50', 'p99', 'p999'].map((q) => median(rs.map((r) => (f(r) ?? {})[q] ?? NaN))).join('/');
      console.log(`${k.padEnd(8)} at ${o.openloop} req/s, medians of ${rs.length}: added p50/p99/p99.9 ${m((r) => r.added)} us, paired ${m((r) => r.paired)} us, ${median(rs.map((r) => r.usPerReq)).toFixed(1)} ${UNIT}  load ${os.loadavg()[0].toFixed(1)}`);
    }
  else for (const [k, s] of Object.entries(summary)) console.log(`${k.padEnd(8)} median ${s.usPerReq.toFixed(1)} ${UNIT}  (${s.rounds.join(' / ')})  ${Math.round(s.reqPerSec)} req/s${s.bytesPerReq === undefined ? '' : `  ${s.bytesPerReq} B/req allocated, ${s.scavengesPer10k} scavenges/10k req`}  load ${os.loadavg()[0].toFixed(1)}`);
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch(async (err) => {
  console.error(err);
  await procs.stopAll();
  process.exit(1);
});
