/**
 * Time, injectable. Everything time-based (token buckets, breakers, ejection, backoff, grace
 * periods) takes a Clock so its tests can run on a fake one instead of sleeping.
 */
// node's global `performance` is a lazy accessor (a getter call on every read): the module's own object is not.
import { performance } from 'node:perf_hooks';

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch (wall clock), for timestamps shown to people. */
  now(): number;
  /** Monotonic milliseconds with sub-millisecond precision, for measuring intervals. */
  monotonic(): number;
  setTimeout(fn: () => void, ms: number): Timer;
}

/** A node timer as a Timer: one object per timer (a `{ cancel: () => ... }` was an object and a closure; two timers a request). */
class SystemTimer implements Timer {
  constructor(private readonly t: NodeJS.Timeout) {}
  cancel(): void {
    clearTimeout(this.t);
  }
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return new SystemTimer(t);
  },
};

/** A clock that only moves when told to. Timers fire, in order, as `advance` passes them. */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: { at: number; seq: number; fn: () => void; cancelled: boolean }[] = [];

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  monotonic(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const entry = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.timers.push(entry);
    return { cancel: () => void (entry.cancelled = true) };
  }

  advance(ms: number): void {
    const target = this.t + ms;
    for (;;) {
      const due = this.timers
        .filter((x) => !x.cancelled && x.at <= target)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.t = due.at;
      due.cancelled = true;
      due.fn();
    }
    this.timers = this.timers.filter((x) => !x.cancelled);
    this.t = target;
  }
}
