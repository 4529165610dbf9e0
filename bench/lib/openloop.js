'use strict';
/**
 * bench/native/openloop.c, the fixed-rate phase's load generator: built here with `cc -O2` on
 * first use (again whenever the source is newer than the binary; into bench/native/build/,
 * git-ignored), then run pinned to the load core. Its flags and JSON are load.js's, with
 * `--port` for `--url` (the generator only speaks to 127.0.0.1).
 */
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const procs = require('./procs');

const SRC = path.join(__dirname, '..', 'native', 'openloop.c');
const BIN = path.join(__dirname, '..', 'native', 'build', 'openloop');

/** The binary's path, compiled if missing or older than its source. Throws if cc fails. */
function binary() {
  const fresh = fs.existsSync(BIN) && fs.statSync(BIN).mtimeMs >= fs.statSync(SRC).mtimeMs;
  if (!fresh) {
    fs.mkdirSync(path.dirname(BIN), { recursive: true });
    const tmp = `${BIN}.${process.pid}`;
    execFileSync(process.env.CC || 'cc', ['-O2', '-Wall', '-o', tmp, SRC], { stdio: ['ignore', 'inherit', 'inherit'] });
    fs.renameSync(tmp, BIN);
  }
  return BIN;
}

/**
 * Sends each of `ports` the full rate (schedules interleaved: a paired measurement), one phase
 * per rate in `rates` (`nice`: at that niceness, see tail.js --nice); resolves with the parsed JSON `{ phases: [{ rate, targets: [...] }] }`.
 */
async function run(ports, { rates, seconds, warmup = 1, connections = 32, drain = 5, host = 'upstream', cpu = 0, nice = 0 }) {
  const args = [...ports.flatMap((p) => ['--port', String(p)]), '--host', host, '--rate', rates.join(','), '--duration', String(seconds), '--warmup', String(warmup), '--connections', String(connections), '--drain', String(drain)];
  const bound = rates.length * (seconds + warmup + drain) + 30;
  const cmd = nice ? ['nice', ['-n', String(nice), binary(), ...args]] : [binary(), args];
  const r = await procs.run(cmd[0], cmd[1], { cpu, timeoutMs: bound * 1000 });
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

module.exports = { binary, run, BIN };
