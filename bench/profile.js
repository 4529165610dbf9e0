#!/usr/bin/env node
'use strict';
/**
 * Where a sidecar's CPU time goes, from a node `--cpu-prof` profile (bench/cpu.js --prof DIR):
 * self time per area (node:http2 compat / core, streams, meshlet's own files, GC, ...) and the top
 * functions by self time. With `--per N` the figures are also divided by N (requests in the
 * profile), giving µs per request.
 *
 *   node bench/profile.js FILE.cpuprofile [--per 37500] [--top 30]
 */
const fs = require('node:fs');
const { parseArgs } = require('node:util');

const { values: o, positionals } = parseArgs({ allowPositionals: true, options: { per: { type: 'string' }, top: { type: 'string', default: '30' } } });
const per = o.per ? Number(o.per) : 0;

function area(fn, url) {
  if (!url) return fn.startsWith('(') ? fn : '(native/builtin)';
  if (url.includes('internal/http2/compat')) return 'node:http2 compat';
  if (url.includes('internal/http2/')) return 'node:http2 core';
  if (url.includes('internal/streams/')) return 'node:streams';
  if (url.includes('/dist/src/stack/')) return 'meshlet src/stack';
  if (url.includes('/dist/src/http/')) return 'meshlet src/http';
  if (url.includes('/dist/src/observability/')) return 'meshlet src/observability';
  if (url.includes('/dist/src/grpc/')) return 'meshlet src/grpc';
  if (url.includes('/dist/')) return 'meshlet other';
  if (url.includes('node_modules')) return 'node_modules';
  if (url.startsWith('node:')) return url.replace(/^node:(internal\/)?/, 'node:').replace(/\/.*$/, '');
  return 'other';
}

for (const file of positionals) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = p.timeDeltas;
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (dt[i] ?? 0));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const areas = new Map();
  const fns = new Map();
  for (const [id, us] of self) {
    const n = byId.get(id);
    const cf = n.callFrame;
    const a = area(cf.functionName, cf.url);
    areas.set(a, (areas.get(a) ?? 0) + us);
    const k = `${cf.functionName || '(anon)'} ${cf.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${cf.lineNumber + 1}`;
    fns.set(k, (fns.get(k) ?? 0) + us);
  }
  const fmt = (us) => `${(us / 1000).toFixed(0).padStart(7)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%${per ? ` ${(us / per).toFixed(2).padStart(7)} us/req` : ''}`;
  console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled`);
  for (const [a, us] of [...areas].sort((x, y) => y[1] - x[1])) console.log(`  ${fmt(us)}  ${a}`);
  console.log('  top functions (self):');
  for (const [k, us] of [...fns].sort((x, y) => y[1] - x[1]).slice(0, Number(o.top))) console.log(`  ${fmt(us)}  ${k}`);
}
