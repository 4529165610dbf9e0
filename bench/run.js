#!/usr/bin/env node
'use strict';
/**
 * meshlet benchmark harness. See bench/README.md.
 *
 *   npm run bench                  # default run (< 5 min)
 *   npm run bench -- --quick       # smoke run (< 1 min), noisy figures
 *   npm run bench -- --soak        # 10 min at 1,000 req/s through the full-chain sidecar, RSS every 30 s
 *
 * Options: --only a,b (contenders), --no-variants, --no-h2, --no-grpc, --no-hop (skip the mesh-hop section), --no-tail (skip bench/tail.js), --no-obs (skip the in-process
 * observability microbenchmark, bench/observability.js), --no-mtls (skip the mesh hop with mTLS vs
 * plaintext vs two nginx, bench/mtls.js), --no-gateway (skip the gateway TLS vs nginx row,
 * bench/gateway-tls.js), --no-cache-hit (skip the response-cache HIT vs nginx proxy_cache row,
 * bench/cache-hit.js), --no-build, --soak-minutes N,
 * --soak-warmup S, --keep-tmp, --concurrency-contenders (adds meshlet-full-c2: the full chain with
 * --concurrency 2 on both cores; off by default, also selected by naming it in --only).
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const procs = require('./lib/procs');
const configs = require('./lib/configs');
const report = require('./lib/report');
const grpcLib = require('./lib/grpc');
const h2loadLib = require('./lib/h2load');
const soakLib = require('./lib/soak');
const openloop = require('./lib/openloop');

const ROOT = path.resolve(__dirname, '..');
const RESULTS = path.join(__dirname, 'results');
const PROXY_CPU = 1;
const LOAD_CPU = 0;
const HOST = 'upstream';

const PROFILES = {
  // The default run takes about 10 minutes: each measure() logs its wall seconds, the JSON has them per step (stepSeconds).
  default: { settledIdle: true, hopWarmSeconds: 5, throughputRounds: 3, roundWarmSeconds: 1, roundSeconds: 2, roundH2WarmSeconds: 0.5, roundH2Seconds: 2, variantRoundWarmSeconds: 0.5, variantRoundSeconds: 1.5, warmSeconds: 1, wrkSeconds: 2, variantWarmSeconds: 0.5, variantWrkSeconds: 2, rateSeconds: 6, rateWarmSeconds: 1, h2WarmSeconds: 0.5, h2Seconds: 4, grpcWarmSeconds: 0.5, grpcSeconds: 4, variants: true, obsIterations: 100_000, obsReps: 5 },
  // quick stays under 1 minute: the h2 and gRPC runs are a smoke test of the path here (0.1 s warm-up, 0.5 s).
  quick: { warmSeconds: 1, wrkSeconds: 2, rateSeconds: 1.25, rateWarmSeconds: 0.25, h2WarmSeconds: 0.1, h2Seconds: 0.5, grpcWarmSeconds: 0.1, grpcSeconds: 0.5, variants: false, obsIterations: 30_000, obsReps: 3 },
};
/** A sidecar at rest is measured after this long without traffic (V8's memory reducer runs after ~8 s of idleness). */
const SETTLED_IDLE_SECONDS = 20;
const RATES = [1000, 5000];
const WRK_CONNECTIONS = 64;
const LOAD_CONNECTIONS = 32;
/** h2load: 16 connections × 16 concurrent streams, one thread. */
const H2_CLIENTS = 16;
const H2_STREAMS = 16;

const CONTENDERS = ['direct', 'nginx', 'haproxy', 'http-proxy', 'undici-proxy', 'meshlet-off', 'meshlet-full'];
/** Multi-worker sidecars (`--concurrency 2`), pinned to both cores: they share core 0 with the load and the upstream. */
const CONCURRENCY_CONTENDERS = ['meshlet-full-c2'];
const FEATURE_VARIANTS = ['meshlet-timeout', 'meshlet-retries', 'meshlet-breaker', 'meshlet-limits', 'meshlet-outlier', 'meshlet-fault', 'meshlet-mirror'];
const OBS_VARIANTS = ['meshlet-obs-none', 'meshlet-obs-metrics', 'meshlet-obs-tracing', 'meshlet-obs-accesslog', 'meshlet-obs-all'];
const VARIANTS = ['meshlet-routes', 'meshlet-split', ...FEATURE_VARIANTS, 'meshlet-inbound', 'meshlet-ratelimit', ...OBS_VARIANTS];
/** Variants measured on the sidecar's inbound listener (mesh -> app) instead of its outbound one. */
const INBOUND_VARIANTS = new Set(['meshlet-inbound', 'meshlet-ratelimit']);
/** The contenders that serve h2c (prior knowledge) downstream; the others show n/a in the h2 column. */
const H2_CONTENDERS = new Set(['direct', 'nginx', 'haproxy', 'meshlet-off', 'meshlet-full', 'meshlet-full-c2']);
/** The contenders that proxy gRPC (h2c both ways); the others show n/a in the gRPC column. */
const GRPC_CONTENDERS = new Set(['direct', 'nginx', 'haproxy', 'meshlet-off', 'meshlet-full', 'meshlet-full-c2']);

function parseCli() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      soak: { type: 'boolean', default: false },
      'soak-minutes': { type: 'string', default: '10' },
      'soak-warmup': { type: 'string' },
      only: { type: 'string' },
      'concurrency-contenders': { type: 'boolean', default: false },
      'no-variants': { type: 'boolean', default: false },
      'no-h2': { type: 'boolean', default: false },
      'no-grpc': { type: 'boolean', default: false },
      'no-obs': { type: 'boolean', default: false },
      'no-hop': { type: 'boolean', default: false },
      'no-mtls': { type: 'boolean', default: false },
      'no-tail': { type: 'boolean', default: false },
      'no-gateway': { type: 'boolean', default: false },
      'no-cache-hit': { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      'keep-tmp': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(/\/\*\*\n([\s\S]*?)\n \*\//.exec(fs.readFileSync(__filename, 'utf8'))[1].replace(/^ \*( |$)/gm, '') + '\n');
    process.exit(0);
  }
  return values;
}

const log = (...a) => process.stderr.write(`${a.join(' ')}\n`);

// ---------------------------------------------------------------------------------- preflight

/** Absolute paths of the tools; nginx and haproxy live in /usr/sbin, not always on a user's PATH. */
const TOOLS = {};

function preflight() {
  const missing = [];
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  for (const tool of ['wrk', 'h2load', 'nginx', 'haproxy', 'taskset']) {
    const dir = dirs.find((d) => fs.existsSync(path.join(d, tool)));
    if (dir) TOOLS[tool] = path.join(dir, tool);
    else missing.push(tool);
  }
  if (missing.length) throw new Error(`missing tools: ${missing.join(', ')} (see bench/README.md)`);
  openloop.binary(); // the fixed-rate phase's generator, compiled with cc now rather than mid-run
  const cores = os.cpus().length;
  if (cores < 2) throw new Error(`needs 2 cores (proxy on core ${PROXY_CPU}, load on core ${LOAD_CPU}); this machine has ${cores}`);
  return cores;
}

/** Builds unless dist is newer than every TypeScript source it comes from. */
async function ensureBuilt(noBuild) {
  const main = path.join(ROOT, 'dist/src/cli/main.js');
  const newest = (dir) => {
    let t = 0;
    const walk = (d) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.ts') || e.name.endsWith('.proto')) t = Math.max(t, fs.statSync(p).mtimeMs);
      }
    };
    if (fs.existsSync(dir)) walk(dir);
    return t;
  };
  const srcTime = Math.max(...['src', 'sidecar', 'control-plane'].map((d) => newest(path.join(ROOT, d))));
  // tsc re-emits every file on each build, so main.js's mtime is the time of the last build.
  const built = fs.existsSync(main) ? fs.statSync(main).mtimeMs : 0;
  if (built && (noBuild || built >= srcTime)) return;
  if (!built && noBuild) throw new Error('dist/src/cli/main.js is missing; run `npm run build`');
  log('bench: dist is missing or older than the sources; running `npm run build`...');
  try {
    await procs.run('npm', ['run', 'build', '--silent'], { timeoutMs: 180_000 });
  } catch (err) {
    throw new Error(`\`npm run build\` failed; fix the build, or pass --no-build to benchmark the existing dist as it is.\n${err.message}`);
  }
}

// ---------------------------------------------------------------------------------- contenders

