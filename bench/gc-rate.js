#!/usr/bin/env node
'use strict';
/**
 * The full-chain sidecar's garbage collection at a fixed rate, A/B: builds, Node flags or sidecar
 * flags alternated round by round, each round a fresh sidecar pinned to core 1, warmed, then
 * measured with the open-loop generator (bench/native/openloop.c, paired with the direct upstream
 * as in bench/tail.js) under `--trace-gc-nvp`. Per round: the scavenges (count, mean pause and its
 * phases, bytes surviving and promoted per scavenge), the mark-compacts, the latency it added
 * (p99, p99.9) and its service time (send to completion: p99, p99.9), CPU per request and RSS.
 * The GC figures are the load-independent ones; the latency columns move with the machine.
 *
 *   node bench/gc-rate.js [--rate 5000] [--seconds 12] [--warm 5] [--rounds 3] [--empty-body] [--json] VARIANT...
 *
 * VARIANT is NAME|DIR|NODEFLAGS|SIDECARFLAGS: DIR a checkout whose dist/ runs (default this one),
 * NODEFLAGS added to the product's V8 flags, SIDECARFLAGS to `meshlet sidecar`; a NAME starting
 * with `nginx` runs the nginx proxy of bench/lib/configs.js in its place (for the latency
 * columns). E.g. `'base|/work/wt/base' 'new|.'`, or `'ring|.' 'noring|.||--recent-requests 0'`.
 * `--empty-body`: the upstream answers with no body (what the response body costs).
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const procs = require('./lib/procs');
const configs = require('./lib/configs');
const openloop = require('./lib/openloop');
const { nodeFlagsOf } = require('./lib/node-flags');

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rate: { type: 'string', default: '5000' },
    seconds: { type: 'string', default: '12' },
    warm: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    'empty-body': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const RATE = Number(o.rate);
const SECONDS = Number(o.seconds);
const variants = positionals.map((v) => {
  const [name, dir, flags, args] = v.split('|');
  if (!name) throw new Error(`a variant needs a name: ${JSON.stringify(v)}`);
  const split = (s) => (s ?? '').split(' ').filter(Boolean);
  return { name, dist: path.resolve(dir || path.join(__dirname, '..')), flags: split(flags), args: split(args) };
});
if (!variants.length) throw new Error("usage: node bench/gc-rate.js [options] 'NAME|DIR|NODEFLAGS|SIDECARFLAGS' ...");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-gc-rate-'));
procs.installCleanup(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The scavenges and mark-compacts in `log` after byte `from` (V8's --trace-gc-nvp lines). */
function gcOf(log, from) {
  const sc = [];
  let mc = 0;
  let mcMax = 0;
  for (const line of fs.readFileSync(log, 'utf8').slice(from).split('\n')) {
    if (!line.includes(' gc=')) continue;
    const kv = Object.fromEntries(line.split(/\s+/).filter((x) => x.includes('=')).map((x) => x.split('=')));
    if (kv.gc === 's') sc.push(kv);
    else if (kv.gc === 'mc' || kv.gc === 'ms') {
      mc++;
      mcMax = Math.max(mcMax, Number(kv.pause));
    }
  }
  const mean = (k) => (sc.length ? sc.reduce((a, x) => a + Number(x[k] ?? 0), 0) / sc.length : 0);
  const r = (x, d = 2) => Number(x.toFixed(d));
  return {
    scavenges: sc.length,
    pauseMs: r(mean('pause')),
    // The pause's phases (ms, mean): copying (parallel), ArrayBuffers swept, roots.
    parallelMs: r(mean('scavenge.parallel'), 3),
    sweepArrayBuffersMs: r(mean('scavenge.sweep_array_buffers'), 3),
    rootsMs: r(mean('scavenge.roots'), 3),
    survivedKB: r(mean('new_space_survived') / 1024, 1),
    promotedKB: r(mean('promoted') / 1024, 1),
    markCompacts: mc,
    markCompactMaxMs: r(mcMax, 1),
  };
}

