/**
 * Timeouts (src/core/timeouts.ts): one clock timer per timeout length, the entries themselves the
 * list. On a FakeClock (exact) and on the system clock (never early by performance.now()).
 */
import t from 'tap';
import { FakeClock, systemClock, type Clock } from '../../../src/core/clock';
import { Expiring, Timeouts, timeoutsOf } from '../../../src/core/timeouts';

class Entry extends Expiring {
  firedAt: number[] = [];
  constructor(
    readonly name: string,
    private readonly log: string[],
    private readonly now: () => number,
    private readonly onExpire?: () => void,
  ) {
    super();
  }
  expire(): void {
    this.firedAt.push(this.now());
    this.log.push(this.name);
    this.onExpire?.();
  }
}

/** A fake clock that counts the clock timers armed and cancelled through it. */
function countingClock(): { fake: FakeClock; clock: Clock; counts: { armed: number; cancelled: number } } {
  const fake = new FakeClock();
  const counts = { armed: 0, cancelled: 0 };
  const clock: Clock = {
    now: () => fake.now(),
    monotonic: () => fake.monotonic(),
    setTimeout(fn: () => void, ms: number) {
      counts.armed++;
      const timer = fake.setTimeout(fn, ms);
      return { cancel: () => (counts.cancelled++, timer.cancel()) };
    },
  };
  return { fake, clock, counts };
}

t.test('entries expire at their own time, in order, once each; cancelled ones never', async (t) => {
  const clock = new FakeClock();
  const q = new Timeouts(clock);
  const log: string[] = [];
  const now = (): number => clock.monotonic();
  const t0 = clock.monotonic();
  const a = new Entry('a', log, now);
  const b = new Entry('b', log, now);
  const c = new Entry('c', log, now);
  const d = new Entry('d', log, now);
  q.start(a, 100);
  clock.advance(10);
  q.start(b, 100);
  clock.advance(10);
  q.start(c, 100);
  q.start(d, 50);
  t.equal(q.size, 4);
  t.equal(q.timers, 2, 'one clock timer per length');
  q.cancel(a); // the head: its list's timer stays armed for its time
  clock.advance(49); // t0 + 69
  t.same(log, [], 'nothing fires early');
  clock.advance(1); // t0 + 70: d's time (started at t0 + 20, 50 ms)
  t.same(log, ['d'], 'the shorter length fires on its own timer');
  t.same(d.firedAt, [t0 + 70]);
  clock.advance(30); // t0 + 100: a's time, but a was cancelled
  t.same(log, ['d'], 'a cancelled head does not fire; its timer finds b not due yet');
  clock.advance(9);
  t.same(log, ['d']);
  clock.advance(1); // t0 + 110: b is due (re-armed after the cancelled head)
  t.same(log, ['d', 'b']);
  t.same(b.firedAt, [t0 + 110], 'exactly at its time, not at the cancelled head\'s');
  clock.advance(10);
  t.same(log, ['d', 'b', 'c']);
  t.same(c.firedAt, [t0 + 120]);
  clock.advance(1000);
  t.same(log, ['d', 'b', 'c'], 'each once');
  t.equal(q.size, 0);
  t.equal(q.timers, 0, 'an empty length holds no clock timer');
});

t.test('cancel in the middle and at the tail; restart moves an entry; cancelling twice is harmless', async (t) => {
  const clock = new FakeClock();
  const q = new Timeouts(clock);
  const log: string[] = [];
  const now = (): number => clock.monotonic();
  const es = ['a', 'b', 'c', 'd'].map((n) => new Entry(n, log, now));
  for (const e of es) q.start(e, 100);
  q.cancel(es[1]!);
  q.cancel(es[3]!);
  q.cancel(es[3]!);
  clock.advance(50);
  q.start(es[0]!, 100); // restarted: now due at +150
  t.equal(q.size, 2);
  clock.advance(50);
  t.same(log, ['c']);
  clock.advance(50);
  t.same(log, ['c', 'a']);
  t.equal(q.size, 0);
  // A cancelled entry can start again.
  q.start(es[1]!, 10);
  clock.advance(10);
  t.same(log, ['c', 'a', 'b']);
});

t.test('an expiry that starts new timeouts of the same length: they wait their full time', async (t) => {
  const clock = new FakeClock();
  const q = new Timeouts(clock);
  const log: string[] = [];
  const now = (): number => clock.monotonic();
  let chained = 0;
  const chain: Entry = new Entry('chain', log, now, () => {
    if (++chained < 3) q.start(chain, 100);
  });
  const other = new Entry('other', log, now);
  const t0 = clock.monotonic();
  q.start(chain, 100);
  q.start(other, 100);
  clock.advance(100);
  t.same(log, ['chain', 'other'], 'both due ones expire in the same firing');
  clock.advance(99);
  t.same(log, ['chain', 'other']);
  clock.advance(1000);
  t.same(chain.firedAt, [t0 + 100, t0 + 200, t0 + 300]);
  t.equal(q.timers, 0);
});