/**
 * Starts one contender pinned to the proxy core; resolves to { proc, port, h2Port } once it
 * proxies a request with the expected body. `direct` starts nothing and points at the upstream.
 * `h2Port` is where the contender serves h2c (prior knowledge), undefined if it does not:
 * nginx and haproxy on a second port, the sidecar on the same port as HTTP/1.1. `grpcPort`: where
 * it proxies gRPC to the gRPC upstream (when the gRPC column runs, `ctx.grpc`): nginx and haproxy
 * on a third port, the sidecar again on its one outbound port (routed by `:authority`).
 */
async function startContender(name, ctx) {
  const { dir, upstreamPorts } = ctx;
  fs.mkdirSync(dir, { recursive: true });
  const port = await procs.freePort();
  const logFile = path.join(dir, `${name}.log`);
  let proc;
  let readyUrl;
  let h2Port;
  let grpcPort;
  const grpcOn = ctx.grpc && GRPC_CONTENDERS.has(name);
  const grpcConf = async () => (grpcOn ? { port: (grpcPort = await procs.freePort()), upstreamPort: ctx.grpc.ports[0] } : undefined);
  switch (name) {
    case 'direct':
      return { proc: undefined, port: upstreamPorts[0], h2Port: ctx.upstreamH2Port, grpcPort: grpcOn ? ctx.grpc.ports[0] : undefined };
    case 'nginx': {
      h2Port = await procs.freePort();
      const conf = path.join(dir, 'nginx-proxy.conf');
      fs.writeFileSync(conf, configs.nginxProxy(dir, port, upstreamPorts[0], h2Port, await grpcConf()));
      proc = procs.start(name, TOOLS.nginx, ['-c', conf, '-e', path.join(dir, 'proxy.error.log')], { cpu: PROXY_CPU, logFile });
      break;
    }
    case 'haproxy': {
      h2Port = await procs.freePort();
      const conf = path.join(dir, 'haproxy.cfg');
      fs.writeFileSync(conf, configs.haproxy(dir, port, upstreamPorts[0], h2Port, await grpcConf()));
      proc = procs.start(name, TOOLS.haproxy, ['-f', conf, '-db'], { cpu: PROXY_CPU, logFile });
      break;
    }
    case 'http-proxy':
    case 'undici-proxy':
      proc = procs.start(name, process.execPath, [path.join(__dirname, 'contenders', `${name}.js`), '--port', String(port), '--upstream', `127.0.0.1:${upstreamPorts[0]}`], {
        cpu: PROXY_CPU,
        logFile,
      });
      break;
    default: {
      const workers = /-c(\d+)$/.exec(name);
      const variant = name.replace(/^meshlet-/, '').replace(/-c\d+$/, '');
      const file = path.join(dir, `${name}.policies.json`);
      fs.writeFileSync(file, configs.meshletPolicies(variant, upstreamPorts, grpcOn ? ctx.grpc.ports : undefined));
      const admin = await procs.freePort();
      const inbound = INBOUND_VARIANTS.has(name);
      const listeners = inbound
        ? ['--service', 'upstream', '--app-port', String(upstreamPorts[0]), '--app-protocol', 'http1', '--inbound', `127.0.0.1:${port}`, '--outbound', '127.0.0.1:0']
        : ['--service', 'bench', '--inbound', '127.0.0.1:0', '--outbound', `127.0.0.1:${port}`];
      proc = procs.start(
        name,
        // As users run it: the CLI as a program, so its shebang's Node flags apply.
        path.join(ROOT, 'dist/src/cli/main.js'),
        ['sidecar', '--config', file, ...listeners, '--admin', `127.0.0.1:${admin}`, ...configs.meshletArgs(variant, await procs.freePort()), ...(workers ? ['--concurrency', workers[1]] : [])],
        { cpu: workers ? `${LOAD_CPU},${PROXY_CPU}` : PROXY_CPU, logFile },
      );
      readyUrl = `http://127.0.0.1:${admin}/ready`;
      // The outbound listener detects h2c prior knowledge by its preface, on the same port.
      h2Port = inbound ? undefined : port;
      if (grpcOn && !inbound) grpcPort = port;
    }
  }
  try {
    await procs.waitForPort(port, { proc });
    if (h2Port !== undefined && h2Port !== port) await procs.waitForPort(h2Port, { proc });
    if (grpcPort !== undefined && grpcPort !== port) await procs.waitForPort(grpcPort, { proc });
    if (readyUrl) await procs.waitForHttp(readyUrl, { proc });
    await checkProxies(port, name);
    // The variants with a 50/50 split must really reach both endpoints.
    if (name === 'meshlet-full' || name === 'meshlet-full-c2' || name === 'meshlet-split') await checkSplit(port, upstreamPorts);
  } catch (err) {
    await proc.stop();
    const tail = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
    throw new Error(`${name} did not start: ${err.message}\n${tail}`);
  }
  return { proc, port, h2Port, grpcPort };
}

/** One request through the contender must come back 200 with the upstream's body. */
async function checkProxies(port, name) {
  const { request } = require('undici');
  const deadline = Date.now() + 5000;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const r = await request(`http://127.0.0.1:${port}/`, { headers: { host: HOST }, headersTimeout: 2000, bodyTimeout: 2000 });
      const body = await r.body.text();
      if (r.statusCode === 200 && body === configs.BODY) return;
      last = `${r.statusCode} ${JSON.stringify(body.slice(0, 200))}`;
    } catch (err) {
      last = err.message;
    }
    await procs.sleep(100);
  }
  throw new Error(`${name}: a request through it did not return the upstream's 200 (last: ${last})`);
}

/** One h2c (prior knowledge) request with `:authority: upstream` must come back 200 with the upstream's body. */
function checkH2(port, name) {
  const http2 = require('node:http2');
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    const fail = (msg) => {
      clearTimeout(t);
      session.destroy();
      reject(new Error(`${name}: an h2c request through it did not return the upstream's 200 (${msg})`));
    };
    const t = setTimeout(() => fail('timeout'), 5000);
    session.on('error', (err) => fail(err.message));
    const req = session.request({ ':method': 'GET', ':path': '/', ':authority': HOST });
    let status;
    let body = '';
    req.setEncoding('utf8');
    req.on('response', (h) => (status = h[':status']));
    req.on('data', (d) => (body += d));
    req.on('error', (err) => fail(err.message));
    req.on('end', () => {
      if (status !== 200 || body !== configs.BODY) return fail(`${status} ${JSON.stringify(body.slice(0, 200))}`);
      clearTimeout(t);
      session.close();
      resolve();
    });
    req.end();
  });
}

/** 40 requests through a 50/50 split must be answered by both upstream ports. */
async function checkSplit(port, upstreamPorts) {
  const { request } = require('undici');
  const seen = new Set();
  for (let i = 0; i < 40 && seen.size < upstreamPorts.length; i++) {
    const r = await request(`http://127.0.0.1:${port}/`, { headers: { host: HOST }, headersTimeout: 2000, bodyTimeout: 2000 });
    await r.body.dump();
    seen.add(Number(r.headers['x-upstream-port']));
  }
  const missing = upstreamPorts.filter((p) => !seen.has(p));
  if (missing.length) throw new Error(`the weighted split never reached upstream port(s) ${missing.join(', ')} in 40 requests (saw ${[...seen].join(', ')})`);
}

// ---------------------------------------------------------------------------------- measurements

function parseWrk(out) {
  const m = /(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!m || !rps) throw new Error(`cannot parse wrk output:\n${out}`);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const unit = { us: 1e-6, ms: 1e-3, s: 1, m: 60 }[m[3]];
  return {
    requests: Number(m[1]),
    seconds: Number(m[2]) * unit,
    rps: Number(rps[1]),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    socketErrors: sock ? sock.slice(1).reduce((s, x) => s + Number(x), 0) : 0,
  };
}

function wrk(port, seconds) {
  const args = ['-t1', `-c${WRK_CONNECTIONS}`, `-d${Math.max(1, Math.round(seconds))}s`, '-H', `Host: ${HOST}`, `http://127.0.0.1:${port}/`];
  return procs.run(TOOLS.wrk, args, { cpu: LOAD_CPU, timeoutMs: (seconds + 30) * 1000 }).then((r) => parseWrk(r.stdout));
}

/**
 * h2load's summary. Throws unless the connection really spoke h2c and every request succeeded
 * with a 2xx: a row whose HTTP/2 figure came from HTTP/1.1, or from errors, must not look valid.
 * `warmUp`: a short run that may end before any request completes (a cold proxy), so none
 * succeeding is fine there.
 */
