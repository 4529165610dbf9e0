/**
 * The header-name shortcuts of src/http/headers.ts and src/observability/observer.ts must answer
 * exactly as the plain operations they stand for: `lowerName` as `toLowerCase`, `isHopByHop` as
 * `HOP_BY_HOP.has`, `observedBit` as membership in the names the observer reads, and the
 * Connection-token sets must drop exactly the headers the Connection header names. Checked on the
 * common names in every spelling, near misses of them (one character changed, one case flipped),
 * and fast-check strings.
 */
import fc from 'fast-check';
import t from 'tap';
import { connectionTokens, forwardRequestHeaders, HOP_BY_HOP, isHopByHop, lowerName } from '../../../src/http/headers';
import { flatGetter, observedBit, observedBits, SOURCE_HEADER } from '../../../src/observability/observer';
import { TRACE_HEADERS } from '../../../src/observability/trace-context';

const COMMON = [
  'accept', 'accept-encoding', 'accept-language', 'accept-ranges', 'authorization', 'cache-control', 'connection', 'content-encoding',
  'content-length', 'content-type', 'cookie', 'date', 'etag', 'expires', 'host', 'if-modified-since', 'if-none-match', 'keep-alive',
  'last-modified', 'location', 'origin', 'pragma', 'referer', 'server', 'set-cookie', 'te', 'traceparent', 'tracestate',
  'transfer-encoding', 'upgrade', 'user-agent', 'vary', 'via', 'x-forwarded-for', 'x-forwarded-proto', 'x-request-id',
  ...HOP_BY_HOP, ...TRACE_HEADERS, SOURCE_HEADER, 'x-b3-parentspanid',
];

/** A name's spellings and near misses: capitalized, upper, one case flipped, one character changed, one longer and shorter. */
function variants(name: string): string[] {
  const out = [name, name.toUpperCase(), name.replace(/(^|-)([a-z])/g, (_m, d: string, c: string) => d + c.toUpperCase()), `${name}x`, name.slice(1)];
  for (let i = 0; i < name.length; i++) {
    const c = name[i] as string;
    out.push(name.slice(0, i) + (c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase()) + name.slice(i + 1));
    out.push(name.slice(0, i) + (c === 'z' ? 'y' : String.fromCharCode(c.charCodeAt(0) + 1)) + name.slice(i + 1));
  }
  return out;
}

/** Fresh strings (not the source's literals), as llhttp hands names over. */
const fresh = (s: string): string => Buffer.from(s, 'latin1').toString('latin1');

const OBSERVED = new Set(['x-request-id', SOURCE_HEADER, ...TRACE_HEADERS]);

t.test('lowerName, isHopByHop and observedBit answer as toLowerCase, HOP_BY_HOP and the observed set, for common names and near misses', async (t) => {
  const names = [...new Set(COMMON.flatMap(variants)), 'ETag', 'X-Request-ID', 'WWW-Authenticate', '', 'x'];
  let wrong = 0;
  const bits = new Map<number, string>();
  for (const raw of names) {
    for (const name of [raw, fresh(raw)]) {
      if (lowerName(name) !== name.toLowerCase()) {
        wrong++;
        t.fail(`lowerName(${JSON.stringify(name)})`);
      }
      if (isHopByHop(name) !== HOP_BY_HOP.has(name)) {
        wrong++;
        t.fail(`isHopByHop(${JSON.stringify(name)})`);
      }
      const bit = observedBit(name);
      if ((bit !== 0) !== OBSERVED.has(name.toLowerCase())) {
        wrong++;
        t.fail(`observedBit(${JSON.stringify(name)}) = ${bit}`);
      }
      if (bit !== 0) {
        const prev = bits.get(bit);
        if (prev !== undefined && prev !== name.toLowerCase()) t.fail(`${name} shares bit ${bit} with ${prev}`);
        bits.set(bit, name.toLowerCase());
      }
    }
  }
  t.equal(wrong, 0, `${names.length * 2} names`);
  t.equal(bits.size, OBSERVED.size, 'one bit for each observed name');
});

t.test('the same on arbitrary strings (fast-check)', async (t) => {
  const name = fc.oneof(
    fc.string({ maxLength: 24 }),
    fc.constantFrom(...COMMON).chain((n) => fc.constantFrom(...variants(n))),
  );
  fc.assert(
    fc.property(name, (n) => {
      const s = fresh(n);
      return lowerName(s) === s.toLowerCase() && isHopByHop(s) === HOP_BY_HOP.has(s) && (observedBit(s) !== 0) === OBSERVED.has(s.toLowerCase());
    }),
    { numRuns: 3000 },
  );
  t.pass('3000 strings');
});

t.test('the Connection header: its tokens less the hop-by-hop names, and a forwarded request without what it names', async (t) => {
  t.equal(connectionTokens(['Connection', fresh('keep-alive')]), undefined, 'keep-alive alone: nothing more to drop');
  t.equal(connectionTokens(['connection', 'Keep-Alive, Upgrade, TE']), undefined, 'hop-by-hop names only: nothing more to drop');
  t.same([...(connectionTokens(['Connection', 'close, X-Secret', 'connection', 'keep-alive, x-other']) ?? [])].sort(), ['close', 'x-other', 'x-secret']);
  const out = forwardRequestHeaders(
    ['Host', 'a', 'Connection', 'keep-alive, X-Secret', 'Keep-Alive', 'timeout=5', 'X-Secret', 's', 'Accept', '*/*', 'TE', 'trailers', 'Via', '1.1 lb'],
    { remoteAddress: '10.0.0.9', proto: 'http', via: '1.1 meshlet' },
  );
  t.same(out, ['host', 'a', 'accept', '*/*', 'te', 'trailers', 'x-forwarded-for', '10.0.0.9', 'x-forwarded-proto', 'http', 'via', '1.1 lb, 1.1 meshlet']);
});

t.test("the observer's getter: the first value of a name, nothing for an observed name the list lacks", async (t) => {
  const flat = ['accept', '*/*', 'x-request-id', 'r-1', 'tracestate', 'a=1', 'x-request-id', 'r-2', 'x-custom', 'c'];
  const bits = observedBits(flat);
  const get = flatGetter(flat, bits);
  t.equal(get('x-request-id'), 'r-1');
  t.equal(get('tracestate'), 'a=1');
  t.equal(get('traceparent'), undefined);
  t.equal(get('x-custom'), 'c', 'a name the observer does not watch (a tap header) is looked for');
  t.equal(get('accept'), '*/*');
  t.equal(get('missing'), undefined);
  t.equal(bits, observedBit('x-request-id') | observedBit('tracestate'));
  t.equal(observedBits(['X-Request-Id', 'x', 'B3', '1']), observedBit('x-request-id') | observedBit('b3'), 'other spellings count');
});
