/**
 * HPACK (src/http/h2/hpack.ts, src/http/h2/huffman.ts): the RFC 7541 Appendix C examples
 * byte-exact, interop both ways with nghttp2 inside node:http2 over a raw socket (our encoder's
 * blocks into a node server, the server's response blocks into our decoder, several on one
 * connection so both dynamic tables are exercised, every octet value through Huffman), property
 * tests with fast-check (round trips over many blocks and table sizes; random and mutated bytes
 * fail only with HpackError), and every decoder error path.
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import fc from 'fast-check';
import t, { type Test } from 'tap';
import { HpackDecoder, HpackEncoder, HpackError } from '../../../../src/http/h2/hpack';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

const expectHpackError = (t: Test, fn: () => unknown, msg: RegExp, what: string): void => {
  try {
    fn();
    t.fail(`${what}: no error`);
  } catch (err) {
    t.ok(err instanceof HpackError, `${what}: an HpackError`);
    t.equal((err as HpackError).code, 'ERR_HPACK');
    t.match((err as Error).message, msg, what);
  }
};

t.test('RFC 7541 C.2: literal representations and an indexed field', async (t) => {
  let d = new HpackDecoder();
  t.same(d.decode(hex('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572')), ['custom-key', 'custom-header'], 'C.2.1');
  t.equal(d.dynamicTableSize, 55);
  t.same(d.dynamicTableEntries(), ['custom-key', 'custom-header']);
  t.equal(d.lastListSize, 55);
  d = new HpackDecoder();
  t.same(d.decode(hex('040c 2f73 616d 706c 652f 7061 7468')), [':path', '/sample/path'], 'C.2.2');
  t.equal(d.dynamicTableSize, 0);
  d = new HpackDecoder();
  t.same(d.decode(hex('1008 7061 7373 776f 7264 0673 6563 7265 74')), ['password', 'secret'], 'C.2.3');
  t.equal(d.dynamicTableSize, 0);
  d = new HpackDecoder();
  t.same(d.decode(hex('82')), [':method', 'GET'], 'C.2.4');
  t.equal(d.dynamicTableSize, 0);
  t.same(d.decode(Buffer.alloc(0)), [], 'an empty block is an empty list');
  t.equal(d.lastListSize, 0);
});

const REQ1 = [':method', 'GET', ':scheme', 'http', ':path', '/', ':authority', 'www.example.com'];
const REQ2 = [...REQ1, 'cache-control', 'no-cache'];
const REQ3 = [':method', 'GET', ':scheme', 'https', ':path', '/index.html', ':authority', 'www.example.com', 'custom-key', 'custom-value'];
const C3 = ['8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', '8286 84be 5808 6e6f 2d63 6163 6865', '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65'];
const C4 = ['8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', '8286 84be 5886 a8eb 1064 9cbf', '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf'];

for (const [name, blocks] of [['C.3 (no Huffman)', C3], ['C.4 (Huffman)', C4]] as const) {
  t.test(`RFC 7541 ${name}: three requests on one decoder`, async (t) => {
    const d = new HpackDecoder();
    t.same(d.decode(hex(blocks[0])), REQ1);
    t.equal(d.dynamicTableSize, 57);
    t.same(d.dynamicTableEntries(), [':authority', 'www.example.com']);
    t.same(d.decode(hex(blocks[1])), REQ2);
    t.equal(d.dynamicTableSize, 110);
    t.same(d.dynamicTableEntries(), ['cache-control', 'no-cache', ':authority', 'www.example.com']);
    t.same(d.decode(hex(blocks[2])), REQ3);
    t.equal(d.dynamicTableSize, 164);
    t.same(d.dynamicTableEntries(), ['custom-key', 'custom-value', 'cache-control', 'no-cache', ':authority', 'www.example.com']);
    t.equal(d.lastListSize, REQ3.reduce((n, s) => n + s.length, 0) + 32 * 5);
  });
}

t.test('RFC 7541 C.4: the encoder produces the published bytes', async (t) => {
  const e = new HpackEncoder();
  t.equal(e.encode(REQ1).toString('hex'), hex(C4[0]).toString('hex'));
  t.equal(e.encode(REQ2).toString('hex'), hex(C4[1]).toString('hex'));
  t.equal(e.encode(REQ3).toString('hex'), hex(C4[2]).toString('hex'));
  t.equal(e.dynamicTableSize, 164);
});

const D21 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const D22 = 'Mon, 21 Oct 2013 20:13:22 GMT';
const LOC = 'https://www.example.com';
const COOKIE = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
const RES1 = [':status', '302', 'cache-control', 'private', 'date', D21, 'location', LOC];
const RES2 = [':status', '307', 'cache-control', 'private', 'date', D21, 'location', LOC];
const RES3 = [':status', '200', 'cache-control', 'private', 'date', D22, 'location', LOC, 'content-encoding', 'gzip', 'set-cookie', COOKIE];
const C5 = [
  '4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
  '4803 3330 37c1 c0bf',
  '88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31',
];
const C6 = [
  '4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3',
  '4883 640e ffc1 c0bf',
  '88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07',
];

for (const [name, blocks] of [['C.5 (no Huffman)', C5], ['C.6 (Huffman)', C6]] as const) {
  t.test(`RFC 7541 ${name}: three responses, a 256-octet table and eviction`, async (t) => {
    const d = new HpackDecoder({ maxTableSize: 256 });
    t.same(d.decode(hex(blocks[0])), RES1);
    t.equal(d.dynamicTableSize, 222);
    t.same(d.dynamicTableEntries(), ['location', LOC, 'date', D21, 'cache-control', 'private', ':status', '302']);
    t.same(d.decode(hex(blocks[1])), RES2);
    t.equal(d.dynamicTableSize, 222, ':status 302 evicted for :status 307');
    t.same(d.dynamicTableEntries(), [':status', '307', 'location', LOC, 'date', D21, 'cache-control', 'private']);
    t.same(d.decode(hex(blocks[2])), RES3);
    t.equal(d.dynamicTableSize, 215);
    t.same(d.dynamicTableEntries(), ['set-cookie', COOKIE, 'content-encoding', 'gzip', 'date', D22]);
  });
}

t.test('encoder: the C.5/C.6 responses round-trip through a 256-octet table', async (t) => {
  const e = new HpackEncoder({ maxTableSize: 256 });
  const d = new HpackDecoder({ maxTableSize: 256 });
  const b1 = e.encode(RES1);
  t.equal(b1[0], 0x3f, 'a size update to 256 first (the peer starts at 4096)');
  t.same(d.decode(b1), RES1);
  t.equal(d.dynamicTableMaxSize, 256);
  const b2 = e.encode(RES2);
  t.same(d.decode(b2), RES2);
  // cache-control is indexed; date and location (indexed on repeat) enter the table now.
  t.ok(b2.length < b1.length, `the repeated fields are indexed or enter the table (${b2.length} octets, first ${b1.length})`);
  t.same(d.dynamicTableEntries().slice(0, 4), ['location', LOC, 'date', D21], 'date and location added on their second sending');
  const b2again = e.encode(RES2);
  t.same(d.decode(b2again), RES2);
  t.equal(b2again.toString('hex').length / 2, 4, 'the same response once more: four indexed fields');
  t.same(d.decode(e.encode(RES3)), RES3);
  t.equal(d.dynamicTableSize, e.dynamicTableSize, 'both tables hold the same octets');
});

/** A response head as a sidecar forwards it, the n-th on one connection: the date turns every 1000, one field unique to each. */
const typicalResponse = (n: number): string[] => [
  ':status', '200',
  'server', 'nginx/1.22.1',
  'date', `Fri, 04 Dec 2026 13:40:${String(10 + Math.floor(n / 1000)).padStart(2, '0')} GMT`,
  'content-type', 'application/json',
  'content-length', '20',
  'x-upstream-port', n % 2 === 0 ? '8081' : '8082',
  'via', '2 meshlet',
  'x-request-id', `7f3a9c1e-4b2d-4e8f-9a6b-${String(n).padStart(12, '0')}`,
];

