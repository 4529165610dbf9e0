#!/usr/bin/env node
'use strict';
/**
 * Open-loop, constant-rate HTTP/1.1 load generator with coordinated-omission correction.
 *
 *   node bench/load.js --url http://127.0.0.1:PORT/ [--url http://127.0.0.1:PORT2/ ...]
 *                      [--host upstream] --rate 1000[,5000,...] --duration 10
 *                      [--warmup 1] [--connections 32] [--drain 10]
 *
 * Request i is *intended* to start at t0 + i/rate, whatever happened to earlier requests (open
 * loop: a slow response never delays the next send, unlike wrk's closed loop). Its latency is
 * recorded as completion - intended start, so time spent queued behind a stalled server (or a
 * late send in this process) is counted rather than omitted, as in wrk2 / HdrHistogram's
 * "corrected" mode. The latency from the actual send is reported too, as `serviceUs`.
 *
 * With several --url, each target gets the full --rate, with the targets' schedules interleaved
 * (target k is offset by k/(K*rate)), so a proxy and the direct baseline are measured over the
 * same seconds and see the same background noise (a paired measurement).
 *
 * Each target has its own undici Pool with --connections keep-alive connections (no pipelining).
 * Requests intended during the first --warmup seconds are sent but not recorded. After the last
 * send, outstanding requests get --drain seconds; the rest count as `unfinished`.
 * `--rate 1000,5000` runs one phase per rate, in order, on the same connections; a phase that
 * leaves requests unfinished ends the run (later, higher rates would only queue behind it).
 * Prints one JSON object `{ phases: [{ rate, ..., targets: [...] }] }` on stdout.
 * Every loop here is bounded by --duration and --drain.
 */
const { Worker } = require('node:worker_threads');
const { parseArgs } = require('node:util');
const { Pool } = require('undici');
const hdr = require('hdr-histogram-js');

