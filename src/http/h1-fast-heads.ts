/**
 * The HTTP/1.1 server's and upstream client's fast path for a message head: a strict scan of the
 * common case (a whole head in one read; a request without a body, a response framed by
 * Content-Length or bodiless by its status), in JavaScript, that either reads the head exactly as
 * llhttp would or declines it, and llhttp (Node's parser, src/http/native-parser.ts) reads that
 * message as before.
 *
 * Why hand-written (measured hot path): through Node's binding, llhttp costs ~0.8 µs for the
 * full chain's request head and ~1.4 µs for nginx's response head (`node
 * bench/h1-head-parse.js`): the execute call, the callback into JavaScript, a string made in C++
 * for every name and value, and (in the client) a parser re-initialized after each body it reads
 * itself. Here a head is one latin1 string and its fields substrings of it, with no crossing into
 * C++ but that one slice (docs/performance.md, "Message heads read in JavaScript").
 *
 * What it takes is a subset of what llhttp takes (lenient flags off), read the same way
 * (test/unit/http/h1-fast-heads.test.ts checks both on generated and mutated heads):
 * - a request line `METHOD /target HTTP/1.x` (GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH; an
 *   origin-form target of visible ASCII); a status line `HTTP/1.x NNN reason` with a status
 *   200-599 and a reason of visible ASCII, spaces and tabs, or none;
 * - fields `token ":" OWS value OWS` with values of visible ASCII, spaces and tabs (no obs-text,
 *   no obs-fold), trailing blanks dropped as llhttp drops them;
 * - framing: a request has no body (no Transfer-Encoding, Content-Length absent or `0`, no
 *   Expect); a response has one Content-Length of 1-15 digits, or none for a 204 or 304, and no
 *   Transfer-Encoding;
 * - Connection and Proxy-Connection (llhttp reads both) only as `close` or `keep-alive`; no
 *   Upgrade;
 * - CRLF line ends, the whole head within the header limit.
 * Anything else (a 1xx, a body llhttp frames, an upgrade, a head split across reads, a byte out
 * of place) is declined before anything is read from it: llhttp then reads it whole and gives the
 * same error or result it always gave.
 */
import { METHODS } from './native-parser';

/** 1 for a token character (RFC 9110 tchar), by byte. */
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TOKEN[c.charCodeAt(0)] = 1;

const bytes = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const CONTENT_LENGTH = bytes('content-length');
const TRANSFER_ENCODING = bytes('transfer-encoding');
const CONNECTION = bytes('connection');
const PROXY_CONNECTION = bytes('proxy-connection');
const UPGRADE = bytes('upgrade');
const EXPECT = bytes('expect');
const CLOSE = bytes('close');
const KEEP_ALIVE = bytes('keep-alive');

/** Fields per head the fast path reads (more: declined). */
const MAX_FIELDS = 100;
/** Offsets of each field's name and value ([nameStart, nameEnd, valueStart, valueEnd]), relative to the head's start. */
const at = new Int32Array(4 * MAX_FIELDS);

/** What the last successful read found (reused; valid until the next read). */
export const head = {
  /** Response: the status. Request: llhttp's method index (`METHODS`). */
  status: 0,
  method: 0,
  /** Request: the target as sent. */
  url: '',
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 1,
  /** llhttp's `shouldKeepAlive` for this head. */
  keepAlive: false,
};

/** What `scanFields` found besides the fields' offsets (module state: the scan is synchronous). */
let fieldCount = 0;
/** Content-Length's value (-1: none) and its digits. */
let contentLength = -1;
let lengthDigits = 0;
let connClose = false;
let connKeepAlive = false;

/**
 * Views of whole ArrayBuffers as 32-bit words, for `valueEnd`: the last two buffers scanned (the
 * server's and the client's shared read buffers, in turn), each made once.
 */
let wordsOf0: ArrayBufferLike | undefined;
let words0: Uint32Array<ArrayBufferLike> = new Uint32Array(0);
let wordsOf1: ArrayBufferLike | undefined;
let words1: Uint32Array<ArrayBufferLike> = new Uint32Array(0);