function parseH2load(out, { warmUp = false } = {}) {
  const parsed = h2loadLib.summary(out, { warmUp });
  if (!parsed) throw new Error(`cannot parse h2load output:\n${out}`);
  const { r, problems } = parsed;
  if (problems.length) throw Object.assign(new Error(`h2load: ${problems.join('; ')}`), { h2load: r, output: out });
  return r;
}

/** h2load, h2c prior knowledge (its default for http:// URIs), pinned to the load core. */
function h2load(port, seconds, warmUp = false) {
  const args = ['-t', '1', '-c', String(H2_CLIENTS), '-m', String(H2_STREAMS), '-D', `${Math.max(100, Math.round(seconds * 1000))}ms`, '-H', `:authority: ${HOST}`, `http://127.0.0.1:${port}/`];
  return procs.run(TOOLS.h2load, args, { cpu: LOAD_CPU, timeoutMs: (seconds + 30) * 1000 }).then((r) => parseH2load(r.stdout, { warmUp }));
}

/**
 * The HTTP/2 column: h2load warm-up (not measured), then the measured run; CPU of the proxy over
 * it from /proc, the same way as for wrk. Throws (the caller marks the h2 cells FAILED) unless
 * h2load spoke h2c and saw no error.
 */
async function measureH2(name, h2Port, pid, p) {
  await checkH2(h2Port, name);
  await h2load(h2Port, p.h2WarmSeconds, true);
  return cpuOver(pid, () => h2load(h2Port, p.h2Seconds));
}

/**
 * Runs `load` (resolving to h2load's summary) and takes the proxy's CPU over it from /proc:
 * { h2load, rps, cpuSeconds, cpuUsPerReq, coreBusyPct, otherLoadOnProxyCorePct }.
 */
async function cpuOver(pid, load) {
  const cpu0 = pid ? procs.cpuSeconds(pid) : undefined;
  const c0 = procs.coreTimes();
  const t0 = process.hrtime.bigint();
  const out = { h2load: await load() };
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const busy = procs.busyBetween(c0, procs.coreTimes())[PROXY_CPU];
  out.rps = out.h2load.rps;
  if (pid) {
    const cpu = procs.cpuSeconds(pid) - cpu0;
    out.cpuSeconds = cpu;
    out.cpuUsPerReq = (cpu * 1e6) / out.h2load.requests;
    out.coreBusyPct = (100 * cpu) / wall;
    out.otherLoadOnProxyCorePct = Math.max(0, busy - out.coreBusyPct);
  } else out.otherLoadOnProxyCorePct = busy;
  return out;
}

/** h2load with gRPC unary calls (lib/grpc.js), same shape as the h2 column, pinned to the load core. */
function grpcH2load(port, seconds, fixtures, warmUp = false) {
  const args = grpcLib.h2loadArgs(port, { clients: H2_CLIENTS, streams: H2_STREAMS, ms: Math.max(100, Math.round(seconds * 1000)), requestFile: fixtures.requestFile });
  return procs.run(TOOLS.h2load, args, { cpu: LOAD_CPU, timeoutMs: (seconds + 30) * 1000 }).then((r) => grpcLib.parseGrpcH2load(r.stdout, fixtures.responseBytes, { warmUp }));
}

/**
 * The gRPC unary column: a grpc-js UnaryCall must succeed through the contender (before and after
 * the load), then h2load sends gRPC unary calls: warm-up (not measured), then the measured run,
 * CPU of the proxy over it from /proc, as for wrk and h2. Throws (the caller marks the gRPC cells
 * FAILED) unless every call of the measured run succeeded (parseGrpcH2load) and both checks passed.
 */
async function measureGrpc(name, grpcPort, pid, p, ctx) {
  if (ctx.grpc.error) throw new Error(`the gRPC upstream failed its check: ${ctx.grpc.error}`);
  await grpcLib.checkGrpc(grpcPort, name);
  await grpcH2load(grpcPort, p.grpcWarmSeconds, ctx.grpc, true);
  const out = await cpuOver(pid, () => grpcH2load(grpcPort, p.grpcSeconds, ctx.grpc));
  // Still a working gRPC path after the load (a proxy that broke under it must not look valid).
  await grpcLib.checkGrpc(grpcPort, `${name} (after the load)`);
  return out;
}

/**
 * Runs the open-loop generator (bench/native/openloop.c, lib/openloop.js) against `ports`
 * (paired, interleaved) at each rate in turn. It replaced bench/load.js here, which could not
 * keep 2 x 5,000 sends/s on the load core (bench/README.md, "The load generator").
 */
function load(ports, rates, seconds, warm) {
  return openloop.run(ports, { rates, seconds, warmup: warm, connections: LOAD_CONNECTIONS, drain: 5, host: HOST, cpu: LOAD_CPU });
}