/** Decodes each field representation of a block: 'indexed', 'literal' (incremental indexing), 'literal-noindex', 'never'. */
function representations(block: Buffer): string[] {
  const out: string[] = [];
  let pos = 0;
  const int = (n: number): number => {
    const max = (1 << n) - 1;
    let v = block[pos++]! & max;
    if (v < max) return v;
    let m = 1;
    for (;;) {
      const b = block[pos++]!;
      v += (b & 0x7f) * m;
      m *= 128;
      if ((b & 0x80) === 0) return v;
    }
  };
  const str = (): void => {
    const len = int(7);
    pos += len;
  };
  while (pos < block.length) {
    const b = block[pos]!;
    if (b & 0x80) {
      int(7);
      out.push('indexed');
    } else if ((b & 0xe0) === 0x20) {
      int(5);
    } else {
      const kind = (b & 0xc0) === 0x40 ? 'literal' : (b & 0xf0) === 0x10 ? 'never' : 'literal-noindex';
      if (int(kind === 'literal' ? 6 : 4) === 0) str();
      str();
      out.push(kind);
    }
  }
  return out;
}

t.test('encoder steady state: a stream of similar responses is indexed fields, a unique value evicts nothing', async (t) => {
  const e = new HpackEncoder();
  const d = new HpackDecoder();
  const sizes: number[] = [];
  let tableAt100 = -1;
  for (let n = 0; n < 3000; n++) {
    const list = typicalResponse(n);
    const b = e.encode(list);
    t.same(d.decode(b), list, `response ${n} decodes`, { diagnostic: false });
    sizes.push(b.length);
    if (n === 100) tableAt100 = e.dynamicTableSize;
    if (n === 2500) {
      // Every stable field one octet; the id a literal without indexing on the name added once.
      t.same(representations(b), ['indexed', 'indexed', 'indexed', 'indexed', 'indexed', 'indexed', 'indexed', 'literal-noindex'], 'response 2500: 7 indexed fields, the unique id a literal without indexing');
      t.equal(b[7], 0x0f, 'the id literal names the dynamic entry (index >= 15)');
    }
  }
  // The first block carries everything in full; from the third on, only the id is a literal.
  t.ok(sizes[0]! > 100, `first response ${sizes[0]} octets`);
  const idLiteral = sizes[2500]! - 7;
  t.ok(idLiteral <= 30, `the id literal takes ${idLiteral} octets`);
  for (const n of [2, 10, 500, 999, 2999]) t.equal(sizes[n], sizes[2500], `response ${n}: ${sizes[n]} octets, as the steady state`);
  // A new date costs one literal, the next response adds it, then it is indexed again.
  t.ok(sizes[1000]! > sizes[2500]! && sizes[1001]! > sizes[2500]! && sizes[1002] === sizes[2500], `date change at 1000: ${sizes[1000]}, ${sizes[1001]}, ${sizes[1002]} octets`);
  // The unique ids never entered the table: it grows by one date entry a second only.
  const entries = d.dynamicTableEntries();
  t.equal(entries.filter((_, i) => i % 2 === 0 && entries[i] === 'x-request-id').length, 1, 'one x-request-id entry (the first, for its name)');
  t.ok(e.dynamicTableSize - tableAt100 <= 2 * (4 + 29 + 32), `the table grew by ${e.dynamicTableSize - tableAt100} octets over 2,900 responses (two dates)`);
  t.equal(d.dynamicTableSize, e.dynamicTableSize);
});

