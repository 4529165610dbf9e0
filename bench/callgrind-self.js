#!/usr/bin/env node
'use strict';
/**
 * Where a callgrind dump's instructions go, by function (self cost) and by kind of code: the
 * reader for the dumps `node bench/cpu.js --callgrind --callgrind-keep DIR` keeps (the measured
 * window is the file numbered 2 of each sidecar). callgrind_annotate 3.19 charges a dump taken
 * with `callgrind_control -d` mid-run to `__libc_start_main` as a whole; this reads the cost lines
 * itself.
 *
 *   node bench/callgrind-self.js DUMP [--top 60] [--requests N] [--perf-map /tmp/perf-PID.map] [--callers NAME]
 *
 * --perf-map: the process's JIT code map (the sidecar run with `--perf-basic-prof`, e.g.
 * `--dist 'DIR|--single-threaded --perf-basic-prof'`; PID is the dump's): JIT addresses are then
 * named by the JavaScript function they are in (one line per function, its addresses summed).
 * --requests N: also print instructions per request (the dump's total ÷ N; cpu.js's own figure
 * subtracts an idle window as long as the run, this does not).
 * --callers NAME: also list who calls the functions whose name contains NAME, with the calls and
 * their inclusive instructions, by caller (JIT callers and callees named through --perf-map).
 * E.g. `--callers LoadIC_Megamorphic`: which compiled functions make megamorphic property loads,
 * and how many a request.
 * Kinds: JIT (V8's generated code: an address, no symbol), builtins (`Builtins_*`: V8's
 * precompiled code: array, string, IC and call stubs), compiler (TurboFan/Maglev compiling),
 * V8 runtime and API (other `v8::`), node (`node::`), llhttp, libuv, and the rest (libc, kernel
 * entry stubs).
 */
const fs = require('node:fs');
const { parseArgs } = require('node:util');

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '60' }, requests: { type: 'string' }, 'perf-map': { type: 'string' }, callers: { type: 'string' } },
});
if (positionals.length !== 1) {
  console.error('usage: node bench/callgrind-self.js DUMP [--top 60] [--requests N] [--perf-map FILE] [--callers NAME]');
  process.exit(2);
}

