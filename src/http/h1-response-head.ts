/**
 * The upstream HTTP/1.1 client's fast path for a response head: a strict scan of the common case
 * (a whole head in one read, framed by Content-Length or bodiless by its status), in JavaScript,
 * that either reads the head exactly as llhttp would or declines it, and llhttp (Node's parser,
 * src/http/native-parser.ts) reads that response as before.
 *
 * Why hand-written (measured hot path): through Node's binding, llhttp costs ~1.4 µs for nginx's
 * response head (`node bench/h1-head-parse.js`): the execute call, the callback into JavaScript,
 * a string made in C++ for every name and value, and a parser re-initialized after each body the
 * client reads itself. Here the head is one latin1 string and its fields substrings of it, with no
 * crossing into C++ but that one slice (docs/performance.md, "The upstream's response heads read
 * in JavaScript").
 *
 * What it accepts is a subset of what llhttp accepts (lenient flags off), read the same way
 * (test/unit/http/h1-response-head.test.ts checks both on generated and mutated heads):
 * - `HTTP/1.1` or `HTTP/1.0`, a status 200-599, then a space and a reason of visible ASCII,
 *   spaces and tabs, or no reason at all;
 * - fields `token ":" OWS value OWS` with values of visible ASCII, spaces and tabs (no obs-text,
 *   no obs-fold), trailing blanks dropped as llhttp drops them;
 * - framing: one Content-Length of 1-15 digits, or none for a 204 or 304; no Transfer-Encoding;
 * - Connection and Proxy-Connection (llhttp reads both) only as `close` or `keep-alive`; no
 *   Upgrade;
 * - CRLF line ends, the whole head within the client's header limit.
 * Anything else (a 1xx, chunked or close-delimited bodies, a head split across reads, a byte out
 * of place) is declined before anything is read from it: llhttp then reads it whole and gives the
 * same error or result it always gave.
 */

/** Byte classes: 1 a token character (RFC 9110 tchar); 2 a value character (VCHAR, SP, HTAB). */
const TOKEN = 1;
const VALUE = 2;
const CLASS = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") CLASS[c.charCodeAt(0)] = TOKEN | VALUE;
for (let c = 0x20; c < 0x7f; c++) CLASS[c] |= VALUE;
CLASS[9] |= VALUE;

const lower = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const CONTENT_LENGTH = lower('content-length');
const TRANSFER_ENCODING = lower('transfer-encoding');
const CONNECTION = lower('connection');
const PROXY_CONNECTION = lower('proxy-connection');
const UPGRADE = lower('upgrade');
const CLOSE = lower('close');
const KEEP_ALIVE = lower('keep-alive');

/** Buffer's own latin1 slice (what `toString('latin1', a, b)` calls after its argument checks). */
type LatinSlicing = Buffer & { latin1Slice(start: number, end: number): string };

/** Fields per head the fast path reads (more: declined). */
const MAX_FIELDS = 100;
/** Offsets of each field's name and value ([nameStart, nameEnd, valueStart, valueEnd]), relative to the head's start. */
const at = new Int32Array(4 * MAX_FIELDS);

/** What `readResponseHead` read (valid after it returned > 0; reused). */
export const responseHead = {
  status: 0,
  /** llhttp's `shouldKeepAlive` for this head. */
  keepAlive: false,
  /** Name, value, name, value... as llhttp hands them over (names as sent, values trimmed). */
  fields: [] as string[],
};

/** Whether buf[a, a + lit.length) is `lit` (lower case letters and '-'), in any case. */
function nameIs(buf: Uint8Array, a: number, len: number, lit: Uint8Array): boolean {
  if (len !== lit.length) return false;
  // `| 0x20` folds A-Z onto a-z; of the other token characters none folds onto a letter or '-'.
  for (let i = 0; i < len; i++) if (((buf[a + i] as number) | 0x20) !== lit[i]) return false;
  return true;
}

/**
 * Reads the response head at buf[start, end) (`end`: the read's end) into `responseHead`, when
 * the whole head is there and the fast path takes it: returns the offset just past the head.
 * Returns -1 to decline: nothing was read, and the bytes go to llhttp.
 */