/** Measures one contender: idle RSS, wrk max req/s + CPU/request, fixed-rate latency, peak RSS. */
async function measure(name, ctx, p, { latency = true, h2 = false, grpc = false, wrkSeconds, warmSeconds, keep = false } = {}) {
  log(`bench: ${name}...`);
  const tStart = Date.now();
  const { proc, port, h2Port, grpcPort } = await startContender(name, ctx);
  const pid = proc?.pid;
  // Wall seconds per step, to budget the run (a default run takes ~12 minutes).
  const out = { notes: [], stepSeconds: { start: (Date.now() - tStart) / 1000 } };
  const step = (key, t) => (out.stepSeconds[key] = (Date.now() - t) / 1000);
  try {
    await procs.sleep(300);
    if (pid) out.rssIdleKb = procs.memory(pid).rssKb;
    const sampler = pid ? procs.memorySampler(pid) : undefined;

    const tWrk = Date.now();
    await wrk(port, warmSeconds ?? p.warmSeconds);
    const cpu0 = pid ? procs.cpuSeconds(pid) : undefined;
    const t0 = process.hrtime.bigint();
    const c0 = procs.coreTimes();
    out.wrk = await wrk(port, wrkSeconds ?? p.wrkSeconds);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const proxyCoreBusy = procs.busyBetween(c0, procs.coreTimes())[PROXY_CPU];
    if (pid) {
      const cpu = procs.cpuSeconds(pid) - cpu0;
      out.cpuSeconds = cpu;
      out.cpuUsPerReq = (cpu * 1e6) / out.wrk.requests;
      out.coreBusyPct = (100 * cpu) / wall;
      // Whatever else ran on the proxy's core meanwhile (other processes on the machine).
      out.otherLoadOnProxyCorePct = { wrk: Math.max(0, proxyCoreBusy - out.coreBusyPct) };
    } else out.otherLoadOnProxyCorePct = { wrk: proxyCoreBusy };
    step('wrk', tWrk);
    if (out.wrk.non2xx || out.wrk.socketErrors) out.notes.push(`wrk: ${out.wrk.non2xx} non-2xx, ${out.wrk.socketErrors} socket errors`);

    if (latency) {
      const tRates = Date.now();
      const cpu1 = pid ? procs.cpuSeconds(pid) : undefined;
      const c1 = procs.coreTimes();
      const t1 = process.hrtime.bigint();
      // A proxy is measured paired with direct: both at the same rate, interleaved, over the
      // same seconds, so that "added" latency compares like with like on a noisy machine.
      const paired = port !== ctx.upstreamPorts[0];
      const res = await load(paired ? [port, ctx.upstreamPorts[0]] : [port], RATES, p.rateSeconds, p.rateWarmSeconds);
      out.rates = {};
      if (paired) out.pairedDirect = {};
      res.phases.forEach((ph) => {
        const key = rateKey(ph.rate);
        const t = { ...ph.targets[0], rate: ph.rate, durationS: ph.durationS };
        out.rates[key] = t;
        if (paired) out.pairedDirect[key] = { ...ph.targets[1], rate: ph.rate, durationS: ph.durationS };
        const bad = t.errors + t.non2xx + t.unfinished;
        if (bad) out.notes.push(`@${key}: ${t.errors} errors, ${t.non2xx} non-2xx, ${t.unfinished} unfinished`);
        const lag = Math.max(...ph.targets.map((x) => x.sendLagUs?.p99 ?? 0));
        if (lag > 5000) out.notes.push(`@${key}: generator send lag p99 ${(lag / 1000).toFixed(1)} ms`);
      });
      for (const r of RATES) if (!out.rates[rateKey(r)]) out.notes.push(`@${rateKey(r)}: skipped (previous rate saturated)`);
      const busy = procs.busyBetween(c1, procs.coreTimes())[PROXY_CPU];
      const wall1 = Number(process.hrtime.bigint() - t1) / 1e9;
      if (pid) {
        const sent = res.phases.reduce((s, ph) => s + ph.targets[0].completed, 0);
        const cpu = procs.cpuSeconds(pid) - cpu1;
        out.cpuUsPerReqAtRates = (cpu * 1e6) / sent;
        out.otherLoadOnProxyCorePct.rates = Math.max(0, busy - (100 * cpu) / wall1);
      } else out.otherLoadOnProxyCorePct.rates = busy;
      step('rates', tRates);
    }
    if (sampler) out.rssPeakKb = sampler.stop();

    // HTTP/2 downstream, after the RSS peak is taken (so that figure stays comparable with runs
    // without it). A failure marks the h2 cells FAILED; the HTTP/1.1 figures stand.
    if (h2 && H2_CONTENDERS.has(name)) {
      const tH2 = Date.now();
      try {
        if (h2Port === undefined) throw new Error('no h2c port');
        out.h2 = await measureH2(name, h2Port, pid, p);
        out.otherLoadOnProxyCorePct.h2load = out.h2.otherLoadOnProxyCorePct;
      } catch (err) {
        const msg = err.message.split('\n')[0];
        out.h2 = { error: err.message, h2load: err.h2load, output: err.output };
        out.notes.push(`h2 FAILED: ${msg}`);
        log(`bench: ${name}: h2 FAILED: ${err.message}${err.output ? `\n${err.output}` : ''}`);
      }
      step('h2', tH2);
    }
    // gRPC unary (h2c both ways, to the gRPC upstream), last. A failure marks the gRPC cells
    // FAILED; the other figures stand.
    if (grpc && GRPC_CONTENDERS.has(name)) {
      const tGrpc = Date.now();
      try {
        if (grpcPort === undefined) throw new Error('no gRPC port');
        out.grpc = await measureGrpc(name, grpcPort, pid, p, ctx);
        out.otherLoadOnProxyCorePct.grpc = out.grpc.otherLoadOnProxyCorePct;
      } catch (err) {
        const msg = err.message.split('\n')[0];
        out.grpc = { error: err.message, h2load: err.h2load, output: err.output };
        out.notes.push(`grpc FAILED: ${msg}`);
        log(`bench: ${name}: grpc FAILED: ${err.message}${err.output ? `\n${err.output}` : ''}`);
      }
      step('grpc', tGrpc);
    }
    const other = out.otherLoadOnProxyCorePct;
    const pct = (x) => (x === undefined ? '-' : `${Math.round(x)}%`);
    if (pid && Math.max(other.wrk, other.rates ?? 0, other.h2load ?? 0, other.grpc ?? 0) > 10)
      out.notes.push(
        `other processes on core ${PROXY_CPU}: ${pct(other.wrk)} (wrk) / ${pct(other.rates)} (fixed rates)` +
          (other.h2load === undefined ? '' : ` / ${pct(other.h2load)} (h2load)`) +
          (other.grpc === undefined ? '' : ` / ${pct(other.grpc)} (gRPC)`),
      );
    if (proc && proc.exitCode !== undefined) out.notes.push(`exited during the run (${proc.exitCode})`);
  } finally {
    // Kept running for the interleaved max-throughput rounds (benchRun stops it after them).
    if (proc && keep && proc.exitCode === undefined) Object.defineProperty(out, 'live', { value: { proc, port, pid, h2Port, grpcPort }, enumerable: false });
    else if (proc) await proc.stop();
    out.stepSeconds.total = (Date.now() - tStart) / 1000;
  }
  log(
    `bench: ${name}: ${Math.round(out.wrk.rps)} req/s` +
      (out.cpuUsPerReq !== undefined ? `, ${out.cpuUsPerReq.toFixed(1)} µs CPU/req` : '') +
      (out.rates ? `, p99 @1k ${out.rates['1k']?.latencyUs?.p99 ?? '-'} µs` : '') +
      (out.h2?.rps !== undefined ? `, h2 ${Math.round(out.h2.rps)} req/s` + (out.h2.cpuUsPerReq !== undefined ? ` ${out.h2.cpuUsPerReq.toFixed(1)} µs CPU/req` : '') : '') +
      (out.grpc?.rps !== undefined ? `, gRPC ${Math.round(out.grpc.rps)} req/s` + (out.grpc.cpuUsPerReq !== undefined ? ` ${out.grpc.cpuUsPerReq.toFixed(1)} µs CPU/req` : '') : '') +
      (out.rssPeakKb ? `, RSS ${(out.rssIdleKb / 1024).toFixed(1)} -> ${(out.rssPeakKb / 1024).toFixed(1)} MB` : '') +
      ` (${out.stepSeconds.total.toFixed(1)} s)`,
  );
  return out;
}

const rateKey = (r) => (r % 1000 === 0 ? `${r / 1000}k` : String(r));

/**
 * The upstream nginx on the load core. `withGrpc`: also the gRPC unary server (two h2c ports, for
 * the `direct` row and as the proxies' gRPC upstream), checked with a real grpc-js UnaryCall on each
 * port; if that fails, `grpc.error` says why and every gRPC cell of the run reads FAILED.
 */
async function startUpstream(dir, withGrpc = false) {
  const upstreamPorts = [await procs.freePort(), await procs.freePort()];
  // An h2c listener too, for the `direct` row of the HTTP/2 column (the proxies use HTTP/1.1 ports).
  const upstreamH2Port = await procs.freePort();
  const grpc = withGrpc ? { ...grpcLib.writeFixtures(dir), ports: [await procs.freePort(), await procs.freePort()] } : undefined;
  const conf = path.join(dir, 'upstream.conf');
  fs.writeFileSync(conf, configs.upstreamNginx(dir, upstreamPorts, upstreamH2Port, grpc));
  const proc = procs.start('upstream', TOOLS.nginx, ['-c', conf, '-e', path.join(dir, 'upstream.error.log')], { cpu: LOAD_CPU, logFile: path.join(dir, 'upstream.log') });
  for (const p of [...upstreamPorts, upstreamH2Port, ...(grpc?.ports ?? [])]) await procs.waitForPort(p, { proc });
  await checkProxies(upstreamPorts[0], 'upstream');
  if (grpc) {
    try {
      for (const p of grpc.ports) await grpcLib.checkGrpc(p, `the gRPC upstream (nginx, port ${p})`);
    } catch (err) {
      grpc.error = err.message;
      log(`bench: the gRPC column will read FAILED: ${err.message}`);
    }
  }
  return { proc, upstreamPorts, upstreamH2Port, grpc };
}

function environment(cores) {
  const cpu = os.cpus()[0];
  const version = (cmd, args, re) => {
    try {
      const r = require('node:child_process').spawnSync(cmd, args, { encoding: 'utf8' });
      const m = re.exec(`${r.stdout}${r.stderr}`);
      return m ? m[1] : '?';
    } catch {
      return '?';
    }
  };
  return {
    cpuModel: cpu ? cpu.model.trim() : 'unknown CPU',
    cores,
    node: process.version,
    tools: `nginx ${version(TOOLS.nginx, ['-v'], /nginx\/(\S+)/)}, haproxy ${version(TOOLS.haproxy, ['-v'], /version (\S+)/)}, wrk ${version(TOOLS.wrk, ['-v'], /wrk (\S+)/)}, h2load ${version(TOOLS.h2load, ['--version'], /nghttp2\/(\S+)/)}`,
    loadavg: os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' '),
    proxyCpu: PROXY_CPU,
    loadCpu: LOAD_CPU,
  };
}

