'use strict';
/**
 * bench/native/openloop.c, the fixed-rate phase's load generator: built by lib/native.js, then
 * run pinned to the load core. Its flags and JSON are load.js's, with `--port` for `--url`
 * (the generator only speaks to 127.0.0.1).
 */
const procs = require('./procs');
const native = require('./native');

/** The binary's path, compiled if missing or older than its source. Throws if cc fails. */
const binary = () => native.build('openloop');

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

module.exports = { binary, run };
