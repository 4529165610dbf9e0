import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { CircuitBreaker, type BreakerState } from '../../../src/resilience/breaker';
import type { RouteBreaker } from '../../../src/policy';

const cfg: RouteBreaker = { failureRateThreshold: 50, minimumCalls: 4, windowMs: 10_000, openDurationMs: 5_000, halfOpenCalls: 2 };

t.test('closed -> open on the failure rate, open -> half-open after openDuration, half-open -> closed on good trials', async (t) => {
  const clock = new FakeClock();
  const seen: string[] = [];
  const b = new CircuitBreaker(cfg, clock, (from, to) => seen.push(`${from}->${to}`));
  for (let i = 0; i < 3; i++) {
    t.ok(b.allow());
    b.record(false, 1);
  }
  t.equal(b.state(), 'closed', 'below minimumCalls nothing is judged');
  t.ok(b.allow());
  b.record(true, 1);
  t.equal(b.state(), 'open', '3 of 4 failed: 75% >= 50%');
  t.notOk(b.allow(), 'open refuses calls');
  clock.advance(4_999);
  t.notOk(b.allow(), 'still open just before openDuration');
  clock.advance(1);
  t.equal(b.state(), 'half-open');
  t.ok(b.allow(), 'trial 1');
  t.ok(b.allow(), 'trial 2');
  t.notOk(b.allow(), 'only halfOpenCalls trials');
  b.record(true, 1);
  t.equal(b.state(), 'half-open', 'one good trial is not enough');
  b.record(true, 1);
  t.equal(b.state(), 'closed');
  t.same(seen, ['closed->open', 'open->half-open', 'half-open->closed']);
  // A fresh window after closing: old failures are forgotten.
  for (let i = 0; i < 3; i++) {
    b.allow();
    b.record(true, 1);
  }
  t.equal(b.state(), 'closed');
});

t.test('a failed trial opens it again', async (t) => {
  const clock = new FakeClock();
  const b = new CircuitBreaker(cfg, clock);
  for (let i = 0; i < 4; i++) b.record(false, 1);
  t.equal(b.state(), 'open');
  clock.advance(5_000);
  t.ok(b.allow());
  b.record(false, 1);
  t.equal(b.state(), 'open', 'half-open -> open');
  t.notOk(b.allow());
  t.equal(b.transitions, 3);
});

t.test('slow calls trip it too', async (t) => {
  const clock = new FakeClock();
  const b = new CircuitBreaker({ ...cfg, failureRateThreshold: 100, slowCallRateThreshold: 50, slowCallDurationMs: 200 }, clock);
  b.record(true, 10);
  b.record(true, 10);
  b.record(true, 250);
  t.equal(b.state(), 'closed');
  b.record(true, 300);
  t.equal(b.state(), 'open', '2 of 4 slower than 200ms');
});

t.test('failures age out of the sliding window', async (t) => {
  const clock = new FakeClock();
  const b = new CircuitBreaker(cfg, clock);
  b.record(false, 1);
  b.record(false, 1);
  b.record(false, 1);
  clock.advance(11_000);
  b.record(true, 1);
  b.record(false, 1);
  b.record(true, 1);
  b.record(true, 1);
  const s: BreakerState = b.state();
  t.equal(s, 'closed', 'the three old failures left the window: 1 of 4 failed');
});

t.test('over random calls and clock steps, it opens exactly when a recount of the last window says it must (fast-check model)', async (t) => {
  const fc = (await import('fast-check')).default;
  const c: RouteBreaker = { failureRateThreshold: 40, slowCallRateThreshold: 60, slowCallDurationMs: 100, minimumCalls: 5, windowMs: 1_000, openDurationMs: 300, halfOpenCalls: 1 };
  const width = c.windowMs / 10;
  const step = fc.record({ advance: fc.integer({ min: 0, max: 450 }), ok: fc.boolean(), ms: fc.integer({ min: 0, max: 200 }) });
  fc.assert(
    fc.property(fc.array(step, { minLength: 1, maxLength: 120 }), (steps) => {
      const clock = new FakeClock();
      const b = new CircuitBreaker(c, clock);
      // The model: every call recorded while closed, with its bucket; a window is the last 10 buckets.
      let calls: { bucket: number; ok: boolean; slow: boolean }[] = [];
      for (const s of steps) {
        clock.advance(s.advance);
        const before = b.state();
        if (!b.allow()) continue;
        b.record(s.ok, s.ms);
        if (before !== 'closed') {
          // Half-open: one trial decides; a closing starts a fresh window.
          calls = [];
          continue;
        }
        const bucket = Math.floor(clock.monotonic() / width);
        calls.push({ bucket, ok: s.ok, slow: s.ms >= 100 });
        const live = calls.filter((x) => x.bucket > bucket - 10);
        const fails = live.filter((x) => !x.ok).length;
        const slows = live.filter((x) => x.slow).length;
        const mustOpen = live.length >= 5 && (fails * 100 >= 40 * live.length || slows * 100 >= 60 * live.length);
        if ((b.state() === 'open') !== mustOpen) return false;
        if (mustOpen) calls = [];
      }
      return true;
    }),
    { numRuns: 400 },
  );
  t.pass('400 runs');
});