const self = new Map();
// Compressed names: `fn=(12) name` defines id 12, `fn=(12)` refers to it (also cfn=, across files
// of one run: a later part may refer to an id an earlier part defined; then the id is shown).
const names = new Map();
const nameOf = (spec) => {
  const m = /^\((\d+)\)(?: (.*))?$/.exec(spec);
  if (!m) return spec;
  if (m[2] !== undefined) names.set(m[1], m[2]);
  return names.get(m[1]) ?? `(${m[1]})`;
};
// --callers NAME: who calls the functions whose name contains NAME (calls and their inclusive
// instructions, by caller), e.g. which JIT code reaches Builtins_LoadIC_Megamorphic.
const callers = new Map();
let fn = '';
let cfn = '';
let callLine = false;
let calls = 0;
for (const line of fs.readFileSync(positionals[0], 'utf8').split('\n')) {
  if (line.startsWith('fn=')) fn = nameOf(line.slice(3));
  else if (line.startsWith('cfn=')) cfn = nameOf(line.slice(4));
  else if (line.startsWith('calls=')) {
    callLine = true;
    calls = Number(line.slice(6).split(' ')[0]);
  } else if (/^[0-9+\-*]/.test(line)) {
    // The line after `calls=` is the call's inclusive cost: not this function's own.
    if (callLine) {
      callLine = false;
      if (o.callers !== undefined) {
        // Keyed by caller and callee as named in the dump; JIT addresses are resolved below.
        const k = `${fn}\u0000${cfn}`;
        const e = callers.get(k) ?? { calls: 0, cost: 0 };
        e.calls += calls;
        e.cost += Number(line.split(' ')[1]) || 0;
        callers.set(k, e);
      }
    } else {
      const cost = Number(line.split(' ')[1]);
      if (cost) self.set(fn, (self.get(fn) ?? 0) + cost);
    }
  }
}
let resolveName = (f) => f;
if (o['perf-map']) {
  // Lines `START SIZE NAME` (hex), as V8's --perf-basic-prof writes them; later lines win where
  // code was moved or replaced (the map is appended to as code is made).
  const ranges = [];
  for (const line of fs.readFileSync(o['perf-map'], 'utf8').split('\n')) {
    const m = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
    if (m) ranges.push([parseInt(m[1], 16), parseInt(m[2], 16), m[3]]);
  }
  const sorted = ranges.map((r, i) => [...r, i]).sort((a, b) => a[0] - b[0] || b[3] - a[3]);
  const resolve = (addr) => {
    let lo = 0;
    let hi = sorted.length - 1;
    let found;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid][0] <= addr) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    // The latest range that covers addr, among those starting at or below it.
    let best;
    for (let i = found; i !== undefined && i >= 0 && i > found - 64; i--) {
      const r = sorted[i];
      if (addr < r[0] + r[1] && (best === undefined || r[3] > best[3])) best = r;
    }
    return best ? `JIT ${best[2]}` : undefined;
  };
  resolveName = (f) => (/^0x[0-9a-f]+$/.test(f) ? resolve(parseInt(f, 16)) ?? f : f);
  for (const [f, c] of [...self]) {
    if (!/^0x[0-9a-f]+$/.test(f)) continue;
    const name = resolve(parseInt(f, 16));
    if (name === undefined) continue;
    self.delete(f);
    self.set(name, (self.get(name) ?? 0) + c);
  }
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
if (total === 0) {
  console.error('no cost lines found');
  process.exit(1);
}
const kind = (f) =>
  /^0x[0-9a-f]+$/.test(f) || f.startsWith('JIT ')
    ? 'JIT'
    : f.startsWith('Builtins_')
      ? 'builtins'
      : /v8::internal::(compiler|maglev)::/.test(f)
        ? 'compiler'
        : f.includes('v8::')
          ? 'V8 runtime and API'
          : f.includes('node::')
            ? 'node'
            : f.startsWith('llhttp')
              ? 'llhttp'
              : /\buv_|\buv__/.test(f)
                ? 'libuv'
                : 'other';
const byKind = new Map();
for (const [f, c] of self) byKind.set(kind(f), (byKind.get(kind(f)) ?? 0) + c);
const pct = (c) => `${((100 * c) / total).toFixed(2).padStart(6)} %`;
console.log(`${total.toLocaleString('en-US')} instructions${o.requests ? `, ${Math.round(total / Number(o.requests)).toLocaleString('en-US')} a request` : ''}`);
console.log('\nby kind:');
for (const [k, c] of [...byKind].sort((a, b) => b[1] - a[1])) console.log(`${pct(c)}  ${k}`);
console.log(`\ntop ${o.top} functions by own instructions:`);
for (const [f, c] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(o.top))) console.log(`${pct(c)}  ${f.length > 150 ? `${f.slice(0, 147)}...` : f}`);
if (o.callers !== undefined) {
  const perReq = (n) => (o.requests ? ` (${(n / Number(o.requests)).toFixed(1)} a request)` : '');
  // By caller, over the callees whose (resolved) name contains the string.
  const byCaller = new Map();
  for (const [k, e] of callers) {
    const [f, c] = k.split('\u0000');
    if (!resolveName(c).includes(o.callers)) continue;
    const name = resolveName(f);
    const to = byCaller.get(name) ?? { calls: 0, cost: 0 };
    to.calls += e.calls;
    to.cost += e.cost;
    byCaller.set(name, to);
  }
  console.log(`\ncallers of *${o.callers}*: inclusive instructions of the calls, and the calls`);
  for (const [f, e] of [...byCaller].sort((a, b) => b[1].cost - a[1].cost).slice(0, Number(o.top))) {
    console.log(`${pct(e.cost)}  ${e.calls.toLocaleString('en-US')} calls${perReq(e.calls)}  ${f.length > 130 ? `${f.slice(0, 127)}...` : f}`);
  }
}
