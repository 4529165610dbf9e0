'use strict';
/**
 * The other-work detector: CPU time that processes outside the bench spend on each core, over
 * time. `start()` moves this process into a cgroup of its own (cgroup v1 cpuacct, root only), so
 * that everything it starts afterwards (proxies, upstream, generator, detectors) is counted there,
 * and samples every `periodMs` both that cgroup's per-core CPU time and the whole machine's
 * (the root cgroup's, kernel threads included). The difference is everyone else's: another
 * service on the machine, a periodic job, a kernel thread.
 *
 * Why: on this project's machines other services run beside the bench, and one of them starts a
 * whole Erlang VM every 60 s (RabbitMQ's, through its erl_child_setup), which takes both cores
 * for ~250 ms. Nothing a SCHED_FIFO sleeper sees (bench/native/hiccup.c): the VM's threads are
 * ordinary ones, so the scheduler shares the core between them and the proxy, and the proxy's
 * requests wait 20-80 ms. Whichever proxy is measured then gets that at its p99.9.
 *
 * `during(from, to)` gives, per core, the other work's total and its largest amount inside any
 * `spanMs` window that overlaps [from, to] (process.hrtime.bigint() values). `stop()` ends the
 * sampling, moves this process back to the root cgroup and removes the bench's (once its
 * children are gone). Returns null where cgroup v1 cpuacct is not writable (not root, or cgroup
 * v2 only): then no other work is seen.
 */
const fs = require('node:fs');

const ROOT = '/sys/fs/cgroup/cpuacct';

function start({ periodMs = 10, keepMs = 600_000 } = {}) {
  const dir = `${ROOT}/meshlet-bench-${process.pid}`;
  try {
    fs.mkdirSync(dir);
    fs.writeFileSync(`${dir}/cgroup.procs`, String(process.pid));
  } catch {
    try {
      fs.rmdirSync(dir);
    } catch {
      /* never made */
    }
    return null;
  }
  const read = (f) => fs.readFileSync(f, 'utf8').trim().split(/\s+/).map(Number);
  /** Samples: [hrtime ns (bigint), ns of others on core 0, core 1, ...] cumulative since start. */
  const samples = [];
  const all0 = read(`${ROOT}/cpuacct.usage_percpu`);
  const own0 = read(`${dir}/cpuacct.usage_percpu`);
  const sample = () => {
    const all = read(`${ROOT}/cpuacct.usage_percpu`);
    const own = read(`${dir}/cpuacct.usage_percpu`);
    samples.push([process.hrtime.bigint(), ...all.map((x, i) => Math.max(0, x - all0[i] - (own[i] - own0[i])))]);
    // Drop what is older than keepMs (a bench phase is seconds long).
    const cut = samples[samples.length - 1][0] - BigInt(keepMs) * 1_000_000n;
    let n = 0;
    while (n < samples.length && samples[n][0] < cut) n++;
    if (n > 0) samples.splice(0, n);
  };
  sample();
  const timer = setInterval(sample, periodMs);
  timer.unref();
  let stopped = false;
  return {
    cores: all0.length,
    /**
     * Per core `{ cpu, totalMs, maxMs }`: the other work's CPU time over the samples that overlap
     * [from, to], and its largest amount inside any `spanMs` window of them.
     */
    during(from, to, spanMs = 100) {
      const span = BigInt(spanMs) * 1_000_000n;
      const i0 = Math.max(0, samples.findIndex((s) => s[0] >= from) - 1);
      let i1 = samples.findIndex((s) => s[0] > to);
      if (i1 < 0) i1 = samples.length - 1;
      const out = [];
      for (let c = 0; c < all0.length; c++) {
        let maxNs = 0;
        // For each sample, the other work since the first sample no more than `span` before it.
        let j = i0;
        for (let i = i0 + 1; i <= i1; i++) {
          while (samples[i][0] - samples[j][0] > span && j < i - 1) j++;
          maxNs = Math.max(maxNs, samples[i][c + 1] - samples[j][c + 1]);
        }
        const totalNs = i1 > i0 ? samples[i1][c + 1] - samples[i0][c + 1] : 0;
        out.push({ cpu: c, totalMs: Math.round(totalNs / 1e5) / 10, maxMs: Math.round(maxNs / 1e5) / 10 });
      }
      return out;
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      try {
        fs.writeFileSync(`${ROOT}/cgroup.procs`, String(process.pid));
        fs.rmdirSync(dir);
      } catch {
        /* a child still in it: the kernel keeps the cgroup until it is empty; nothing to undo */
      }
    },
  };
}

module.exports = { start };