t.test('encoder: indexed on repeat (content-length, date, x-request-id...)', async (t) => {
  const e = new HpackEncoder();
  const d = new HpackDecoder();
  const rt = (l: string[]): Buffer => {
    const b = e.encode(l);
    t.same(d.decode(b), l);
    return b;
  };
  t.same(representations(rt(['content-length', '12'])), ['literal-noindex'], 'first content-length 12: not indexed');
  t.same(representations(rt(['content-length', '13'])), ['literal-noindex'], 'a different value: not indexed');
  t.same(representations(rt(['content-length', '13'])), ['literal'], 'the same value again: added to the table');
  t.same(representations(rt(['content-length', '13'])), ['indexed'], 'then indexed');
  t.same(representations(rt(['content-length', '12'])), ['literal-noindex'], 'another value: not indexed');
  t.same(representations(rt(['content-length', '13'])), ['indexed'], 'the entry is still there');
  // A non-static name: added with its first value (so its name can be referenced), then values only.
  t.same(representations(rt(['traceparent', '00-a-b-01'])), ['literal'], 'first traceparent adds the name');
  for (let i = 0; i < 50; i++) {
    const b = rt(['traceparent', `00-${i}-b-01`, 'x-stable', 'yes']);
    t.same(representations(b), i === 0 ? ['literal-noindex', 'literal'] : ['literal-noindex', 'indexed'], `request ${i}`, { diagnostic: false });
    t.equal(b[0], 0x0f, 'the dynamic name, index >= 15', { diagnostic: false });
  }
  t.same(d.dynamicTableEntries(), ['x-stable', 'yes', 'traceparent', '00-a-b-01', 'content-length', '13'], 'no per-request value in the table');
});

