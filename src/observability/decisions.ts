/**
 * Recent decisions (`meshlet explain --last REQUEST_ID`): a short, bounded ring of what the sidecar
 * actually did with its last requests, kept in memory and served on the admin port
 * (`GET /decisions?id=`), which the control plane fans in.
 *
 * One slot a request, claimed by the front when the request arrives (sidecar/proxy.ts) and filled
 * by the layers that decide: the route and backend (the front), each try's endpoint and outcome
 * (pick.ts), the rate-limit buckets counted (rate-limit.ts), and at the end the status, flags,
 * tries, timeouts and durations (observe.ts, or the front adapter for an answer no observe layer
 * saw). Recording is field writes into a slot made once (by the first request to claim it) and
 * references to strings the request path made anyway: no string is built, nothing is allocated
 * per request once every slot exists, and the clock is read only per try (the request's own start
 * and end are the observe layer's reads). Formatting
 * happens only when someone asks (`toJSON`).
 *
 * The request's own strings (its id, authority and path) are copied into the slot's bytes, not
 * referenced: a reference kept them alive for `size` requests (~200 ms at 5k req/s), so every
 * scavenge copied the last ring's worth of them and promoted many, which then cost mark-compacts
 * (measured: ~12 of the ~17 KB promoted per scavenge, and a third of each scavenge's pause, at
 * 5k req/s). A string longer than the slot's bytes, or with a character above U+00FF, is kept as
 * a reference.
 *
 * A slot is reused `size` requests later. A request still in flight when its slot is taken again
 * (more than `size` requests started meanwhile) stops being recorded: every write checks the
 * sequence number the request was given.
 */
import type { Clock } from '../core/clock';

/** What a decision reads from the request's MeshCall (src/core/layer.ts; structural, so no import cycle). */
export interface DecidedCall {
  readonly direction: 'inbound' | 'outbound';
  readonly kind: string;
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  readonly grpcStatus: number;
  readonly rule: { statName: string; routeName: string; ruleName: string; timeoutMs?: number; retries?: { attempts: number; perTryTimeoutMs?: number; retryOn?: readonly string[] } } | undefined;
  readonly backend: { service: string; subset?: string } | undefined;
  readonly destination: string;
  readonly deadline: number;
  readonly tries: number;
  readonly target: { key: string } | undefined;
  readonly peer: { toString(): string } | undefined;
  readonly obs: { readonly requestId: string; readonly route: { readonly source: string }; readonly t0: number; readonly t1: number } | undefined;
  decision: Decision | undefined;
  decisionSeq: number;
  header(name: string): string | undefined;
}

/** Tries recorded per request (a retry policy allows at most 10 attempts; resends add two). */
export const MAX_TRIES = 12;
/** Rate-limit buckets recorded per request. */
const MAX_LIMITS = 8;
/** Requests remembered by default. */
export const DEFAULT_DECISIONS = 1024;
/** Bytes per slot for the request's id, authority and path (one byte a character); a string that does not fit is kept as a reference. */
export const TEXT_BYTES = 192;
/** Slots whose bytes are allocated together. */
const TEXT_BLOCK = 256;

export type LimitOutcome = 'allowed' | 'limited' | 'failed-open' | 'failed-closed';


