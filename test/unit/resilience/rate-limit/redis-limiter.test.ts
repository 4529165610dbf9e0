/**
 * The global limiter against a real redis-server on a free port (started by the test).
 */
import Redis from 'ioredis';
import t from 'tap';
import { systemClock } from '../../../../src/core/clock';
import { RedisLimiter, type GlobalOutcome } from '../../../../src/resilience/rate-limit/redis-limiter';
import { parseHostPort } from '../../../../src/resilience/rate-limit/redis-limiter';
import { startRedis } from '../../../integration/lib/redis';

const within = async (cond: () => boolean, what: string, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

// 5 per minute: nothing refills during the test.
const EMISSION = 12_000;

t.test('GCRA: capacity, then denied; the local pre-check answers without a round trip', async (t) => {
  const redis = await startRedis(t);
  const l = new RedisLimiter({ address: redis.address, timeoutMs: 1000, clock: systemClock });
  t.teardown(() => l.close());
  await within(() => l.connected, 'redis connected');
  const got: GlobalOutcome[] = [];
  for (let i = 0; i < 6; i++) got.push(await l.check('k1', EMISSION, 5 + 1));
  t.same(
    got.map((o) => (o.kind === 'ok' ? o.allowed : 'error')),
    [true, true, true, true, true, true],
    'requests + burst admitted',
  );
  t.same(
    got.map((o) => (o.kind === 'ok' ? o.remaining : -1)),
    [5, 4, 3, 2, 1, 0],
    'remaining counts down',
  );
  const trips = l.roundTrips;
  const denied = l.check('k1', EMISSION, 6);
  t.notOk(denied instanceof Promise, 'the last answer said "none left": the next is decided locally');
  t.match(denied, { kind: 'ok', local: true, allowed: false });
  t.ok((denied as { retryAfterMs: number }).retryAfterMs > 0);
  t.equal(l.roundTrips, trips, 'no round trip');
  t.equal(l.localDenials, 1);
  const other = await l.check('k2', EMISSION, 6);
  t.match(other, { kind: 'ok', allowed: true, remaining: 5 }, 'keys are independent');
  // 10^6 per second: an emission interval of 1 us must not vanish in rounding.
  const fast = await Promise.all(Array.from({ length: 3 }, () => l.check('fast', 1e-3, 2)));
  t.same(
    fast.map((o) => (o.kind === 'ok' ? o.allowed : o.reason)),
    [true, true, false],
    'a 1 us emission interval still counts (three checks in one script call see the same time)',
  );
  // 10^9 per second (the bench's "unlimited"): the key's TTL rounds up to 1 ms instead of failing.
  t.match(await l.check('huge', 1e-6, 1e9), { kind: 'ok', allowed: true });
});

t.test('a second limiter (another sidecar) shares the budget, and learns it is spent from Redis', async (t) => {
  const redis = await startRedis(t);
  const a = new RedisLimiter({ address: redis.address, timeoutMs: 1000, clock: systemClock });
  const b = new RedisLimiter({ address: redis.address, timeoutMs: 1000, clock: systemClock });
  t.teardown(() => Promise.all([a.close(), b.close()]));
  await within(() => a.connected && b.connected, 'both connected');
  let allowed = 0;
  for (let i = 0; i < 10; i++) {
    const o = await (i % 2 === 0 ? a : b).check('shared', EMISSION, 5);
    if (o.kind === 'ok' && o.allowed) allowed++;
  }
  t.equal(allowed, 5, 'exactly the limit, across both');
  const o = await b.check('shared', EMISSION, 5);
  t.match(o, { kind: 'ok', allowed: false });
});

t.test('concurrent checks share one round trip (batching)', async (t) => {
  const redis = await startRedis(t);
  const l = new RedisLimiter({ address: redis.address, timeoutMs: 2000, clock: systemClock });
  t.teardown(() => l.close());
  await within(() => l.connected, 'redis connected');
  const before = l.roundTrips;
  const outs = await Promise.all(Array.from({ length: 50 }, (_, i) => l.check(`b${i % 10}`, EMISSION, 3)));
  t.equal(l.roundTrips - before, 1, '50 checks in one event-loop turn: one EVALSHA');
  t.equal(outs.filter((o) => o.kind === 'ok' && o.allowed).length, 30, '3 per key x 10 keys');
});

t.test('NOSCRIPT (script cache flushed): falls back to EVAL and carries on', async (t) => {
  const redis = await startRedis(t);
  const l = new RedisLimiter({ address: redis.address, timeoutMs: 2000, clock: systemClock });
  const admin = new Redis(redis.port, '127.0.0.1');
  t.teardown(async () => {
    await l.close();
    admin.disconnect();
  });
  await within(() => l.connected, 'redis connected');
  t.match(await l.check('n', EMISSION, 5), { kind: 'ok', allowed: true });
  await admin.script('FLUSH');
  t.match(await l.check('n', EMISSION, 5), { kind: 'ok', allowed: true, remaining: 3 }, 'state kept, script reloaded');
  t.ok(l.scriptLoads >= 1, 'the script was loaded again');
});

t.test('Redis stalled, killed, restarted: errors within the timeout, never a throw, reconnects', async (t) => {
  const redis = await startRedis(t);
  // 250 ms: a healthy local Redis answers far sooner even on a loaded CI box (20 ms once timed out
  // the first, healthy check there), and a stalled one still shows the timeout.
  const l = new RedisLimiter({ address: redis.address, timeoutMs: 250, clock: systemClock });
  t.teardown(() => l.close());
  await within(() => l.connected, 'redis connected');
  t.match(await l.check('s', EMISSION, 100), { kind: 'ok', allowed: true });
  redis.pause();
  t.match(await l.check('s', EMISSION, 100), { kind: 'error', reason: /no answer within 250 ms/ }, 'a stalled Redis times out');
  redis.resume();
  await redis.stop();
  await within(() => !l.connected, 'the limiter to see Redis gone');
  t.match(await l.check('s', EMISSION, 100), { kind: 'error' }, 'Redis down: an error at once');
  await redis.start();
  await within(() => l.connected, 'the limiter to reconnect by itself');
  t.match(await l.check('s', EMISSION, 100), { kind: 'ok', allowed: true }, 'works again');
  t.ok(l.failures >= 2);
});

t.test('addresses', async (t) => {
  t.same(parseHostPort('127.0.0.1:6380'), { host: '127.0.0.1', port: 6380 });
  t.same(parseHostPort('[::1]:6380'), { host: '::1', port: 6380 });
  t.same(parseHostPort('redis.internal:7000'), { host: 'redis.internal', port: 7000 });
});

t.test('an unreachable Redis is logged at warn (even if never reached), reminded at most once a minute, and its return is logged', async (t) => {
  const { FakeClock } = await import('../../../../src/core/clock');
  const { Writable } = await import('node:stream');
  const pino = (await import('pino')).default;
  const lines: { level: number; msg: string; downForMs?: number }[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      for (const l of c.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  const redis = await startRedis(t);
  await redis.stop();
  const clock = new FakeClock();
  const l = new RedisLimiter({ address: redis.address, timeoutMs: 1000, clock, logger: pino({ level: 'info' }, sink) });
  t.teardown(() => l.close());
  const warns = () => lines.filter((x) => x.level === 40);
  await within(() => warns().length >= 1, 'a warning about the unreachable redis');
  t.match(warns()[0]!.msg, /rate-limit redis unreachable/);
  // ioredis retries about once a second: no flood of warnings.
  await new Promise((r) => setTimeout(r, 2500));
  t.equal(warns().length, 1, 'reconnect attempts within the minute are not logged again');
  clock.advance(61_000);
  await within(() => warns().length >= 2, 'a reminder after a minute');
  t.match(warns()[1]!.msg, /still unavailable/);
  await redis.start();
  await within(() => lines.some((x) => /reachable again/.test(x.msg)), 'the return logged');
  const back = lines.find((x) => /reachable again/.test(x.msg))!;
  t.equal(back.level, 40);
  t.ok((back.downForMs ?? 0) >= 61_000, 'says how long it was down');
});