t.test('encoder policy', async (t) => {
  const e = new HpackEncoder();
  const d = new HpackDecoder();
  t.equal(e.encode([':status', '200']).toString('hex'), '88', ':status 200 is static entry 8');
  t.equal(e.encode([':status', '404', 'content-type', 'text/plain']).toString('hex').slice(0, 4), '8d5f', 'static :status 404, static name content-type');
  const resp = [':status', '201', 'content-type', 'application/grpc', 'grpc-encoding', 'identity', 'x-envoy-upstream', 'svc-a'];
  t.same(d.decode(e.encode([':status', '200'])), [':status', '200']);
  const e2 = new HpackEncoder();
  const d2 = new HpackDecoder();
  t.same(d2.decode(e2.encode(resp)), resp);
  const again = e2.encode(resp);
  t.equal(again.length, 4, 'a repeated 4-field response is 4 octets');
  t.same(d2.decode(again), resp);

  // Sensitive fields: never indexed (0001xxxx), static name index where there is one.
  const e3 = new HpackEncoder();
  const d3 = new HpackDecoder();
  for (const [name, idx] of [['authorization', 23], ['proxy-authorization', 49], ['cookie', 32], ['set-cookie', 55]] as const) {
    const b = e3.encode([name, 'secret-1']);
    t.equal(b[0], 0x1f, `${name}: never indexed, index >= 15`);
    t.equal(b[1], idx - 15, `${name}: static name ${idx}`);
    t.same(d3.decode(b), [name, 'secret-1']);
    t.equal(e3.encode([name, 'secret-1']).length, b.length, `${name}: sent again in full`);
  }
  // An API key (the gateway's x-api-key): no static name, never indexed with a literal name.
  const k = e3.encode(['x-api-key', 'secret-2']);
  t.equal(k[0], 0x10, 'x-api-key: never indexed, literal name');
  t.same(d3.decode(k), ['x-api-key', 'secret-2']);
  t.equal(e3.dynamicTableSize, 0, 'no sensitive field in the table');

  // Large values: literal without indexing; a custom name reuses the dynamic name.
  const e4 = new HpackEncoder();
  const d4 = new HpackDecoder();
  const big = 'v'.repeat(2100);
  const b = e4.encode(['x-big', big]);
  t.equal(b[0], 0x00, 'literal without indexing, new name');
  t.same(d4.decode(b), ['x-big', big]);
  t.equal(e4.dynamicTableSize, 0);
  t.same(d4.decode(e4.encode(['x-big', 'small'])), ['x-big', 'small']);
  const b2 = e4.encode(['x-big', big]);
  t.equal(b2[0], 0x0f, 'literal without indexing, name from the dynamic table (index 62)');
  t.equal(b2[1], 62 - 15);
  t.same(d4.decode(b2), ['x-big', big]);
  const cl = e4.encode(['content-length', '12']);
  t.equal(cl[0], 0x0f, 'content-length is not indexed');
  t.same(d4.decode(cl), ['content-length', '12']);
  t.same(d4.decode(e4.encode(['x-big', 'small2', 'x-big', 'small'])), ['x-big', 'small2', 'x-big', 'small'], 'a dynamic value entry behind a newer one');
  t.same(d4.decode(e4.encode(['x-odd'])), [], 'a trailing name without a value is ignored');
  t.same(d4.decode(e4.encode([':authority', ''])), [':authority', ''], 'an empty static value matches');
});

t.test('encoder: returned blocks are never written again, across slabs', async (t) => {
  const e = new HpackEncoder();
  const d = new HpackDecoder();
  const first = e.encode(REQ3);
  const firstHex = first.toString('hex');
  t.same(d.decode(first), REQ3);
  const kept: [Buffer, string][] = [];
  const other = new HpackEncoder(); // a second connection cuts its blocks from the same slabs
  for (let i = 0; i < 3000; i++) {
    const list = [':path', `/p/${i}`, 'x-n', String(i), 'x-pad', 'p'.repeat(i % 50)];
    const b = e.encode(list);
    const o = other.encode(list);
    if (i % 100 === 0) kept.push([b, b.toString('hex')], [o, o.toString('hex')]);
    if (d.decode(b).join('|') !== list.join('|')) t.fail(`block ${i} decoded wrong`);
  }
  // A block larger than a slab, begun after a field: the part written so far moves to a new slab.
  const huge = ['x-a', '1', 'x-huge', '~'.repeat(40000), 'x-b', '2'];
  const hb = e.encode(huge);
  t.same(d.decode(hb), huge);
  t.equal(first.toString('hex'), firstHex, 'the first block is intact');
  t.ok(kept.every(([b, h]) => b.toString('hex') === h), 'every kept block is intact');
});

t.test('a large table grows its ring as entries arrive, keeping order', async (t) => {
  const e = new HpackEncoder({ maxTableSize: 65536 });
  const d = new HpackDecoder({ maxTableSize: 65536 });
  e.setMaxTableSize(65536);
  const list: string[] = [];
  for (let i = 0; i < 1500; i++) list.push(`n${i % 7}`, `v${i}`);
  const first = e.encode(list);
  t.same(d.decode(first), list);
  const entries = d.dynamicTableEntries();
  t.equal(entries.length, 2 * 1500, 'all 1500 entries fit in 64 KB');
  t.same(entries.slice(0, 4), ['n1', 'v1499', 'n0', 'v1498'], 'newest first');
  t.same(entries.slice(-2), ['n0', 'v0']);
  t.equal(d.dynamicTableSize, e.dynamicTableSize);
  const again = e.encode(list);
  t.equal(again.length, 65 + 128 * 2 + (1500 - 65 - 128) * 3, 'each repeated field is an index: 1 octet below 127, 2 below 255, then 3');
  t.same(d.decode(again), list);
});

