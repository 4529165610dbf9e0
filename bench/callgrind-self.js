#!/usr/bin/env node
'use strict';
/**
 * Where a callgrind dump's instructions go, by function (self cost) and by kind of code: the
 * reader for the dumps `node bench/cpu.js --callgrind --callgrind-keep DIR` keeps (the measured
 * window is the file numbered 2 of each sidecar). callgrind_annotate 3.19 charges a dump taken
 * with `callgrind_control -d` mid-run to `__libc_start_main` as a whole; this reads the cost lines
 * itself.
 *
 *   node bench/callgrind-self.js DUMP [--top 60] [--requests N]
 *
 * --requests N: also print instructions per request (the dump's total ÷ N; cpu.js's own figure
 * subtracts an idle window as long as the run, this does not).
 * Kinds: JIT (V8's generated code: an address, no symbol), builtins (`Builtins_*`: V8's
 * precompiled code: array, string, IC and call stubs), compiler (TurboFan/Maglev compiling),
 * V8 runtime and API (other `v8::`), node (`node::`), llhttp, libuv, and the rest (libc, kernel
 * entry stubs).
 */
const fs = require('node:fs');
const { parseArgs } = require('node:util');

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '60' }, requests: { type: 'string' } },
});
if (positionals.length !== 1) {
  console.error('usage: node bench/callgrind-self.js DUMP [--top 60] [--requests N]');
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
let fn = '';
let callLine = false;
for (const line of fs.readFileSync(positionals[0], 'utf8').split('\n')) {
  if (line.startsWith('fn=')) fn = nameOf(line.slice(3));
  else if (line.startsWith('cfn=')) nameOf(line.slice(4));
  else if (line.startsWith('calls=')) callLine = true;
  else if (/^[0-9+\-*]/.test(line)) {
    // The line after `calls=` is the call's inclusive cost: not this function's own.
    if (callLine) callLine = false;
    else {
      const cost = Number(line.split(' ')[1]);
      if (cost) self.set(fn, (self.get(fn) ?? 0) + cost);
    }
  }
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
if (total === 0) {
  console.error('no cost lines found');
  process.exit(1);
}
const kind = (f) =>
  /^0x[0-9a-f]+$/.test(f)
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