const { values: a } = parseArgs({
  options: {
    url: { type: 'string', multiple: true },
    host: { type: 'string' },
    rate: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '1' },
    connections: { type: 'string', default: '32' },
    drain: { type: 'string', default: '10' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (a.help) {
  process.stdout.write(/\/\*\*\n([\s\S]*?)\n \*\//.exec(require('node:fs').readFileSync(__filename, 'utf8'))[1].replace(/^ \*( |$)/gm, '') + '\n');
  process.exit(0);
}
if (!a.url || a.url.length === 0) {
  process.stderr.write('usage: load.js --url URL [--url URL2] [--host H] --rate R[,R2] --duration S [--warmup S] [--connections N] [--drain S]\n');
  process.exit(2);
}
const rates = a.rate.split(',').map(Number);
const durationS = Number(a.duration);
const warmupS = Number(a.warmup);
const drainS = Number(a.drain);
const connections = Number(a.connections);
if (!(rates.every((r) => r > 0) && durationS > 0 && warmupS >= 0 && connections > 0 && drainS > 0)) {
  process.stderr.write('load.js: --rate, --duration, --connections, --drain must be > 0\n');
  process.exit(2);
}

/** Monotonic milliseconds (fractional), the same clock in every thread. */
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * The metronome: a worker thread that sleeps in Atomics.wait (a futex with a timeout, ~50 µs
 * slack) until each intended send time and then wakes the main thread with a message. libuv
 * timers (setTimeout) have 1 ms granularity, which would add up to ~1 ms of send lag to every
 * request; a busy loop would be precise but burn the core the upstream runs on.
 */
const METRONOME = `
const { parentPort, workerData } = require('node:worker_threads');
const { t0, intervalMs, total } = workerData;
const cell = new Int32Array(new SharedArrayBuffer(4));
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
for (let i = 0; i < total; i++) {
  const due = t0 + i * intervalMs;
  for (let wait = due - nowMs(); wait > 0; wait = due - nowMs()) Atomics.wait(cell, 0, 0, wait);
  parentPort.postMessage(i);
}
`;

const newHist = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });

const headers = a.host ? { host: a.host } : {};
const targets = a.url.map((u) => {
  const url = new URL(u);
  return {
    url: u,
    path: url.pathname + url.search,
    pool: new Pool(url.origin, {
      connections,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      keepAliveMaxTimeout: 60_000,
      headersTimeout: (drainS + 5) * 1000,
      bodyTimeout: (drainS + 5) * 1000,
    }),
  };
});

function summary(h) {
  if (h.totalCount === 0) return null;
  const p = (q) => h.getValueAtPercentile(q);
  return { p50: p(50), p90: p(90), p99: p(99), p999: p(99.9), max: h.maxValue, mean: Math.round(h.mean), count: h.totalCount };
}

/** Per-target counters and histograms for one phase. */
function newStats() {
  return {
    latency: newHist(), // µs from intended start
    service: newHist(), // µs from actual send
    sendLag: newHist(), // µs the send itself was late vs its intended time (generator health)
    intended: 0,
    completed: 0,
    recorded: 0,
    errors: 0,
    non2xx: 0,
    outstanding: 0,
    errorKinds: {},
    /** Latency per second of the recorded schedule (by intended send time): the p99 per window. */
    windows: [],
  };
}

/** One constant-rate phase (every target at `rate`); resolves with its summary. */
function phase(rate) {
  const K = targets.length;
  const intervalMs = 1000 / (rate * K); // the combined schedule; slot j goes to target j % K
  const total = Math.round(rate * (warmupS + durationS)) * K;
  const warmupEnd = Math.round(rate * warmupS) * K; // slots before this are not recorded
  const stats = targets.map(newStats);
  let next = 0;
  let outstanding = 0;
  const t0 = nowMs() + 5;
  const started = Date.now();
  let finish;
  const finished = new Promise((r) => (finish = r));

  function send(j) {
    const t = targets[j % K];
    const s = stats[j % K];
    const intended = t0 + j * intervalMs;
    const sentAt = nowMs();
    const record = j >= warmupEnd;
    if (record) {
      s.intended++;
      s.sendLag.recordValue(Math.max(1, Math.round((sentAt - intended) * 1000)));
    }
    outstanding++;
    s.outstanding++;
    let settled = false;
    const done = (err) => {
      if (settled) return;
      settled = true;
      outstanding--;
      s.outstanding--;
      const end = nowMs();
      s.completed++;
      if (err) {
        s.errors++;
        const k = err.code ?? err.message;
        s.errorKinds[k] = (s.errorKinds[k] ?? 0) + 1;
      } else if (record) {
        s.recorded++;
        const us = Math.max(1, Math.round((end - intended) * 1000));
        s.latency.recordValue(us);
        const w = Math.floor((j - warmupEnd) / K / rate);
        (s.windows[w] ??= newHist()).recordValue(us);
        s.service.recordValue(Math.max(1, Math.round((end - sentAt) * 1000)));
      }
      if (next >= total && outstanding === 0) finish();
    };
    t.pool.request({ method: 'GET', path: t.path, headers }, (err, data) => {
      if (err) return done(err);
      if (data.statusCode < 200 || data.statusCode > 299) s.non2xx++;
      data.body.on('error', done);
      data.body.on('end', () => done(null));
      data.body.resume();
    });
  }

  // Every wake-up sends all requests that are due by now (several, if this thread was late).
  const metronome = new Worker(METRONOME, { eval: true, workerData: { t0, intervalMs, total } });
  metronome.on('message', () => {
    const now = nowMs();
    while (next < total && t0 + next * intervalMs <= now) send(next++);
    if (next >= total && outstanding === 0) finish();
  });
  metronome.on('error', (err) => {
    process.stderr.write(`load.js: metronome: ${err.stack ?? err}\n`);
    process.exit(1);
  });

  let drainTimer;
  const timedOut = new Promise((r) => (drainTimer = setTimeout(r, (warmupS + durationS + drainS) * 1000 + 5)));
  return Promise.race([finished, timedOut]).then(() => {
    clearTimeout(drainTimer);
    metronome.terminate();
    // Slots never sent (the drain deadline cut the phase short) count as unfinished too.
    const unsent = targets.map(() => 0);
    for (let j = next; j < total; j++) unsent[j % K]++;
    next = total;
    return {
      rate,
      durationS,
      warmupS,
      connections,
      elapsedS: (Date.now() - started) / 1000,
      targets: targets.map((t, k) => {
        const s = stats[k];
        return {
          url: t.url,
          intended: s.intended,
          recorded: s.recorded,
          completed: s.completed,
          errors: s.errors,
          errorKinds: s.errorKinds,
          non2xx: s.non2xx,
          unfinished: s.outstanding + unsent[k],
          latencyUs: summary(s.latency),
          serviceUs: summary(s.service),
          sendLagUs: summary(s.sendLag),
          windowsP99Us: s.windows.map((h) => (h && h.totalCount > 0 ? h.getValueAtPercentile(99) : null)),
        };
      }),
    };
  });
}

async function main() {
  // Open the connections first so that connect time is not part of the first requests.
  await Promise.all(
    targets.flatMap((t) =>
      Array.from({ length: connections }, () =>
        t.pool.request({ method: 'GET', path: t.path, headers }).then(
          (r) => r.body.dump(),
          () => undefined,
        ),
      ),
    ),
  );
  const phases = [];
  for (const r of rates) {
    const ph = await phase(r);
    phases.push(ph);
    if (ph.targets.some((t) => t.unfinished > 0)) break;
  }
  process.stdout.write(JSON.stringify({ host: a.host ?? null, phases }) + '\n');
  await Promise.all(targets.map((t) => t.pool.destroy().catch(() => undefined)));
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`load.js: ${err.stack ?? err}\n`);
  process.exit(1);
});