function wordsOf(ab: ArrayBufferLike): Uint32Array<ArrayBufferLike> {
  if (ab === wordsOf0) return words0;
  if (ab === wordsOf1) return words1;
  wordsOf1 = wordsOf0;
  words1 = words0;
  wordsOf0 = ab;
  words0 = new Uint32Array(ab, 0, ab.byteLength >>> 2);
  return words0;
}

/**
 * The end of a field value (or reason phrase) from `p`: the first byte that is not visible ASCII,
 * a space or a tab. Values are most of a head's bytes, so they are checked four at a time: a word
 * whose four bytes are all 0x20-0x7e has no byte's high bit set in `w - 0x20202020` nor in
 * `w + 0x01010101` (a byte below 0x20 sets it in the first, one of 0x7f or above in the second;
 * a borrow or carry between bytes only comes from a byte that is itself out of range). The first
 * word with anything else (a tab, the CR ending the line) is finished byte by byte. Measured
 * (readResponseHead, a head of five 200-byte values): ~0.7 ns a value byte, against ~2.9 with a
 * class table per byte.
 */
function valueEnd(buf: Buffer, p: number, limit: number): number {
  let c = 0;
  // Byte by byte for the first 8 (short values end here, with no word setup), then up to a word
  // boundary of the underlying buffer.
  const base = buf.byteOffset;
  const stop = Math.min(limit, p + 8);
  while (p < stop || (p < limit && ((base + p) & 3) !== 0)) {
    c = buf[p] as number;
    if ((c - 0x20) >>> 0 >= 0x5f && c !== 0x09) return p;
    p++;
  }
  if (p + 4 <= limit) {
    const words = wordsOf(buf.buffer);
    let i = (base + p) >>> 2;
    const last = (base + limit) >>> 2;
    while (i < last) {
      const w = words[i] as number;
      if ((((w - 0x20202020) | (w + 0x01010101)) & 0x80808080) !== 0) break;
      i++;
    }
    p = (i << 2) - base;
  }
  while (p < limit && (((c = buf[p] as number) - 0x20) >>> 0 < 0x5f || c === 0x09)) p++;
  return p;
}

/** Whether buf[a, a + len) is `lit` (lower case letters and '-'), in any case. */
function nameIs(buf: Uint8Array, a: number, len: number, lit: Uint8Array): boolean {
  if (len !== lit.length) return false;
  // `| 0x20` folds A-Z onto a-z; of the other token characters none folds onto a letter or '-'.
  for (let i = 0; i < len; i++) if (((buf[a + i] as number) | 0x20) !== lit[i]) return false;
  return true;
}

/** A Connection or Proxy-Connection value: `close` or `keep-alive`, or false (declined). */
function connectionValue(buf: Uint8Array, vs: number, ve: number): boolean {
  if (nameIs(buf, vs, ve - vs, CLOSE)) connClose = true;
  else if (nameIs(buf, vs, ve - vs, KEEP_ALIVE)) connKeepAlive = true;
  else return false;
  return true;
}

/** By name length, the first letter (lower case) of the one framing name of that length: Expect, Upgrade, Connection, Content-Length, Proxy-Connection, Transfer-Encoding. */
const SPECIAL = new Uint8Array(18);
for (const name of [EXPECT, UPGRADE, CONNECTION, CONTENT_LENGTH, PROXY_CONNECTION, TRANSFER_ENCODING]) SPECIAL[name.length] = name[0] as number;

/**
 * A field whose name may be one of the framing ones (SPECIAL): notes Content-Length and
 * Connection, and returns false to decline (Transfer-Encoding, Upgrade, Expect in a request, a
 * value the fast path does not read).
 */
