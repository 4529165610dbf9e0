/**
 * The upstream client's JavaScript read of a response head (src/http/h1-response-head.ts) against
 * llhttp, the parser it stands in for: on heads built from valid and invalid pieces, and on valid
 * heads with one byte changed, inserted or cut, whatever the fast path takes it must read exactly
 * as llhttp (lenient flags off) does: the same status, fields (names as sent, values trimmed) and
 * keep-alive, the head ending at the same byte, and llhttp accepting the body the head frames.
 * Whatever it declines goes to llhttp unread, so declining is always safe; the test also checks
 * that the common heads (nginx's, a 204, HTTP/1.0 keep-alive) are taken, so that the fast path is
 * not a path nothing takes.
 */
import fc from 'fast-check';
import t, { type Test } from 'tap';
import { readResponseHead, responseHead } from '../../../src/http/h1-response-head';
import { HTTPParser } from '../../../src/http/native-parser';

const MAX = 16 * 1024;

interface Parsed {
  status: number;
  fields: string[];
  keepAlive: boolean;
}

/** llhttp's reading of `buf`: the head's fields (or undefined), and whether it reported an error. */
function llhttp(buf: Buffer): { head: Parsed | undefined; error: boolean } {
  const p = new HTTPParser();
  p.initialize(HTTPParser.RESPONSE, {}, MAX, HTTPParser.kLenientNone);
  let head: Parsed | undefined;
  const partial: string[] = [];
  p[HTTPParser.kOnHeaders] = (h: string[]) => {
    partial.push(...h);
  };
  p[HTTPParser.kOnHeadersComplete] = (_ma: number, _mi: number, h: string[] | undefined, _m: unknown, _u: unknown, status: number, _msg: string, _up: boolean, keepAlive: boolean) => {
    head = { status, fields: h ?? partial, keepAlive };
    return 0;
  };
  p[HTTPParser.kOnBody] = () => undefined;
  p[HTTPParser.kOnMessageComplete] = () => undefined;
  const r = p.execute(buf);
  p.close();
  return { head, error: r instanceof Error };
}

/** Checks one input; returns whether the fast path took it. */
function check(tt: Test, bytes: Buffer, label: string): boolean {
  // The head sits inside a larger buffer at an offset, as reads of a shared buffer do.
  const buf = Buffer.alloc(bytes.length + 16, 0x78);
  bytes.copy(buf, 7);
  const e = readResponseHead(buf, 7, 7 + bytes.length, MAX);
  if (e < 0) return false;
  const end = e - 7;
  const mine: Parsed = { status: responseHead.status, fields: [...responseHead.fields], keepAlive: responseHead.keepAlive };
  // llhttp completes the same head at the same byte: not one byte earlier.
  const full = llhttp(bytes.subarray(0, end));
  const short = llhttp(bytes.subarray(0, end - 1));
  if (JSON.stringify(full.head) !== JSON.stringify(mine) || full.error || short.head !== undefined) {
    tt.same({ head: full.head, error: full.error, earlier: short.head !== undefined }, { head: mine, error: false, earlier: false }, `${label}: ${JSON.stringify(bytes.toString('latin1'))}`);
    return true;
  }
  // The body the head frames (Content-Length, none for 204 / 304) is what llhttp frames: it
  // accepts the head with exactly that many body bytes, then (on a connection kept alive; llhttp
  // refuses bytes after a message on one that is not) a next response.
  const cl = mine.fields.findIndex((f, i) => i % 2 === 0 && f.toLowerCase() === 'content-length');
  const len = mine.status === 204 || mine.status === 304 ? 0 : Number(mine.fields[cl + 1]);
  // (A length past 64 KiB: the head alone was checked above.)
  if (len > 65536) return true;
  const after = mine.keepAlive ? 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n' : '';
  const next = Buffer.concat([bytes.subarray(0, end), Buffer.alloc(len, 0x61), Buffer.from(after)]);
  const both = llhttp(next);
  if (both.error) tt.ok(false, `${label}: llhttp refuses the body the fast path framed (${len} bytes): ${JSON.stringify(bytes.toString('latin1'))}`);
  return true;
}

t.test('the common heads are taken, and read as llhttp reads them', async (t) => {
  const heads = [
    'HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 23:40:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok',
    'HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n',
    'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\nContent-Length: 10\r\n\r\n',
    'HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbad',
    'HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 \r\nA: b  \r\nB:\r\nC:\t \r\nD: x\ty\r\nE: y \t\r\nContent-Length: 05\r\n\r\n',
    'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nProxy-Connection: close\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 0\r\n\r\n',
  ];
  for (const h of heads) t.ok(check(t, Buffer.from(h, 'latin1'), 'common'), `taken: ${JSON.stringify(h)}`);
  t.equal(responseHead.keepAlive, false, 'Proxy-Connection: close ends an HTTP/1.1 connection, as in llhttp');
});