t.test('encoder: table size updates', async (t) => {
  const e = new HpackEncoder();
  const d = new HpackDecoder();
  t.same(d.decode(e.encode(['x-a', '1', 'x-b', '2'])), ['x-a', '1', 'x-b', '2']);
  e.setMaxTableSize(0);
  e.setMaxTableSize(8192);
  const b = e.encode(['x-a', '1']);
  t.equal(b.subarray(0, 5).toString('hex'), '203fe11f' + '40', 'update to 0 (the minimum) then to 4096 (own limit), then the field again');
  t.same(d.decode(b), ['x-a', '1']);
  t.equal(d.dynamicTableMaxSize, 4096);
  t.equal(d.dynamicTableSize, 36);
  e.setMaxTableSize(100);
  const c = e.encode(['x-a', '1']);
  t.equal(c.subarray(0, 3).toString('hex'), '3f45be', 'one update to 100: the entry survives');
  t.same(d.decode(c), ['x-a', '1']);
  t.equal(d.dynamicTableMaxSize, 100);
  e.setMaxTableSize(0);
  t.same(d.decode(e.encode(['x-c', '3'])), ['x-c', '3']);
  t.equal(d.dynamicTableSize, 0, 'a zero table indexes nothing');
  t.equal(e.dynamicTableSize, 0);
  const z = new HpackEncoder({ maxTableSize: 0 });
  t.equal(z.encode([':method', 'GET']).toString('hex'), '2082', 'a zero own limit is announced in the first block');
  t.throws(() => new HpackEncoder({ maxTableSize: -1 }), RangeError);
  t.throws(() => new HpackDecoder({ maxTableSize: 1.5 }), RangeError);
  t.throws(() => e.setMaxTableSize(-1), RangeError);
  const big = new HpackEncoder();
  big.setMaxTableSize(2 ** 32 - 1);
  t.equal(big.encode([':method', 'GET']).toString('hex'), '3fe11f82', 'a u32 peer setting is clamped to the own limit 4096');
});

t.test('decoder errors', async (t) => {
  const d = () => new HpackDecoder();
  expectHpackError(t, () => d().decode(hex('80')), /index 0/, 'indexed field 0');
  expectHpackError(t, () => d().decode(hex('be')), /index 62 beyond/, 'index past an empty dynamic table');
  expectHpackError(t, () => d().decode(hex('7f0f 00')), /name index 78 beyond/, 'literal name index past the tables');
  expectHpackError(t, () => d().decode(hex('0f30 00')), /name index 63 beyond/, 'literal (without indexing) name index past the tables');
  expectHpackError(t, () => d().decode(hex('ff80 8080 8008')), /integer above 2\^31/, 'integer overflow');
  expectHpackError(t, () => d().decode(hex('fff0 ffff ff07')), /integer above 2\^31/, 'integer 2^31 + 112');
  expectHpackError(t, () => d().decode(hex('ff80 8080 8080 8080 8000')), /too many octets/, 'endless zero continuation octets');
  expectHpackError(t, () => d().decode(hex('ff80')), /truncated integer/, 'truncated integer');
  expectHpackError(t, () => d().decode(hex('40')), /string expected/, 'block ends before a name');
  expectHpackError(t, () => d().decode(hex('4003 6162')), /truncated string: 3 octets declared, 2 left/, 'truncated string');
  expectHpackError(t, () => d().decode(hex('0003 6162 63')), /string expected/, 'block ends before a value');
  expectHpackError(t, () => d().decode(hex('0081 00')), /padding not all ones/, 'Huffman padding of zeros');
  expectHpackError(t, () => d().decode(hex('0082 07ff')), /padding longer than 7 bits/, 'Huffman padding of 11 one bits');
  expectHpackError(t, () => d().decode(hex('0081 ff')), /padding longer than 7 bits/, 'a full octet of padding');
  expectHpackError(t, () => d().decode(hex('0084 ffff fffc')), /contains EOS/, 'Huffman EOS (30 one bits)');
  expectHpackError(t, () => d().decode(hex('0085 07ff ffff ff')), /contains EOS/, "Huffman EOS after '0', ending in a high nibble");
  expectHpackError(t, () => d().decode(hex('0081 fe')), /padding not all ones/, "a code cut short ('?' starts 11111111 00)");
  expectHpackError(t, () => d().decode(hex('3fe2 1f')), /size update to 4097 above the limit 4096/, 'size update above the limit');
  expectHpackError(t, () => new HpackDecoder({ maxTableSize: 100 }).decode(hex('3f46')), /101 above the limit 100/, 'size update above a small limit');
  expectHpackError(t, () => d().decode(hex('8220')), /size update after a header field/, 'size update after a field');
  const ok = d();
  t.same(ok.decode(hex('203f e11f 82')), [':method', 'GET'], 'two updates at the block start are fine');
  t.equal(ok.dynamicTableMaxSize, 4096);
  // A name reference to an entry the same insertion evicts (RFC 7541 4.4).
  const s = new HpackDecoder({ maxTableSize: 64 });
  t.same(s.decode(hex('4003 6162 6301 78')), ['abc', 'x']);
  t.same(s.decode(hex('7e02 7979')), ['abc', 'yy'], 'name taken before the eviction');
  t.same(s.dynamicTableEntries(), ['abc', 'yy']);
  const one = new HpackDecoder({ maxTableSize: 36 });
  t.same(one.decode(hex('4003 6162 6302 7879')), ['abc', 'xy'], 'an entry larger than the table empties it');
  t.equal(one.dynamicTableSize, 0);
});