function special(buf: Uint8Array, ns: number, len: number, vs: number, ve: number, request: boolean): boolean {
  if (nameIs(buf, ns, len, CONTENT_LENGTH)) {
    if (contentLength >= 0 || ve === vs || ve - vs > 15) return false;
    let v = 0;
    for (let i = vs; i < ve; i++) {
      const d = (buf[i] as number) - 0x30;
      if (d < 0 || d > 9) return false;
      v = v * 10 + d;
    }
    contentLength = v;
    lengthDigits = ve - vs;
    return true;
  }
  if (nameIs(buf, ns, len, CONNECTION) || nameIs(buf, ns, len, PROXY_CONNECTION)) return connectionValue(buf, vs, ve);
  if (nameIs(buf, ns, len, TRANSFER_ENCODING) || nameIs(buf, ns, len, UPGRADE)) return false;
  return !(request && nameIs(buf, ns, len, EXPECT));
}

/**
 * The fields from `p` (a line's start) through the empty line, within `limit`; offsets relative
 * to `start`. Returns the offset past the head, or -1 (declined). `request`: Expect declines, too.
 */
function scanFields(buf: Buffer, start: number, p: number, limit: number, request: boolean): number {
  let n = 0;
  contentLength = -1;
  connClose = false;
  connKeepAlive = false;
  for (;;) {
    if (p + 1 >= limit) return -1;
    if (buf[p] === 0x0d) {
      if (buf[p + 1] !== 0x0a) return -1;
      fieldCount = n;
      return p + 2;
    }
    const ns = p;
    while (p < limit && TOKEN[buf[p] as number] === 1) p++;
    if (p === ns || p >= limit || buf[p] !== 0x3a) return -1;
    const ne = p;
    p++;
    while (p < limit && (buf[p] === 0x20 || buf[p] === 0x09)) p++;
    const vs = p;
    p = valueEnd(buf, p, limit);
    if (p + 1 >= limit || buf[p] !== 0x0d || buf[p + 1] !== 0x0a) return -1;
    let ve = p;
    while (ve > vs && (buf[ve - 1] === 0x20 || buf[ve - 1] === 0x09)) ve--;
    p += 2;
    if (n === MAX_FIELDS) return -1;
    // The names that change how the message is framed or kept, found by length and first letter
    // and read out of line (`special`): most fields are none of them.
    const len = ne - ns;
    if (len < SPECIAL.length && SPECIAL[len] === ((buf[ns] as number) | 0x20) && !special(buf, ns, len, vs, ve, request)) return -1;
    const k = 4 * n++;
    at[k] = ns - start;
    at[k + 1] = ne - start;
    at[k + 2] = vs - start;
    at[k + 3] = ve - start;
  }
}

/** Buffer's own latin1 slice (what `toString('latin1', a, b)` calls after its argument checks). */
type LatinSlicing = Buffer & { latin1Slice(start: number, end: number): string };

/** The head's text and its fields as substrings of it, into `out` (name, value, ...). */
function strings(buf: Buffer, start: number, end: number, out: string[]): string {
  const text = (buf as LatinSlicing).latin1Slice(start, end);
  const n = fieldCount;
  for (let i = 0; i < n; i++) {
    const k = 4 * i;
    out[2 * i] = text.substring(at[k] as number, at[k + 1] as number);
    out[2 * i + 1] = text.substring(at[k + 2] as number, at[k + 3] as number);
  }
  if (out.length !== 2 * n) out.length = 2 * n;
  return text;
}

/** `HTTP/1.` and the minor version (0 or 1) at buf[p]; -1 otherwise. */
function version(buf: Uint8Array, p: number): number {
  if (buf[p] !== 0x48 || buf[p + 1] !== 0x54 || buf[p + 2] !== 0x54 || buf[p + 3] !== 0x50 || buf[p + 4] !== 0x2f || buf[p + 5] !== 0x31 || buf[p + 6] !== 0x2e) return -1;
  const minor = (buf[p + 7] as number) - 0x30;
  return minor === 0 || minor === 1 ? minor : -1;
}

/**
 * llhttp's keep-alive: HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive` (its `close` then
 * counts for nothing). (A response framed by the connection's end never keeps it; the fast path
 * declines those.)
 */
function keepAlive(minor: number): boolean {
  return minor === 1 ? !connClose : connKeepAlive;
}