t.test('declined: what llhttp frames or refuses, and what the fast path leaves to it', async (t) => {
  const heads = [
    'HTTP/1.1 100 Continue\r\n\r\n',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n',
    'HTTP/1.1 200 OK\r\n\r\n', // framed by the connection's end
    'HTTP/1.1 200 OK\r\nConnection: close, x\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nA: \x80\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nA : b\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\n b\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n', // not whole yet
    'HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n',
    'HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n',
  ];
  for (const h of heads) t.notOk(check(t, Buffer.from(h, 'latin1'), 'declined'), `declined: ${JSON.stringify(h)}`);
  // Over the client's header limit: llhttp gives its overflow error.
  const big = Buffer.from(`HTTP/1.1 200 OK\r\nx: ${'a'.repeat(MAX)}\r\ncontent-length: 0\r\n\r\n`, 'latin1');
  t.equal(readResponseHead(big, 0, big.length, MAX), -1, 'a head over the limit is declined');
});

const VERSIONS = ['HTTP/1.1', 'HTTP/1.0', 'HTTP/1.2', 'HTTP/2.0', 'http/1.1', 'HTTP/1.1 '];
const STATUSES = ['200', '204', '304', '100', '101', '404', '599', '600', '099', '20', '2000', '199'];
const REASONS = ['', ' OK', ' ', ' Not Found', ' O\tK', ' \x01', ' \x80', ' a\r', 'X'];
const NAMES = ['Content-Length', 'content-length', 'CONTENT-length', 'Transfer-Encoding', 'Connection', 'connection', 'Proxy-Connection', 'Upgrade', 'Keep-Alive', 'Server', 'x-a', 'X-B', 'Bad Name', 'Bad\x7fName', '', 'a\tb', 'content-lengthx', 'connectio', '~!#$%&*+.^_`|'];
const SEPARATORS = [':', ': ', ':  ', ' :', ':\t', '::'];
const VALUES = ['0', '2', '05', '12', '123456789012345', '1234567890123456', '', 'close', 'Close', 'CLOSE', 'keep-alive', 'Keep-Alive', 'a b ', 'v\t', 'v \t', 'close, x', 'upgrade', 'chunked', 'x\x7f', 'x\x80', '-1', '+1', ' 3 ', 'a\x00b', 'c"d'];
const EOLS = ['\r\n', '\r\n', '\r\n', '\n', '\r', '\r\r\n'];

/** Mostly the first `good` choices (a head then often gets through whole), sometimes any. */
function pick(xs: string[], good: number): fc.Arbitrary<string> {
  return fc.oneof({ arbitrary: fc.constantFrom(...xs.slice(0, good)), weight: 30 }, { arbitrary: fc.constantFrom(...xs), weight: 1 });
}

const headArb = fc.record({
  version: pick(VERSIONS, 2),
  status: pick(STATUSES, 7),
  reason: pick(REASONS, 6),
  fields: fc.array(fc.tuple(pick(NAMES, 11), pick(SEPARATORS, 5), pick(VALUES, 15), pick(EOLS, 1)), { maxLength: 8 }),
  // Most heads get a framing field (without one, a 200 is framed by the connection's end: declined).
  frame: fc.constantFrom('content-length: 3\r\n', 'Content-Length: 0\r\n', ''),
  end: pick(['\r\n', '\n', '', '\r'], 1),
});

function build(h: { version: string; status: string; reason: string; fields: [string, string, string, string][]; frame: string; end: string }): Buffer {
  return Buffer.from(`${h.version} ${h.status}${h.reason}\r\n${h.fields.map(([n, s, v, e]) => `${n}${s}${v}${e}`).join('')}${h.frame}${h.end}`, 'latin1');
}

t.test('generated heads: whatever the fast path takes, llhttp reads the same', async (t) => {
  let taken = 0;
  let runs = 0;
  fc.assert(
    fc.property(headArb, (h) => {
      runs++;
      if (check(t, build(h), 'generated')) taken++;
    }),
    { numRuns: 4000, seed: 20261206 },
  );
  // Both sides of the fast path are exercised (it is not a path that takes nothing, nor everything).
  t.ok(taken > runs / 20 && taken < runs, `taken ${taken} of ${runs}`);
});

t.test('valid heads with one byte changed, inserted or cut: the same', async (t) => {
  const valid = headArb.filter((h) => {
    const b = build(h);
    return readResponseHead(b, 0, b.length, MAX) > 0;
  });
  let taken = 0;
  let runs = 0;
  fc.assert(
    fc.property(valid, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'cut'), (h, at, byte, how) => {
      runs++;
      const b = build(h);
      const i = at % b.length;
      const m = how === 'set' ? Buffer.from(b) : how === 'insert' ? Buffer.concat([b.subarray(0, i), Buffer.from([byte]), b.subarray(i)]) : Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
      if (how === 'set') m[i] = byte;
      if (check(t, m, `${how} ${byte} at ${i}`)) taken++;
    }),
    { numRuns: 4000, seed: 61 },
  );
  t.ok(taken > 0 && taken < runs, `taken ${taken} of ${runs}`);
});