/** One request's slot; also the rate-limit layer's `LimitRecorder` (src/resilience/rate-limit/layer.ts). */
export class Decision {
  /** Which request holds the slot (0: never used). */
  seq = 0;
  done = false;
  call: DecidedCall | undefined = undefined;
  direction: 'inbound' | 'outbound' = 'outbound';
  method = '';
  kind = '';
  route = '';
  routeName = '';
  ruleName = '';
  service = '';
  subset: string | undefined = undefined;
  destination = '';
  source: string | undefined = undefined;
  peer: { toString(): string } | undefined = undefined;
  timeoutMs = 0;
  perTryTimeoutMs = 0;
  attempts = 0;
  retryOn: readonly string[] | undefined = undefined;
  /** The call's deadline, ms after it started (0: none): the route timeout or a shorter grpc-timeout. */
  deadlineMs = 0;
  /** Monotonic ms: the observe layer's own reads (0 until the request ends; see `finish`). */
  startMono = 0;
  endMono = 0;
  /** Whether the observe layer timed the request (false for answers given before it). */
  timed = false;
  status = 0;
  flags: string | undefined = undefined;
  grpcStatus = -1;
  /** The tries the retry layer counted (also resends of a request the upstream never saw). */
  tries = 0;
  upstream: string | undefined = undefined;
  /** Tries with a picked endpoint (outbound): endpoint, status (0: none), error or flag, times. */
  nTries = 0;
  readonly tryEndpoint: string[] = new Array<string>(MAX_TRIES).fill('');
  readonly tryStatus = new Int32Array(MAX_TRIES);
  readonly tryError: (string | undefined)[] = new Array<string | undefined>(MAX_TRIES).fill(undefined);
  readonly tryStart = new Float64Array(MAX_TRIES);
  readonly tryEnd = new Float64Array(MAX_TRIES);
  nLimits = 0;
  readonly limitName: string[] = new Array<string>(MAX_LIMITS).fill('');
  readonly limitKey: string[] = new Array<string>(MAX_LIMITS).fill('');
  readonly limitOutcome: LimitOutcome[] = new Array<LimitOutcome>(MAX_LIMITS).fill('allowed');

  /** Bytes used in `text`; the id, authority and path: [start, end) in `text`, or -1 with the string in `refs`. */
  private textUsed = 0;
  private readonly at = new Int16Array(6);
  private readonly refs: [string, string, string] = ['', '', ''];

  /** `text`: this slot's bytes (TEXT_BYTES; a view of one of the ring's blocks). */
  constructor(
    private readonly clock: Clock,
    private readonly text: Buffer,
  ) {}

  get requestId(): string {
    return this.str(0);
  }
  get authority(): string {
    return this.str(1);
  }
  get path(): string {
    return this.str(2);
  }

  private str(i: number): string {
    const a = this.at[2 * i] as number;
    return a < 0 ? this.refs[i] as string : this.text.toString('latin1', a, this.at[2 * i + 1]);
  }

  /**
   * Copies `s` into the slot's bytes when it fits, one byte a character, else keeps it. Written
   * here rather than by Buffer#write: three native calls a request cost ~2,600 instructions
   * (callgrind, bench/decisions.js), this loop a few per character. Header values arrive as
   * latin1 strings from both parsers, so every character fits a byte; a string with one that
   * does not is kept as it is.
   */
  private keep(i: number, s: string): void {
    const text = this.text;
    const p = this.textUsed;
    const n = s.length;
    if (p + n <= text.length) {
      let j = 0;
      for (; j < n; j++) {
        const c = s.charCodeAt(j);
        if (c > 0xff) break;
        text[p + j] = c;
      }
      if (j === n) {
        this.at[2 * i] = p;
        this.at[2 * i + 1] = this.textUsed = p + n;
        return;
      }
    }
    this.at[2 * i] = -1;
    this.refs[i] = s;
  }

  /** Forgets the last request's strings (a slot taken again). */
  clearText(): void {
    const at = this.at;
    // A kept string is let go (one the slot's bytes hold needs nothing).
    if ((at[0] as number) < 0 || (at[2] as number) < 0 || (at[4] as number) < 0) this.refs[0] = this.refs[1] = this.refs[2] = '';
    this.textUsed = 0;
    at[0] = at[1] = at[2] = at[3] = at[4] = at[5] = 0;
  }

  /** A try starts at an endpoint; its index, or -1 when not recorded. */
  tryBegin(seq: number, endpoint: string): number {
    if (seq !== this.seq || this.nTries >= MAX_TRIES) return -1;
    const i = this.nTries++;
    this.tryEndpoint[i] = endpoint;
    this.tryStatus[i] = 0;
    this.tryError[i] = undefined;
    this.tryStart[i] = this.clock.monotonic();
    this.tryEnd[i] = 0;
    return i;
  }

  /** A try's response status (its end is recorded by `tryEnd`). */
  tryResponse(seq: number, i: number, status: number): void {
    if (seq !== this.seq || i < 0) return;
    this.tryStatus[i] = status;
  }

