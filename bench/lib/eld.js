'use strict';
/**
 * Preloaded into a sidecar by bench/tail.js (`node -r bench/lib/eld.js`): an event-loop-delay
 * histogram (perf_hooks.monitorEventLoopDelay, sampled every 1 ms), every GC pause
 * (PerformanceObserver 'gc'), and the loop's stalls with their causes: a 1-ms interval timer
 * notes each tick that came more than STALL_MS late, with the main thread's CPU time and
 * run-queue wait over it (/proc/self/schedstat: the main thread), and the GC pauses inside it.
 * Each stall's time is split into GC, waiting for the core (another thread or process had it)
 * and the rest (this thread running JavaScript and I/O callbacks: the backlog, timers); and the
 * CPU time of the process's other threads (V8's GC helpers, libuv's pool), which share the core.
 * On SIGUSR2 it writes what it saw since the previous SIGUSR2 to $MESHLET_ELD_FILE as one JSON
 * line and starts over. Bench-only: nothing of the product.
 */
const fs = require('node:fs');
const { monitorEventLoopDelay, PerformanceObserver, performance, constants } = require('node:perf_hooks');

const file = process.env.MESHLET_ELD_FILE;
const STALL_MS = 3;
const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
const KINDS = { [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major', [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor', [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental', [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb' };
let gc = {};
/** GC pauses as [start, end] in performance.now() ms, for the stalls' split. */
let pauses = [];
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const k = KINDS[e.detail?.kind] ?? 'other';
    const g = (gc[k] ??= { count: 0, totalMs: 0, maxMs: 0, over1ms: 0 });
    g.count++;
    g.totalMs += e.duration;
    if (e.duration > g.maxMs) g.maxMs = e.duration;
    if (e.duration > 1) g.over1ms++;
    pauses.push([e.startTime, e.startTime + e.duration, k]);
  }
});
obs.observe({ entryTypes: ['gc'] });

/** [cpu ms, run-queue wait ms] of the main thread so far (one pread of a kept fd: ~µs). */
const schedFd = fs.openSync('/proc/self/schedstat', 'r');
const schedBuf = Buffer.alloc(128);
function sched() {
  const n = fs.readSync(schedFd, schedBuf, 0, 128, 0);
  const [run, wait] = schedBuf.toString('latin1', 0, n).split(' ').map(Number);
  return [run / 1e6, wait / 1e6];
}
/** CPU ms of every thread but the main one (V8's GC helpers, libuv's pool), so far. */
function otherThreadsMs() {
  let ms = 0;
  for (const tid of fs.readdirSync('/proc/self/task')) {
    if (Number(tid) === process.pid) continue;
    try {
      ms += Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
    } catch {
      /* the thread ended */
    }
  }
  return ms;
}
let othersAt = otherThreadsMs();
let stalls = [];
let last = performance.now();
let lastSched = sched();
setInterval(() => {
  const now = performance.now();
  const s = sched();
  if (now - last > 1 + STALL_MS) stalls.push({ start: last, end: now, cpuMs: s[0] - lastSched[0], waitMs: s[1] - lastSched[1] });
  last = now;
  lastSched = s;
}).unref();

function stallReport() {
  const out = { count: stalls.length, thresholdMs: STALL_MS, totalMs: 0, gcMs: 0, waitMs: 0, otherMs: 0, gcByKindMs: {}, top: [] };
  for (const st of stalls) {
    const len = st.end - st.start - 1; // the tick's own 1 ms is not a stall
    let g = 0;
    for (const [a, b, k] of pauses) {
      const o = Math.min(b, st.end) - Math.max(a, st.start);
      if (o > 0) {
        g += o;
        out.gcByKindMs[k] = (out.gcByKindMs[k] ?? 0) + o;
      }
    }
    const wait = Math.min(Math.max(0, st.waitMs), Math.max(0, len - g));
    st.gcMs = g;
    st.len = len;
    st.wait = wait;
    out.totalMs += len;
    out.gcMs += g;
    out.waitMs += wait;
    out.otherMs += Math.max(0, len - g - wait);
  }
  const r = (x) => Math.round(x * 10) / 10;
  out.top = [...stalls]
    .sort((a, b) => b.len - a.len)
    .slice(0, 5)
    .map((st) => ({ ms: r(st.len), gcMs: r(st.gcMs), waitMs: r(st.wait), cpuMs: r(st.cpuMs) }));
  for (const k of ['totalMs', 'gcMs', 'waitMs', 'otherMs']) out[k] = r(out[k]);
  for (const k of Object.keys(out.gcByKindMs)) out.gcByKindMs[k] = r(out.gcByKindMs[k]);
  return out;
}

process.on('SIGUSR2', () => {
  const us = (ns) => Math.round(ns / 1000);
  const out = {
    eventLoopDelayUs: { p50: us(h.percentile(50)), p99: us(h.percentile(99)), p999: us(h.percentile(99.9)), max: us(h.max), mean: us(h.mean), count: h.count },
    gc,
    stalls: stallReport(),
    otherThreadsCpuMs: 0,
  };
  const o = otherThreadsMs();
  out.otherThreadsCpuMs = Math.round(o - othersAt);
  othersAt = o;
  if (file) fs.appendFileSync(file, JSON.stringify(out) + '\n');
  h.reset();
  gc = {};
  pauses = [];
  stalls = [];
});
