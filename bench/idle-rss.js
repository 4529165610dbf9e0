#!/usr/bin/env node
'use strict';
/**
 * Idle RSS of the full-chain sidecar, as `npm run bench` takes it (run.js startIdleProbes /
 * readIdleProbes): the sidecar started as users run it (dist/src/cli/main.js as a program, so its
 * shebang's Node flags apply) with bench/lib/configs.js `full` on the proxy core, checked with the
 * same requests (one, then the 50/50 split until both upstream ports answered), then left without
 * traffic; VmRSS read `--seconds` (20, SETTLED_IDLE_SECONDS) after start. One sidecar at a time.
 *
 *   node bench/idle-rss.js [-r 5] [--seconds 20] [--dist DIR[,DIR2]] [--node-flags '...'] [--json]
 *
 * --dist: the checkout(s) whose dist/ to run, alternated reading by reading (an A/B).
 * --node-flags: run `node FLAGS main.js` instead of the program (its shebang flags are then not
 * applied unless given here): for diagnostics (`--heap-prof`, `-r ./probe.js`), not for figures.
 * --variant NAME: another policy set of lib/configs.js (`off`: one Service, no Route).
 * --keep-tmp: keep the temp dir (each sidecar's log). Prints each reading (MB, 1 MB = 1024 KiB as VmRSS reports it) and the median per dist.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const procs = require('./lib/procs');
const configs = require('./lib/configs');

const { values: o } = parseArgs({
  options: {
    readings: { type: 'string', short: 'r', default: '5' },
    seconds: { type: 'string', default: '20' },
    dist: { type: 'string', default: path.resolve(__dirname, '..') },
    'node-flags': { type: 'string', default: '' },
    json: { type: 'boolean', default: false },
    'keep-tmp': { type: 'boolean', default: false },
    variant: { type: 'string', default: 'full' },
  },
});
const PROXY_CPU = 1;
const LOAD_CPU = 0;
const HOST = 'upstream';
const dists = o.dist.split(',').map((d) => path.resolve(d));
const which = (tool) => ['/usr/sbin', '/usr/bin', '/sbin', '/usr/local/sbin', '/usr/local/bin', ...(process.env.PATH ?? '').split(':')].map((d) => path.join(d, tool)).find((p) => fs.existsSync(p));

async function get(port) {
  const { request } = require('undici');
  const r = await request(`http://127.0.0.1:${port}/`, { headers: { host: HOST }, headersTimeout: 2000, bodyTimeout: 2000 });
  const body = await r.body.text();
  return { status: r.statusCode, body, upstreamPort: Number(r.headers['x-upstream-port']) };
}

async function reading(dist, dir, upstreamPorts, i) {
  const sdir = path.join(dir, `sidecar-${i}`);
  fs.mkdirSync(sdir, { recursive: true });
  const file = path.join(sdir, 'policies.json');
  fs.writeFileSync(file, configs.meshletPolicies(o.variant, upstreamPorts));
  const port = await procs.freePort();
  const admin = await procs.freePort();
  const main = path.join(dist, 'dist/src/cli/main.js');
  const args = ['sidecar', '--config', file, '--service', 'bench', '--inbound', '127.0.0.1:0', '--outbound', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`];
  const flags = o['node-flags'].split(/\s+/).filter(Boolean);
  const [cmd, argv] = flags.length ? [process.execPath, [...flags, main, ...args]] : [main, args];
  const started = Date.now();
  const proc = procs.start(`sidecar-${i}`, cmd, argv, { cpu: PROXY_CPU, logFile: path.join(sdir, 'log'), cwd: sdir });
  try {
    await procs.waitForPort(port, { proc });
    await procs.waitForHttp(`http://127.0.0.1:${admin}/ready`, { proc });
    const first = await get(port);
    if (first.status !== 200 || first.body !== configs.BODY) throw new Error(`sidecar answered ${first.status}`);
    const seen = new Set([first.upstreamPort]);
    for (let k = 0; k < 40 && seen.size < upstreamPorts.length; k++) seen.add((await get(port)).upstreamPort);
    const wait = Number(o.seconds) * 1000 - (Date.now() - started);
    if (wait > 0) await procs.sleep(wait);
    return procs.memory(proc.pid).rssKb;
  } finally {
    await proc.stop();
  }
}

async function main() {
  procs.installCleanup();
  const nginx = which('nginx');
  if (!nginx) throw new Error('nginx not found');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-idle-rss-'));
  const upstreamPorts = [await procs.freePort(), await procs.freePort()];
  const conf = path.join(dir, 'upstream.conf');
  fs.writeFileSync(conf, configs.upstreamNginx(dir, upstreamPorts));
  const up = procs.start('upstream', nginx, ['-c', conf, '-e', path.join(dir, 'upstream.error.log')], { cpu: LOAD_CPU, logFile: path.join(dir, 'upstream.log') });
  const out = Object.fromEntries(dists.map((d) => [d, []]));
  try {
    for (const p of upstreamPorts) await procs.waitForPort(p, { proc: up });
    for (let i = 0; i < Number(o.readings); i++) {
      for (const d of dists) {
        const kb = await reading(d, dir, upstreamPorts, `${i}-${dists.indexOf(d)}`);
        out[d].push(kb);
        if (!o.json) console.log(`${path.basename(d)}: reading ${i + 1}: ${(kb / 1024).toFixed(1)} MB`);
      }
    }
  } finally {
    await up.stop();
    if (o['keep-tmp']) console.error(`kept ${dir} (sidecar-N/log: each sidecar's output)`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const summary = dists.map((d) => ({ dist: d, readingsMb: out[d].map((kb) => +(kb / 1024).toFixed(1)), medianMb: +(med(out[d]) / 1024).toFixed(1) }));
  if (o.json) console.log(JSON.stringify({ seconds: Number(o.seconds), loadavg: os.loadavg(), summary }, null, 2));
  else for (const s of summary) console.log(`${s.dist}: idle RSS after ${o.seconds} s: ${s.readingsMb.join(' / ')} MB, median ${s.medianMb} MB (load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')})`);
}

main().catch((err) => {
  console.error(err.stack ?? err.message);
  process.exitCode = 1;
});
