#!/usr/bin/env node
'use strict';
/**
 * HPACK micro-benchmark (src/http/h2/hpack.ts): ns per encode and per decode of a typical
 * 8-field request and 4-field response, in the steady state of one connection (the dynamic table
 * warm, one field changing per message) and cold (a fresh table: literals and Huffman).
 * Bounded loops: a fixed number of iterations per case.
 *
 * The last case encodes a gRPC call's two heads (the upstream request, the response) whose
 * strings come in the representations the product hands the encoder: constants, substrings of a
 * parsed head, concatenations, strings made from bytes, strings internalized as property keys.
 * The cases above use constants and fresh strings only, and their character reads stay cheap;
 * in this one a per-character `s.length` or `s.charCodeAt` would be a megamorphic load (see
 * src/http/h2/huffman.ts). Instructions per pair of heads, two builds, one at a time:
 *
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null node --single-threaded bench/hpack.js --only mixed --n N
 *
 * at N = 20000 and N = 60000: the difference of the two totals / 40,000.
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

// A gRPC call's two heads with strings in many representations (see the header).
{
  const head = 'HTTP/1.1 200 OK\r\nserver: nginx/1.22.1\r\ncontent-type: application/grpc\r\nx-request-id: 5f0c2a7e-1b2c-4d5e-8f90-a1b2c3d4e5f6\r\n';
  const keys = {};
  const internalized = (s) => {
    keys[s] = 1;
    return s;
  };
  const mixed = (k) => {
    const rid = head.substring(88, 124);
    const tp = `00-${(k * 7919).toString(16).padStart(32, '0')}-${(k * 31).toString(16).padStart(16, '0')}-01`;
    const auth = internalized(`grpc-upstream:${50051 + (k & 1)}`);
    const ua = Buffer.from('grpc-node-js/1.12.6').toString('latin1');
    return [
      [':method', 'POST', ':path', '/grpc.testing.TestService/UnaryCall', ':authority', auth, ':scheme', 'http', 'content-type', 'application/grpc', 'te', 'trailers', 'user-agent', ua, 'x-request-id', rid, 'traceparent', tp, 'grpc-timeout', `${1000 + (k % 7)}m`],
      [':status', '200', 'content-type', head.substring(57, 73), 'date', new Date(1e12 + k * 1000).toUTCString(), 'x-request-id', rid],
    ];
  };
  const enc = new HpackEncoder();
  time('encode gRPC request + response, mixed strings', (i) => {
    for (const l of mixed(i)) enc.encode(l);
  });
}
