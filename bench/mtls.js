#!/usr/bin/env node
'use strict';
/**
 * The mesh hop with mTLS, against the same hop in plaintext and against two nginx doing the same:
 *
 *   wrk -> sidecar A (outbound) -(mTLS | plaintext)-> sidecar B (inbound) -> app
 *   wrk -> nginx A -(TLS 1.3 with client certificates, proxy_ssl_session_reuse, keepalive)-> nginx B -> app
 *
 * Both proxies of a pair are pinned to core 1, the load and the app to core 0. Figures: req/s and
 * CPU µs per request summed over both proxies (the ratio mTLS / plaintext is the goal: <= 1.20;
 * meshlet mTLS / nginx TLS <= 3), and new TLS connections per second on the callee's port with
 * a client certificate (`openssl s_time -new`), with the callee's CPU µs per handshake.
 *
 *   node bench/mtls.js [--seconds 5] [--rounds 3] [--json]
 *
 * Run by `npm run bench` (bench/run.js; `--no-mtls` skips it). The meshlet hop is a real control
 * plane and two real sidecars with join tokens; plaintext is the same mesh with a mesh-wide
 * PeerAuthentication DISABLE.
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const procs = require('./lib/procs');
const { meshletArgv } = require('./lib/node-flags');

const ROOT = path.resolve(__dirname, '..');
const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const PROXY_CPU = 1;
const LOAD_CPU = 0;
const CONNECTIONS = 32;

const log = (m) => process.stderr.write(`${m}\n`);

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** A CA, a server and a client certificate for the nginx pair, made by openssl (EC P-256, TLS 1.3). */
function nginxCerts(dir) {
  const o = (args) => sh('openssl', args, { cwd: dir });
  o(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=bench CA']);
  for (const n of ['server', 'client']) {
    o(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${n}.key`, '-out', `${n}.csr`, '-subj', `/CN=${n}`]);
    fs.writeFileSync(path.join(dir, `${n}.ext`), `subjectAltName=URI:spiffe://bench/svc/${n},DNS:${n},IP:127.0.0.1\n`);
    o(['x509', '-req', '-in', `${n}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${n}.pem`, '-days', '2', '-extfile', `${n}.ext`]);
  }
}

function nginxConf(dir, name, body) {
  const conf = `worker_processes 1;
daemon off;
pid ${dir}/${name}.pid;
error_log ${dir}/${name}.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/${name}-body;
  proxy_temp_path ${dir}/${name}-proxy;
  fastcgi_temp_path ${dir}/${name}-fcgi;
  uwsgi_temp_path ${dir}/${name}-uwsgi;
  scgi_temp_path ${dir}/${name}-scgi;
  keepalive_requests 100000;
${body}
}
`;
  const f = path.join(dir, `${name}.conf`);
  fs.writeFileSync(f, conf);
  return f;
}

function parseWrk(out) {
  const m = /(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (!m) throw new Error(`cannot parse wrk output:\n${out}`);
  const unit = { us: 1e-6, ms: 1e-3, s: 1, m: 60 }[m[3]];
  return { requests: Number(m[1]), seconds: Number(m[2]) * unit, non2xx: non2xx ? Number(non2xx[1]) : 0 };
}

/** wrk for `seconds` through `port`: req/s and CPU µs/request summed over `pids`. */
async function measureHop(port, host, pids, seconds) {
  const before = pids.reduce((s, p) => s + procs.cpuSeconds(p), 0);
  const r = await procs.run('wrk', ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '-H', `Host: ${host}`, `http://127.0.0.1:${port}/`], { cpu: LOAD_CPU, timeoutMs: (seconds + 30) * 1000 });
  const cpu = pids.reduce((s, p) => s + procs.cpuSeconds(p), 0) - before;
  const w = parseWrk(r.stdout);
  if (w.non2xx > 0) throw new Error(`${w.non2xx} non-2xx responses through port ${port}`);
  return { rps: w.requests / w.seconds, cpuUsPerReq: (cpu * 1e6) / w.requests, requests: w.requests };
}

/** New TLS connections per second to `port` with a client certificate (openssl s_time -new), and the server's CPU µs per handshake. */
async function handshakes(port, cert, key, ca, serverPids, seconds) {
  const before = serverPids.reduce((s, p) => s + procs.cpuSeconds(p), 0);
  const r = await procs.run('openssl', ['s_time', '-connect', `127.0.0.1:${port}`, '-new', '-time', String(seconds), '-cert', cert, '-key', key, '-CAfile', ca], { cpu: LOAD_CPU, timeoutMs: (seconds + 30) * 1000 });
  const cpu = serverPids.reduce((s, p) => s + procs.cpuSeconds(p), 0) - before;
  const m = /(\d+) connections in ([\d.]+)s/.exec(r.stdout);
  if (!m) throw new Error(`cannot parse s_time output:\n${r.stdout}`);
  const n = Number(m[1]);
  return { perSecond: n / Number(m[2]), serverCpuUsPerHandshake: n > 0 ? (cpu * 1e6) / n : null };
}

function startApp() {
  const body = Buffer.from('hello from the app\n');
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
  server.keepAliveTimeout = 120_000;
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ port: server.address().port, close: () => server.close() })));
}

