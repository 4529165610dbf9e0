/**
 * HAND-WRITTEN HOT PATH (twice per proxied request with a route timeout and a per-try timeout):
 * timeouts that are nearly always cancelled before they fire — a request's deadline, a try's
 * timeout.
 *
 * Why not a clock timer each: a node timer is a Timeout object with its async-hooks resource, a
 * closure for the callback and our Timer wrapper, inserted into and then removed from node's
 * timer lists. For the two timers of a full-chain HTTP/1.1 request that was ~340 of the ~7,000
 * bytes V8 allocated per request (`bench/cpu.js --gc`, 7,002 -> 6,665; docs/performance.md,
 * "Timeouts without a node timer each"). Here the object that times out (the deadline, the try)
 * is itself the list node: starting a timeout links it, cancelling unlinks it, and nothing is
 * allocated.
 *
 * How: one list per timeout length. Entries of one length expire in the order they started (the
 * clock only moves forward), so a list stays sorted by appending. Each non-empty list holds one
 * clock timer, armed for its head; a cancelled head leaves the timer as it is (under load the
 * list is never empty), and when it fires the list expires what is due and re-arms for its new
 * head. A list whose last entry is cancelled or expires is dropped with its timer. An entry never
 * expires before its time by `clock.monotonic()`.
 */
import type { Clock, Timer } from './clock';

/** Something that times out: a timeout's own list node (see above). */
export abstract class Expiring {
  /** @internal the list this entry waits in (null: not started, expired or cancelled) */
  tList: TimeoutList | null = null;
  /** @internal */
  tPrev: Expiring | null = null;
  /** @internal */
  tNext: Expiring | null = null;
  /** @internal when it expires, `clock.monotonic()` ms */
  tAt = 0;

  /** Called once, when the timeout passes without being cancelled. */
  abstract expire(): void;
}

class TimeoutList {
  head: Expiring | null = null;
  tail: Expiring | null = null;
  /** The clock timer armed for the head (undefined while the list expires its due entries). */
  timer: Timer | undefined = undefined;
  constructor(readonly ms: number) {}
}

export class Timeouts {
  private readonly lists = new Map<number, TimeoutList>();

  constructor(private readonly clock: Clock) {}

  /** Starts `e`'s timeout (at least 1 ms; a started one is restarted); `now`: the clock's monotonic() if the caller just read it. */
  start(e: Expiring, ms: number, now = this.clock.monotonic()): void {
    if (e.tList !== null) this.cancel(e);
    const d = ms >= 1 ? ms : 1;
    let list = this.lists.get(d);
    if (list === undefined) {
      list = new TimeoutList(d);
      this.lists.set(d, list);
      this.arm(list, d);
    }
    e.tAt = now + d;
    e.tList = list;
    e.tPrev = list.tail;
    e.tNext = null;
    if (list.tail === null) list.head = e;
    else list.tail.tNext = e;
    list.tail = e;
  }

  /**
   * Stops `e`'s timeout; nothing when it is not running. The last entry of a length takes its
   * clock timer with it: lengths that come once (a gRPC client's own `grpc-timeout`, different on
   * every call) hold nothing after their calls end.
   */
  cancel(e: Expiring): void {
    const list = e.tList;
    if (list === null) return;
    unlink(list, e);
    if (list.head === null && list.timer !== undefined) {
      list.timer.cancel();
      list.timer = undefined;
      this.lists.delete(list.ms);
    }
  }

  /** Timeouts running (for tests and diagnostics). */
  get size(): number {
    let n = 0;
    for (const list of this.lists.values()) for (let e = list.head; e !== null; e = e.tNext) n++;
    return n;
  }

  /** Clock timers held (one per timeout length with entries, or with a timer still armed). */
  get timers(): number {
    return this.lists.size;
  }

  private arm(list: TimeoutList, ms: number): void {
    list.timer = this.clock.setTimeout(() => this.fire(list), ms);
  }

  private fire(list: TimeoutList): void {
    list.timer = undefined;
    const now = this.clock.monotonic();
    for (let e = list.head; e !== null && e.tAt <= now; e = list.head) {
      unlink(list, e);
      e.expire();
    }
    const head = list.head;
    // A list is in the map exactly while its timer is armed: an empty one is dropped here.
    if (head === null) {
      this.lists.delete(list.ms);
      return;
    }
    this.arm(list, Math.max(1, Math.ceil(head.tAt - now)));
  }
}

function unlink(list: TimeoutList, e: Expiring): void {
  const prev = e.tPrev;
  const next = e.tNext;
  if (prev === null) list.head = next;
  else prev.tNext = next;
  if (next === null) list.tail = prev;
  else next.tPrev = prev;
  e.tList = null;
  e.tPrev = null;
  e.tNext = null;
}

const byClock = new WeakMap<Clock, Timeouts>();

/** The timeouts of `clock` (one set per clock: a fake clock in tests gets its own). */
export function timeoutsOf(clock: Clock): Timeouts {
  let t = byClock.get(clock);
  if (t === undefined) byClock.set(clock, (t = new Timeouts(clock)));
  return t;
}
