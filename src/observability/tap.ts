/**
 * Live requests ("tap", like `linkerd viz tap`): whoever watches (the admin port's `/tap`, which
 * the control plane fans in for `meshlet tap` and the dashboard) registers a filter here and gets
 * one event per finished request that matches, at a bounded rate.
 *
 * Off unless someone watches: the observer reads `active` (one boolean) when a request ends, and
 * only then builds an event. No bodies, ever; header values only for the names a watcher asked for
 * (and never credentials: SECRET_HEADERS). Each watcher has its own token bucket (at most
 * `MAX_RATE` events a second); what does not fit is counted as dropped, never queued.
 */
import { systemClock, type Clock } from '../core/clock';
import type { Direction } from './mesh-metrics';

/** Events per second a watcher gets at most (its own `rate` may be lower). */
export const MAX_RATE = 100;
export const DEFAULT_RATE = 20;
/** Watchers one sidecar serves at once. */
export const MAX_WATCHERS = 16;
/** Header names a tap never shows, whoever asks. */
export const SECRET_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key']);

export interface TapFilter {
  direction?: Direction;
  /** The destination service (inbound: this sidecar's service; outbound: the called one). */
  destination?: string;
  /** The calling service (inbound: from `x-meshlet-source`, `unknown` for callers outside the mesh). */
  source?: string;
  route?: string;
}

export interface TapEvent {
  type: 'request';
  /** When the request arrived (ISO 8601). */
  time: string;
  direction: Direction;
  source: string;
  destination: string;
  route: string;
  method: string;
  authority: string;
  path: string;
  protocol: 'HTTP/1.1' | 'HTTP/2';
  status: number;
  /** The response flag when the mesh answered or cut the request (`UH`, `URX`, `RL`, ...). */
  flags: string | null;
  latencyMs: number;
  upstream: string | null;
  traceId: string | null;
  requestId: string;
  /** Only the names the watcher asked for, when the request carried them. */
  headers?: Record<string, string>;
}

/** What the observer hands over when a request ends (ObservedRequest and its route handle). */
export interface TapSource {
  readonly direction: Direction;
  readonly info: { method: string; authority: string; path: string; protocol: 'http1' | 'http2' };
  readonly wallStart: number;
  readonly upstream?: string;
  readonly traceId: string;
  readonly requestId: string;
  readonly tapHeaders?: Record<string, string>;
}

export interface TapWatchOptions {
  /** Events a second (1..MAX_RATE, default DEFAULT_RATE). */
  rate?: number;
  /** Header names whose values to include (lower-cased; SECRET_HEADERS refused). */
  headers?: readonly string[];
}

export class TapError extends Error {
  constructor(
    readonly code: 'too_many_watchers' | 'invalid',
    message: string,
  ) {
    super(message);
    this.name = 'TapError';
  }
}

interface Watcher {
  filter: TapFilter;
  headers: readonly string[];
  rate: number;
  tokens: number;
  last: number;
  dropped: number;
  send(e: TapEvent): void;
}

export interface TapHandle {
  /** Events that matched but did not fit the rate since the last call (then reset). */
  takeDropped(): number;
  stop(): void;
}

/** Checks and normalises watch options: the errors a `/tap` caller sees as a 400. */
export function tapOptions(rate: string | null | undefined, headers: string | null | undefined): TapWatchOptions {
  const out: { rate?: number; headers?: string[] } = {};
  if (rate !== null && rate !== undefined && rate !== '') {
    const n = Number(rate);
    if (!Number.isInteger(n) || n < 1 || n > MAX_RATE) throw new TapError('invalid', `rate: expected an integer 1..${MAX_RATE} (events a second), got ${JSON.stringify(rate)}`);
    out.rate = n;
  }
  if (headers) {
    const names = headers
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h !== '');
    for (const h of names) {
      if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(h)) throw new TapError('invalid', `headers: ${JSON.stringify(h)} is not a header name`);
      if (SECRET_HEADERS.has(h)) throw new TapError('invalid', `headers: ${h} is never shown by a tap`);
    }
    if (names.length > 16) throw new TapError('invalid', 'headers: at most 16 names');
    out.headers = names;
  }
  return out;
}

export class TapHub {
  /** Whether anyone watches: the observer's only cost while nobody does. */
  active = false;
  /** The header names any watcher wants (read when a request begins, only while active). */
  headerNames: readonly string[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly clock: Clock;

  constructor(clock: Clock = systemClock) {
    this.clock = clock;
  }

  get watching(): number {
    return this.watchers.size;
  }

  watch(filter: TapFilter, opts: TapWatchOptions, send: (e: TapEvent) => void): TapHandle {
    if (this.watchers.size >= MAX_WATCHERS) throw new TapError('too_many_watchers', `this sidecar already serves ${MAX_WATCHERS} taps`);
    const rate = Math.min(MAX_RATE, Math.max(1, opts.rate ?? DEFAULT_RATE));
    const w: Watcher = { filter, headers: opts.headers ?? [], rate, tokens: rate, last: this.clock.monotonic(), dropped: 0, send };
    this.watchers.add(w);
    this.changed();
    return {
      takeDropped: () => {
        const n = w.dropped;
        w.dropped = 0;
        return n;
      },
      stop: () => {
        if (this.watchers.delete(w)) this.changed();
      },
    };
  }

  private changed(): void {
    this.active = this.watchers.size > 0;
    const names = new Set<string>();
    for (const w of this.watchers) for (const h of w.headers) names.add(h);
    this.headerNames = [...names];
  }

  /** Captures the wanted headers of a request as it begins (called only while `active`). */
  captureHeaders(get: (name: string) => string | undefined): Record<string, string> | undefined {
    let out: Record<string, string> | undefined;
    for (const h of this.headerNames) {
      const v = get(h);
      if (v !== undefined) (out ??= {})[h] = v;
    }
    return out;
  }

  /** One finished request (called only while `active`). */
  offer(r: TapSource, status: number, flag: string | undefined, seconds: number, source: string, destination: string, route: string): void {
    let event: TapEvent | undefined;
    const now = this.clock.monotonic();
    for (const w of this.watchers) {
      const f = w.filter;
      if (f.direction !== undefined && f.direction !== r.direction) continue;
      if (f.destination !== undefined && f.destination !== destination) continue;
      if (f.source !== undefined && f.source !== source) continue;
      if (f.route !== undefined && f.route !== route) continue;
      w.tokens = Math.min(w.rate, w.tokens + ((now - w.last) * w.rate) / 1000);
      w.last = now;
      if (w.tokens < 1) {
        w.dropped++;
        continue;
      }
      w.tokens -= 1;
      event ??= {
        type: 'request',
        time: new Date(r.wallStart).toISOString(),
        direction: r.direction,
        source,
        destination,
        route,
        method: r.info.method,
        authority: r.info.authority,
        path: r.info.path,
        protocol: r.info.protocol === 'http2' ? 'HTTP/2' : 'HTTP/1.1',
        status,
        flags: flag ?? null,
        latencyMs: Math.round(seconds * 1e6) / 1000,
        upstream: r.upstream ?? null,
        traceId: r.traceId || null,
        requestId: r.requestId,
      };
      if (w.headers.length && r.tapHeaders) {
        const hs: Record<string, string> = {};
        for (const h of w.headers) if (r.tapHeaders[h] !== undefined) hs[h] = r.tapHeaders[h] as string;
        w.send({ ...event, headers: hs });
      } else w.send(event);
    }
  }
}
