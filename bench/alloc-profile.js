#!/usr/bin/env node
'use strict';
/**
 * Bytes allocated per request, by allocation site, from a sampling heap profile written by
 * bench/lib/alloc-sample.js (objects the GC collected included):
 *
 *   node bench/alloc-profile.js FILE.heapprofile --per REQUESTS [--top 40] [--depth 4] [--vs OTHER.heapprofile]
 *
 * REQUESTS: every request the process served (bench/cpu.js: warm-up + measured, e.g. 25,000 for
 * -n 20000). Start-up is in the total too (~1 MB, 40 B per request at 25,000). Prints the total
 * and the top sites (the allocating function and its callers, `--depth` frames); with `--vs`, the
 * top differences by allocating function between the two profiles (OTHER first).
 */
const fs = require('node:fs');
const { parseArgs } = require('node:util');

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: { per: { type: 'string', default: '1' }, top: { type: 'string', default: '40' }, depth: { type: 'string', default: '4' }, vs: { type: 'string' } },
});
const per = Number(o.per);
const depth = Number(o.depth);

function frameName(n) {
  const f = n.callFrame;
  return `${f.functionName || '(anon)'} ${f.url.replace(/.*\/(dist|node:)/, '$1')}:${f.lineNumber}`;
}

/** Self bytes per request by site (depth frames), and the total. */
function load(file, d) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const sites = new Map();
  let total = 0;
  (function walk(n, stack) {
    const st = [frameName(n), ...stack].slice(0, d);
    if (n.selfSize) {
      const k = st.join(' < ');
      sites.set(k, (sites.get(k) || 0) + n.selfSize / per);
      total += n.selfSize / per;
    }
    for (const c of n.children) walk(c, st);
  })(p.head, []);
  return { sites, total };
}

const file = positionals[0];
if (!file) throw new Error('usage: node bench/alloc-profile.js FILE.heapprofile --per REQUESTS [--vs OTHER]');
if (o.vs) {
  const a = load(o.vs, 1);
  const b = load(file, 1);
  console.log(`total bytes/request: ${Math.round(a.total)} -> ${Math.round(b.total)}`);
  const keys = new Set([...a.sites.keys(), ...b.sites.keys()]);
  const rows = [...keys].map((k) => [k, a.sites.get(k) || 0, b.sites.get(k) || 0]).sort((x, y) => Math.abs(y[2] - y[1]) - Math.abs(x[2] - x[1]));
  for (const [k, x, y] of rows.slice(0, Number(o.top))) console.log(`${String(Math.round(x)).padStart(7)} ${String(Math.round(y)).padStart(7)} ${String(Math.round(y - x)).padStart(7)}  ${k}`);
} else {
  const { sites, total } = load(file, depth);
  console.log(`total bytes/request: ${Math.round(total)}`);
  for (const [k, v] of [...sites].sort((x, y) => y[1] - x[1]).slice(0, Number(o.top))) console.log(`${String(Math.round(v)).padStart(7)}  ${k}`);
}
