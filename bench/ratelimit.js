#!/usr/bin/env node
'use strict';
/**
 * The rate-limit layer on its own, at library level (no HTTP): how many checks per second, and how
 * many Redis round trips per request, for local and global limits. Starts its own redis-server on
 * a free port (never 6379) and stops it at the end.
 *
 *   node bench/ratelimit.js            # 3 s per scenario
 *   node bench/ratelimit.js --quick    # 1 s per scenario (smoke)
 *
 * Needs `npm run build` first (it loads dist/) and `redis-server` on PATH.
 *
 * Scenarios:
 *  - local: RateLimitLayer with one local limit keyed by a header (1,000 keys), a tight loop.
 *  - global, closed loop: C concurrent callers, each awaiting its decision then asking again;
 *    limit far above the load, so every check needs Redis. Concurrent checks share a round trip.
 *  - global, paced: a fixed offered rate (checks spread over 1 ms ticks), once under the limit and
 *    at 4x and at 40x the limit: above it, the local pre-check denies without a round trip. (A
 *    bucket starts full: in a 1 s run a limit of N/s admits about 2N.)
 */
const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const { parseArgs } = require('node:util');

const dist = path.join(__dirname, '..', 'dist', 'src');
const { RateLimitLayer } = require(path.join(dist, 'resilience', 'rate-limit'));

const { values: cli } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
const SECONDS = cli.quick ? 1 : 3;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.on('exit', stop);
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => (stop(), process.exit(130)));
  for (let i = 0; i < 200; i++) {
    const up = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => (c.destroy(), r(true)));
      c.on('error', () => r(false));
    });
    if (up) return { port, stop };
    await new Promise((r) => setTimeout(r, 25));
  }
  stop();
  throw new Error('redis-server did not start');
}

const policy = (limits, redisPort) => ({
  service: 'bench',
  failureMode: 'open',
  limits,
  ...(redisPort ? { redis: { address: `127.0.0.1:${redisPort}`, timeoutMs: 50 } } : {}),
});
const limit = (name, requests, periodMs, scope, descriptors = [{ header: 'x-api-key' }]) => ({ name, descriptors, requests, periodMs, burst: 0, scope });
const reqFor = (key) => ({ path: '/', remoteAddress: '10.0.0.1', header: (n) => (n === 'x-api-key' ? key : undefined) });

function admit(layer, req) {
  return new Promise((resolve) => layer.admit(req, () => resolve(true), () => resolve(false)));
}

async function waitConnected(layer) {
  for (let i = 0; i < 200; i++) {
    if (/meshlet_ratelimit_redis_up\{[^}]*\} 1/.test(layer.render())) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the limiter never connected to redis');
}

function local() {
  const layer = new RateLimitLayer({ service: 'bench' });
  layer.apply(policy([limit('local', 1e9, 1000, 'local')]));
  const reqs = Array.from({ length: 1000 }, (_, i) => reqFor(`k${i}`));
  let n = 0;
  let allowed = 0;
  const ok = () => allowed++;
  const no = () => undefined;
  const end = performance.now() + SECONDS * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 1000; i++) layer.admit(reqs[i], ok, no);
    n += 1000;
  }
  const secs = SECONDS;
  return { scenario: 'local, 1 limit, 1,000 keys', checksPerSec: Math.round(n / secs), usPerCheck: +((secs * 1e6) / n).toFixed(3), roundTripsPerCheck: 0, allowed };
}

async function closedLoop(redisPort, concurrency) {
  const layer = new RateLimitLayer({ service: 'bench' });
  layer.apply(policy([limit(`g${concurrency}`, 1e9, 1000, 'global')], redisPort));
  await waitConnected(layer);
  const before = layer.redisCounters();
  let n = 0;
  const end = performance.now() + SECONDS * 1000;
  const worker = async (w) => {
    let i = 0;
    while (performance.now() < end) {
      await admit(layer, reqFor(`w${w}-${i++ % 100}`));
      n++;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  const secs = (performance.now() - t0) / 1000;
  const c = layer.redisCounters();
  await layer.close();
  return {
    scenario: `global, closed loop, ${concurrency} concurrent`,
    checksPerSec: Math.round(n / secs),
    roundTripsPerCheck: +((c.roundTrips - before.roundTrips) / n).toFixed(3),
    failures: c.failures - before.failures,
  };
}

async function paced(redisPort, rate, limitPerSec) {
  const layer = new RateLimitLayer({ service: 'bench' });
  layer.apply(policy([limit(`p${rate}-${limitPerSec}`, limitPerSec, 1000, 'global', [])], redisPort));
  await waitConnected(layer);
  const before = layer.redisCounters();
  const perTick = rate / 1000;
  let sent = 0;
  let allowed = 0;
  const pending = [];
  const t0 = performance.now();
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const elapsed = performance.now() - t0;
      if (elapsed >= SECONDS * 1000) {
        clearInterval(timer);
        return resolve();
      }
      // Catch up to the offered rate (timers are coarse on a busy machine).
      const due = Math.floor((elapsed / 1000) * rate) - sent;
      for (let i = 0; i < Math.max(due, 0); i++) {
        sent++;
        pending.push(admit(layer, reqFor('one')).then((ok) => ok && allowed++));
      }
    }, 1);
  });
  await Promise.all(pending);
  const secs = (performance.now() - t0) / 1000;
  const c = layer.redisCounters();
  await layer.close();
  return {
    scenario: `global, paced ${rate}/s, limit ${limitPerSec}/s`,
    offeredPerSec: Math.round(sent / secs),
    allowedPerSec: Math.round(allowed / secs),
    roundTripsPerCheck: +((c.roundTrips - before.roundTrips) / sent).toFixed(3),
    localDenials: c.localDenials - before.localDenials,
    perTick,
  };
}

(async () => {
  const redis = await startRedis();
  const rows = [];
  try {
    rows.push(local());
    for (const c of [1, 16, 64]) rows.push(await closedLoop(redis.port, c));
    rows.push(await paced(redis.port, 2000, 1e9));
    rows.push(await paced(redis.port, 2000, 500));
    rows.push(await paced(redis.port, 2000, 50));
  } finally {
    redis.stop();
  }
  for (const r of rows) {
    const parts = Object.entries(r)
      .filter(([k]) => k !== 'scenario')
      .map(([k, v]) => `${k}=${v}`);
    console.log(`${r.scenario.padEnd(40)} ${parts.join('  ')}`);
  }
  console.log(JSON.stringify({ seconds: SECONDS, node: process.version, rows }));
})().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