// ---- nghttp2 interop over a raw socket ----

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const frame = (type: number, flags: number, stream: number, payload: Buffer): Buffer => {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
};

/** A raw HTTP/2 client connection: sends the preface and SETTINGS, ACKs the server's, collects frames. */
class RawClient {
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  private frames: Frame[] = [];
  private waiter: (() => void) | null = null;
  constructor(port: number, settings: Buffer = Buffer.alloc(0)) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.write(Buffer.concat([PREFACE, frame(4, 0, 0, settings)]));
    this.socket.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      while (this.buf.length >= 9) {
        const len = this.buf.readUIntBE(0, 3);
        if (this.buf.length < 9 + len) break;
        const f = { type: this.buf[3]!, flags: this.buf[4]!, stream: this.buf.readUInt32BE(5) & 0x7fffffff, payload: this.buf.subarray(9, 9 + len) };
        this.buf = this.buf.subarray(9 + len);
        if (f.type === 4 && (f.flags & 1) === 0) this.socket.write(frame(4, 1, 0, Buffer.alloc(0)));
        this.frames.push(f);
      }
      this.waiter?.();
    });
  }
  /** The next frame on `stream` of `type`, skipping others. */
  async next(type: number, stream: number): Promise<Frame> {
    for (;;) {
      const i = this.frames.findIndex((f) => f.type === type && f.stream === stream);
      if (i >= 0) return this.frames.splice(i, 1)[0]!;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }
  /** One response's header block: HEADERS (padding and priority stripped) plus CONTINUATION until END_HEADERS. */
  async headerBlock(stream: number): Promise<Buffer> {
    const h = await this.next(1, stream);
    let p = h.payload;
    let pad = 0;
    if (h.flags & 0x8) {
      pad = p[0]!;
      p = p.subarray(1);
    }
    if (h.flags & 0x20) p = p.subarray(5);
    const parts = [p.subarray(0, p.length - pad)];
    let flags = h.flags;
    while ((flags & 0x4) === 0) {
      const c = await this.next(9, stream);
      parts.push(c.payload);
      flags = c.flags;
    }
    return Buffer.concat(parts);
  }
  sendHeaders(stream: number, block: Buffer): void {
    this.socket.write(frame(1, 0x5, stream, block)); // END_STREAM | END_HEADERS
  }
}

const listen = async (server: http2.Http2Server): Promise<number> => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
};

/**
 * nghttp2 drops (silently, as node configures it) a field whose value holds a control octet
 * other than HTAB: 0x01-0x08, 0x0a-0x1f, 0x7f. Those octets' Huffman codes are checked in the
 * other direction (nghttp2's encoder into our decoder) and by the round-trip properties.
 */
const nghttp2Valid = (l: readonly string[]): string[] => {
  const out: string[] = [];
  for (let i = 0; i < l.length; i += 2) if (!/[\x00-\x08\x0a-\x1f\x7f]/.test(l[i + 1]!)) out.push(l[i]!, l[i + 1]!);
  return out;
};