async function main() {
  openloop.binary();
  const up = [await procs.freePort(), await procs.freePort()];
  let upstreamConf = configs.upstreamNginx(tmp, up);
  if (o['empty-body']) upstreamConf = upstreamConf.split(JSON.stringify(configs.BODY)).join('""');
  fs.writeFileSync(path.join(tmp, 'upstream.conf'), upstreamConf);
  procs.start('upstream', 'nginx', ['-c', path.join(tmp, 'upstream.conf')], { cpu: 0, logFile: path.join(tmp, 'upstream.log') });
  const policies = path.join(tmp, 'full.json');
  fs.writeFileSync(policies, configs.meshletPolicies('full', up));
  await procs.waitForPort(up[0]);
  const rows = {};
  for (let round = 0; round < Number(o.rounds); round++) {
    for (const v of variants) {
      const port = await procs.freePort();
      const log = path.join(tmp, `${v.name}-${round}.log`);
      let proc;
      if (v.name.startsWith('nginx')) {
        const conf = path.join(tmp, `proxy-${round}.conf`);
        fs.writeFileSync(conf, configs.nginxProxy(tmp, port, up[0]));
        proc = procs.start('nginx', 'nginx', ['-c', conf], { cpu: 1, logFile: log });
        await procs.waitForPort(port);
      } else {
        const admin = await procs.freePort();
        const main = path.join(v.dist, 'dist/src/cli/main.js');
        // The build's V8 flags (its main.js shebang), then the variant's.
        const flags = [...nodeFlagsOf(main), '--trace-gc-nvp', ...v.flags];
        proc = procs.start('meshlet', process.execPath, [...flags, main, 'sidecar', '--service', 'bench', '--config', policies, '--inbound', '127.0.0.1:0', '--outbound', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`, ...v.args], { cpu: 1, logFile: log });
        await procs.waitForHttp(`http://127.0.0.1:${admin}/ready`, { proc, timeoutMs: 30_000 });
      }
      await openloop.run([port, up[0]], { rates: [RATE], seconds: Number(o.warm), warmup: 1, drain: 1 });
      const from = fs.statSync(log).size;
      const cpu0 = procs.cpuSeconds(proc.pid);
      const t0 = process.hrtime.bigint();
      const ph = (await openloop.run([port, up[0]], { rates: [RATE], seconds: SECONDS, warmup: 1, drain: 2 })).phases[0];
      const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = procs.cpuSeconds(proc.pid) - cpu0;
      const [p, d] = ph.targets;
      const row = {
        addedP99Us: p.latencyUs.p99 - d.latencyUs.p99,
        addedP999Us: p.latencyUs.p999 - d.latencyUs.p999,
        serviceP99Us: p.serviceUs?.p99 ?? null,
        serviceP999Us: p.serviceUs?.p999 ?? null,
        directServiceP999Us: d.serviceUs?.p999 ?? null,
        // Over the whole measured call (its warm-up and drain included): the requests sent then.
        cpuUsPerRequest: Number(((cpu * 1e6) / (RATE * wallS)).toFixed(1)),
        ...(v.name.startsWith('nginx') ? {} : gcOf(log, from)),
        rssMB: Math.round(procs.memory(proc.pid).rssKb / 1024),
        errors: p.errors + p.non2xx + p.unfinished,
      };
      (rows[v.name] ??= []).push(row);
      if (!o.json) console.log(`${v.name} round ${round + 1}: ${JSON.stringify(row)}`);
      process.kill(proc.pid, 'SIGTERM');
      await procs.sleep(1500);
    }
  }
  await procs.stopAll();
  const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const medians = Object.fromEntries(Object.entries(rows).map(([n, rs]) => [n, Object.fromEntries(Object.keys(rs[0]).map((k) => [k, med(rs.map((x) => x[k]))]))]));
  if (o.json) console.log(JSON.stringify({ rate: RATE, seconds: SECONDS, emptyBody: o['empty-body'], rows, medians, loadavg: os.loadavg()[0] }));
  else for (const [n, m] of Object.entries(medians)) console.log(`median ${n}: ${JSON.stringify(m)}`);
}

main().catch((e) => {
  console.error(e);
  procs.killAllSync();
  process.exit(1);
});
