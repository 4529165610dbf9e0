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