/** Request lists that reuse, vary and grow fields, and carry each octet 1..255 in Huffman-friendly values. */
function requestLists(): string[][] {
  const base = [':method', 'GET', ':scheme', 'http', ':authority', 'svc.local:8080'];
  const lists: string[][] = [];
  for (let i = 0; i < 6; i++) {
    lists.push([...base, ':path', `/api/items/${i % 2}`, 'user-agent', 'meshlet-test/1.0', 'accept', 'application/json', 'x-request-id', `req-${i}`, 'x-trace', `t${i % 3}`]);
  }
  lists.push([...base, ':path', '/auth', 'authorization', 'Bearer abc.def', 'cookie', 'a=1', 'cookie', 'b=2']);
  lists.push([...base, ':path', '/big', 'x-big', 'q'.repeat(3000)]);
  for (let start = 1; start < 256; start += 32) {
    const l = [...base, ':path', `/octets/${start}`];
    for (let o = start; o < Math.min(start + 32, 256); o++) l.push(`x-o${o}`, `aaaaaaaaaaaaaaaa${String.fromCharCode(o)}aaaa`);
    lists.push(l);
  }
  lists.push([...base, ':path', '/api/items/0', 'user-agent', 'meshlet-test/1.0', 'accept', 'application/json', 'x-trace', 't0']);
  return lists;
}

for (const tableSize of [4096, 256, 0]) {
  t.test(`interop: our encoder's blocks into nghttp2 (server header table ${tableSize})`, async (t) => {
    const server = http2.createServer({ settings: { headerTableSize: tableSize }, maxHeaderListPairs: 1000 });
    const seen: { raw: string[]; sensitive: string[] }[] = [];
    let notify: (() => void) | null = null;
    server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, raw: string[]) => {
      seen.push({ raw, sensitive: (headers as unknown as Record<symbol, string[] | undefined>)[http2.sensitiveHeaders] ?? [] });
      stream.respond({ ':status': 204 });
      stream.end();
      notify?.();
    });
    server.on('sessionError', (err) => t.fail(`session error ${err.message}`));
    const port = await listen(server);
    const client = new RawClient(port);
    t.teardown(() => {
      client.socket.destroy();
      server.close();
    });
    // Wait for the server's SETTINGS, then apply its table size as a connection would.
    const settings = await client.next(4, 0);
    const enc = new HpackEncoder();
    for (let i = 0; i + 6 <= settings.payload.length; i += 6) {
      if (settings.payload.readUInt16BE(i) === 1) enc.setMaxTableSize(settings.payload.readUInt32BE(i + 2));
    }
    const lists = requestLists();
    let bytes = 0;
    for (let i = 0; i < lists.length; i++) {
      const block = enc.encode(lists[i]!);
      bytes += block.length;
      const got = new Promise<void>((r) => (notify = r));
      client.sendHeaders(2 * i + 1, block);
      await got;
      t.same(seen[i]!.raw, nghttp2Valid(lists[i]!), `request ${i} arrived as sent`);
      await client.next(1, 2 * i + 1); // the response HEADERS: the stream is fine
    }
    const auth = seen[6]!.sensitive;
    t.ok(auth.includes('authorization') && auth.includes('cookie'), `nghttp2 saw the never-indexed flag (${auth.join(', ')})`);
    const dropped = lists.reduce((n, l) => n + l.length - nghttp2Valid(l).length, 0) / 2;
    t.equal(dropped, 31, 'only the 31 fields with a control octet were dropped by nghttp2');
    if (tableSize === 4096) {
      const again = enc.encode(lists[0]!);
      t.ok(again.length < 30, `a repeated request costs ${again.length} octets (all ${lists.length} requests: ${bytes})`);
    }
  });
}

/** Response header sets the server sends, in order, on one connection. */
function responseLists(): string[][] {
  const lists: string[][] = [];
  for (let i = 0; i < 5; i++) lists.push([':status', '200', 'content-type', 'application/grpc', 'grpc-status', '0', 'x-served-by', `pod-${i % 2}`]);
  lists.push([':status', '404', 'set-cookie', 'sid=abcdef; HttpOnly', 'x-big', 'z'.repeat(3000)]);
  for (let start = 1; start < 256; start += 32) {
    const l = [':status', '201'];
    for (let o = start; o < Math.min(start + 32, 256); o++) l.push(`x-o${o}`, `aaaaaaaaaaaaaaaa${String.fromCharCode(o)}aaaa`);
    lists.push(l);
  }
  lists.push([':status', '200', 'content-type', 'application/grpc', 'grpc-status', '0', 'x-served-by', 'pod-0']);
  return lists;
}