async function waitFor(what, check, timeoutMs = 20_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch {
      /* not yet */
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await procs.sleep(200);
  }
}

async function get(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode, body: b }));
    });
    req.on('error', reject);
  });
}

function cli(args) {
  return sh(process.execPath, [MAIN, ...args]);
}

async function metricOf(admin, name, label) {
  const text = (await get(`http://127.0.0.1:${admin}/metrics`)).body;
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name) && line.includes(label)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

/** Control plane + sidecars A (client) and B (server, with the app). */
async function startMesh(dir, appPort) {
  const ports = {};
  for (const k of ['api', 'push', 'aIn', 'aOut', 'aAdmin', 'bIn', 'bOut', 'bAdmin']) ports[k] = await procs.freePort();
  const data = path.join(dir, 'cp');
  const cp = procs.start('control-plane', process.execPath, meshletArgv(MAIN, ['control-plane', '--data-dir', data, '--api', `127.0.0.1:${ports.api}`, '--push', `127.0.0.1:${ports.push}`, '--insecure-plaintext', '--insecure-push-plaintext']), { cpu: LOAD_CPU, logFile: path.join(dir, 'cp.log') });
  await procs.waitForPort(ports.api, { proc: cp });
  const apiToken = fs.readFileSync(path.join(data, 'admin.token'), 'utf8').trim();
  const token = (svc) => JSON.parse(cli(['token', 'create', '--service', svc, '--ttl', '1h', '--data-dir', data, '-o', 'json'])).token;
  const sidecar = (name, svc, inP, outP, adminP, extra) =>
    procs.start(name, process.execPath, meshletArgv(MAIN, ['sidecar', '--service', svc, '--control-plane', `127.0.0.1:${ports.push}`, '--insecure-push-plaintext', '--advertise', '127.0.0.1', '--inbound', `127.0.0.1:${inP}`, '--outbound', `127.0.0.1:${outP}`, '--admin', `127.0.0.1:${adminP}`, '--log-level', 'warn', ...extra]), {
      cpu: PROXY_CPU,
      logFile: path.join(dir, `${name}.log`),
      env: { ...process.env, MESHLET_JOIN_TOKEN: token(svc) },
    });
  const b = sidecar('sidecar-b', 'server', ports.bIn, ports.bOut, ports.bAdmin, ['--app-port', String(appPort)]);
  const a = sidecar('sidecar-a', 'client', ports.aIn, ports.aOut, ports.aAdmin, []);
  await waitFor('both sidecars have certificates and B has its identity at A', async () => {
    const d = JSON.parse((await get(`http://127.0.0.1:${ports.aAdmin}/config_dump`)).body);
    const db = JSON.parse((await get(`http://127.0.0.1:${ports.bAdmin}/config_dump`)).body);
    return d.mtls?.certificate && db.mtls?.certificate && d.services.find((s) => s.name === 'server')?.endpoints[0]?.identity;
  });
  await waitFor('a request through the hop', async () => (await get(`http://127.0.0.1:${ports.aOut}/`, { host: 'server' })).status === 200);
  return { cp, a, b, ports, data, apiToken };
}

