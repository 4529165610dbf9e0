#!/usr/bin/env node
'use strict';
/**
 * A response-cache HIT through the meshlet sidecar (outbound listener, a Route rule with `cache`)
 * next to a HIT from nginx's `proxy_cache` (one worker, keep-alive), measured in the same run:
 * CPU microseconds per request of each proxy process (user + system, from /proc), for the same
 * h2load load (HTTP/1.1, 16 connections, a fixed request count). The origin (a node server) is
 * asked once by each; every measured request is a HIT.
 *
 *   node bench/cache-hit.js [--requests N] [--rounds R] [--json]     (default 40000, 2 rounds)
 *
 * Rounds alternate nginx and meshlet; the ratio is of each one's best round. `npm run bench` runs
 * it as the "Response cache HIT vs nginx proxy_cache" row (`--json`, whose last line it reads).
 *
 * Needs `npm run build`, nginx and h2load. Run it under `flock /tmp/meshlet-bench.lock`; on a
 * shared machine the ratio is an indication.
 */
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { start, run, stopAll, installCleanup, freePort, cpuSeconds, waitForHttp } = require('./lib/procs');
const { summary } = require('./lib/h2load');
const { meshletArgv } = require('./lib/node-flags');

// Also required by bench/lib/report.js for table(): only the command line of a direct run is parsed.
const { values: cli } = parseArgs({ args: require.main === module ? process.argv.slice(2) : [], options: { requests: { type: 'string', default: '40000' }, rounds: { type: 'string', default: '2' }, json: { type: 'boolean', default: false } } });
const N = Number(cli.requests);
const ROUNDS = Number(cli.rounds);
const MAIN = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
const BODY = Buffer.alloc(2048, 'x');

async function main() {
  installCleanup();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-bench-cache-'));
  let originHits = 0;
  const origin = http.createServer((_req, res) => {
    originHits++;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'max-age=3600', 'content-length': BODY.length }).end(BODY);
  });
  await new Promise((r) => origin.listen(0, '127.0.0.1', r));
  const originPort = origin.address().port;

  const nginxPort = await freePort();
  const t = (x) => path.join(dir, `nginx-${x}`);
  fs.writeFileSync(
    path.join(dir, 'nginx.conf'),
    `worker_processes 1; master_process off; daemon off; pid ${t('pid')}; error_log ${t('error.log')} warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off; keepalive_timeout 120s; keepalive_requests 100000000;
  client_body_temp_path ${t('body')}; proxy_temp_path ${t('proxy')}; fastcgi_temp_path ${t('fastcgi')}; uwsgi_temp_path ${t('uwsgi')}; scgi_temp_path ${t('scgi')};
  proxy_cache_path ${t('cache')} levels=1:2 keys_zone=c:10m max_size=64m inactive=60m use_temp_path=off;
  upstream up { server 127.0.0.1:${originPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${nginxPort} backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_cache c; add_header x-cache $upstream_cache_status; }
  }
}
`,
  );
  const nginx = start('nginx', 'nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { logFile: path.join(dir, 'nginx.log') });

  const policies = [
    { apiVersion: 'meshlet.dev/v1', kind: 'Service', metadata: { name: 'origin' }, spec: { endpoints: [{ address: '127.0.0.1', port: originPort }] } },
    { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'origin' }, spec: { hosts: ['*'], rules: [{ name: 'all', backends: [{ service: 'origin' }], cache: {} }] } },
  ];
  fs.writeFileSync(path.join(dir, 'policies.yaml'), policies.map((p) => JSON.stringify(p)).join('\n---\n'));
  const sidecarPort = await freePort();
  const sidecar = start('meshlet', process.execPath, meshletArgv(MAIN, ['sidecar', '--service', 'bench', '--config', path.join(dir, 'policies.yaml'), '--outbound', `127.0.0.1:${sidecarPort}`, '--inbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--log-level', 'warn']), {
    logFile: path.join(dir, 'sidecar.log'),
  });
  for (const port of [nginxPort, sidecarPort]) await waitForHttp(`http://127.0.0.1:${port}/item`);

  const load = async (name, proc, port) => {
    await run('h2load', ['--h1', '-n', '2000', '-c', '16', '-t', '1', `http://127.0.0.1:${port}/item`]); // warm-up
    const before = originHits;
    const c0 = cpuSeconds(proc.pid);
    const out = await run('h2load', ['--h1', '-n', String(N), '-c', '16', '-t', '1', `http://127.0.0.1:${port}/item`], { timeoutMs: 300_000 });
    const cpu = cpuSeconds(proc.pid) - c0;
    const s = summary(out.stdout);
    if (!s) throw new Error(`${name}: no h2load summary: ${out.stdout}`);
    const problems = s.problems.filter((p) => !p.startsWith('application protocol'));
    if (problems.length) throw new Error(`${name}: ${problems.join('; ')}`);
    if (originHits !== before) throw new Error(`${name}: ${originHits - before} requests reached the origin during the measurement (not all HITs)`);
    return { name, usPerReq: (cpu * 1e6) / N, rps: s.r.rps };
  };
  const rows = [];
  for (let round = 0; round < ROUNDS; round++) {
    rows.push(await load('nginx proxy_cache HIT', nginx, nginxPort));
    rows.push(await load('meshlet cache HIT', sidecar, sidecarPort));
  }
  const best = (name) => Math.min(...rows.filter((r) => r.name === name).map((r) => r.usPerReq));
  const ng = best('nginx proxy_cache HIT');
  const ml = best('meshlet cache HIT');
  const out = { requests: N, rounds: ROUNDS, loadavg: os.loadavg(), rows, nginx: { cpuUsPerReq: ng }, meshlet: { cpuUsPerReq: ml }, ratio: ml / ng, goal: 2 };
  origin.close();
  await stopAll();
  fs.rmSync(dir, { recursive: true, force: true });
  if (cli.json) process.stdout.write(JSON.stringify(out) + '\n');
  else {
    console.log(`load average ${out.loadavg.map((x) => x.toFixed(1)).join(' ')} (a loaded machine makes these indications)`);
    for (const r of rows) console.log(`${r.name.padEnd(24)} ${r.usPerReq.toFixed(1).padStart(7)} us CPU/request  ${String(Math.round(r.rps ?? 0)).padStart(7)} req/s`);
    console.log(`meshlet / nginx CPU per HIT (best of ${ROUNDS}): ${out.ratio.toFixed(2)}x  (goal <= 2x)`);
  }
}

/** The report's rows (bench/run.js prints them under "Response cache HIT vs nginx proxy_cache"). */
function table(o) {
  if (o.error) return `cache HIT bench FAILED: ${o.error}`;
  return [
    '| proxy (HTTP/1.1, 16 connections, every request a HIT) | CPU µs/req (best round) |',
    '| --- | --- |',
    `| meshlet sidecar, Route rule \`cache: {}\` | ${o.meshlet.cpuUsPerReq.toFixed(1)} |`,
    `| nginx proxy_cache (1 worker) | ${o.nginx.cpuUsPerReq.toFixed(1)} |`,
    `| **ratio meshlet / nginx** (goal ≤ ${o.goal}) | **${o.ratio.toFixed(2)}×** |`,
    '',
    `${o.requests} requests × ${o.rounds} alternating rounds each; load average during the run: ${o.loadavg.map((x) => x.toFixed(2)).join(' ')}`,
  ].join('\n');
}

module.exports = { table };
if (require.main === module)
  main().catch(async (err) => {
    console.error(err);
    await stopAll();
    process.exit(1);
  });
