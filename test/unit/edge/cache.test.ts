import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { FakeClock } from '../../../src/core/clock';
import { HttpCache, compileCache, parseCacheConfig, type CacheRequest, type CacheResponse, type CacheUpstream } from '../../../src/edge/cache';

type Reply = { status?: number; headers?: Record<string, string | undefined>; body?: string; delayMs?: number };
type Handler = (n: number, req: http.IncomingMessage) => Reply;

/** A real origin on port 0; `Date` comes from the fake clock so ages are exact. */
async function origin(t: Test, clock: FakeClock, handler: Handler) {
  const seen: { method: string; url: string; headers: http.IncomingHttpHeaders }[] = [];
  const state = { handler, seen };
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers });
    const r = state.handler(seen.length, req);
    const send = () => {
      res.writeHead(r.status ?? 200, { date: new Date(clock.now()).toUTCString(), ...r.headers });
      res.end(r.body ?? '');
    };
    if (r.delayMs) setTimeout(send, r.delayMs);
    else send();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const close = () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r())));
  t.teardown(() => (server.listening ? close() : undefined));
  const upstream: CacheUpstream = async (r) => {
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(r.headers)) if (v !== undefined && k !== 'host') headers[k] = v;
    const res = await request(`${base}${r.path}`, { method: r.method as 'GET', headers });
    return { status: res.statusCode, headers: res.headers as CacheResponse['headers'], body: Buffer.from(await res.body.arrayBuffer()) };
  };
  return { state, upstream, close };
}

