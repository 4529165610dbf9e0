#!/usr/bin/env node
'use strict';
/**
 * The tail at a fixed rate: nginx and the full-chain sidecar, each measured paired with the
 * upstream (bench/load.js, open loop, the same as `npm run bench`'s fixed-rate phase), RUNS times
 * in turn; for the sidecar, an event-loop-delay histogram and the GC pauses over each phase
 * (bench/lib/eld.js, preloaded). Added latency = proxy - paired direct at each percentile.
 *
 *   node bench/tail.js [--rate 5000] [--seconds 6] [--runs 3] [--dist DIR] [--node-flags '...']
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { parseArgs } = require('node:util');
const procs = require('./lib/procs');
const configs = require('./lib/configs');

const { values: o } = parseArgs({
  options: {
    rate: { type: 'string', default: '5000' },
    seconds: { type: 'string', default: '6' },
    runs: { type: 'string', default: '3' },
    dist: { type: 'string', default: path.resolve(__dirname, '..') },
    'node-flags': { type: 'string', default: '' },
    json: { type: 'boolean', default: false },
  },
});
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-tail-'));
procs.installCleanup(() => fs.rmSync(tmp, { recursive: true, force: true }));

function load(ports) {
  return new Promise((resolve, reject) => {
    const args = [path.join(__dirname, 'load.js'), ...ports.flatMap((p) => ['--url', `http://127.0.0.1:${p}/`]), '--host', 'upstream', '--rate', o.rate, '--duration', o.seconds, '--warmup', '1', '--connections', '32', '--drain', '5'];
    const c = spawn('taskset', ['-c', '0', process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`load.js exited ${code}`))));
  });
}

async function main() {
  const up = [await procs.freePort(), await procs.freePort()];
  const conf = path.join(tmp, 'upstream.conf');
  fs.writeFileSync(conf, configs.upstreamNginx(tmp, up));
  procs.start('upstream', 'nginx', ['-c', conf], { cpu: 0, logFile: path.join(tmp, 'upstream.log') });
  const nginxPort = await procs.freePort();
  const nconf = path.join(tmp, 'proxy.conf');
  fs.writeFileSync(nconf, configs.nginxProxy(tmp, nginxPort, up[0]));
  procs.start('nginx', 'nginx', ['-c', nconf], { cpu: 1, logFile: path.join(tmp, 'nginx.log') });
  const policies = path.join(tmp, 'full.json');
  fs.writeFileSync(policies, configs.meshletPolicies('full', up));
  const out = await procs.freePort();
  const admin = await procs.freePort();
  const eldFile = path.join(tmp, 'eld.jsonl');
  const flags = ['--max-semi-space-size=8', '--heap-growing-percent=20', ...o['node-flags'].split(' ').filter(Boolean), '-r', path.join(__dirname, 'lib/eld.js')];
  const sc = procs.start('meshlet', process.execPath, [...flags, path.join(o.dist, 'dist/src/cli/main.js'), 'sidecar', '--service', 'bench', '--config', policies, '--inbound', '127.0.0.1:0', '--outbound', `127.0.0.1:${out}`, '--admin', `127.0.0.1:${admin}`], {
    cpu: 1,
    logFile: path.join(tmp, 'meshlet.log'),
    env: { ...process.env, MESHLET_ELD_FILE: eldFile },
  });
  await procs.waitForPort(nginxPort);
  await procs.waitForHttp(`http://127.0.0.1:${admin}/ready`, { proc: sc, timeoutMs: 30_000 });
  const added = (t, d) => Object.fromEntries(['p50', 'p99', 'p999'].map((k) => [k, t.latencyUs[k] - d.latencyUs[k]]));
  const runs = [];
  for (let i = 0; i < Number(o.runs); i++) {
    const n = (await load([nginxPort, up[0]])).phases[0];
    process.kill(sc.pid, 'SIGUSR2'); // start the sidecar's histogram afresh
    await procs.sleep(100);
    const m = (await load([out, up[0]])).phases[0];
    process.kill(sc.pid, 'SIGUSR2');
    await procs.sleep(200);
    const lines = fs.readFileSync(eldFile, 'utf8').trim().split('\n');
    const eld = JSON.parse(lines[lines.length - 1]);
    const r = { nginx: added(n.targets[0], n.targets[1]), meshlet: added(m.targets[0], m.targets[1]), meshletErrors: m.targets[0].errors + m.targets[0].non2xx + m.targets[0].unfinished, eld, loadavg: os.loadavg()[0] };
    runs.push(r);
    process.stderr.write(`run ${i + 1}: nginx +${r.nginx.p50}/${r.nginx.p99}/${r.nginx.p999} us, meshlet +${r.meshlet.p50}/${r.meshlet.p99}/${r.meshlet.p999} us (p50/p99/p99.9 added); event-loop delay p50/p99/p99.9/max ${eld.eventLoopDelayUs.p50}/${eld.eventLoopDelayUs.p99}/${eld.eventLoopDelayUs.p999}/${eld.eventLoopDelayUs.max} us; gc ${JSON.stringify(eld.gc)}; load ${r.loadavg.toFixed(1)}\n`);
  }
  await procs.stopAll();
  const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const sum = {};
  for (const who of ['nginx', 'meshlet']) for (const k of ['p50', 'p99', 'p999']) sum[`${who}.${k}`] = { median: med(runs.map((r) => r[who][k])), min: Math.min(...runs.map((r) => r[who][k])), max: Math.max(...runs.map((r) => r[who][k])) };
  if (o.json) console.log(JSON.stringify({ rate: Number(o.rate), runs, sum }));
  for (const [k, v] of Object.entries(sum)) console.log(`${k.padEnd(14)} added median ${v.median} us (${v.min} .. ${v.max})`);
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch(async (err) => {
  console.error(err);
  await procs.stopAll();
  process.exit(1);
});