async function main() {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' }, json: { type: 'boolean', default: false }, 'keep-tmp': { type: 'boolean', default: false } } });
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-bench-mtls-'));
  procs.installCleanup(() => undefined);
  const app = await startApp();
  const result = { seconds, rounds, connections: CONNECTIONS, cores: os.cpus().length, loadavg: os.loadavg(), rounds_: [] };
  try {
    // nginx pair
    nginxCerts(dir);
    const [nA, nB] = [await procs.freePort(), await procs.freePort()];
    const confB = nginxConf(dir, 'nginx-b', `  upstream app { server 127.0.0.1:${app.port}; keepalive 64; }
  server {
    listen 127.0.0.1:${nB} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${dir}/server.pem; ssl_certificate_key ${dir}/server.key;
    ssl_client_certificate ${dir}/ca.pem; ssl_verify_client on;
    ssl_session_cache shared:SSL:1m;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }`);
    const confA = nginxConf(dir, 'nginx-a', `  upstream b { server 127.0.0.1:${nB}; keepalive 64; }
  server {
    listen 127.0.0.1:${nA};
    location / {
      proxy_pass https://b; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on;
      proxy_ssl_certificate ${dir}/client.pem; proxy_ssl_certificate_key ${dir}/client.key;
      proxy_ssl_trusted_certificate ${dir}/ca.pem; proxy_ssl_verify on; proxy_ssl_name server; proxy_ssl_server_name on;
    }
  }`);
    const ngB = procs.start('nginx-b', 'nginx', ['-c', confB, '-p', dir], { cpu: PROXY_CPU, logFile: path.join(dir, 'nginx-b.log') });
    const ngA = procs.start('nginx-a', 'nginx', ['-c', confA, '-p', dir], { cpu: PROXY_CPU, logFile: path.join(dir, 'nginx-a.log') });
    await procs.waitForPort(nA, { proc: ngA });
    await waitFor('a request through the nginx pair', async () => (await get(`http://127.0.0.1:${nA}/`)).status === 200);

    const mesh = await startMesh(dir, app.port);
    const plaintext = path.join(dir, 'disable.yaml');
    fs.writeFileSync(plaintext, 'apiVersion: meshlet.dev/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mode: DISABLE}\n');
    const meshPids = [mesh.a.pid, mesh.b.pid];
    const seen = new Set();
    const setMode = async (mtls) => {
      const env = { ...process.env, MESHLET_SERVER: `http://127.0.0.1:${mesh.ports.api}`, MESHLET_TOKEN: mesh.apiToken };
      if (mtls) spawnSync(process.execPath, [MAIN, 'delete', 'peerauthentication', 'default'], { env, encoding: 'utf8' }); // absent the first time: fine
      else sh(process.execPath, [MAIN, 'apply', '-f', plaintext], { env });
      await procs.sleep(1500);
      const before = await metricOf(mesh.ports.bAdmin, 'meshlet_inbound_connections_total', `security="${mtls ? 'tls' : 'plaintext'}"`);
      await waitFor('the hop in the wanted mode', async () => (await get(`http://127.0.0.1:${mesh.ports.aOut}/`, { host: 'server' })).status === 200);
      // Warm-up, and proof that the hop runs in the mode measured (a new connection of that kind).
      await measureHop(mesh.ports.aOut, 'server', meshPids, 1);
      const after = await metricOf(mesh.ports.bAdmin, 'meshlet_inbound_connections_total', `security="${mtls ? 'tls' : 'plaintext'}"`);
      // The first switch to a mode opens a connection of that kind; later rounds reuse it (one pool per mode).
      if (!seen.has(mtls) && after < 1 + (mtls ? 0 : before)) throw new Error(`the hop did not switch to ${mtls ? 'mTLS' : 'plaintext'}`);
      seen.add(mtls);
    };
    await measureHop(nA, 'server', [ngA.pid, ngB.pid], 1);
    // Interleaved rounds: the VM's speed drifts; each round measures all three.
    for (let i = 0; i < rounds; i++) {
      log(`bench/mtls: round ${i + 1}/${rounds}`);
      const round = {};
      await setMode(true);
      round.meshletMtls = await measureHop(mesh.ports.aOut, 'server', meshPids, seconds);
      await setMode(false);
      round.meshletPlain = await measureHop(mesh.ports.aOut, 'server', meshPids, seconds);
      round.nginxTls = await measureHop(nA, 'server', [ngA.pid, ngB.pid], seconds);
      result.rounds_.push(round);
    }
    await setMode(true);
    // Handshakes: new TLS connections with a client certificate straight to the callee's port.
    const w = path.join(dir, 'client-mesh');
    fs.mkdirSync(w);
    sh(process.execPath, [path.join(__dirname, 'lib', 'mesh-cert.js'), mesh.data, 'bench-client', w]);
    result.handshakes = {
      meshlet: await handshakes(mesh.ports.bIn, path.join(w, 'cert.pem'), path.join(w, 'key.pem'), path.join(w, 'ca.pem'), [mesh.b.pid], seconds),
      nginx: await handshakes(nB, path.join(dir, 'client.pem'), path.join(dir, 'client.key'), path.join(dir, 'ca.pem'), [ngB.pid], seconds),
    };
    const med = (k, f) => {
      const xs = result.rounds_.map((r) => r[k][f]).sort((a, b) => a - b);
      return xs[Math.floor(xs.length / 2)];
    };
    result.median = {};
    for (const k of ['meshletMtls', 'meshletPlain', 'nginxTls']) result.median[k] = { rps: med(k, 'rps'), cpuUsPerReq: med(k, 'cpuUsPerReq') };
    result.ratios = {
      mtlsOverPlaintextCpu: result.median.meshletMtls.cpuUsPerReq / result.median.meshletPlain.cpuUsPerReq,
      mtlsOverNginxTlsCpu: result.median.meshletMtls.cpuUsPerReq / result.median.nginxTls.cpuUsPerReq,
    };
    result.goals = { mtlsAtMost20PctOverPlaintext: result.ratios.mtlsOverPlaintextCpu <= 1.2, atMost3xNginx: result.ratios.mtlsOverNginxTlsCpu <= 3 };
    result.loadavgAfter = os.loadavg();
  } finally {
    app.close();
    await procs.stopAll();
    if (!values['keep-tmp']) fs.rmSync(dir, { recursive: true, force: true });
  }
  if (values.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else process.stdout.write(render(result) + '\n');
  process.exit(0);
}

/** The text table (bench/run.js prints the same). */
function render(r) {
  const f = (x, d = 0) => (x === null || x === undefined ? 'n/a' : x.toFixed(d));
  const m = r.median;
  return [
    `mesh hop, ${r.connections} connections, median of ${r.rounds} interleaved rounds of ${r.seconds} s (load average ${r.loadavg.map((x) => x.toFixed(1)).join(' ')}: a loaded machine, figures are indications)`,
    `  hop                         req/s   CPU µs/req (both proxies)`,
    `  meshlet mTLS              ${f(m.meshletMtls.rps).padStart(7)}   ${f(m.meshletMtls.cpuUsPerReq, 1).padStart(8)}`,
    `  meshlet plaintext         ${f(m.meshletPlain.rps).padStart(7)}   ${f(m.meshletPlain.cpuUsPerReq, 1).padStart(8)}`,
    `  nginx -> nginx (TLS 1.3)  ${f(m.nginxTls.rps).padStart(7)}   ${f(m.nginxTls.cpuUsPerReq, 1).padStart(8)}`,
    `  mTLS / plaintext CPU: ${f(r.ratios.mtlsOverPlaintextCpu, 3)} (goal <= 1.20: ${r.goals.mtlsAtMost20PctOverPlaintext ? 'met' : 'NOT met'}); mTLS / nginx TLS CPU: ${f(r.ratios.mtlsOverNginxTlsCpu, 2)} (goal <= 3: ${r.goals.atMost3xNginx ? 'met' : 'NOT met'})`,
    `  new TLS connections/s with a client certificate (openssl s_time -new, one client): meshlet ${f(r.handshakes.meshlet.perSecond)} (${f(r.handshakes.meshlet.serverCpuUsPerHandshake)} µs CPU each), nginx ${f(r.handshakes.nginx.perSecond)} (${f(r.handshakes.nginx.serverCpuUsPerHandshake)} µs CPU each)`,
  ].join('\n');
}

module.exports = { render };

if (require.main === module) main().catch((err) => {
  log(`bench/mtls: FAILED: ${err.stack ?? err.message}`);
  procs.stopAll().then(() => process.exit(1));
});