function cache(clock: FakeClock, raw: Record<string, unknown> = {}): HttpCache {
  const r = compileCache(raw, 'spec.cache', { clock });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

function get(path = '/r', headers: Record<string, string> = {}, method = 'GET'): CacheRequest {
  return { method, host: 'api.test', path, headers };
}

interface Step {
  advance?: number;
  req?: CacheRequest;
  state: string;
  status?: number;
  body?: string;
  /** Origin requests seen after this step. */
  calls: number;
  check?: (t: Test, res: CacheResponse, seen: { headers: http.IncomingHttpHeaders }[]) => void;
}

interface Case {
  name: string;
  config?: Record<string, unknown>;
  handler: Handler;
  steps: Step[];
}

const S = 1000;
const v = (n: number) => `v${n}`;

const cases: Case[] = [
  {
    name: 'max-age: HIT while fresh, with a growing Age; MISS once stale without validators',
    handler: (n) => ({ headers: { 'cache-control': 'max-age=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', body: 'v1', calls: 1 },
      { advance: 10 * S, state: 'HIT', body: 'v1', calls: 1, check: (t, r) => t.equal(r.headers.age, '10') },
      { advance: 51 * S, state: 'MISS', body: 'v2', calls: 2 },
    ],
  },
  {
    name: 's-maxage wins over max-age in a shared cache',
    handler: (n) => ({ headers: { 'cache-control': 'max-age=0, s-maxage=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1 },
      { advance: 30 * S, state: 'HIT', body: 'v1', calls: 1, check: (t, r) => t.equal(r.headers['cache-control'], 'max-age=0, s-maxage=60', 'origin headers unchanged') },
    ],
  },
  {
    name: 'Expires in the future: HIT; in the past: never fresh',
    handler: (n, req) => ({ headers: { expires: new Date(Date.parse(req.headers['x-now'] as string) + (req.url === '/r' ? 60 : -60) * S).toUTCString() }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1, req: get('/r', { 'x-now': 'NOW' }) },
      { state: 'HIT', body: 'v1', calls: 1, req: get('/r', { 'x-now': 'NOW' }) },
      { state: 'MISS', calls: 2, req: get('/past', { 'x-now': 'NOW' }) },
      { state: 'PASS', calls: 3, req: get('/past', { 'x-now': 'NOW' }) },
    ],
  },
  {
    name: 'no-store: never stored (PASS after the first MISS)',
    handler: (n) => ({ headers: { 'cache-control': 'no-store, max-age=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', body: 'v1', calls: 1 },
      { state: 'PASS', body: 'v2', calls: 2 },
    ],
  },
  {
    name: 'private: not stored by a shared cache',
    handler: (n) => ({ headers: { 'cache-control': 'private, max-age=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1 },
      { state: 'PASS', body: 'v2', calls: 2 },
    ],
  },
  {
    name: 'no-cache + ETag: every use revalidated with If-None-Match; 304 -> REVALIDATED with the stored body',
    handler: (n, req) => (req.headers['if-none-match'] === '"e1"' ? { status: 304, headers: { etag: '"e1"' } } : { headers: { 'cache-control': 'no-cache', etag: '"e1"' }, body: v(n) }),
    steps: [
      { state: 'MISS', body: 'v1', calls: 1 },
      { state: 'REVALIDATED', status: 200, body: 'v1', calls: 2, check: (t, _r, seen) => t.equal(seen[1].headers['if-none-match'], '"e1"') },
      { state: 'REVALIDATED', body: 'v1', calls: 3 },
    ],
  },
  {
    name: 'ETag revalidation after max-age: 304 refreshes the entry, then HIT',
    handler: (n, req) => (req.headers['if-none-match'] ? { status: 304, headers: { etag: '"e1"', 'cache-control': 'max-age=5' } } : { headers: { 'cache-control': 'max-age=5', etag: '"e1"' }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1 },
      { advance: 6 * S, state: 'REVALIDATED', body: 'v1', calls: 2 },
      { advance: 2 * S, state: 'HIT', body: 'v1', calls: 2 },
    ],
  },
  {
    name: 'Last-Modified revalidation: If-Modified-Since; a changed resource (200) replaces the entry',
    handler: (n, req) =>
      n === 2 && req.headers['if-modified-since'] === 'Tue, 01 Oct 2024 10:00:00 GMT'
        ? { status: 304, headers: { 'cache-control': 'max-age=5' } }
        : { headers: { 'cache-control': 'max-age=5', 'last-modified': 'Tue, 01 Oct 2024 10:00:00 GMT' }, body: v(n) },
    steps: [
      { state: 'MISS', calls: 1 },
      { advance: 6 * S, state: 'REVALIDATED', body: 'v1', calls: 2 },
      { advance: 6 * S, state: 'MISS', body: 'v3', calls: 3 },
      { state: 'HIT', body: 'v3', calls: 3 },
    ],
  },
  {
    name: 'Vary: Accept-Language keeps one variant per value',
    handler: (n, req) => ({ headers: { 'cache-control': 'max-age=60', vary: 'Accept-Language' }, body: `${v(n)}-${req.headers['accept-language']}` }),
    steps: [
      { state: 'MISS', body: 'v1-en', calls: 1, req: get('/r', { 'accept-language': 'en' }) },
      { state: 'HIT', body: 'v1-en', calls: 1, req: get('/r', { 'accept-language': 'en' }) },
      { state: 'MISS', body: 'v2-fr', calls: 2, req: get('/r', { 'accept-language': 'fr' }) },
      { state: 'HIT', body: 'v2-fr', calls: 2, req: get('/r', { 'accept-language': 'fr' }) },
      { state: 'HIT', body: 'v1-en', calls: 2, req: get('/r', { 'accept-language': 'en' }) },
    ],
  },
  {
    name: 'Vary: * is never stored',
    handler: (n) => ({ headers: { 'cache-control': 'max-age=60', vary: '*' }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1 },
      { state: 'PASS', calls: 2 },
    ],
  },
  {
    name: 'stale-while-revalidate: STALE at once, refreshed in the background, then HIT with the new body',
    handler: (n) => ({ headers: { 'cache-control': 'max-age=1, stale-while-revalidate=30' }, body: v(n) }),
    steps: [
      { state: 'MISS', body: 'v1', calls: 1 },
      { advance: 5 * S, state: 'STALE', body: 'v1', calls: 2 },
      { state: 'HIT', body: 'v2', calls: 2 },
      { advance: 60 * S, state: 'MISS', body: 'v3', calls: 3 },
    ],
  },
  {
    name: 'stale-if-error: a 5xx from the origin is hidden behind the stale entry',
    handler: (n) => (n === 1 ? { headers: { 'cache-control': 'max-age=1, stale-if-error=60' }, body: v(n) } : { status: 503, body: 'down' }),
    steps: [
      { state: 'MISS', body: 'v1', calls: 1 },
      { advance: 5 * S, state: 'STALE', status: 200, body: 'v1', calls: 2 },
      { advance: 70 * S, state: 'MISS', status: 503, body: 'down', calls: 3 },
    ],
  },
  {
    name: 'must-revalidate: HIT while fresh (not revalidated every time), never served stale, even on error',
    handler: (n) => (n === 1 ? { headers: { 'cache-control': 'max-age=10, must-revalidate, stale-if-error=60' }, body: v(n) } : { status: 503, body: 'down' }),
    steps: [
      { state: 'MISS', calls: 1 },
      { advance: 5 * S, state: 'HIT', body: 'v1', calls: 1 },
      { advance: 10 * S, state: 'MISS', status: 503, calls: 2 },
    ],
  },
  {
    name: 'only safe methods: POST passes through and invalidates the stored GET',
    handler: (n) => ({ headers: { 'cache-control': 'max-age=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', body: 'v1', calls: 1 },
      { state: 'HIT', body: 'v1', calls: 1 },
      { state: 'PASS', body: 'v2', calls: 2, req: get('/r', {}, 'POST') },
      { state: 'MISS', body: 'v3', calls: 3 },
    ],
  },
  {
    name: 'Authorization: a max-age response is not shared',
    handler: (n) => ({ headers: { 'cache-control': 'max-age=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1, req: get('/r', { authorization: 'Bearer a' }) },
      { state: 'MISS', body: 'v2', calls: 2, req: get('/r', { authorization: 'Bearer b' }) },
    ],
  },
  {
    name: 'Authorization: a public (or s-maxage) response is shared',
    handler: (n) => ({ headers: { 'cache-control': 'public, max-age=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1, req: get('/r', { authorization: 'Bearer a' }) },
      { state: 'HIT', body: 'v1', calls: 1, req: get('/r', { authorization: 'Bearer b' }) },
      { state: 'HIT', body: 'v1', calls: 1 },
    ],
  },
  {
    name: 'Authorization: an entry stored for anonymous requests without explicit sharing is not given to authorised ones',
    handler: (n) => ({ headers: { 'cache-control': 'max-age=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1 },
      { state: 'MISS', body: 'v2', calls: 2, req: get('/r', { authorization: 'Bearer a' }) },
      { state: 'HIT', body: 'v1', calls: 2 },
    ],
  },
  {
    name: 'default TTL for a response without freshness; the client does not see an invented Cache-Control',
    config: { defaultTtlSeconds: 30 },
    handler: (n) => ({ body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1 },
      { advance: 20 * S, state: 'HIT', body: 'v1', calls: 1, check: (t, r) => t.equal(r.headers['cache-control'], undefined) },
      { advance: 11 * S, state: 'MISS', body: 'v2', calls: 2 },
    ],
  },
  {
    name: 'no default TTL: a response without freshness or validators is not stored',
    handler: (n) => ({ body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1 },
      { state: 'PASS', body: 'v2', calls: 2 },
    ],
  },
  {
    name: 'key: chosen query params only; headers named in the key split entries',
    config: { key: { query: ['page'], headers: ['x-tenant'] } },
    handler: (n) => ({ headers: { 'cache-control': 'max-age=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1, req: get('/list?page=1&utm=a', { 'x-tenant': 'a' }) },
      { state: 'HIT', body: 'v1', calls: 1, req: get('/list?utm=b&page=1', { 'x-tenant': 'a' }) },
      { state: 'MISS', body: 'v2', calls: 2, req: get('/list?page=2', { 'x-tenant': 'a' }) },
      { state: 'MISS', body: 'v3', calls: 3, req: get('/list?page=1', { 'x-tenant': 'b' }) },
    ],
  },
  {
    name: "the client's If-None-Match is answered from the cache with 304",
    handler: (n) => ({ headers: { 'cache-control': 'max-age=60', etag: '"e7"' }, body: v(n) }),
    steps: [
      // The miss fetches the full body (to store it), then answers the client's validator itself.
      { state: 'MISS', status: 304, calls: 1, req: get('/r', { 'if-none-match': '"e7"' }), check: (t, _r, seen) => t.equal(seen[0].headers['if-none-match'], undefined, 'no validator sent upstream') },
      { state: 'HIT', status: 304, body: '', calls: 1, req: get('/r', { 'if-none-match': '"e7"' }) },
      { state: 'HIT', status: 200, body: 'v1', calls: 1, req: get('/r', { 'if-none-match': '"other"' }) },
    ],
  },
  {
    name: 'HEAD is cached on its own key, without a body',
    handler: (n) => ({ headers: { 'cache-control': 'max-age=60' }, body: v(n) }),
    steps: [
      { state: 'MISS', body: '', calls: 1, req: get('/r', {}, 'HEAD') },
      { state: 'HIT', body: '', calls: 1, req: get('/r', {}, 'HEAD') },
    ],
  },
  {
    name: 'Set-Cookie responses are not shared unless public',
    handler: (n) => ({ headers: { 'cache-control': 'max-age=60', 'set-cookie': 'sid=1' }, body: v(n) }),
    steps: [
      { state: 'MISS', calls: 1 },
      { state: 'PASS', body: 'v2', calls: 2 },
    ],
  },
];

t.test('RFC 9111 table against a real origin', async (t) => {
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
      const o = await origin(t, clock, c.handler);
      const hc = cache(clock, c.config);
      for (const [i, s] of c.steps.entries()) {
        if (s.advance) clock.advance(s.advance);
        const base = s.req ?? get();
        const req = { ...base, headers: Object.fromEntries(Object.entries(base.headers).map(([k, val]) => [k, val === 'NOW' ? new Date(clock.now()).toUTCString() : val])) };
        const res = await hc.handle(req, o.upstream);
        if (res.headers['x-cache'] === 'STALE') await new Promise((r) => setTimeout(r, 50)); // let the background revalidation land
        t.equal(res.headers['x-cache'], s.state, `step ${i}: x-cache`);
        if (s.status !== undefined) t.equal(res.status, s.status, `step ${i}: status`);
        if (s.body !== undefined) t.equal(res.body.toString(), s.body, `step ${i}: body`);
        t.equal(o.state.seen.length, s.calls, `step ${i}: origin requests`);
        s.check?.(t, res, o.state.seen);
      }
    });
  }
});

t.test('the fast HIT path answers exactly what the library-checked path answers', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
  const o = await origin(t, clock, (n) => ({ headers: { 'cache-control': 'max-age=60, must-revalidate', etag: '"x"', 'x-app': 'a', connection: 'keep-alive' }, body: v(n) }));
  const hc = cache(clock);
  await hc.handle(get(), o.upstream);
  clock.advance(7_000);
  const fast = await hc.handle(get(), o.upstream);
  const checked = await hc.handle(get('/r', { 'cache-control': 'max-stale=0' }), o.upstream); // a request directive: the library decides
  t.equal(fast.headers['x-cache'], 'HIT');
  t.equal(checked.headers['x-cache'], 'HIT');
  t.same(fast.headers, checked.headers);
  t.equal(fast.headers.age, '7');
  t.equal(fast.headers.connection, undefined, 'hop-by-hop removed');
  t.equal(fast.headers['cache-control'], 'max-age=60, must-revalidate', 'origin header as sent');
  t.equal(o.state.seen.length, 1);
});

t.test('stale-if-error also covers an origin that is down', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
  const o = await origin(t, clock, (n) => ({ headers: { 'cache-control': 'max-age=1, stale-if-error=60' }, body: v(n) }));
  const hc = cache(clock);
  t.equal((await hc.handle(get(), o.upstream)).headers['x-cache'], 'MISS');
  await o.close();
  clock.advance(5 * S);
  const res = await hc.handle(get(), o.upstream);
  t.equal(res.headers['x-cache'], 'STALE');
  t.equal(res.body.toString(), 'v1');
  clock.advance(60 * S);
  await t.rejects(hc.handle(get(), o.upstream), 'past the window the error reaches the caller');
});

t.test('100 concurrent misses for one key make one origin request', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
  const o = await origin(t, clock, (n) => ({ headers: { 'cache-control': 'max-age=60' }, body: v(n), delayMs: 100 }));
  const hc = cache(clock);
  const all = await Promise.all(Array.from({ length: 100 }, () => hc.handle(get(), o.upstream)));
  t.equal(o.state.seen.length, 1, 'one origin request');
  t.ok(all.every((r) => r.body.toString() === 'v1'));
  t.equal(all.filter((r) => r.headers['x-cache'] === 'MISS').length, 1, 'the leader is the MISS');
  t.equal(all.filter((r) => r.headers['x-cache'] === 'HIT').length, 99, 'the others are served from what it stored');
  t.equal(hc.stats().coalesced, 99);
  t.equal(hc.stats().inflight, 0);
});

t.test('concurrent misses for a no-cache resource share the one fresh answer; later requests revalidate', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
  const o = await origin(t, clock, (n, req) =>
    req.headers['if-none-match'] === '"e1"' ? { status: 304, headers: { etag: '"e1"' } } : { headers: { 'cache-control': 'no-cache', etag: '"e1"' }, body: v(n), delayMs: 50 },
  );
  const hc = cache(clock);
  const all = await Promise.all(Array.from({ length: 20 }, () => hc.handle(get(), o.upstream)));
  t.equal(o.state.seen.length, 1);
  t.ok(all.every((r) => r.body.toString() === 'v1'));
  t.equal((await hc.handle(get(), o.upstream)).headers['x-cache'], 'REVALIDATED');
  t.equal(o.state.seen.length, 2);
});

t.test('concurrent misses on an uncacheable key: each gets its own answer, and later ones stop queueing (hit-for-pass)', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
  const o = await origin(t, clock, (n) => ({ headers: { 'cache-control': 'private' }, body: v(n), delayMs: 30 }));
  const hc = cache(clock);
  const all = await Promise.all(Array.from({ length: 5 }, () => hc.handle(get(), o.upstream)));
  t.equal(new Set(all.map((r) => r.body.toString())).size, 5, 'no private answer was shared');
  const next = await Promise.all(Array.from({ length: 5 }, () => hc.handle(get(), o.upstream)));
  t.ok(next.every((r) => r.headers['x-cache'] === 'PASS'));
  t.equal(hc.stats().coalesced, 4, 'only the first wave was coalesced');
});

t.test('an origin error during a coalesced miss reaches every waiter, with one origin request', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
  const o = await origin(t, clock, () => ({ body: 'x' }));
  const hc = cache(clock);
  let calls = 0;
  const failing: CacheUpstream = async (r) => {
    calls++;
    await new Promise((res) => setTimeout(res, 20));
    return Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED', path: r.path }));
  };
  const results = await Promise.allSettled(Array.from({ length: 10 }, () => hc.handle(get(), failing)));
  t.ok(results.every((r) => r.status === 'rejected'));
  t.equal(calls, 1);
  t.equal(o.state.seen.length, 0);
});

t.test('bounded by bytes: 10,000 distinct keys stay under maxBytes, evictions counted; oversized entries pass', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
  const body = 'x'.repeat(2000);
  // The origin is in-process here: this test is about the cache's own memory, over 10,000 keys.
  let calls = 0;
  const o = {
    upstream: async (r: CacheRequest): Promise<CacheResponse> => {
      calls++;
      await new Promise((res) => setImmediate(res));
      return { status: 200, headers: { 'cache-control': 'max-age=600', date: new Date(clock.now()).toUTCString() }, body: Buffer.from(r.path === '/big' ? 'y'.repeat(300_000) : body) };
    },
  };
  const maxBytes = 1 << 20;
  const hc = cache(clock, { maxBytes, maxEntryBytes: 256 * 1024 });
  for (let i = 0; i < 10_000; i += 100) {
    await Promise.all(Array.from({ length: 100 }, (_x, j) => hc.handle(get(`/item/${i + j}`), o.upstream)));
  }
  const st = hc.stats();
  t.ok(st.bytes <= maxBytes, `bytes ${st.bytes} <= ${maxBytes}`);
  t.ok(st.entries < 10_000 && st.entries > 100, `entries ${st.entries}`);
  t.equal(st.evictions, st.stores - st.entries, 'every store beyond capacity evicted one');
  t.ok(st.varyKeys <= Math.max(1000, maxBytes / 512), 'auxiliary index bounded');
  t.equal(st.inflight, 0);
  // The most recent key is a HIT, the first one was evicted.
  t.equal((await hc.handle(get('/item/9999'), o.upstream)).headers['x-cache'], 'HIT');
  t.equal((await hc.handle(get('/item/0'), o.upstream)).headers['x-cache'], 'MISS');
  // An entry larger than maxEntryBytes is passed through and not stored.
  t.equal((await hc.handle(get('/big'), o.upstream)).body.length, 300_000);
  t.equal((await hc.handle(get('/big'), o.upstream)).headers['x-cache'], 'PASS', 'remembered as not storable');
  t.equal(hc.stats().tooLarge, 1);
  t.equal(calls, 10_000 + 1 + 2);
});

t.test('purge by key (all Vary variants) and by prefix', async (t) => {
  const clock = new FakeClock(Math.floor(Date.now() / 1000) * 1000);
  const o = await origin(t, clock, (n) => ({ headers: { 'cache-control': 'max-age=600', vary: 'accept' }, body: v(n) }));
  const hc = cache(clock);
  for (const p of ['/catalog/1', '/catalog/2', '/pricing/1']) {
    await hc.handle(get(p, { accept: 'a' }), o.upstream);
    await hc.handle(get(p, { accept: 'b' }), o.upstream);
  }
  t.equal(hc.stats().entries, 6);
  t.equal(hc.purge({ key: hc.primaryKey(get('/catalog/1')) }), 2);
  t.equal(hc.primaryKey(get('/catalog/2')), 'GET api.test/catalog/2');
  t.equal(hc.purge({ prefix: 'GET api.test/catalog/' }), 2);
  t.equal(hc.stats().entries, 2);
  t.equal((await hc.handle(get('/catalog/2', { accept: 'a' }), o.upstream)).headers['x-cache'], 'MISS');
  t.equal((await hc.handle(get('/pricing/1', { accept: 'a' }), o.upstream)).headers['x-cache'], 'HIT');
  t.same(
    { hits: hc.stats().hits, purged: hc.stats().purged },
    { hits: 1, purged: 4 },
  );
});

t.test('config errors name the field', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ maxBytes: 10 }, /spec\.cache\.maxBytes: must be an integer/],
    [{ maxBytes: 4096, maxEntryBytes: 8192 }, /spec\.cache\.maxEntryBytes: must not exceed maxBytes/],
    [{ key: { query: 5 } }, /spec\.cache\.key\.query/],
    [{ key: { headers: ['bad header'] } }, /spec\.cache\.key\.headers\[0\]/],
    [{ ttl: 5 }, /spec\.cache\.ttl: unknown field/],
  ];
  for (const [input, re] of cases) {
    const r = parseCacheConfig(input, 'spec.cache');
    t.notOk(r.ok);
    if (!r.ok) t.match(r.errors.map((e) => `${e.path}: ${e.message}`).join('\n'), re);
  }
  t.ok(parseCacheConfig(undefined).ok, 'no block: defaults');
});