function stamp(d) {
  return d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

function latestSoak() {
  const f = path.join(RESULTS, 'latest-soak.json');
  if (!fs.existsSync(f)) return undefined;
  try {
    const s = JSON.parse(fs.readFileSync(f, 'utf8'));
    return { ...s.verdict, source: `${s.minutes} min soak of ${s.startedAt}` };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------- the runs

async function benchRun(cli, dir, cores) {
  const profileName = cli.quick ? 'quick' : 'default';
  const p = PROFILES[profileName];
  const only = cli.only ? cli.only.split(',').map((s) => s.trim()) : undefined;
  const unknown = (only ?? []).filter((n) => !CONTENDERS.includes(n) && !CONCURRENCY_CONTENDERS.includes(n) && !VARIANTS.includes(n));
  if (unknown.length) throw new Error(`unknown contender(s): ${unknown.join(', ')}; known: ${[...CONTENDERS, ...CONCURRENCY_CONTENDERS, ...VARIANTS].join(', ')}`);
  const contenders = [
    ...CONTENDERS.filter((n) => !only || only.includes(n) || n === 'direct'),
    ...CONCURRENCY_CONTENDERS.filter((n) => (only ? only.includes(n) : cli['concurrency-contenders'])),
  ];
  const variants = VARIANTS.filter((n) => (only ? only.includes(n) : p.variants && !cli['no-variants']));

  const startedAt = new Date();
  // Other work on the machine makes every figure noisy; measure it before we add ours.
  const backgroundBefore = await procs.coreBusy(p.warmSeconds >= 2 ? 1000 : 500);
  if (backgroundBefore.some((x) => x > 10)) log(`bench: warning: the machine is already busy (core busy % ${backgroundBefore.join(', ')}); figures will be noisy`);
  const ctx = { dir, ...(await startUpstream(dir, !cli['no-grpc'])) };
  const results = {
    startedAt: startedAt.toISOString(),
    profile: profileName,
    cmd: `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`,
    env: environment(cores),
    params: { ...p, wrkThreads: 1, wrkConnections: WRK_CONNECTIONS, loadConnections: LOAD_CONNECTIONS, rates: RATES, h2: !cli['no-h2'], h2Threads: 1, h2Clients: H2_CLIENTS, h2Streams: H2_STREAMS, grpc: !cli['no-grpc'], grpcPayloadBytes: grpcLib.PAYLOAD },
    h2Contenders: [...H2_CONTENDERS],
    grpcContenders: [...GRPC_CONTENDERS],
    grpcUpstreamError: ctx.grpc?.error,
    rateKeys: RATES.map(rateKey),
    order: contenders,
    contenders: {},
    variants: {},
  };
  // A contender that fails is reported as such; the others still run.
  const attempt = async (name, opts) => {
    try {
      return await measure(name, ctx, p, opts);
    } catch (err) {
      log(`bench: ${name}: FAILED: ${err.message}`);
      return { error: err.message, notes: [`FAILED: ${err.message.split('\n')[0]}`] };
    }
  };
  // RSS at rest: a copy of each proxy is started now on the proxy's core and left without traffic
  // while `direct` (which does not use that core) is measured; read after SETTLED_IDLE_SECONDS.
  const probes = p.settledIdle ? await startIdleProbes(contenders.filter((n) => n !== 'direct'), ctx, dir) : new Map();
  const probeStart = Date.now();
  for (const name of contenders) {
    if (name !== 'direct' && probes.size > 0) await readIdleProbes(probes, probeStart);
    results.contenders[name] = await attempt(name, { h2: !cli['no-h2'], grpc: !cli['no-grpc'], keep: name !== 'direct' && p.throughputRounds > 0 });
    const probe = probes.get(name);
    if (probe && results.contenders[name] && !results.contenders[name].error) {
      results.contenders[name].rssStartKb = results.contenders[name].rssIdleKb;
      results.contenders[name].rssIdleKb = probe.rssKb;
      results.contenders[name].rssIdleAfterSeconds = probe.afterSeconds;
    }
  }
  await interleavedThroughput(results.contenders, p, ctx);
  // The per-feature rows are differences of a few µs between processes measured one after the
  // other: one sample each read +22 µs for a layer that does one header lookup. So the variants,
  // and a baseline copy of meshlet-off among them, are kept running and measured again in
  // alternating rounds (as the contenders above); each figure is the median of its rounds.
  const variantRounds = variants.length > 0 && p.throughputRounds > 0;
  for (const name of variantRounds ? ['meshlet-off', ...variants] : variants)
    results.variants[name] = await attempt(name, { latency: false, wrkSeconds: p.variantWrkSeconds, warmSeconds: p.variantWarmSeconds, keep: variantRounds });
  if (variantRounds) await interleavedThroughput(results.variants, { ...p, roundWarmSeconds: p.variantRoundWarmSeconds, roundSeconds: p.variantRoundSeconds }, ctx);
  if (!cli['no-hop'] && (!only || only.includes('meshlet-full') || only.includes('nginx'))) {
    try {
      results.hop = await hopBench(ctx, p);
    } catch (err) {
      log(`bench: mesh hop: FAILED: ${err.message}`);
      results.hop = { error: err.message };
    }
  }
  await ctx.proc.stop();
  if (!cli['no-obs']) results.observability = await observabilityBench(p);
  if (!cli['no-tail'] && !cli.quick && (!only || only.includes('meshlet-full'))) results.tail = await tailBench();
  if (!cli['no-mtls']) results.mtls = await mtlsBench(cli.quick);
  if (!cli['no-gateway']) results.gatewayTls = await gatewayTlsBench(p);
  if (!cli['no-cache-hit']) results.cacheHit = await cacheHitBench(p);
  results.finishedAt = new Date().toISOString();
  results.env.backgroundBusyPct = { before: backgroundBefore, after: await procs.coreBusy(500) };

  const soak = latestSoak();
  const g = report.goals(results, soak);
  results.goals = g;
  const mtlsText = results.mtls && !results.mtls.error ? `\n\n${require('./mtls').render(results.mtls)}` : results.mtls ? `\n\nmesh hop with mTLS: FAILED: ${results.mtls.error}` : '';
  const text = report.renderText(results, g) + mtlsText;
  process.stdout.write(`\n${text}\n\n`);

  fs.mkdirSync(RESULTS, { recursive: true });
  const base = path.join(RESULTS, stamp(startedAt));
  const md = report.renderMarkdown(results, g) + (mtlsText ? `\n## Mesh hop with mTLS (bench/mtls.js)\n\n\`\`\`\n${mtlsText.trim()}\n\`\`\`\n` : '');
  fs.writeFileSync(`${base}.md`, md);
  fs.writeFileSync(`${base}.json`, JSON.stringify(results, null, 2) + '\n');
  fs.writeFileSync(path.join(RESULTS, 'latest.md'), md);
  log(`bench: wrote ${path.relative(ROOT, base)}.md, .json and bench/results/latest.md (${((Date.now() - startedAt) / 1000).toFixed(0)} s)`);
}

/**
 * The mesh hop: HTTP/1.1 client -> proxy A -> proxy B -> the upstream. Two nginx chained (A
 * proxies to B, B to the upstream, keep-alive both ways) against two sidecars registered through a
 * control plane (A: service `client`; B: service `upstream`, its app the upstream's HTTP/1.1 port),
 * the hop between them as users get it by default, and with `http2Upgrade: true` (HTTP/1.1
 * multiplexed over HTTP/2 between the sidecars). Both proxies pinned to the proxy core, the control
 * plane to the load core; wrk (64 connections, `--latency`) as for max req/s. CPU µs per request is
 * summed over both proxies.
 */
async function hopBench(ctx, p) {
  const out = { rows: {} };
  const measureHop = async (label, port, pids, warmSeconds) => {
    await wrk(port, warmSeconds);
    const cpu0 = pids.reduce((a, pid) => a + procs.cpuSeconds(pid), 0);
    const t0 = process.hrtime.bigint();
    const secs = Math.max(1, Math.round(p.wrkSeconds));
    const r = await procs.run(TOOLS.wrk, ['-t1', `-c${WRK_CONNECTIONS}`, `-d${secs}s`, '--latency', '-H', `Host: ${HOST}`, `http://127.0.0.1:${port}/`], { cpu: LOAD_CPU, timeoutMs: (secs + 30) * 1000 });
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = pids.reduce((a, pid) => a + procs.cpuSeconds(pid), 0) - cpu0;
    const w = parseWrk(r.stdout);
    const p99 = /^\s+99%\s+([\d.]+)(us|ms|s)/m.exec(r.stdout);
    const row = { rps: w.rps, requests: w.requests, cpuUsPerReq: (cpu * 1e6) / w.requests, coreBusyPct: (100 * cpu) / wall, p99Us: p99 ? Math.round(Number(p99[1]) * { us: 1, ms: 1e3, s: 1e6 }[p99[2]]) : undefined, non2xx: w.non2xx, socketErrors: w.socketErrors };
    log(`bench: mesh hop, ${label}: ${Math.round(row.rps)} req/s, ${row.cpuUsPerReq.toFixed(1)} µs CPU/req (both proxies), p99 ${row.p99Us} µs`);
    return row;
  };
  // Each row's figures: the median of its rounds, field by field; the rounds stay in the JSON.
  const summarise = (label, rounds) => {
    const row = { rounds };
    for (const k of ['rps', 'requests', 'cpuUsPerReq', 'coreBusyPct', 'p99Us']) {
      const xs = rounds.map((x) => x[k]).filter((x) => x !== undefined);
      if (xs.length) row[k] = median(xs);
    }
    row.non2xx = rounds.reduce((a, x) => a + (x.non2xx ?? 0), 0);
    row.socketErrors = rounds.reduce((a, x) => a + (x.socketErrors ?? 0), 0);
    out.rows[label] = row;
    if (rounds.length > 1) log(`bench: mesh hop, ${label}: median of ${rounds.length} rounds ${row.cpuUsPerReq.toFixed(1)} µs CPU/req (${rounds.map((x) => x.cpuUsPerReq.toFixed(1)).join(' / ')})`);
  };
  // Two nginx and two sidecars (and their control plane) all run from the start, so that the two
  // rows are measured in alternating rounds: measured one after the other, their ratio carried
  // the machine's drift (1.92x and 2.65x in two quiet runs of the same build). Idle, each pair
  // costs the other nothing worth counting (nginx sleeps; a sidecar wakes for its timers).
  const nA = path.join(ctx.dir, 'hop-nginx-a');
  const nB = path.join(ctx.dir, 'hop-nginx-b');
  fs.mkdirSync(nA, { recursive: true });
  fs.mkdirSync(nB, { recursive: true });
  const pA = await procs.freePort();
  const pB = await procs.freePort();
  fs.writeFileSync(path.join(nB, 'nginx.conf'), configs.nginxProxy(nB, pB, ctx.upstreamPorts[0]));
  fs.writeFileSync(path.join(nA, 'nginx.conf'), configs.nginxProxy(nA, pA, pB));
  const main = path.join(ROOT, 'dist/src/cli/main.js');
  const api = await procs.freePort();
  const push = await procs.freePort();
  const started = [];
  const sidecars = [];
  try {
    const b = procs.start('hop-nginx-b', TOOLS.nginx, ['-c', path.join(nB, 'nginx.conf'), '-e', path.join(nB, 'error.log')], { cpu: PROXY_CPU, logFile: path.join(nB, 'log') });
    started.push(b);
    const a = procs.start('hop-nginx-a', TOOLS.nginx, ['-c', path.join(nA, 'nginx.conf'), '-e', path.join(nA, 'error.log')], { cpu: PROXY_CPU, logFile: path.join(nA, 'log') });
    started.push(a);
    await procs.waitForPort(pB, { proc: b });
    await procs.waitForPort(pA, { proc: a });
    await checkProxies(pA, 'two nginx');

    const cp = procs.start('hop-cp', process.execPath, [main, 'control-plane', '--data-dir', path.join(ctx.dir, 'hop-cp'), '--api', `127.0.0.1:${api}`, '--push', `127.0.0.1:${push}`, '--insecure-plaintext', '--insecure-push-plaintext', '--sidecar-auth', 'permissive'], { cpu: LOAD_CPU, logFile: path.join(ctx.dir, 'hop-cp.log') });
    started.push(cp);
    await procs.waitForPort(api, { proc: cp });
    const reg = ['--control-plane', `127.0.0.1:${push}`, '--insecure-push-plaintext', '--advertise', '127.0.0.1', '--inbound', '127.0.0.1:0'];
    const port = await procs.freePort();
    for (const [name, extra] of [
      ['client', ['--outbound', `127.0.0.1:${port}`]],
      ['upstream', ['--outbound', '127.0.0.1:0', '--app-port', String(ctx.upstreamPorts[0]), '--app-protocol', 'http1']],
    ]) {
      const admin = await procs.freePort();
      const sc = procs.start(`hop-${name}`, main, ['sidecar', '--service', name, ...reg, ...extra, '--admin', `127.0.0.1:${admin}`], { cpu: PROXY_CPU, logFile: path.join(ctx.dir, `hop-${name}.log`) });
      sidecars.push(sc);
      await procs.waitForHttp(`http://127.0.0.1:${admin}/ready`, { proc: sc });
    }
    // Until the control plane has pushed B's endpoint to A.
    for (let i = 0; ; i++) {
      try {
        await checkProxies(port, 'two sidecars');
        break;
      } catch (err) {
        if (i >= 3) throw err;
      }
    }
    const pids = sidecars.map((sc) => sc.pid);
    const rounds = Math.max(1, p.throughputRounds ?? 1);
    const nginxRounds = [];
    const meshletRounds = [];
    for (let r = 0; r < rounds; r++) {
      nginxRounds.push(await measureHop('nginx x2', pA, [a.pid, b.pid], p.warmSeconds));
      // Two fresh Node processes on one core need longer than one to reach steady state (JIT,
      // heap growth): with 1 s of warm-up the first seconds measured at half the steady req/s.
      // Later rounds only need to wake them up (as for the interleaved max req/s rounds).
      meshletRounds.push(await measureHop('meshlet x2 (default)', port, pids, r === 0 ? Math.max(p.warmSeconds, p.hopWarmSeconds ?? 0) : Math.max(p.warmSeconds, p.roundWarmSeconds ?? 0)));
    }
    summarise('nginx x2', nginxRounds);
    summarise('meshlet x2 (default)', meshletRounds);
    const yaml = 'apiVersion: meshlet.dev/v1\nkind: DestinationPolicy\nmetadata: {name: upstream}\nspec: {service: upstream, http2Upgrade: true}\n';
    const applied = require('node:child_process').spawnSync(process.execPath, [main, 'apply', '-f', '-'], { input: yaml, env: { ...process.env, MESHLET_SERVER: `http://127.0.0.1:${api}`, MESHLET_TOKEN: fs.readFileSync(path.join(ctx.dir, 'hop-cp', 'admin.token'), 'utf8').trim() }, encoding: 'utf8' });
    if (applied.status !== 0) throw new Error(`apply http2Upgrade: true failed: ${applied.stderr}`);
    await procs.sleep(1500); // push + compile
    summarise('meshlet x2 (http2Upgrade: true)', [await measureHop('meshlet x2 (http2Upgrade: true)', port, pids, Math.max(p.warmSeconds, p.hopWarmSeconds ?? 0))]);
  } finally {
    for (const sc of sidecars) await sc.stop();
    for (const proc of started.reverse()) await proc.stop();
  }
  return out;
}

/**
 * Max req/s and CPU µs/request, again, in rounds: every proxy still running gets `roundSeconds`
 * of wrk in turn, `throughputRounds` times, and its figures become the median of its rounds. A
 * VM's speed drifts over a five-minute run; measured one after another, two contenders' ratio
 * carries that drift, interleaved it does not. The single run inside measure() stays in the JSON
 * (`wrkSingle`, `cpuUsPerReqSingle`). The h2 and gRPC columns likewise: `roundH2Seconds` of h2load
 * per round and column (after `roundH2WarmSeconds` of warm-up), the median of the rounds, the single
 * run kept as `h2.single` / `grpc.single` (a 4 s h2load run of nginx read 33.7 and 41.6 µs per request
 * in two quiet runs of the same day: one sample per contender is not a ratio to set goals by).
 * Stops the processes afterwards.
 */
async function interleavedThroughput(contenders, p, ctx) {
  const live = Object.entries(contenders).filter(([, c]) => c.live);
  if (live.length === 0) return;
  // The h2 and gRPC columns get the same treatment, for the contenders whose single run worked.
  const h2Live = (c) => c.h2 && !c.h2.error && c.live.h2Port !== undefined;
  const grpcLive = (c) => c.grpc && !c.grpc.error && c.live.grpcPort !== undefined;
  const withH2 = live.filter(([, c]) => h2Live(c) || grpcLive(c)).length;
  log(
    `bench: max req/s, interleaved: ${p.throughputRounds} rounds x ${live.length} proxies x (${p.roundWarmSeconds} s warm-up + ${p.roundSeconds} s)` +
      (withH2 ? `; h2 and gRPC: ${p.roundH2WarmSeconds} s warm-up + ${p.roundH2Seconds} s each, for ${withH2} of them` : ''),
  );
  try {
    for (let r = 0; r < p.throughputRounds; r++) {
      for (const [name, c] of live) {
        const { port, pid, h2Port, grpcPort } = c.live;
        // A proxy that sat idle while the others ran is slower for its first second (V8 gave
        // memory back, caches went cold): warm it up, as measure() did.
        await wrk(port, p.roundWarmSeconds);
        const cpu0 = procs.cpuSeconds(pid);
        const t0 = process.hrtime.bigint();
        const w = await wrk(port, p.roundSeconds);
        const wall = Number(process.hrtime.bigint() - t0) / 1e9;
        const cpu = procs.cpuSeconds(pid) - cpu0;
        (c.rounds ??= []).push({ rps: w.rps, requests: w.requests, cpuUsPerReq: (cpu * 1e6) / w.requests, coreBusyPct: (100 * cpu) / wall, non2xx: w.non2xx, socketErrors: w.socketErrors });
        // A failed round marks the column FAILED as the single run would have (the rounds stop).
        if (h2Live(c)) {
          try {
            await h2load(h2Port, p.roundH2WarmSeconds, true);
            (c.h2Rounds ??= []).push(await cpuOver(pid, () => h2load(h2Port, p.roundH2Seconds)));
          } catch (err) {
            c.h2 = { error: `interleaved round ${r + 1}: ${err.message}`, h2load: err.h2load, output: err.output };
            c.notes.push(`h2 FAILED in interleaved round ${r + 1}: ${err.message.split('\n')[0]}`);
            log(`bench: ${name}: h2 FAILED in round ${r + 1}: ${err.message}`);
          }
        }
        if (grpcLive(c)) {
          try {
            await grpcH2load(grpcPort, p.roundH2WarmSeconds, ctx.grpc, true);
            (c.grpcRounds ??= []).push(await cpuOver(pid, () => grpcH2load(grpcPort, p.roundH2Seconds, ctx.grpc)));
          } catch (err) {
            c.grpc = { error: `interleaved round ${r + 1}: ${err.message}`, h2load: err.h2load, output: err.output };
            c.notes.push(`grpc FAILED in interleaved round ${r + 1}: ${err.message.split('\n')[0]}`);
            log(`bench: ${name}: grpc FAILED in round ${r + 1}: ${err.message}`);
          }
        }
      }
    }
    for (const [name, c] of live) {
      c.wrkSingle = c.wrk;
      c.cpuUsPerReqSingle = c.cpuUsPerReq;
      c.wrk = { ...c.wrk, rps: median(c.rounds.map((x) => x.rps)) };
      c.cpuUsPerReq = median(c.rounds.map((x) => x.cpuUsPerReq));
      c.coreBusyPct = median(c.rounds.map((x) => x.coreBusyPct));
      if (c.rounds.some((x) => x.non2xx || x.socketErrors)) c.notes.push('interleaved wrk rounds saw non-2xx or socket errors');
      log(`bench: ${name}: interleaved ${c.rounds.map((x) => Math.round(x.rps)).join(' / ')} req/s, ${c.rounds.map((x) => x.cpuUsPerReq.toFixed(1)).join(' / ')} µs CPU/req`);
      for (const [key, roundsKey] of [
        ['h2', 'h2Rounds'],
        ['grpc', 'grpcRounds'],
      ]) {
        const rounds = c[roundsKey];
        if (!rounds || c[key].error) continue;
        // The single run stays in the JSON as `h2.single` / `grpc.single`, as wrkSingle for wrk.
        const first = c[key];
        c[key] = { ...first, single: first, rounds, rps: median(rounds.map((x) => x.rps)), cpuUsPerReq: median(rounds.map((x) => x.cpuUsPerReq)), coreBusyPct: median(rounds.map((x) => x.coreBusyPct)) };
        log(`bench: ${name}: interleaved ${key} ${rounds.map((x) => Math.round(x.rps)).join(' / ')} req/s, ${rounds.map((x) => (x.cpuUsPerReq ?? NaN).toFixed(1)).join(' / ')} µs CPU/req`);
      }
    }
  } finally {
    for (const [, c] of live) await c.live.proc.stop();
  }
}

/** The median of a non-empty list (the upper one of an even count). */
function median(xs) {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

/** Starts one idle copy of each contender (own temp dir, own ports); failures are logged, not fatal. */
async function startIdleProbes(names, ctx, dir) {
  const probes = new Map();
  const pdir = path.join(dir, 'idle-probes');
  fs.mkdirSync(pdir, { recursive: true });
  for (const name of names) {
    try {
      const { proc } = await startContender(name, { ...ctx, dir: path.join(pdir, name), grpc: undefined });
      if (proc?.pid) probes.set(name, { proc, rssKb: undefined, afterSeconds: undefined });
      else await proc?.stop();
    } catch (err) {
      log(`bench: idle probe ${name}: ${err.message.split('\n')[0]}`);
    }
  }
  return probes;
}

/** Once SETTLED_IDLE_SECONDS have passed: reads every probe's RSS and stops it (once). */
async function readIdleProbes(probes, since) {
  if ([...probes.values()].every((x) => x.rssKb !== undefined)) return;
  const wait = SETTLED_IDLE_SECONDS * 1000 - (Date.now() - since);
  if (wait > 0) await procs.sleep(wait);
  for (const probe of probes.values()) {
    probe.afterSeconds = Math.round((Date.now() - since) / 1000);
    probe.rssKb = procs.memory(probe.proc.pid).rssKb;
    await probe.proc.stop();
  }
}

/**
 * The in-process observability microbenchmark (bench/observability.js), on the proxy's core (it
 * runs itself under the sidecar's Node flags); a failure is reported, the rest of the run stands.
 */
async function observabilityBench(p) {
  const args = [path.join(__dirname, 'observability.js'), '--json', '--iterations', String(p.obsIterations), '--reps', String(p.obsReps)];
  log(`bench: observability overhead (in-process), ${p.obsIterations} requests x ${p.obsReps} reps`);
  try {
    const { stdout } = await procs.run(process.execPath, args, { cpu: PROXY_CPU, timeoutMs: 180_000 });
    return JSON.parse(stdout);
  } catch (err) {
    log(`bench: observability: FAILED: ${err.message}`);
    return { error: err.message.split('\n')[0] };
  }
}

/** The mesh hop with mTLS vs plaintext vs two nginx with TLS (bench/mtls.js), in its own processes. */
/**
 * The tail goal (added p99.9 at 5,000 req/s within 2x nginx's, in each of three runs): bench/tail.js
 * --runs 3 (nginx and the full chain in turn, paired with the upstream, after one uncounted phase
 * each; pairs the platform paused run again: 1-2 min), its JSON summary.
 */
async function tailBench() {
  log('bench: tail at 5,000 req/s: bench/tail.js --runs 3 (1-2 min)');
  let r;
  try {
    r = await procs.run(process.execPath, [path.join(__dirname, 'tail.js'), '--runs', '3', '--json'], { timeoutMs: 300_000 });
  } catch (err) {
    log(`bench: tail: FAILED: ${err.message}`);
    return { error: err.message };
  }
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) {
    log(`bench: tail: FAILED: no JSON summary from bench/tail.js:\n${r.stdout}`);
    return { error: 'no JSON summary from bench/tail.js' };
  }
  const t = JSON.parse(line);
  const verdict = r.stdout.trim().split('\n').pop();
  log(`bench: ${verdict}`);
  return { rate: t.rate, seconds: t.seconds, gen: t.gen, sum: t.sum, ratios: t.ratios, met: t.met, paired: t.paired, voided: t.voided.length, loadavg: t.loadavg, verdict };
}

async function mtlsBench(quick) {
  const args = [path.join(__dirname, 'mtls.js'), '--json', '--seconds', quick ? '2' : '4', '--rounds', quick ? '1' : '3'];
  log('bench: mesh hop with mTLS (bench/mtls.js)');
  try {
    const { stdout } = await procs.run(process.execPath, args, { timeoutMs: 300_000 });
    return JSON.parse(stdout);
  } catch (err) {
    log(`bench: mtls: FAILED: ${err.message}`);
    return { error: err.message.split('\n')[0] };
  }
}

/** bench/gateway-tls.js: the edge gateway (TLS + routing) vs nginx (TLS + proxy_pass), CPU µs/req ratio. */
async function gatewayTlsBench(p) {
  const seconds = p.variants ? 4 : 1;
  log(`bench: gateway TLS + routing vs nginx TLS, ${seconds} s x 3 rounds`);
  try {
    const { stdout } = await procs.run(process.execPath, [path.join(__dirname, 'gateway-tls.js'), '--json', '--seconds', String(seconds)], { timeoutMs: 300_000 });
    return JSON.parse(stdout.trim().split('\n').pop());
  } catch (err) {
    log(`bench: gateway TLS: FAILED: ${err.message}`);
    return { error: err.message.split('\n')[0] };
  }
}

/** bench/cache-hit.js: a response-cache HIT in the sidecar vs nginx proxy_cache, CPU µs/req ratio. */
async function cacheHitBench(p) {
  const requests = p.variants ? 30000 : 5000;
  log(`bench: cache HIT vs nginx proxy_cache, ${requests} requests x 3 alternating rounds`);
  try {
    const { stdout } = await procs.run(process.execPath, [path.join(__dirname, 'cache-hit.js'), '--json', '--requests', String(requests), '--rounds', '3'], { timeoutMs: 300_000 });
    return JSON.parse(stdout.trim().split('\n').pop());
  } catch (err) {
    log(`bench: cache HIT: FAILED: ${err.message}`);
    return { error: err.message.split('\n')[0] };
  }
}

/**
 * The soak: the full-chain sidecar at 1,000 req/s for `--soak-minutes`. RSS is sampled every
 * second and reported every 30 s (mean, min, max of the window). A Node process's RSS is a GC
 * sawtooth (tens of percent, period of minutes), so "flat" is judged on what a leak changes:
 * the least-squares trend over the soak after warm-up, and the floor (lowest RSS, i.e. after a
 * collection) of the last third against the first third. Both must stay within ±5%.
 */
async function soakRun(cli, dir, cores) {
  const minutes = Number(cli['soak-minutes']);
  if (!(minutes > 0 && minutes <= 240)) throw new Error('--soak-minutes must be in (0, 240]');
  const everyS = 30;
  const warmupS = cli['soak-warmup'] !== undefined ? Number(cli['soak-warmup']) : Math.min(60, (minutes * 60) / 4);
  if (!(warmupS >= 0 && warmupS < minutes * 60 - 30)) throw new Error('--soak-warmup must leave at least 30 s of soak after it');
  const startedAt = new Date();
  const ctx = { dir, ...(await startUpstream(dir)) };
  log(`bench: soak: ${minutes} min at 1,000 req/s through meshlet-full; RSS sampled every 1 s, reported every ${everyS} s; ${warmupS} s warm-up`);
  const { proc, port } = await startContender('meshlet-full', ctx);
  const fine = []; // { t (s), v (RSS kB) }
  const windows = [];
  const t0 = Date.now();
  const kb = (x) => (x / 1024).toFixed(1);
  const sample = () => fine.push({ t: (Date.now() - t0) / 1000, v: procs.memory(proc.pid).rssKb });
  const report30 = () => {
    const t = Math.round((Date.now() - t0) / 1000);
    const w = fine.filter((x) => x.t > t - everyS && x.t <= t + 0.5);
    if (w.length === 0) return;
    const vs = w.map((x) => x.v);
    const win = { t, meanKb: vs.reduce((a, b) => a + b, 0) / vs.length, minKb: Math.min(...vs), maxKb: Math.max(...vs), cpuSeconds: procs.cpuSeconds(proc.pid), warm: t <= warmupS };
    windows.push(win);
    const base = windows.find((x) => !x.warm);
    const dev = win.warm ? 'warm-up' : `mean ${(((win.meanKb - base.meanKb) / base.meanKb) * 100).toFixed(1)}% vs first window after warm-up`;
    log(`bench: soak t=${String(t).padStart(4)} s  RSS mean ${kb(win.meanKb)} MB (min ${kb(win.minKb)}, max ${kb(win.maxKb)}); ${dev}`);
  };
  sample();
  const fineTimer = setInterval(sample, 1000);
  const reportTimer = setInterval(report30, everyS * 1000);
  let res;
  try {
    res = await load([port], [1000], minutes * 60, 0);
  } finally {
    clearInterval(fineTimer);
    clearInterval(reportTimer);
  }
  sample();
  if (windows.length === 0 || Date.now() - t0 - windows[windows.length - 1].t * 1000 > 5000) report30();
  await proc.stop();
  await ctx.proc.stop();

  const postWindows = windows.filter((w) => !w.warm);
  const base = postWindows[0] ?? windows[windows.length - 1];
  const winDevs = postWindows.map((w) => ((w.meanKb - base.meanKb) / base.meanKb) * 100);
  const verdict = { ...soakLib.rssVerdict(fine, warmupS), windowMeanMinPct: Math.min(...winDevs), windowMeanMaxPct: Math.max(...winDevs) };
  const { trendPct, floorPct, floorFirstKb: floorFirst, floorLastKb: floorLast } = verdict;
  const sign = soakLib.sign;
  const ph = res.phases[0].targets[0];
  const out = { startedAt: startedAt.toISOString(), minutes, everyS, warmupS, windows, samples: fine.map((x) => [Math.round(x.t * 10) / 10, x.v]), verdict, load: ph, env: environment(cores) };
  const lines = [
    `# meshlet soak — ${out.startedAt}`,
    '',
    `${minutes} min at 1,000 req/s (open loop, bench/load.js) through the full-chain sidecar (proxy on core ${PROXY_CPU}). RSS sampled every second (\`VmRSS\`), reported per ${everyS}-s window; the first ${warmupS} s are warm-up.`,
    '',
    report.mdTable(
      ['t (s)', 'RSS mean MB', 'min MB', 'max MB', 'mean vs first window after warm-up', 'CPU s'],
      windows.map((w) => [w.t, kb(w.meanKb), kb(w.minKb), kb(w.maxKb), w.warm ? 'warm-up' : sign(((w.meanKb - base.meanKb) / base.meanKb) * 100), w.cpuSeconds.toFixed(1)]),
    ),
    '',
    `**${verdict.pass ? 'PASS' : 'FAIL'}** (goal: flat within ±5% after warm-up): least-squares trend ${sign(trendPct)} (${(verdict.trendKbPerMin / 1024).toFixed(2)} MB/min); RSS floor (10th percentile) ${kb(floorFirst)} MB in the first third, ${kb(floorLast)} MB in the last third (${sign(floorPct)}).`,
    '',
    `For reference, RSS ranged ${kb(verdict.rssMinKb)}–${kb(verdict.rssMaxKb)} MB after warm-up, and the ${everyS}-s window means stayed within ${sign(verdict.windowMeanMinPct)} … ${sign(verdict.windowMeanMaxPct)} of the first one (a GC sawtooth moves these without any leak; the trend and the floor are what a leak moves).`,
    '',
    `Requests: ${ph.recorded} recorded, ${ph.errors} errors, ${ph.non2xx} non-2xx, ${ph.unfinished} unfinished. Latency from intended send (µs): p50 ${ph.latencyUs?.p50}, p99 ${ph.latencyUs?.p99}, p99.9 ${ph.latencyUs?.p999}, max ${ph.latencyUs?.max}.`,
    '',
  ];
  const md = lines.join('\n');
  process.stdout.write(`\n${md}\n`);
  fs.mkdirSync(RESULTS, { recursive: true });
  const base2 = path.join(RESULTS, `soak-${stamp(startedAt)}`);
  fs.writeFileSync(`${base2}.md`, md);
  fs.writeFileSync(`${base2}.json`, JSON.stringify(out) + '\n');
  fs.writeFileSync(path.join(RESULTS, 'latest-soak.md'), md);
  fs.writeFileSync(path.join(RESULTS, 'latest-soak.json'), JSON.stringify(out) + '\n');
  log(`bench: wrote ${path.relative(ROOT, base2)}.md, .json and bench/results/latest-soak.{md,json}`);
}

async function main() {
  const cli = parseCli();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-bench-'));
  const cleanupTmp = () => {
    if (!cli['keep-tmp']) fs.rmSync(dir, { recursive: true, force: true });
  };
  procs.installCleanup(() => cleanupTmp());
  let failed = false;
  try {
    const cores = preflight();
    // The harness itself stays off the proxy's core.
    await procs.run('taskset', ['-p', '-c', String(LOAD_CPU), String(process.pid)]).catch(() => undefined);
    await ensureBuilt(cli['no-build']);
    if (cli.soak) await soakRun(cli, dir, cores);
    else await benchRun(cli, dir, cores);
  } catch (err) {
    // Interrupted: the signal handler stops everything and exits; nothing failed.
    if (procs.isInterrupted()) return new Promise(() => {});
    failed = true;
    log(`bench: FAILED: ${err.stack ?? err.message}`);
    log(`bench: logs kept in ${dir}`);
  } finally {
    await procs.stopAll();
    if (!failed) cleanupTmp();
  }
  process.exit(failed ? 1 : 0);
}

main();