  /** A try ends: `error` is the failure's code or flag, when it failed. */
  tryDone(seq: number, i: number, error: string | undefined): void {
    if (seq !== this.seq || i < 0 || this.tryEnd[i] !== 0) return;
    if (error !== undefined && this.tryError[i] === undefined) this.tryError[i] = error;
    this.tryEnd[i] = this.clock.monotonic();
  }

  limit(seq: number, name: string, key: string, outcome: LimitOutcome): void {
    if (seq !== this.seq || this.nLimits >= MAX_LIMITS) return;
    const i = this.nLimits++;
    this.limitName[i] = name;
    this.limitKey[i] = key;
    this.limitOutcome[i] = outcome;
  }

  /**
   * The request ended with this status and these flags. What the call knows (rule, backend,
   * tries, deadline, caller) is read from it now; the call itself is not kept.
   */
  finish(seq: number, status: number, flags: string | undefined, requestId: string | undefined, grpcStatus = -1): void {
    if (seq !== this.seq || this.done) return;
    const c = this.call as DecidedCall;
    this.done = true;
    this.call = undefined;
    // The observe layer read the clock when the request began and ended: its reads are reused.
    // A request it never saw (no route, rate limited, ...) is timed from its claim.
    const obs = c.obs;
    if (obs && obs.t1 > 0) {
      this.startMono = obs.t0;
      this.endMono = obs.t1;
      this.timed = true;
    } else {
      // Answered before the observe layer (no route, rate limited, a fault...): not timed.
      this.endMono = this.startMono = this.clock.monotonic();
      this.timed = false;
    }
    this.status = status;
    this.flags = flags || undefined;
    this.grpcStatus = c.grpcStatus >= 0 ? c.grpcStatus : grpcStatus;
    this.keep(0, requestId || c.header('x-request-id') || '');
    this.kind = c.kind;
    this.keep(1, c.authority);
    this.keep(2, c.path);
    const rule = c.rule;
    if (rule) {
      this.route = rule.statName;
      this.routeName = rule.routeName;
      this.ruleName = rule.ruleName;
      this.timeoutMs = rule.timeoutMs ?? 0;
      const r = rule.retries;
      this.attempts = r?.attempts ?? 0;
      this.perTryTimeoutMs = r?.perTryTimeoutMs ?? 0;
      this.retryOn = r?.retryOn;
    }
    const b = c.backend;
    if (b) {
      this.service = b.service;
      this.subset = b.subset;
    }
    this.destination = c.destination;
    this.deadlineMs = c.deadline > 0 ? c.deadline - this.startMono : 0;
    this.tries = c.tries;
    this.upstream = c.target?.key;
    this.peer = c.peer;
    if (obs && c.direction === 'inbound') this.source = obs.route.source;
  }

  /** The record as JSON (admin port only): times in ms, the wall-clock start from the monotonic one. */
  toJSON(sidecar: string, service: string): DecisionRecord {
    const now = this.clock.monotonic();
    const wall = this.clock.now();
    const ms = (x: number): number => Math.round(x * 1000) / 1000;
    // In flight: the observe layer's start, once it began.
    const start = this.done ? this.startMono : (this.call?.obs?.t0 ?? now);
    const tries: DecisionRecord['tries'] = [];
    for (let i = 0; i < this.nTries; i++) {
      const end = this.tryEnd[i] as number;
      tries.push({
        endpoint: this.tryEndpoint[i] as string,
        ...(this.tryStatus[i] ? { status: this.tryStatus[i] } : {}),
        ...(this.tryError[i] !== undefined ? { error: this.tryError[i] } : {}),
        startMs: ms((this.tryStart[i] as number) - start),
        ...(end ? { durationMs: ms(end - (this.tryStart[i] as number)) } : {}),
      });
    }
    const limits: DecisionRecord['rateLimits'] = [];
    for (let i = 0; i < this.nLimits; i++) limits.push({ limit: this.limitName[i] as string, bucket: this.limitKey[i] as string, outcome: this.limitOutcome[i] as LimitOutcome });
    return {
      sidecar,
      service,
      requestId: this.requestId,
      direction: this.direction,
      time: new Date(wall - (now - start)).toISOString(),
      start: ms(wall - (now - start)),
      kind: this.kind,
      method: this.method,
      authority: this.authority,
      path: this.path,
      ...(this.source ? { source: this.source } : {}),
      ...(this.peer ? { peer: this.peer.toString() } : {}),
      ...(this.route ? { route: this.route, routeName: this.routeName, rule: this.ruleName } : {}),
      ...(this.service ? { backend: { service: this.service, ...(this.subset ? { subset: this.subset } : {}) } } : {}),
      ...(this.destination ? { destination: this.destination } : {}),
      ...(this.timeoutMs ? { timeoutMs: this.timeoutMs } : {}),
      ...(this.deadlineMs ? { deadlineMs: ms(this.deadlineMs) } : {}),
      ...(this.attempts || this.perTryTimeoutMs ? { retryPolicy: { attempts: this.attempts, ...(this.perTryTimeoutMs ? { perTryTimeoutMs: this.perTryTimeoutMs } : {}), retryOn: [...(this.retryOn ?? [])] } } : {}),
      tries,
      triesSent: this.tries,
      ...(this.upstream ? { upstream: this.upstream } : {}),
      rateLimits: limits,
      ...(this.done
        ? { status: this.status, ...(this.flags ? { flags: this.flags } : {}), ...(this.grpcStatus >= 0 ? { grpcStatus: this.grpcStatus } : {}), ...(this.timed ? { durationMs: ms(this.endMono - this.startMono) } : {}) }
        : { inFlight: true, durationMs: ms(now - start) }),
    };
  }
}