t.test('under 1 ms counts as 1 ms; a fractional length is its own list', async (t) => {
  const clock = new FakeClock();
  const q = new Timeouts(clock);
  const log: string[] = [];
  const now = (): number => clock.monotonic();
  const z = new Entry('zero', log, now);
  const f = new Entry('frac', log, now);
  q.start(z, 0);
  q.start(f, 1.5);
  clock.advance(0);
  t.same(log, []);
  clock.advance(1);
  t.same(log, ['zero']);
  clock.advance(0.5);
  t.same(log, ['zero', 'frac']);
});

t.test('lengths whose entries are all cancelled: 16 stay idle until their timers fire, the rest drop their clock timer at once (a gRPC client\'s own timeouts differ on every call)', async (t) => {
  const { fake, clock, counts } = countingClock();
  const q = new Timeouts(clock);
  const log: string[] = [];
  const now = (): number => fake.monotonic();
  for (let i = 0; i < 1000; i++) {
    const e = new Entry(`call${i}`, log, now);
    q.start(e, 30_000 - i);
    fake.advance(1);
    q.cancel(e);
  }
  t.equal(q.timers, 16, 'the first 16 emptied lists stay idle, no more');
  t.equal(counts.armed - counts.cancelled, 16, 'every other clock timer was cancelled with its last entry');
  fake.advance(30_000);
  t.equal(q.timers, 0, 'the idle ones are dropped when their timers fire');
  t.same(log, [], 'and nothing expired');
  // Under load a length's list never empties: one timer serves every entry.
  counts.armed = 0;
  const live: Entry[] = [];
  for (let i = 0; i < 1000; i++) {
    const e = new Entry(`r${i}`, log, now);
    q.start(e, 5000);
    live.push(e);
    if (live.length > 8) q.cancel(live.shift()!);
    fake.advance(1);
  }
  t.equal(counts.armed, 1, 'one clock timer for 1,000 overlapping entries of one length');
  t.same(log, []);
});

t.test('one entry at a time (a steady rate below saturation): the length keeps its list and its one clock timer', async (t) => {
  const { fake, clock, counts } = countingClock();
  const q = new Timeouts(clock);
  const log: string[] = [];
  const now = (): number => fake.monotonic();
  const t0 = fake.monotonic();
  for (let i = 0; i < 1000; i++) {
    const e = new Entry(`r${i}`, log, now);
    q.start(e, 2000);
    fake.advance(1);
    q.cancel(e);
  }
  t.equal(counts.armed, 1, 'one clock timer for 1,000 requests that never overlap');
  t.equal(q.timers, 1);
  // The list's timer fires at t0 + 2000 with the list empty: dropped; nothing expired.
  fake.advance(1000);
  t.equal(q.timers, 0, 'dropped once its timer fires with no entry');
  t.same(log, []);
  // An idle list that gets an entry again waits for it as usual.
  const a = new Entry('a', log, now);
  q.start(a, 50);
  q.cancel(a);
  fake.advance(10);
  const b = new Entry('b', log, now);
  q.start(b, 50); // due at +60 from a's start; the list's timer was armed for a's +50
  fake.advance(45); // past the idle timer's time (+50): it found b not due and re-armed
  t.same(log, [], 'not at the idle timer\'s time');
  fake.advance(5);
  t.same(log, ['b']);
  t.same(b.firedAt, [t0 + 1000 + 1000 + 60]);
  fake.advance(100);
  t.equal(q.timers, 0);
});

t.test('timeoutsOf: one set per clock', async (t) => {
  const a = new FakeClock();
  const b = new FakeClock();
  t.equal(timeoutsOf(a), timeoutsOf(a));
  t.not(timeoutsOf(a), timeoutsOf(b));
});

t.test('on the system clock: never before its time by performance.now()', async (t) => {
  const q = new Timeouts(systemClock);
  const log: string[] = [];
  const now = (): number => performance.now();
  const entries: { e: Entry; at: number }[] = [];
  for (let i = 0; i < 5; i++) {
    const e = new Entry(`e${i}`, log, now);
    // Read before start: the entry's own time is this or later.
    const at = performance.now() + 30;
    q.start(e, 30);
    entries.push({ e, at });
    // Busy a few ms between starts, as a loaded loop would be.
    const until = performance.now() + 3;
    while (performance.now() < until);
  }
  q.cancel(entries[0]!.e);
  // The clock's timers are unref'd: keep the process alive while waiting, as long as a loaded
  // machine needs (the assertion is on order and earliness, not on how late).
  const giveUp = performance.now() + 5_000;
  while (log.length < 4 && performance.now() < giveUp) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  t.same(log, ['e1', 'e2', 'e3', 'e4'], 'the four running ones, in order; the cancelled one never');
  for (const { e, at } of entries.slice(1)) t.ok(e.firedAt[0]! >= at, `${e.name} fired at or after its time`);
  t.equal(q.timers, 0);
});
