/**
 * The HTTP/1.1 server's and upstream client's JavaScript read of a message head
 * (src/http/h1-fast-heads.ts) against llhttp, the parser it stands in for: on heads built from
 * valid and invalid pieces, and on valid heads with one byte changed, inserted or cut, whatever
 * the fast path takes it must read exactly as llhttp (lenient flags off) does: the same status, or
 * method, target and version; the same fields (names as sent, values trimmed) and keep-alive; the
 * head ending at the same byte; and llhttp framing the same body (none for a request, the
 * Content-Length for a response). Whatever it declines goes to llhttp unread, so declining is
 * always safe; the test also checks that the common heads (nginx's response, h2load's and curl's
 * requests, a 204, HTTP/1.0 keep-alive) are taken, so that the fast path is not one nothing takes.
 */
import fc from 'fast-check';
import t, { type Test } from 'tap';
import { head, readRequestHead, readResponseHead } from '../../../src/http/h1-fast-heads';
import { HTTPParser, METHODS } from '../../../src/http/native-parser';

const MAX = 16 * 1024;

interface Parsed {
  /** The status (a response) or the method's name and the target (a request). */
  status?: number;
  method?: string;
  url?: string;
  minor: number;
  fields: string[];
  keepAlive: boolean;
}

type Kind = 'request' | 'response';

/** llhttp's reading of `buf`: the head (or undefined), whether a message completed, whether it reported an error. */
function llhttp(kind: Kind, buf: Buffer): { head: Parsed | undefined; complete: boolean; error: boolean } {
  const p = new HTTPParser();
  p.initialize(kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE, {}, MAX, HTTPParser.kLenientNone);
  let parsed: Parsed | undefined;
  let complete = false;
  const partial: string[] = [];
  let partialUrl = '';
  p[HTTPParser.kOnHeaders] = (h: string[], u: string) => {
    partial.push(...h);
    partialUrl += u;
  };
  p[HTTPParser.kOnHeadersComplete] = (_ma: number, minor: number, h: string[] | undefined, m: number, u: string | undefined, status: number, _msg: string, upgrade: boolean, keepAlive: boolean) => {
    const fields = h ?? partial;
    parsed = kind === 'request' ? { method: METHODS[m], url: partialUrl + (u ?? ''), minor, fields, keepAlive } : { status, minor, fields, keepAlive };
    if (upgrade) parsed.method = 'UPGRADE';
    return 0;
  };
  p[HTTPParser.kOnBody] = () => undefined;
  p[HTTPParser.kOnMessageComplete] = () => {
    complete = true;
  };
  const r = p.execute(buf);
  p.close();
  return { head: parsed, complete, error: r instanceof Error };
}

