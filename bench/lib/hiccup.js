'use strict';
/**
 * The platform-pause detector (bench/native/hiccup.c) as a running process: `start(cpus)` runs
 * one real-time sleeper per core and keeps every pause it reports; `during(from, to)` gives the
 * pauses that ended inside [from, to] (process.hrtime.bigint() values: the same clock). The
 * detector ends when this process does (its stdin closes) or on `stop()`.
 */
const { spawn } = require('node:child_process');
const native = require('./native');

function start(cpus, { periodUs = 2000, reportMs = 5 } = {}) {
  const bin = native.build('hiccup', ['-lpthread']);
  const args = [...cpus.flatMap((c) => ['--cpu', String(c)]), '--period-us', String(periodUs), '--report-ms', String(reportMs)];
  const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const pauses = [];
  let buf = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const p = JSON.parse(line);
        pauses.push({ cpu: p.cpu, at: BigInt(p.atNs), ms: p.lateUs / 1000, rt: p.rt === 1 });
      } catch {
        /* a partial line at exit */
      }
    }
  });
  let exited = false;
  child.on('exit', () => (exited = true));
  return {
    /** Pauses (`{ cpu, at, ms, rt }`) that ended between `from` and `to` (hrtime ns, bigint). */
    during: (from, to) => pauses.filter((p) => p.at >= from && p.at <= to),
    /** Whether the detector is still running (it stops if it could not pin a thread). */
    alive: () => !exited,
    stop() {
      child.stdin.end();
      child.kill('SIGTERM');
    },
  };
}

module.exports = { start };