/** One recorded request as the admin port serves it. */
export interface DecisionRecord {
  sidecar: string;
  service: string;
  requestId: string;
  direction: 'inbound' | 'outbound';
  /** When the request arrived (ISO 8601), and as ms since the epoch (sub-ms: the order of hops). */
  time: string;
  start: number;
  kind: string;
  method: string;
  authority: string;
  path: string;
  /** Inbound: the calling service, when it is a known one. */
  source?: string;
  /** Inbound: the caller's identity proven by its TLS certificate. */
  peer?: string;
  route?: string;
  routeName?: string;
  rule?: string;
  backend?: { service: string; subset?: string };
  destination?: string;
  timeoutMs?: number;
  deadlineMs?: number;
  retryPolicy?: { attempts: number; perTryTimeoutMs?: number; retryOn: string[] };
  tries: { endpoint: string; status?: number; error?: string; startMs: number; durationMs?: number }[];
  triesSent: number;
  upstream?: string;
  rateLimits: { limit: string; bucket: string; outcome: LimitOutcome }[];
  status?: number;
  flags?: string;
  grpcStatus?: number;
  /** Absent for a request answered before the observe layer timed it. */
  durationMs?: number;
  inFlight?: boolean;
}

export class DecisionRing {
  /**
   * Made as the first `size` requests claim them (in order), then reused: ~1.7 KB a slot, which a
   * sidecar that has served a few requests should not carry for all 1,024.
   */
  private readonly slots: Decision[] = [];
  private next = 0;
  private seq = 0;
  /**
   * The slots' bytes (TEXT_BYTES each), outside the JavaScript heap, allocated a block of
   * TEXT_BLOCK slots at a time as slots are made (a large `--recent-requests` costs memory only
   * as requests fill it, as the slots themselves do).
   */
  private block: Buffer | undefined;

  constructor(
    readonly size: number,
    private readonly clock: Clock,
  ) {
    if (!(Number.isInteger(size) && size > 0)) throw new RangeError(`the decision ring needs a positive size, got ${size}`);
  }

  /** Claims the next slot for a request arriving now; sets `call.decision` and `call.decisionSeq`. */
  claim(call: DecidedCall): void {
    if (this.next === this.slots.length) {
      const j = this.slots.length % TEXT_BLOCK;
      if (j === 0) this.block = Buffer.allocUnsafeSlow(Math.min(TEXT_BLOCK, this.size - this.slots.length) * TEXT_BYTES);
      this.slots.push(new Decision(this.clock, (this.block as Buffer).subarray(j * TEXT_BYTES, (j + 1) * TEXT_BYTES)));
    }
    const d = this.slots[this.next] as Decision;
    this.next = this.next + 1 === this.size ? 0 : this.next + 1;
    const seq = ++this.seq;
    d.seq = seq;
    d.done = false;
    d.call = call;
    d.direction = call.direction;
    d.method = call.method;
    d.clearText();
    d.route = '';
    d.routeName = '';
    d.ruleName = '';
    d.service = '';
    d.subset = undefined;
    d.destination = '';
    d.source = undefined;
    d.peer = undefined;
    d.timeoutMs = 0;
    d.perTryTimeoutMs = 0;
    d.attempts = 0;
    d.retryOn = undefined;
    d.nTries = 0;
    d.nLimits = 0;
    d.upstream = undefined;
    d.startMono = 0;
    d.timed = false;
    call.decision = d;
    call.decisionSeq = seq;
  }