for (const tableSize of [4096, 256]) {
  t.test(`interop: nghttp2's response blocks into our decoder (our header table ${tableSize})`, async (t) => {
    const lists = responseLists();
    const server = http2.createServer();
    server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      const l = lists[Number((headers[':path'] as string).slice(1))]!;
      const h: http2.OutgoingHttpHeaders = {};
      for (let i = 0; i < l.length; i += 2) h[l[i]!] = l[i + 1]!;
      stream.respond(h);
      stream.end();
    });
    const port = await listen(server);
    const settings = Buffer.alloc(6);
    settings.writeUInt16BE(1, 0);
    settings.writeUInt32BE(tableSize, 2);
    const client = new RawClient(port, settings);
    t.teardown(() => {
      client.socket.destroy();
      server.close();
    });
    const enc = new HpackEncoder();
    const dec = new HpackDecoder({ maxTableSize: tableSize });
    let maxTable = 0;
    for (let i = 0; i < lists.length; i++) {
      client.sendHeaders(2 * i + 1, enc.encode([':method', 'GET', ':scheme', 'http', ':authority', 'x', ':path', `/${i}`]));
      const got = dec.decode(await client.headerBlock(2 * i + 1));
      const date = got.indexOf('date');
      t.ok(date >= 0 && date % 2 === 0 && /GMT$/.test(got[date + 1]!), 'node added a date');
      got.splice(date, 2);
      t.same(got, lists[i], `response ${i} decoded as sent`);
      maxTable = Math.max(maxTable, dec.dynamicTableSize);
    }
    t.ok(maxTable > 0 && maxTable <= tableSize, `the dynamic table was used (up to ${maxTable} octets)`);
  });
}

// ---- property tests ----

const latin1 = (max: number): fc.Arbitrary<string> =>
  fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: max }).map((a) => String.fromCharCode(...a));
const fieldName = fc.oneof(
  fc.constantFrom(':status', ':path', ':method', 'content-type', 'cookie', 'authorization', 'set-cookie', 'date', 'x-a', 'x-b', 'content-length', 'grpc-status'),
  fc.stringMatching(/^[a-z0-9-]{1,12}$/),
);
const fieldValue = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('', '200', '404', 'GET', '/', 'text/plain', 'gzip, deflate', 'v1', 'v2') },
  { weight: 4, arbitrary: latin1(40) },
  { weight: 1, arbitrary: latin1(3000) },
);
const headerList = fc.array(fc.tuple(fieldName, fieldValue), { maxLength: 12 }).map((a) => a.flat());
const step = fc.record({ list: headerList, resize: fc.option(fc.integer({ min: 0, max: 8192 }), { freq: 6 }) });

t.test('property: encoder -> decoder round trips over many blocks and table sizes', async (t) => {
  fc.assert(
    fc.property(fc.constantFrom(0, 64, 256, 1000, 4096, 8192), fc.array(step, { minLength: 1, maxLength: 25 }), (limit, steps) => {
      const enc = new HpackEncoder({ maxTableSize: limit });
      const dec = new HpackDecoder({ maxTableSize: limit });
      for (const s of steps) {
        if (s.resize !== null) enc.setMaxTableSize(s.resize);
        const out = dec.decode(enc.encode(s.list));
        if (JSON.stringify(out) !== JSON.stringify(s.list)) return false;
        if (dec.lastListSize !== s.list.reduce((n, x) => n + x.length, 0) + 16 * s.list.length) return false;
        if (dec.dynamicTableSize !== enc.dynamicTableSize) return false;
      }
      return true;
    }),
    { numRuns: 300 },
  );
  t.pass('300 runs of up to 25 blocks');
});

const onlyHpackErrors = (bytes: Uint8Array[], dec: HpackDecoder): boolean => {
  for (const b of bytes) {
    try {
      dec.decode(Buffer.from(b));
    } catch (err) {
      if (!(err instanceof HpackError)) throw err;
      return true; // a connection ends at its first error
    }
  }
  return true;
};

t.test('property: random bytes fail only with HpackError, and finish', async (t) => {
  const start = Date.now();
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 5 }), fc.constantFrom(0, 256, 4096), (blocks, limit) =>
      onlyHpackErrors(blocks, new HpackDecoder({ maxTableSize: limit })),
    ),
    { numRuns: 3000 },
  );
  // Valid blocks with bytes flipped, cut or inserted: reaches deeper than uniform noise.
  fc.assert(
    fc.property(headerList, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'cut', 'insert')), { maxLength: 4 }), (list, muts) => {
      const enc = new HpackEncoder();
      const dec = new HpackDecoder();
      const good = enc.encode(list);
      let b = Buffer.from(enc.encode(list));
      for (const [at, v, kind] of muts) {
        const i = b.length === 0 ? 0 : at % b.length;
        if (kind === 'set' && b.length > 0) b[i] = v;
        else if (kind === 'cut') b = b.subarray(0, i);
        else b = Buffer.concat([b.subarray(0, i), Buffer.from([v]), b.subarray(i)]);
      }
      return onlyHpackErrors([good, b], dec);
    }),
    { numRuns: 3000 },
  );
  t.ok(Date.now() - start < 60_000, `finished in ${Date.now() - start} ms`);
});
