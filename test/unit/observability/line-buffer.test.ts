/**
 * The access log's byte writer gives exactly what JSON.stringify, String(number) and
 * toISOString give, for every kind of string (escapes, non-ASCII, lone surrogates), numbers
 * (integers, thousandths, odd values) and times; it grows past its size for a long line and
 * hands each batch off in a buffer of its own.
 */
import t from 'tap';
import { LineBuffer } from '../../../src/observability/line-buffer';

const out = (f: (w: LineBuffer) => void, size?: number): string => {
  const w = new LineBuffer(size);
  f(w);
  return w.take().toString('utf8');
};

t.test('strings: byte for byte what JSON.stringify gives', async (t) => {
  const cases = ['', 'plain', '/a"b', 'back\\slash', 'new\nline', 'tab\there', '\u0000\u001f', '\u007f del', 'ünïcødé ✓', '\ud83d\ude00', 'lone \ud800 high', 'lone \udc00 low', '\u2028', 'x'.repeat(5000)];
  // (messages by index: a lone surrogate in a TAP message would garble the output)
  cases.forEach((s, i) => t.ok(out((w) => w.string(s)) === JSON.stringify(s), `case ${i}`));
  t.equal(out((w) => ['a', 'é', 'b"'].forEach((s) => w.string(s))), '"a""é""b\\""', 'one after another');
});

t.test('numbers: integers and thousandths as JavaScript prints them', async (t) => {
  for (const n of [0, 7, 10, 99, 200, 503, 1234567, 2 ** 40, Number.MAX_SAFE_INTEGER]) t.equal(out((w) => w.int(n)), String(n));
  for (const n of [-1, 1.5, NaN, Infinity]) t.equal(out((w) => w.int(n)), JSON.stringify(n), `odd value ${n}`);
  for (const th of [0, 1, 10, 42, 100, 999, 1000, 1500, 1050, 1005, 123456, 987654321, 3_600_000_000])
    t.equal(out((w) => w.thousandths(th)), String(th / 1000), `${th} thousandths`);
  t.equal(out((w) => w.thousandths(1.5)), String(1.5 / 1000), 'a fractional count falls back');
});

t.test('isoTime matches toISOString, across seconds and days', async (t) => {
  const base = Date.UTC(2026, 10, 24, 23, 59, 59, 998);
  for (const ms of [0, base, base + 1, base + 2, base + 1000, base - 86_400_000 * 400 + 7, 1_700_000_000_123, 1_700_000_000_050, 1_700_000_000_009])
    t.equal(out((w) => w.isoTime(ms)), new Date(ms).toISOString(), String(ms));
});

t.test('a line longer than the buffer grows it; take() hands off and starts afresh', async (t) => {
  const w = new LineBuffer(64);
  w.reserve(10);
  w.bytes(Buffer.from('{"k":'));
  const long = 'p'.repeat(1000);
  w.string(long);
  w.byte(0x7d);
  const first = w.take();
  t.equal(first.toString(), `{"k":${JSON.stringify(long)}}`);
  w.ascii('next');
  const second = w.take();
  t.equal(second.toString(), 'next');
  t.equal(first.toString(), `{"k":${JSON.stringify(long)}}`, 'the first batch is untouched by the second');
  t.equal(w.buf.length, 64, 'a fresh buffer of the configured size');
});