/**
 * Reads the response head at buf[start, end) (`end`: the read's end), when the whole head is there
 * and the fast path takes it: the fields into `out`, the rest into `head`; returns the offset just
 * past the head. Returns -1 to decline: nothing was read, and the bytes go to llhttp.
 */
export function readResponseHead(buf: Buffer, start: number, end: number, maxHeaderBytes: number, out: string[]): number {
  // "HTTP/1.x NNN" and at least "\r\n\r\n".
  if (end - start < 16) return -1;
  const minor = version(buf, start);
  if (minor < 0 || buf[start + 8] !== 0x20) return -1;
  const d0 = (buf[start + 9] as number) - 0x30;
  const d1 = (buf[start + 10] as number) - 0x30;
  const d2 = (buf[start + 11] as number) - 0x30;
  if (d0 < 2 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return -1;
  const status = d0 * 100 + d1 * 10 + d2;
  // Past the limit, the head is too large for the fast path: llhttp gives its overflow error.
  const limit = Math.min(end, start + maxHeaderBytes);
  let p = start + 12;
  if (buf[p] === 0x20) {
    p++;
    p = valueEnd(buf, p, limit);
  }
  if (p + 1 >= limit || buf[p] !== 0x0d || buf[p + 1] !== 0x0a) return -1;
  p = scanFields(buf, start, p + 2, limit, false);
  // A body framed by the connection's end (no Content-Length, a status that has a body): llhttp.
  if (p < 0 || (contentLength < 0 && status !== 204 && status !== 304)) return -1;
  strings(buf, start, p, out);
  head.status = status;
  head.minor = minor;
  head.keepAlive = keepAlive(minor);
  return p;
}

/** The methods the fast path takes, by length: their bytes and llhttp's index. */
const FAST_METHODS = ['GET', 'PUT', 'HEAD', 'POST', 'PATCH', 'DELETE', 'OPTIONS'].map((m) => ({ bytes: bytes(m), index: METHODS.indexOf(m) }));

/**
 * Reads a request head without a body at buf[start, end), as `readResponseHead` reads a response:
 * the fields into `out` (the request keeps this array), the method, target, version and
 * keep-alive into `head`. Returns the offset just past the head, or -1 to decline.
 */
export function readRequestHead(buf: Buffer, start: number, end: number, maxHeaderBytes: number, out: string[]): number {
  // "GET / HTTP/1.1\r\n\r\n" at the least.
  if (end - start < 18) return -1;
  let p = start;
  while (p < end && p - start < 8 && (buf[p] as number) >= 0x41 && (buf[p] as number) <= 0x5a) p++;
  const mlen = p - start;
  let method = -1;
  for (const m of FAST_METHODS) {
    if (m.bytes.length !== mlen) continue;
    let i = 0;
    while (i < mlen && buf[start + i] === m.bytes[i]) i++;
    if (i === mlen) {
      method = m.index;
      break;
    }
  }
  if (method < 0 || buf[p] !== 0x20 || buf[p + 1] !== 0x2f) return -1;
  const limit = Math.min(end, start + maxHeaderBytes);
  const us = ++p;
  // Visible ASCII (0x21-0x7e), by arithmetic (see valueEnd).
  while (p < limit && ((buf[p] as number) - 0x21) >>> 0 < 0x5e) p++;
  const ue = p;
  if (p + 10 >= limit || buf[p] !== 0x20) return -1;
  const minor = version(buf, p + 1);
  if (minor < 0 || buf[p + 9] !== 0x0d || buf[p + 10] !== 0x0a) return -1;
  p = scanFields(buf, start, p + 11, limit, true);
  // A body (a length other than `0`): llhttp frames it.
  if (p < 0 || (contentLength >= 0 && (contentLength !== 0 || lengthDigits !== 1))) return -1;
  const text = strings(buf, start, p, out);
  head.method = method;
  head.url = text.substring(us - start, ue - start);
  head.minor = minor;
  head.keepAlive = keepAlive(minor);
  return p;
}
