#!/usr/bin/env node
/**
 * What recording a request in the sidecar's ring of recent decisions costs (`meshlet explain
 * --last`): the writes one ordinary request makes (claim at the front, one try begun, answered and
 * ended in the pick layer, one rate-limit bucket, the end in the observe layer), N times, on real
 * MeshCalls. Meant to run under callgrind, once with the ring and once without (`--ring 0`, the
 * same loop minus the recording): the difference in instructions divided by N is the cost per
 * request, independent of how loaded the machine is.
 *
 *   valgrind --tool=callgrind --callgrind-out-file=/tmp/d1 node bench/decisions.js --n 200000 --ring 1024
 *   valgrind --tool=callgrind --callgrind-out-file=/tmp/d0 node bench/decisions.js --n 200000 --ring 0
 *
 * Run each at two sizes of N and take the slope, so that startup (the same in every run) drops out.
 */
'use strict';
const { parseArgs } = require('node:util');
const { MeshCall } = require('../dist/src/core/layer');
const { DecisionRing } = require('../dist/src/observability/decisions');
const { systemClock } = require('../dist/src/core/clock');

const { values } = parseArgs({ options: { n: { type: 'string', default: '200000' }, ring: { type: 'string', default: '1024' }, clock: { type: 'string', default: 'system' } } });
const n = Number(values.n);
const size = Number(values.ring);
// `--clock fixed`: the ring without its clock reads, to tell them apart from the slot writes.
const clock = values.clock === 'fixed' ? { now: () => 0, monotonic: () => 0, setTimeout: systemClock.setTimeout } : systemClock;
const ring = size > 0 ? new DecisionRing(size, clock) : undefined;
// Every call escapes (as a real request's does, to its sockets and layers), with or without the
// ring: otherwise the JIT may drop the allocation in the run without it.
const keep = new Array(1024);
const rule = { statName: 'catalog/rest', routeName: 'catalog', ruleName: 'rest', timeoutMs: 3000, retries: { attempts: 2, perTryTimeoutMs: 1000, retryOn: ['5xx'] } };
const backend = { service: 'catalog', subset: 'v1', weight: 100 };
const target = { key: '10.0.0.1:8080', address: '10.0.0.1', port: 8080, protocol: 'http1' };
let sink = 0;
for (let i = 0; i < n; i++) {
  const c = new MeshCall('outbound', 'http', 'http1', 'GET', '/items', 'catalog', undefined, ['x-request-id', 'abc'], null, '1.1');
  c.rule = rule;
  c.backend = backend;
  // The observe layer's handle (made per request anyway): the decision reuses its clock reads.
  c.obs = { requestId: 'abc', route: { source: 'frontend' }, t0: 1, t1: 0 };
  if (ring) ring.claim(c);
  c.tries = 1;
  c.target = target;
  const d = c.decision;
  if (d) {
    const k = d.tryBegin(c.decisionSeq, target.key);
    d.tryResponse(c.decisionSeq, k, 200);
    d.limit(c.decisionSeq, 'per-caller', 'frontend', 'allowed');
    d.tryDone(c.decisionSeq, k, undefined);
    c.obs.t1 = 2;
    d.finish(c.decisionSeq, 200, undefined, 'abc', -1);
  }
  keep[i & 1023] = c;
  sink += c.tries;
}
if (sink !== n) throw new Error('unexpected');
if (ring && ring.find('abc').length !== Math.min(n, size)) throw new Error('the ring does not hold what was recorded');
console.log(JSON.stringify({ n, ring: size, clock: values.clock, kept: keep.length }));
