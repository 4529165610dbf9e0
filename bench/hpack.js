#!/usr/bin/env node
'use strict';
/**
 * HPACK micro-benchmark (src/http/h2/hpack.ts): ns per encode and per decode of a typical
 * 8-field request and 4-field response, in the steady state of one connection (the dynamic table
 * warm, one field changing per message) and cold (a fresh table: literals and Huffman).
 * Bounded loops: a fixed number of iterations per case.
 *
 *   npx tsc -p tsconfig.json && flock /tmp/meshlet-bench.lock node bench/hpack.js [--n 200000]
 *
 * Needs the TypeScript build in dist/. Numbers are noisy on a shared machine.
 */
const path = require('node:path');
const { parseArgs } = require('node:util');
const { HpackEncoder, HpackDecoder } = require(path.join(__dirname, '..', 'dist', 'src', 'http', 'h2', 'hpack'));

const { values: cli } = parseArgs({ options: { n: { type: 'string', default: '200000' }, only: { type: 'string' } } });
const N = Number(cli.n);

const request = (i) => [
  ':method', 'GET', ':scheme', 'http', ':authority', 'orders.svc.cluster.local:8080', ':path', '/api/v1/orders/12345',
  'user-agent', 'meshlet/0.1.0', 'accept', 'application/json', 'accept-encoding', 'gzip, deflate', 'x-request-id', `7f3a9c1e-${i % 100000}`,
];
const response = (i) => [':status', '200', 'content-type', 'application/json', 'content-length', String(100 + (i % 900)), 'date', 'Fri, 04 Dec 2026 13:40:00 GMT'];

function time(label, fn) {
  if (cli.only !== undefined && !label.includes(cli.only)) return;
  for (let i = 0; i < Math.min(N, 20000); i++) fn(i); // warm-up
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  for (let i = 0; i < N; i++) fn(i);
  const c = process.cpuUsage(c0);
  const ns = Number(process.hrtime.bigint() - t0) / N;
  const cpu = ((c.user + c.system) * 1000) / N;
  console.log(`${label.padEnd(46)} ${ns.toFixed(0).padStart(6)} ns wall ${cpu.toFixed(0).padStart(6)} ns CPU`);
}

for (const [name, make] of [['8-field request', request], ['4-field response', response]]) {
  const lists = Array.from({ length: 1000 }, (_, i) => make(i));
  const enc = new HpackEncoder();
  time(`encode ${name}, warm table`, (i) => enc.encode(lists[i % 1000]));
  // Blocks as one connection sends them, decoded in the same order on a fresh decoder per 1000.
  const e2 = new HpackEncoder();
  const blocks = lists.map((l) => e2.encode(l));
  let dec = new HpackDecoder();
  time(`decode ${name}, warm table (${blocks[1].length} B)`, (i) => {
    if (i % 1000 === 0) dec = new HpackDecoder();
    dec.decode(blocks[i % 1000]);
  });
  time(`encode ${name}, cold (fresh encoder)`, (i) => new HpackEncoder().encode(lists[i % 1000]));
  const first = new HpackEncoder().encode(lists[0]);
  time(`decode ${name}, cold (${first.length} B)`, () => new HpackDecoder().decode(first));
}