/** Checks one input; returns whether the fast path took it. */
function check(tt: Test, kind: Kind, bytes: Buffer, label: string): boolean {
  // The head sits inside a larger buffer at an offset, as reads of a shared buffer do.
  const buf = Buffer.alloc(bytes.length + 16, 0x78);
  bytes.copy(buf, 7);
  const fields: string[] = ['stale', 'entries', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't'];
  const e = kind === 'request' ? readRequestHead(buf, 7, 7 + bytes.length, MAX, fields) : readResponseHead(buf, 7, 7 + bytes.length, MAX, fields);
  if (e < 0) return false;
  const end = e - 7;
  const mine: Parsed = kind === 'request' ? { method: METHODS[head.method], url: head.url, minor: head.minor, fields, keepAlive: head.keepAlive } : { status: head.status, minor: head.minor, fields, keepAlive: head.keepAlive };
  // llhttp completes the same head at the same byte: not one byte earlier.
  const full = llhttp(kind, bytes.subarray(0, end));
  const short = llhttp(kind, bytes.subarray(0, end - 1));
  const text = JSON.stringify(bytes.toString('latin1'));
  if (JSON.stringify(full.head) !== JSON.stringify(mine) || full.error || short.head !== undefined) {
    tt.same({ head: full.head, error: full.error, earlier: short.head !== undefined }, { head: mine, error: false, earlier: false }, `${label}: ${text}`);
    return true;
  }
  if (kind === 'request') {
    // No body: llhttp ends the message with its head.
    if (!full.complete) tt.ok(false, `${label}: llhttp expects a body after ${text}`);
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
  const both = llhttp(kind, next);
  if (both.error) tt.ok(false, `${label}: llhttp refuses the body the fast path framed (${len} bytes): ${text}`);
  return true;
}

/** Each head is taken (and read as llhttp reads it), or declined. */
function expect(tt: Test, kind: Kind, heads: string[], taken: boolean): void {
  for (const h of heads) tt.equal(check(tt, kind, Buffer.from(h, 'latin1'), taken ? 'common' : 'declined'), taken, `${taken ? 'taken' : 'declined'}: ${JSON.stringify(h)}`);
}

t.test('responses: the common heads are taken, and read as llhttp reads them', async (t) => {
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
  expect(t, 'response', heads, true);
  t.equal(head.keepAlive, false, 'Proxy-Connection: close ends an HTTP/1.1 connection, as in llhttp');
});

t.test('responses declined: what llhttp frames or refuses, and what the fast path leaves to it', async (t) => {
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
  expect(t, 'response', heads, false);
  // Over the client's header limit: llhttp gives its overflow error.
  const big = Buffer.from(`HTTP/1.1 200 OK\r\nx: ${'a'.repeat(MAX)}\r\ncontent-length: 0\r\n\r\n`, 'latin1');
  t.equal(readResponseHead(big, 0, big.length, MAX, []), -1, 'a head over the limit is declined');
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

/** Heads from `arb`: whatever the fast path takes, llhttp reads the same; both outcomes occur often. */
function generated(kind: Kind, arb: fc.Arbitrary<Buffer>, seed: number): void {
  t.test(`generated ${kind} heads: whatever the fast path takes, llhttp reads the same`, async (t) => {
    let taken = 0;
    let runs = 0;
    fc.assert(
      fc.property(arb, (b) => {
        runs++;
        if (check(t, kind, b, 'generated')) taken++;
      }),
      { numRuns: 4000, seed },
    );
    // Both sides of the fast path are exercised (it is not a path that takes nothing, nor everything).
    t.ok(taken > runs / 20 && taken < runs, `taken ${taken} of ${runs}`);
  });
}

/** Heads from `arb` that the fast path takes, with one byte changed, inserted or cut: the same. */
function mutated(kind: Kind, arb: fc.Arbitrary<Buffer>, seed: number): void {
  const read = kind === 'request' ? readRequestHead : readResponseHead;
  const valid = arb.filter((b) => read(b, 0, b.length, MAX, []) > 0);
  t.test(`valid ${kind} heads with one byte changed, inserted or cut: the same`, async (t) => {
    let taken = 0;
    let runs = 0;
    fc.assert(
      fc.property(valid, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'cut'), (b, at, byte, how) => {
        runs++;
        const i = at % b.length;
        const m = how === 'set' ? Buffer.from(b) : how === 'insert' ? Buffer.concat([b.subarray(0, i), Buffer.from([byte]), b.subarray(i)]) : Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
        if (how === 'set') m[i] = byte;
        if (check(t, kind, m, `${how} ${byte} at ${i}`)) taken++;
      }),
      { numRuns: 4000, seed },
    );
    t.ok(taken > 0 && taken < runs, `taken ${taken} of ${runs}`);
  });
}

generated('response', headArb.map(build), 20261206);
mutated('response', headArb.map(build), 61);

t.test('requests: the common heads are taken, and read as llhttp reads them', async (t) => {
  const heads = [
    'GET / HTTP/1.1\r\nHost: 127.0.0.1:15001\r\nUser-Agent: h2load nghttp2/1.52.0\r\nAccept: */*\r\n\r\n',
    'GET /api/items?id=42&x=%20#frag HTTP/1.1\r\nHost: echo\r\nx-request-id: 5f1c2a7e-2b1d-4a8f-9c6e-1d2e3f4a5b6c\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n',
    'HEAD /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n',
    'DELETE /x/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n',
    'OPTIONS //double HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n',
    'GET /old HTTP/1.0\r\n\r\n',
    'PATCH /p HTTP/1.1\r\nHost: a\r\nA: b \t\r\nB:\r\n\r\n',
  ];
  expect(t, 'request', heads, true);
});

t.test('requests declined: bodies, upgrades, expectations and what the fast path leaves to llhttp', async (t) => {
  const heads = [
    'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab',
    'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n',
    'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n',
    'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n',
    'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n',
    'GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n',
    'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n',
    'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
    'get / HTTP/1.1\r\nHost: a\r\n\r\n',
    'GET /a b HTTP/1.1\r\nHost: a\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\n', // not whole yet
    'GET / HTTP/1.1\nHost: a\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n',
  ];
  expect(t, 'request', heads, false);
  const longTarget = Buffer.from(`GET /${'a'.repeat(MAX)} HTTP/1.1\r\nHost: a\r\n\r\n`, 'latin1');
  t.equal(readRequestHead(longTarget, 0, longTarget.length, MAX, []), -1, 'a target over the header limit is declined');
});

const METHOD_PIECES = ['GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'get', 'PRI', 'M-SEARCH', 'GETX', '', 'G\x00T'];
const TARGETS = ['/', '/a?b=c', '/x#y', '//x', '/a%20b', '/~!$&\'()*+,;=:@[]', '*', 'http://x/', '/a b', '/\x7f', '/\x80', '', '/\t'];
const REQ_NAMES = ['Host', 'host', 'Content-Length', 'Connection', 'Proxy-Connection', 'Accept', 'x-request-id', 'Expect', 'Upgrade', 'Transfer-Encoding', 'Bad Name', '', 'expect-ct'];
const REQ_VALUES = ['a', '0', 'close', 'keep-alive', 'Keep-Alive', '*/*', 'v \t', '', '100-continue', '2', 'upgrade', 'websocket', 'chunked', 'x\x7f', 'x\x80', '00'];

const requestArb = fc.record({
  method: pick(METHOD_PIECES, 7),
  target: pick(TARGETS, 6),
  version: pick(['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 ', 'http/1.1'], 2),
  fields: fc.array(fc.tuple(pick(REQ_NAMES, 7), pick(SEPARATORS, 5), pick(REQ_VALUES, 8), pick(EOLS, 1)), { maxLength: 8 }),
  end: pick(['\r\n', '\n', '', '\r'], 1),
});

function buildRequest(h: { method: string; target: string; version: string; fields: [string, string, string, string][]; end: string }): Buffer {
  return Buffer.from(`${h.method} ${h.target} ${h.version}\r\n${h.fields.map(([n, s, v, e]) => `${n}${s}${v}${e}`).join('')}${h.end}`, 'latin1');
}

generated('request', requestArb.map(buildRequest), 1206);
mutated('request', requestArb.map(buildRequest), 612);
