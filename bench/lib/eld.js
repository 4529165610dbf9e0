'use strict';
/**
 * Preloaded into a sidecar by bench/tail.js (`node -r bench/lib/eld.js`): an event-loop-delay
 * histogram (perf_hooks.monitorEventLoopDelay, sampled every 1 ms) and every GC pause
 * (PerformanceObserver 'gc'). On SIGUSR2 it writes what it saw since the previous SIGUSR2 to
 * $MESHLET_ELD_FILE as one JSON line and starts over. Bench-only: nothing of the product.
 */
const fs = require('node:fs');
const { monitorEventLoopDelay, PerformanceObserver, constants } = require('node:perf_hooks');

const file = process.env.MESHLET_ELD_FILE;
const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
const KINDS = { [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major', [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor', [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental', [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb' };
let gc = {};
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const k = KINDS[e.detail?.kind] ?? 'other';
    const g = (gc[k] ??= { count: 0, totalMs: 0, maxMs: 0, over1ms: 0 });
    g.count++;
    g.totalMs += e.duration;
    if (e.duration > g.maxMs) g.maxMs = e.duration;
    if (e.duration > 1) g.over1ms++;
  }
});
obs.observe({ entryTypes: ['gc'] });
process.on('SIGUSR2', () => {
  const us = (ns) => Math.round(ns / 1000);
  const out = {
    eventLoopDelayUs: { p50: us(h.percentile(50)), p99: us(h.percentile(99)), p999: us(h.percentile(99.9)), max: us(h.max), mean: us(h.mean), count: h.count },
    gc,
  };
  if (file) fs.appendFileSync(file, JSON.stringify(out) + '\n');
  h.reset();
  gc = {};
});
