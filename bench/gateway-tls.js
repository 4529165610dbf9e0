#!/usr/bin/env node
'use strict';
/**
 * The edge gateway terminating TLS and routing vs nginx terminating TLS and proxying, side by side:
 * CPU µs per request of the proxy process (utime+stime over a wrk run ÷ requests), and the ratio
 * (goal: the gateway ≤ 3× nginx). Both: one process on the proxy core, HTTPS with an ECDSA P-256
 * certificate, TLS session cache on, keep-alive connections from wrk (64) and to the upstream (an
 * nginx `return 200`, HTTP/1.1 keep-alive). The gateway runs a Gateway with one HTTPS listener and
 * a Route attached to it (host match + one backend), access log off (nginx's is off too).
 *
 *   node bench/gateway-tls.js [--seconds 4] [--rounds 3] [--dist DIR[|NODEFLAGS][,DIR2[|NODEFLAGS2]]] [--json]
 *
 * --dist: the checkout(s) whose dist/ to run (default this one), as in bench/cpu.js: with two, each
 * build's gateway runs beside the same nginx, measured in turn within every round (an A/B of two
 * builds), optionally with extra Node flags each; one row and one ratio per build.
 *
 * Needs `npm run build`, nginx, wrk and openssl. Interleaved rounds (gateway, nginx, gateway, ...)
 * so that the machine's drift hits both alike; the median of the rounds is reported.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { parseArgs } = require('node:util');
const procs = require('./lib/procs');
const { nodeFlagsOf } = require('./lib/node-flags');

// Also required by bench/lib/report.js for table(): only the command line of a direct run is parsed.
const { values: cli } = parseArgs({
  args: require.main === module ? process.argv.slice(2) : [],
  options: { seconds: { type: 'string', default: '4' }, rounds: { type: 'string', default: '3' }, dist: { type: 'string', default: path.resolve(__dirname, '..') }, json: { type: 'boolean', default: false } },
});
const SECONDS = Number(cli.seconds);
const ROUNDS = Number(cli.rounds);
const PROXY_CPU = 1;
const LOAD_CPU = 0;
// DIR or DIR|NODEFLAGS (extra Node flags for that build, e.g. '.|--max-semi-space-size=16'), as bench/cpu.js.
const DISTS = cli.dist.split(',');
const mainOf = (spec) => path.join(path.resolve(spec.split('|')[0]), 'dist', 'src', 'cli', 'main.js');
const flagsOf = (spec) => (spec.split('|')[1] ?? '').split(' ').filter(Boolean);
const log = (m) => process.stderr.write(`${m}\n`);

function nginxConf(dir, name, body) {
  return `worker_processes 1;
master_process off;
daemon off;
pid ${path.join(dir, `${name}.pid`)};
error_log ${path.join(dir, `${name}.error.log`)} warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${dir}/${name}-body; proxy_temp_path ${dir}/${name}-proxy; fastcgi_temp_path ${dir}/${name}-fcgi; uwsgi_temp_path ${dir}/${name}-uwsgi; scgi_temp_path ${dir}/${name}-scgi;
  keepalive_requests 1000000;
${body}
}
`;
}

async function wrk(url) {
  const { stdout } = await procs.run('wrk', ['-t1', '-c64', `-d${SECONDS}s`, '-H', 'Host: shop.bench', url], { cpu: LOAD_CPU, timeoutMs: (SECONDS + 30) * 1000 });
  const requests = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? 0);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(stdout)?.[1] ?? 0);
  return { requests, non2xx };
}

async function measure(pid, url) {
  await wrk(url); // warm (TLS sessions, JIT)
  const c0 = procs.cpuSeconds(pid);
  const r = await wrk(url);
  const cpu = procs.cpuSeconds(pid) - c0;
  if (r.non2xx > 0 || r.requests === 0) throw new Error(`${url}: ${r.non2xx} non-2xx of ${r.requests}`);
  return { requests: r.requests, rps: r.requests / SECONDS, cpuUsPerReq: (cpu * 1e6) / r.requests };
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-bench-gw-'));
  procs.installCleanup();
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=shop.bench', '-addext', 'subjectAltName=DNS:shop.bench', '-keyout', path.join(dir, 'k.pem'), '-out', path.join(dir, 'c.pem')], { stdio: 'ignore' });
    const [upPort, nginxPort] = [await procs.freePort(), await procs.freePort()];
    fs.writeFileSync(path.join(dir, 'upstream.conf'), nginxConf(dir, 'upstream', `  server { listen 127.0.0.1:${upPort}; location / { return 200 "hello from upstream\\n"; } }`));
    procs.start('upstream', 'nginx', ['-c', path.join(dir, 'upstream.conf'), '-p', dir], { cpu: LOAD_CPU });
    fs.writeFileSync(
      path.join(dir, 'nginx.conf'),
      nginxConf(
        dir,
        'nginx',
        `  upstream up { server 127.0.0.1:${upPort}; keepalive 64; }
  ssl_session_cache shared:SSL:10m;
  ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 127.0.0.1:${nginxPort} ssl http2;
    server_name shop.bench;
    ssl_certificate ${dir}/c.pem;
    ssl_certificate_key ${dir}/k.pem;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }
  }`,
      ),
    );
    const nginx = procs.start('nginx', 'nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { cpu: PROXY_CPU });
    // One gateway per build, each with its own listener port (the same policies otherwise).
    const gateways = [];
    for (const [i, spec] of DISTS.entries()) {
      const [gwPort, adminPort] = [await procs.freePort(), await procs.freePort()];
      const policies = [
        { apiVersion: 'meshlet.dev/v1', kind: 'Service', metadata: { name: 'shop' }, spec: { protocol: 'http1', endpoints: [{ address: '127.0.0.1', port: upPort }] } },
        { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'shop' }, spec: { hosts: ['shop.bench'], gateways: ['edge'], rules: [{ backends: [{ service: 'shop' }] }] } },
        { apiVersion: 'meshlet.dev/v1', kind: 'Gateway', metadata: { name: 'edge' }, spec: { listeners: [{ name: 'https', port: gwPort, protocol: 'HTTPS', tls: { certificates: [{ certFile: `${dir}/c.pem`, keyFile: `${dir}/k.pem` }] } }] } },
      ];
      fs.writeFileSync(path.join(dir, `gw${i}.yaml`), policies.map((p) => JSON.stringify(p)).join('\n---\n'));
      const gw = procs.start(`gateway${i}`, process.execPath, [...nodeFlagsOf(mainOf(spec)), ...flagsOf(spec), mainOf(spec), 'gateway', '--name', 'edge', '--config', path.join(dir, `gw${i}.yaml`), '--address', '127.0.0.1', '--admin', `127.0.0.1:${adminPort}`, '--access-log', '0', '--log-level', 'warn'], { cpu: PROXY_CPU, logFile: path.join(dir, `gateway${i}.log`) });
      gateways.push({ spec, gw, gwPort, adminPort, runs: [] });
    }
    await procs.waitForPort(nginxPort, { proc: nginx });
    for (const g of gateways) await procs.waitForPort(g.gwPort, { proc: g.gw });
    const nginxRuns = [];
    for (let i = 0; i < ROUNDS; i++) {
      // Builds in turn, the order flipped every round so neither always runs first.
      for (const g of i % 2 ? [...gateways].reverse() : gateways) g.runs.push(await measure(g.gw.pid, `https://127.0.0.1:${g.gwPort}/`));
      nginxRuns.push(await measure(nginx.pid, `https://127.0.0.1:${nginxPort}/`));
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const n = median(nginxRuns.map((r) => r.cpuUsPerReq));
    const builds = [];
    for (const g of gateways) {
      const metrics = await (await fetch(`http://127.0.0.1:${g.adminPort}/metrics`)).text();
      const cpuUsPerReq = median(g.runs.map((r) => r.cpuUsPerReq));
      builds.push({
        dist: g.spec,
        cpuUsPerReq,
        rps: median(g.runs.map((r) => r.rps)),
        ratio: cpuUsPerReq / n,
        /** Connections the gateway accepted over the whole run (warm-ups included): keep-alive held if ≈ 64 per wrk run. */
        connections: Number(/^meshlet_gateway_connections_total\{listener="https"\} (\d+)/m.exec(metrics)?.[1] ?? NaN),
        requests: g.runs.reduce((a, r) => a + r.requests, 0),
      });
    }
    const first = builds[0];
    const out = {
      seconds: SECONDS,
      rounds: ROUNDS,
      loadavg: os.loadavg(),
      gateway: { cpuUsPerReq: first.cpuUsPerReq, rps: first.rps },
      nginx: { cpuUsPerReq: n, rps: median(nginxRuns.map((r) => r.rps)) },
      ratio: first.ratio,
      gatewayConnections: first.connections,
      gatewayRequests: first.requests,
      /** Every build measured (`--dist`), in order; the first is also `gateway` and `ratio` above. */
      builds,
      goal: 3,
    };
    if (cli.json) process.stdout.write(JSON.stringify(out) + '\n');
    else process.stdout.write(table(out) + '\n');
  } finally {
    await procs.stopAll();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The report's rows (bench/run.js prints them under "Gateway: TLS + routing vs nginx"). */
function table(o) {
  if (o.error) return `gateway TLS bench FAILED: ${o.error}`;
  const f = (x) => x.toFixed(1);
  return [
    '| proxy (HTTPS, keep-alive, 64 connections) | CPU µs/req | req/s |',
    '| --- | --- | --- |',
    ...(o.builds && o.builds.length > 1
      ? o.builds.map((b) => `| meshlet gateway (TLS + routing), ${b.dist} | ${f(b.cpuUsPerReq)} | ${Math.round(b.rps)} |`)
      : [`| meshlet gateway (TLS + routing) | ${f(o.gateway.cpuUsPerReq)} | ${Math.round(o.gateway.rps)} |`]),
    `| nginx (TLS + proxy_pass, ssl_session_cache, keepalive upstream) | ${f(o.nginx.cpuUsPerReq)} | ${Math.round(o.nginx.rps)} |`,
    ...(o.builds && o.builds.length > 1
      ? o.builds.map((b) => `| **ratio gateway / nginx**, ${b.dist} (goal ≤ ${o.goal}) | **${b.ratio.toFixed(2)}×** | |`)
      : [`| **ratio gateway / nginx** (goal ≤ ${o.goal}) | **${o.ratio.toFixed(2)}×** | |`]),
    '',
    `load average during the run: ${o.loadavg.map((x) => x.toFixed(2)).join(' ')}`,
  ].join('\n');
}

module.exports = { table };
if (require.main === module)
  main().catch((err) => {
    log(err.stack);
    process.exit(1);
  });
