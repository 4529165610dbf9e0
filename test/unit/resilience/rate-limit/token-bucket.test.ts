import t from 'tap';
import { FakeClock } from '../../../../src/core/clock';
import { TokenBuckets } from '../../../../src/resilience/rate-limit/token-bucket';

t.test('capacity is requests + burst, refilled continuously at requests/period', async (t) => {
  const clock = new FakeClock();
  const b = new TokenBuckets({ requests: 10, periodMs: 1000, burst: 5 }, clock);
  const first = b.take('k');
  t.same(first, { allowed: true, remaining: 14, retryAfterMs: 0, resetMs: 100 });
  for (let i = 0; i < 14; i++) t.ok(b.take('k').allowed, `token ${i + 2} of 15`);
  const denied = b.take('k');
  t.notOk(denied.allowed, 'the 16th is denied');
  t.equal(denied.remaining, 0);
  t.equal(denied.retryAfterMs, 100, 'one token every 100 ms');
  t.equal(denied.resetMs, 1500, 'full again after 15 tokens x 100 ms');
  clock.advance(99);
  t.notOk(b.take('k').allowed, 'not yet after 99 ms');
  clock.advance(1);
  t.ok(b.take('k').allowed, 'one token back after 100 ms');
  t.notOk(b.take('k').allowed, 'and only one');
  clock.advance(10_000);
  let n = 0;
  while (b.take('k').allowed) n++;
  t.equal(n, 15, 'a long idle refills to capacity, never more');
});

t.test('keys are independent', async (t) => {
  const clock = new FakeClock();
  const b = new TokenBuckets({ requests: 1, periodMs: 1000, burst: 0 }, clock);
  t.ok(b.take('a').allowed);
  t.notOk(b.take('a').allowed);
  t.ok(b.take('b').allowed, 'b has its own bucket');
  t.equal(b.size, 2);
});

t.test('bounded keys: a full table evicts only refilled buckets, otherwise uses the counted overflow bucket', async (t) => {
  const clock = new FakeClock();
  const b = new TokenBuckets({ requests: 2, periodMs: 1000, burst: 0 }, clock, 2);
  t.ok(b.take('a').allowed);
  t.ok(b.take('b').allowed);
  t.ok(b.take('c').allowed, 'c is admitted (by the overflow bucket)');
  t.equal(b.overflowed, 1, 'counted as overflow');
  t.equal(b.size, 2, 'the table did not grow');
  t.notOk(b.take('a').allowed && b.take('a').allowed, 'a kept its depleted state: not forgotten');
  clock.advance(1000);
  // b (least recently used) has refilled: forgetting it loses nothing.
  t.ok(b.take('d').allowed);
  t.equal(b.evicted, 1, 'a refilled bucket was evicted');
  t.equal(b.size, 2);
  t.equal(b.overflowed, 1);
});

t.test('bad specs are refused', async (t) => {
  const clock = new FakeClock();
  t.throws(() => new TokenBuckets({ requests: 0, periodMs: 1000, burst: 0 }, clock), /requests > 0/);
  t.throws(() => new TokenBuckets({ requests: 1, periodMs: 1000, burst: 0 }, clock, 0), /maxKeys/);
});
