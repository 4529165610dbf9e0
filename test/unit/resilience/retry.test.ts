import { PassThrough, Readable } from 'node:stream';
import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import type { RetryPolicy } from '../../../src/policy';
import { ReplayableBody } from '../../../src/resilience/replay-body';
import { backoffMs, retryAfterMs, retryMatcher, RetryBudget } from '../../../src/resilience/retry';
import { decideFault } from '../../../src/resilience/fault';

const policy = (p: Partial<RetryPolicy>): RetryPolicy => ({ attempts: 2, retryOn: ['5xx'], budget: { percent: 20, minRetriesPerSecond: 10 }, bufferLimitBytes: 1024, ...p });

t.test('retryOn conditions', async (t) => {
  const m5 = retryMatcher(policy({ retryOn: ['5xx'] }));
  t.ok(m5.status(500, {}));
  t.notOk(m5.status(429, {}));
  t.ok(m5.failure('reset') && m5.failure('connect-failure') && m5.failure('timeout'), '5xx covers no response at all');
  const gw = retryMatcher(policy({ retryOn: ['gateway-error'] }));
  t.ok(gw.status(502, {}) && gw.status(503, {}) && gw.status(504, {}));
  t.notOk(gw.status(500, {}));
  const codes = retryMatcher(policy({ retryOn: ['retriable-status-codes'], retriableStatusCodes: [409] }));
  t.ok(codes.status(409, {}));
  t.notOk(codes.status(503, {}));
  t.notOk(codes.failure('reset'));
  const cf = retryMatcher(policy({ retryOn: ['connect-failure'] }));
  t.ok(cf.failure('connect-failure'));
  t.notOk(cf.failure('reset'));
  const grpc = retryMatcher(policy({ retryOn: ['unavailable', 'resource-exhausted'] }));
  t.ok(grpc.status(200, { 'grpc-status': '14' }), 'trailers-only UNAVAILABLE');
  t.ok(grpc.status(200, { 'grpc-status': '8' }));
  t.notOk(grpc.status(200, { 'grpc-status': '13' }));
  t.notOk(grpc.status(200, {}), 'no status in the headers: the response has started');
});

t.test('backoff: full jitter under an exponential ceiling, Retry-After as a floor', async (t) => {
  const p = policy({ backoff: { baseIntervalMs: 100, maxIntervalMs: 1000 } });
  t.equal(backoffMs(1, p, () => 0.999), 100);
  t.equal(backoffMs(2, p, () => 0.999), 200);
  t.equal(backoffMs(3, p, () => 0.999), 400);
  t.equal(backoffMs(9, p, () => 0.9999999), 1000, 'capped at maxInterval');
  t.equal(backoffMs(3, p, () => 0), 0);
  t.equal(backoffMs(1, p, () => 0, 1500), 1500);
  t.equal(retryAfterMs({ 'retry-after': '2' }, 0), 2000);
  t.equal(retryAfterMs({ 'retry-after': new Date(10_000).toUTCString() }, 4_000), 6000);
  t.equal(retryAfterMs({ 'retry-after': 'soon' }, 0), undefined);
  t.equal(retryAfterMs({}, 0), undefined);
});

t.test('retry budget: percent of recent requests plus a per-second floor, over 10 s', async (t) => {
  const clock = new FakeClock();
  const b = new RetryBudget(clock);
  const budget = { percent: 20, minRetriesPerSecond: 0 };
  for (let i = 0; i < 100; i++) b.request();
  let granted = 0;
  for (let i = 0; i < 100; i++) if (b.tryRetry(budget)) granted++;
  t.equal(granted, 20, '20% of 100 requests');
  t.equal(b.refused, 80);
  clock.advance(10_000);
  t.notOk(b.tryRetry(budget), 'the window moved on: no requests, no budget');
  t.ok(b.tryRetry({ percent: 20, minRetriesPerSecond: 1 }), 'the floor allows some');
  let floor = 1;
  while (b.tryRetry({ percent: 20, minRetriesPerSecond: 1 })) floor++;
  t.equal(floor, 10, '1 per second over a 10 s window');
});

/** All a stream gives, as text. */
const read = (r: Readable) =>
  new Promise<string>((resolve, reject) => {
    let s = '';
    r.on('data', (c: Buffer) => (s += c.toString()));
    r.on('end', () => resolve(s));
    r.on('error', reject);
  });

t.test('replayable body: each try reads it all; past the limit it is no longer replayable', async (t) => {
  const src = new Readable({ read() {} });
  const body = new ReplayableBody(src, 10);
  const first = body.cursor() as Readable;
  const p1 = read(first);
  src.push('hello ');
  src.push('world');
  src.push(null);
  t.equal(await p1, 'hello world');
  t.notOk(body.replayable, '11 bytes > 10');
  t.equal(body.cursor(), undefined);

  const src2 = new Readable({ read() {} });
  const body2 = new ReplayableBody(src2, 100);
  const a = body2.cursor() as Readable;
  src2.push('abc');
  const pa = read(a);
  await new Promise((r) => setImmediate(r));
  const b = body2.cursor() as Readable;
  const pb = read(b);
  src2.push('def');
  src2.push(null);
  t.equal(await pb, 'abcdef', 'a second try replays what the first read, then follows the source');
  t.ok(a.destroyed, 'the abandoned try is destroyed');
  void pa.catch(() => undefined);
});

t.test('replayable body, direct: the first try reads the source itself; a later one replays it all', async (t) => {
  const src = new Readable({ read() {} });
  const body = new ReplayableBody(src, 100, true);
  const first = body.cursor() as Readable;
  t.equal(first, src, 'no cursor for the first try');
  const sink = new PassThrough();
  first.pipe(sink);
  src.push('abc');
  await new Promise((r) => setImmediate(r));
  t.equal(String(sink.read()), 'abc', 'the first try got the bytes');
  const second = body.cursor() as Readable;
  t.not(second, src, 'a second try gets a cursor');
  t.notOk(src.destroyed, 'the source is not destroyed');
  const p = read(second);
  src.push('def');
  src.push(null);
  t.equal(await p, 'abcdef', 'it replays what the first try read, then follows the source');
  t.equal(sink.read(), null, 'the abandoned first try gets nothing more');

  const src2 = new Readable({ read() {} });
  const body2 = new ReplayableBody(src2, 4, true);
  const direct = body2.cursor() as Readable;
  const d = read(direct);
  direct.resume(); // the consumer resumes a direct body (pipe() does)
  src2.push('hello');
  src2.push(null);
  t.equal(await d, 'hello');
  t.notOk(body2.replayable, 'past the limit');
  t.equal(body2.chunks.length, 0, 'nothing kept past the limit');
  t.equal(body2.cursor(), undefined);
});

t.test('fault decisions', async (t) => {
  const view = { method: 'GET', path: '/', query: '', authority: 'x', header: (n: string) => (n === 'x-chaos' ? '1' : undefined) };
  const noHeader = { ...view, header: () => undefined };
  t.same(decideFault({ abort: { httpStatus: 503, percent: 100 } }, view, () => 0.5).abort, { httpStatus: 503, percent: 100 });
  t.same(decideFault({ abort: { httpStatus: 503, percent: 10 } }, view, () => 0.5), { delayMs: 0 }, '50 >= 10%: no fault');
  t.equal(decideFault({ delay: { fixedMs: 50, percent: 100 }, header: 'x-chaos' }, view, () => 0.1).delayMs, 50);
  t.equal(decideFault({ delay: { fixedMs: 50, percent: 100 }, header: 'x-chaos' }, noHeader, () => 0.1).delayMs, 0, 'only with the header');
});
