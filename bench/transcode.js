#!/usr/bin/env node
'use strict';
/**
 * Transcoded HTTP/JSON -> gRPC throughput, against references measured in the same run:
 *
 *   direct-grpc     h2load, gRPC (h2c) straight at the grpc-js upstream     (the ceiling)
 *   sidecar-grpc    h2load, gRPC through the sidecar (plain gRPC proxying)
 *   transcoded-json wrk, HTTP/1.1 GET /v1/hello/world through the sidecar, transcoded to gRPC
 *
 *   node bench/transcode.js [--quick]          (after `npm run build`; needs wrk, h2load, taskset)
 *
 * Layout as in bench/run.js: the upstream and the load on core 0, the sidecar alone on core 1.
 * Closed-loop tools (wrk, h2load) for a req/s figure; each run is bounded by its duration.
 * Writes bench/results/transcode-<time>.md and .json, and transcode-latest.md.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const procs = require('./lib/procs');
const { meshletArgv } = require('./lib/node-flags');

const ROOT = path.join(__dirname, '..');
const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const QUICK = process.argv.includes('--quick');
const SECONDS = QUICK ? 3 : 10;
const WARM = QUICK ? 1 : 3;
const LOAD_CPU = 0;
const PROXY_CPU = 1;

function lineFrom(h, re, what) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${what} within 20 s`)), 20_000);
    readline.createInterface({ input: h.child.stdout }).on('line', (line) => {
      const m = re.exec(line);
      if (m) {
        clearTimeout(t);
        resolve(m);
      }
    });
  });
}

function startPiped(name, args, cpu) {
  const { spawn } = require('node:child_process');
  const child = spawn('taskset', ['-c', String(cpu), process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return { name, child, stop: () => new Promise((r) => (child.exitCode !== null ? r() : (child.once('exit', () => r()), child.kill('SIGTERM')))) };
}

function grpcBody(dir) {
  // HelloRequest{name: "world"}: field 1, length-delimited; then the 5-byte gRPC frame header.
  const msg = Buffer.concat([Buffer.from([0x0a, 5]), Buffer.from('world')]);
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
  const f = path.join(dir, 'hello.bin');
  fs.writeFileSync(f, frame);
  return f;
}

async function h2load(port, seconds, bodyFile) {
  const args = ['-t', '1', '-c', '8', '-m', '16', '-D', `${seconds}`, '-d', bodyFile, '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-H', ':authority: greeter', `http://127.0.0.1:${port}/bench.v1.Greeter/Hello`];
  const r = await procs.run('h2load', args, { cpu: LOAD_CPU, timeoutMs: (seconds + 30) * 1000 });
  const rps = /finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(r.stdout);
  const st = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(r.stdout);
  const req = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(r.stdout);
  if (!rps || !st || !req) throw new Error(`cannot parse h2load output:\n${r.stdout}${r.stderr}`);
  if (Number(req[3]) || Number(req[4]) || Number(st[2]) + Number(st[3]) + Number(st[4])) throw new Error(`h2load saw errors:\n${r.stdout}`);
  return { rps: Number(rps[1]), requests: Number(req[2]) };
}

async function wrk(port, seconds) {
  const args = ['-t1', '-c64', `-d${seconds}s`, '-H', 'Host: greeter', `http://127.0.0.1:${port}/v1/hello/world`];
  const r = await procs.run('wrk', args, { cpu: LOAD_CPU, timeoutMs: (seconds + 30) * 1000 });
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout);
  const n = /(\d+) requests in/.exec(r.stdout);
  if (!rps || !n) throw new Error(`cannot parse wrk output:\n${r.stdout}`);
  if (/Non-2xx or 3xx responses: (\d+)/.test(r.stdout) || /Socket errors/.test(r.stdout)) throw new Error(`wrk saw errors:\n${r.stdout}`);
  return { rps: Number(rps[1]), requests: Number(n[1]) };
}

async function main() {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first`);
  procs.installCleanup();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-bench-transcode-'));
  const up = startPiped('grpc-greeter', [path.join(__dirname, 'contenders', 'grpc-greeter.js')], LOAD_CPU);
  const upPort = Number((await lineFrom(up, /^listening (\d+)$/, 'upstream port'))[1]);
  const config = path.join(dir, 'policies.yaml');
  fs.writeFileSync(
    config,
    `apiVersion: meshlet.dev/v1
kind: Service
metadata: { name: greeter }
spec:
  protocol: http2
  endpoints: [{ address: 127.0.0.1, port: ${upPort} }]
---
apiVersion: meshlet.dev/v1
kind: GrpcTranscoding
metadata: { name: greeter }
spec:
  service: greeter
  protos: [{ file: ${path.join(__dirname, 'fixtures', 'greeter.proto')} }]
  services: [bench.v1.Greeter]
`,
  );
  const sc = startPiped('sidecar', meshletArgv(MAIN, ['sidecar', '--service', 'bench', '--config', config, '--outbound', '127.0.0.1:0', '--inbound', '127.0.0.1:0', '--admin', '127.0.0.1:0']), PROXY_CPU);
  const started = await lineFrom(sc, /"outbound":"[^"]*:(\d+)".*"msg":"sidecar started"/, 'sidecar started');
  const port = Number(started[1]);
  const body = grpcBody(dir);
  const rows = [];
  try {
    // Correctness first: the transcoded answer is the upstream's, as JSON.
    const res = await new Promise((resolve, reject) => {
      require('node:http')
        .get({ host: '127.0.0.1', port, path: '/v1/hello/world', headers: { host: 'greeter' } }, (r) => {
          let text = '';
          r.on('data', (c) => (text += c));
          r.on('end', () => resolve({ status: r.statusCode, text }));
        })
        .on('error', reject);
    });
    const json = JSON.parse(res.text);
    if (res.status !== 200 || json.text !== 'hello world' || json.count !== '1') throw new Error(`unexpected transcoded answer ${res.status} ${JSON.stringify(json)}`);
    const runs = [
      ['direct-grpc', () => h2load(upPort, SECONDS, body), () => h2load(upPort, WARM, body)],
      ['sidecar-grpc', () => h2load(port, SECONDS, body), () => h2load(port, WARM, body)],
      ['transcoded-json', () => wrk(port, SECONDS), () => wrk(port, WARM)],
    ];
    for (const [name, measure, warm] of runs) {
      await warm();
      const r = await measure();
      rows.push({ name, ...r });
      process.stderr.write(`${name}: ${r.rps.toFixed(0)} req/s\n`);
    }
  } finally {
    await sc.stop();
    await up.stop();
  }
  const direct = rows[0].rps;
  const proxied = rows[1].rps;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d+Z$/, 'Z');
  const md = [
    `# Transcoding bench ${stamp}${QUICK ? ' (--quick: short runs, noisy figures)' : ''}`,
    '',
    `\`node bench/transcode.js${QUICK ? ' --quick' : ''}\`: grpc-js upstream + load on core ${LOAD_CPU}, sidecar on core ${PROXY_CPU}; ${SECONDS} s per row after ${WARM} s warm-up. ${os.cpus()[0]?.model ?? ''}, node ${process.version}.`,
    '',
    '| row | client | req/s | vs direct gRPC | vs gRPC through the sidecar |',
    '| --- | --- | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.name} | ${r.name === 'transcoded-json' ? 'wrk, 64 conns, HTTP/1.1 JSON' : 'h2load, 8 conns x 16 streams, gRPC'} | ${r.rps.toFixed(0)} | ${(r.rps / direct).toFixed(2)} | ${(r.rps / proxied).toFixed(2)} |`),
    '',
  ].join('\n');
  const out = path.join(__dirname, 'results');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, `transcode-${stamp}.md`), md);
  fs.writeFileSync(path.join(out, `transcode-${stamp}.json`), JSON.stringify({ stamp, quick: QUICK, seconds: SECONDS, rows }, null, 2) + '\n');
  fs.writeFileSync(path.join(out, 'transcode-latest.md'), md);
  process.stdout.write(md);
  fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exitCode = 1;
});
