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
 * head. A list whose last entry expires is dropped with its timer. A list whose last entry is
 * cancelled stays, idle, with its timer armed, and is dropped when that timer fires with the list
 * still empty: at a steady rate below saturation one request often ends before the next starts,
 * and dropping the list at once made every request create a list, a clock timer and a Map entry
 * and delete them again. That churn, through the Map's replaced hash tables (V8 keeps each old
 * table, and what it held, alive until the next mark-compact once one is old), promoted 136 of
 * the 260 bytes a request that survived the scavenges at 5,000 req/s on the full chain
 * (bench/lib/alloc-sample.js, MESHLET_ALLOC_MINOR=0, `bench/cpu.js --paths h1 --openloop 5000`),
 * and with them came a mark-compact every ~10 s. At most IDLE_MAX lists stay idle; past that an
 * emptied list is dropped at once, so lengths that come once (a gRPC client's own `grpc-timeout`,
 * different on every call) hold nothing after their calls end. An entry never expires before its
 * time by `clock.monotonic()`.
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

/** Emptied lists kept with their timer armed, for the next entry of the same length (see above). */
const IDLE_MAX = 16;

class TimeoutList {
  head: Expiring | null = null;
  tail: Expiring | null = null;
  /** The clock timer armed for the head (undefined while the list expires its due entries). */
  timer: Timer | undefined = undefined;
  /** Emptied by a cancel and kept, its timer armed (counted in `Timeouts.idle`). */
  idle = false;
  constructor(readonly ms: number) {}
}

export class Timeouts {
  private readonly lists = new Map<number, TimeoutList>();
  /** Lists in `lists` with no entry, waiting for their timer (at most IDLE_MAX). */
  private idle = 0;

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
    } else if (list.idle) {
      list.idle = false;
      this.idle--;
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
   * Stops `e`'s timeout; nothing when it is not running. The last entry of a length leaves its
   * list idle with its clock timer armed, or, when IDLE_MAX lists are idle already, takes the list
   * and its timer with it (see above).
   */
  cancel(e: Expiring): void {
    const list = e.tList;
    if (list === null) return;
    unlink(list, e);
    if (list.head === null && list.timer !== undefined) {
      if (this.idle < IDLE_MAX) {
        list.idle = true;
        this.idle++;
        return;
      }
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

  /** Clock timers held (one per timeout length with entries, or idle with its timer armed). */
  get timers(): number {
    return this.lists.size;
  }

  private arm(list: TimeoutList, ms: number): void {
    list.timer = this.clock.setTimeout(() => this.fire(list), ms);
  }

  private fire(list: TimeoutList): void {
    list.timer = undefined;
    if (list.idle) {
      // Idle since its last entry was cancelled, and no entry came back: dropped.
      list.idle = false;
      this.idle--;
      this.lists.delete(list.ms);
      return;
    }
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