export function readResponseHead(buf: Buffer, start: number, end: number, maxHeaderBytes: number): number {
  // "HTTP/1.x NNN" and at least "\r\n\r\n".
  if (end - start < 16) return -1;
  let p = start;
  if (buf[p] !== 0x48 || buf[p + 1] !== 0x54 || buf[p + 2] !== 0x54 || buf[p + 3] !== 0x50 || buf[p + 4] !== 0x2f || buf[p + 5] !== 0x31 || buf[p + 6] !== 0x2e) return -1;
  const minor = (buf[p + 7] as number) - 0x30;
  if ((minor !== 0 && minor !== 1) || buf[p + 8] !== 0x20) return -1;
  const d0 = (buf[p + 9] as number) - 0x30;
  const d1 = (buf[p + 10] as number) - 0x30;
  const d2 = (buf[p + 11] as number) - 0x30;
  if (d0 < 2 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return -1;
  const status = d0 * 100 + d1 * 10 + d2;
  p += 12;
  if (buf[p] === 0x20) {
    p++;
    while (p < end && ((CLASS[buf[p] as number] as number) & VALUE) !== 0) p++;
  }
  if (p + 1 >= end || buf[p] !== 0x0d || buf[p + 1] !== 0x0a) return -1;
  p += 2;
  // Past this, the head is too large for the fast path: llhttp gives its overflow error or reads it.
  const limit = Math.min(end, start + maxHeaderBytes);
  let n = 0;
  let length = -1;
  let close = false;
  let keepAlive = false;
  for (;;) {
    if (p + 1 >= limit) return -1;
    if (buf[p] === 0x0d) {
      if (buf[p + 1] !== 0x0a) return -1;
      p += 2;
      break;
    }
    const ns = p;
    while (p < limit && ((CLASS[buf[p] as number] as number) & TOKEN) !== 0) p++;
    if (p === ns || p >= limit || buf[p] !== 0x3a) return -1;
    const ne = p;
    p++;
    while (p < limit && (buf[p] === 0x20 || buf[p] === 0x09)) p++;
    const vs = p;
    while (p < limit && ((CLASS[buf[p] as number] as number) & VALUE) !== 0) p++;
    if (p + 1 >= limit || buf[p] !== 0x0d || buf[p + 1] !== 0x0a) return -1;
    let ve = p;
    while (ve > vs && (buf[ve - 1] === 0x20 || buf[ve - 1] === 0x09)) ve--;
    p += 2;
    if (n === MAX_FIELDS) return -1;
    const len = ne - ns;
    const c0 = (buf[ns] as number) | 0x20;
    if (c0 === 0x63 /* c */) {
      if (nameIs(buf, ns, len, CONTENT_LENGTH)) {
        if (length >= 0 || ve === vs || ve - vs > 15) return -1;
        length = 0;
        for (let i = vs; i < ve; i++) {
          const d = (buf[i] as number) - 0x30;
          if (d < 0 || d > 9) return -1;
          length = length * 10 + d;
        }
      } else if (nameIs(buf, ns, len, CONNECTION)) {
        if (nameIs(buf, vs, ve - vs, CLOSE)) close = true;
        else if (nameIs(buf, vs, ve - vs, KEEP_ALIVE)) keepAlive = true;
        else return -1;
      }
    } else if (c0 === 0x74 /* t */) {
      if (nameIs(buf, ns, len, TRANSFER_ENCODING)) return -1;
    } else if (c0 === 0x75 /* u */) {
      if (nameIs(buf, ns, len, UPGRADE)) return -1;
    } else if (c0 === 0x70 /* p */) {
      if (nameIs(buf, ns, len, PROXY_CONNECTION)) {
        if (nameIs(buf, vs, ve - vs, CLOSE)) close = true;
        else if (nameIs(buf, vs, ve - vs, KEEP_ALIVE)) keepAlive = true;
        else return -1;
      }
    }
    const k = 4 * n++;
    at[k] = ns - start;
    at[k + 1] = ne - start;
    at[k + 2] = vs - start;
    at[k + 3] = ve - start;
  }
  // A body framed by the connection's end (no Content-Length, a status that has a body): llhttp.
  if (length < 0 && status !== 204 && status !== 304) return -1;
  const head = (buf as LatinSlicing).latin1Slice(start, p);
  const fields = responseHead.fields;
  for (let i = 0; i < n; i++) {
    const k = 4 * i;
    fields[2 * i] = head.substring(at[k] as number, at[k + 1] as number);
    fields[2 * i + 1] = head.substring(at[k + 2] as number, at[k + 3] as number);
  }
  if (fields.length !== 2 * n) fields.length = 2 * n;
  responseHead.status = status;
  // llhttp: HTTP/1.1 keeps the connection unless `close`; 1.0 only with `keep-alive` (its `close`
  // then counts for nothing). A body framed by the connection's end never keeps it; those heads
  // are declined above.
  responseHead.keepAlive = minor === 1 ? !close : keepAlive;
  return p;
}
