#!/usr/bin/env node
/**
 * Policy convergence: a control plane and N real `meshlet sidecar` processes on loopback; apply a
 * change R times and read, from `GET /v1/status`, the control plane's own measurement from the
 * change to the last sidecar's ACK (it includes the 5 ms push coalescing window).
 *
 *   node bench/convergence.js [SIDECARS=20] [ROUNDS=10]      (after `npm run build`)
 */
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const MAIN = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
const N = Number(process.argv[2] ?? 20);
const ROUNDS = Number(process.argv[3] ?? 10);
const procs = [];

function start(args, msg) {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  procs.push(child);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no "${msg}" from meshlet ${args[0]}`)), 20_000);
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const rec = JSON.parse(line);
        if (rec.msg === msg) {
          clearTimeout(t);
          resolve(rec);
        }
      } catch {
        // not a log line
      }
    });
  });
}

async function api(base, method, p, body) {
  const res = await fetch(base + p, { method, headers: { 'content-type': 'application/json' }, body: body && JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
}

async function until(what, fn, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-conv-'));
  const cp = await start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--insecure-push-plaintext', '--sidecar-auth', 'permissive'], 'control plane started');
  const base = cp.api;
  for (let i = 0; i < N; i++)
    await start(['sidecar', '--service', `svc${i % 5}`, '--id', `sc-${i}`, '--control-plane', cp.push, '--advertise', '127.0.0.1', '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--insecure-push-plaintext'], 'sidecar started');
  await until('every sidecar connected and ACKed', async () => {
    const s = (await api(base, 'GET', '/v1/status')).body;
    return s.sidecars.filter((x) => x.connected && x.ackedVersion === (x.expectedVersion ?? s.version)).length === N;
  });
  const ms = [];
  for (let r = 0; r < ROUNDS; r++) {
    const route = { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'r' }, spec: { hosts: ['svc0'], rules: [{ matches: [{ path: { prefix: `/v${r}` } }], backends: [{ service: 'svc0' }] }] } };
    const res = await api(base, 'POST', '/v1/apply', { items: [route] });
    if (res.status !== 200) throw new Error(`apply: ${JSON.stringify(res.body)}`);
    const s = await until('convergence', async () => {
      const b = (await api(base, 'GET', '/v1/status')).body;
      return b.convergence && b.convergence.version === b.version ? b : undefined;
    });
    ms.push(s.convergence.ms);
  }
  const sorted = [...ms].sort((a, b) => a - b);
  console.log(`${N} sidecars, ${ROUNDS} applies: convergence min ${sorted[0]} / median ${sorted[Math.floor(ROUNDS / 2)]} / max ${sorted[ROUNDS - 1]} ms (${ms.join(', ')})`);
})()
  .catch((e) => {
    console.error(e.message);
    process.exitCode = 1;
  })
  .finally(() => {
    for (const p of procs) p.kill('SIGTERM');
  });
