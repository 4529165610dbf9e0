/**
 * Trace-context propagation: W3C Trace Context (`traceparent` / `tracestate`, version 00), B3
 * (multi-header `x-b3-*` and single-header `b3`), and `x-request-id`.
 *
 * Extraction order: a valid `traceparent` wins, then `b3`, then `x-b3-*`. An invalid
 * `traceparent` (bad shape, version ff, all-zero ids) is not propagated: the request starts a
 * new trace, and its `tracestate` is dropped with it (W3C: "the vendor MUST NOT parse or
 * propagate tracestate" without a valid traceparent).
 */
import { randomFillSync } from 'node:crypto';

export interface TraceContext {
  /** 32 lower-case hex digits. */
  traceId: string;
  /** The caller's span id (16 hex), or undefined when this hop starts the trace. */
  parentId?: string;
  /** The caller's sampling decision, or undefined when the caller made none. */
  sampled?: boolean;
  tracestate?: string;
  /** Which header form the context arrived in (and is written back in, beside traceparent). */
  format: 'w3c' | 'b3' | 'b3multi' | 'none';
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
const ZERO32 = '0'.repeat(32);
const ZERO16 = '0'.repeat(16);
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** Whether `s[from..to)` is lower-case hex. */
function lowerHex(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/**
 * Parses a `traceparent` header (`vv-<32 hex>-<16 hex>-ff`, later versions may append `-...`);
 * undefined when invalid. By hand rather than with TRACEPARENT: no match array, two slices.
 */
export function parseTraceparent(v: string | undefined): { traceId: string; parentId: string; sampled: boolean } | undefined {
  if (!v) return undefined;
  const s = v.trim();
  if (s.length < 55 || s.charCodeAt(2) !== 0x2d || s.charCodeAt(35) !== 0x2d || s.charCodeAt(52) !== 0x2d) return undefined;
  if (!lowerHex(s, 0, 2) || !lowerHex(s, 3, 35) || !lowerHex(s, 36, 52) || !lowerHex(s, 53, 55)) return undefined;
  const version = s.slice(0, 2);
  if (version === 'ff') return undefined;
  if (s.length > 55) {
    // Version 00 has exactly four fields; a later version may add fields after a dash.
    if (version === '00' || s.charCodeAt(55) !== 0x2d || !TRACEPARENT.test(s)) return undefined;
  }
  const traceId = s.slice(3, 35);
  const parentId = s.slice(36, 52);
  if (traceId === ZERO32 || parentId === ZERO16) return undefined;
  const f = s.charCodeAt(54);
  return { traceId, parentId, sampled: ((f <= 0x39 ? f - 0x30 : f - 0x57) & 1) === 1 };
}

// The last tracestate cleaned, and the result: callers send the same one request after request.
let lastTracestate: string | undefined;
let lastClean: string | undefined;

/** A `tracestate` worth forwarding: at most 32 list members, 512 characters, printable ASCII. */
export function cleanTracestate(v: string | string[] | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string') {
    if (v === lastTracestate) return lastClean;
    const c = cleanTracestateOnce(v);
    lastTracestate = v;
    lastClean = c;
    return c;
  }
  return cleanTracestateOnce(v);
}

function cleanTracestateOnce(v: string | string[]): string | undefined {
  const s = (Array.isArray(v) ? v.join(',') : v).trim();
  if (!s || s.length > 512 || !/^[\x20-\x7e]+$/.test(s)) return undefined;
  const members = s.split(',').map((x) => x.trim()).filter(Boolean);
  if (members.length > 32) return undefined;
  for (const m of members) if (!/^[a-z0-9][a-z0-9_\-*/@]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/.test(m)) return undefined;
  return members.join(',');
}

function b3TraceId(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const s = v.toLowerCase();
  if (HEX32.test(s)) return s === ZERO32 ? undefined : s;
  if (HEX16.test(s)) return s === ZERO16 ? undefined : ZERO16 + s;
  return undefined;
}

function b3Sampled(v: string | undefined): boolean | undefined {
  if (v === '1' || v === 'd' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  return undefined;
}

type HeaderGetter = (name: string) => string | undefined;

export function extract(get: HeaderGetter): TraceContext | undefined {
  const tp = parseTraceparent(get('traceparent'));
  if (tp) return { traceId: tp.traceId, parentId: tp.parentId, sampled: tp.sampled, tracestate: cleanTracestate(get('tracestate')), format: 'w3c' };
  const single = get('b3');
  if (single) {
    const parts = single.trim().toLowerCase().split('-');
    if (parts.length === 1) {
      // `b3: 0|1|d`: a sampling decision only.
      const s = b3Sampled(parts[0]);
      if (s !== undefined) return { traceId: '', sampled: s, format: 'b3' };
    } else {
      const traceId = b3TraceId(parts[0]);
      const spanId = parts[1];
      if (traceId && spanId && HEX16.test(spanId) && spanId !== ZERO16 && parts.length <= 4)
        return { traceId, parentId: spanId, sampled: b3Sampled(parts[2]), format: 'b3' };
    }
  }
  const traceId = b3TraceId(get('x-b3-traceid'));
  const spanId = get('x-b3-spanid')?.toLowerCase();
  const sampled = get('x-b3-flags') === '1' ? true : b3Sampled(get('x-b3-sampled')?.toLowerCase());
  if (traceId && spanId && HEX16.test(spanId) && spanId !== ZERO16) return { traceId, parentId: spanId, sampled, format: 'b3multi' };
  if (sampled !== undefined) return { traceId: '', sampled, format: 'b3multi' };
  return undefined;
}

// ---------------------------------------------------------------------------------------- ids
// Random ids from a refilled pool, kept as hex text: one randomFillSync and one hex conversion
// per 256 ids; an id is then a slice of that text.
const POOL = Buffer.alloc(4096);
let hexPool = '';
let poolAt = 0;

/** The offset of `chars` fresh random hex digits in `hexPool`. */
function takeHex(chars: number): number {
  if (poolAt + chars > hexPool.length) {
    randomFillSync(POOL);
    hexPool = POOL.toString('hex');
    poolAt = 0;
  }
  const at = poolAt;
  poolAt += chars;
  return at;
}

export function newTraceId(): string {
  const at = takeHex(32);
  const s = hexPool.slice(at, at + 32);
  return s === ZERO32 ? newTraceId() : s;
}

export function newSpanId(): string {
  const at = takeHex(16);
  const s = hexPool.slice(at, at + 16);
  return s === ZERO16 ? newSpanId() : s;
}


// Request ids are written 64 at a time as latin1 text into one buffer, made into one string, and
// each id is a 36-character slice of it (a small sliced string): formatting each id with a
// template of five slices allocated ~390 B per request (bench/alloc-profile.js; docs/performance.md).
const IDS_PER_POOL = 64;
const ID_RANDOM = Buffer.alloc(16 * IDS_PER_POOL);
const ID_TEXT = Buffer.alloc(36 * IDS_PER_POOL);
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');
let idPool = '';
let idAt = 0;

/** A request id in UUID v4 form: random, version digit 4, variant digit 8-b (RFC 4122 4.4). */
export function newRequestId(): string {
  if (idAt >= idPool.length) refillIds();
  const at = idAt;
  idAt += 36;
  return idPool.slice(at, at + 36);
}

function refillIds(): void {
  randomFillSync(ID_RANDOM);
  const r = ID_RANDOM;
  const t = ID_TEXT;
  let o = 0;
  for (let b = 0; b < r.length; b += 16) {
    // Version 4 (the high digit of byte 6), variant 10xx (the high two bits of byte 8).
    r[b + 6] = ((r[b + 6] as number) & 0x0f) | 0x40;
    r[b + 8] = ((r[b + 8] as number) & 0x3f) | 0x80;
    // Two digits a byte from the table, a dash before bytes 4, 6, 8 and 10.
    for (let i = 0; i < 16; i++) {
      if (i === 4 || i === 6 || i === 8 || i === 10) t[o++] = 0x2d; // '-'
      const pair = BYTE_HEX[r[b + i] as number] as number;
      t[o++] = pair >> 8;
      t[o++] = pair & 0xff;
    }
  }
  idPool = t.toString('latin1', 0, o);
  idAt = 0;
}

/** Each byte's two hex digits (high digit in the high byte), as character codes. */
const BYTE_HEX = new Uint16Array(256);
for (let v = 0; v < 256; v++) BYTE_HEX[v] = ((HEX_DIGITS[v >> 4] as number) << 8) | (HEX_DIGITS[v & 15] as number);

/** Every header this module reads or writes (removed from a forwarded request, then rewritten). */
export const TRACE_HEADERS = new Set(['traceparent', 'tracestate', 'b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags']);

/**
 * The headers to send downstream of this hop: `traceparent` (+ `tracestate`) always, and the B3
 * form the request came in, so B3-only apps keep working.
 */
export function injectHeaders(
  out: string[],
  traceId: string,
  spanId: string,
  parentId: string | undefined,
  sampled: boolean,
  tracestate: string | undefined,
  format: TraceContext['format'],
): void {
  out.push('traceparent', `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`);
  if (tracestate) out.push('tracestate', tracestate);
  if (format === 'b3') out.push('b3', `${traceId}-${spanId}-${sampled ? '1' : '0'}${parentId ? '-' + parentId : ''}`);
  else if (format === 'b3multi') {
    out.push('x-b3-traceid', traceId, 'x-b3-spanid', spanId, 'x-b3-sampled', sampled ? '1' : '0');
    if (parentId) out.push('x-b3-parentspanid', parentId);
  }
}