  /** The requests recorded with this id (several when one id crossed this sidecar more than once), oldest first. */
  find(requestId: string): Decision[] {
    const out: Decision[] = [];
    for (let k = 0; k < this.size; k++) {
      const d = this.slots[(this.next + k) % this.size];
      if (d === undefined || d.seq === 0) continue;
      const id = d.done ? d.requestId : (d.call?.obs?.requestId ?? d.call?.header('x-request-id'));
      if (id === requestId) out.push(d);
    }
    return out;
  }

  /** The last `n` requests recorded, newest first (to find an id). */
  recent(n: number): Decision[] {
    const out: Decision[] = [];
    for (let k = 1; k <= this.size && out.length < n; k++) {
      const d = this.slots[(this.next - k + this.size) % this.size];
      if (d !== undefined && d.seq !== 0) out.push(d);
    }
    return out;
  }
}

/** What `orderHops` reads of a record (the control plane gets them as JSON from the sidecars). */
export interface HopRecord {
  sidecar: string;
  service: string;
  direction: string;
  start: number;
  source?: string;
  destination?: string;
  backend?: { service: string };
}

/**
 * The hops of one request in the order it travelled. Each sidecar's own records are exactly
 * ordered (one monotonic clock), but `start` compared across sidecars is only as good as each
 * process's wall clock, which Date.now() gives to the millisecond: hops a fraction of a
 * millisecond apart can come out reversed. So records are merged sidecar by sidecar, oldest
 * first, and a callee's inbound record waits for the caller's outbound record it answers (the
 * n-th inbound at D from S follows the n-th outbound from S to D). When nothing is ready (a
 * caller that kept no record, say), the oldest record goes next.
 */
export function orderHops<T extends HopRecord>(records: readonly T[]): T[] {
  const queues = new Map<string, T[]>();
  for (const r of [...records].sort((a, b) => a.start - b.start)) {
    const q = queues.get(r.sidecar);
    if (q) q.push(r);
    else queues.set(r.sidecar, [r]);
  }
  const to = (r: T): string => r.backend?.service ?? r.destination ?? '';
  const pair = (from: string, dest: string): string => `${from}\u0000${dest}`;
  const outTotal = new Map<string, number>();
  for (const r of records) if (r.direction === 'outbound') outTotal.set(pair(r.service, to(r)), (outTotal.get(pair(r.service, to(r))) ?? 0) + 1);
  const outSeen = new Map<string, number>();
  const inSeen = new Map<string, number>();
  const ready = (r: T): boolean => {
    if (r.direction !== 'inbound' || r.source === undefined) return true;
    const k = pair(r.source, r.service);
    if (!outTotal.get(k)) return true;
    return (outSeen.get(k) ?? 0) > (inSeen.get(k) ?? 0);
  };
  const out: T[] = [];
  while (out.length < records.length) {
    let best: T | undefined;
    let bestReady: T | undefined;
    for (const q of queues.values()) {
      const h = q[0];
      if (!h) continue;
      if (!best || h.start < best.start) best = h;
      if (ready(h) && (!bestReady || h.start < bestReady.start)) bestReady = h;
    }
    const next = (bestReady ?? best) as T;
    (queues.get(next.sidecar) as T[]).shift();
    if (next.direction === 'outbound') {
      const k = pair(next.service, to(next));
      outSeen.set(k, (outSeen.get(k) ?? 0) + 1);
    } else if (next.source !== undefined) {
      const k = pair(next.source, next.service);
      inSeen.set(k, (inSeen.get(k) ?? 0) + 1);
    }
    out.push(next);
  }
  return out;
}
