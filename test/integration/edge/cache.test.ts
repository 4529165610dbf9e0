/**
 * The response cache through a real sidecar (outbound listener, static --config): the RFC 9111
 * cases with the x-cache state each answer carries and what reached the origin; request
 * coalescing; the byte bound under 10,000 distinct keys; purge through the admin port.
 */
import t, { type Test } from 'tap';
import type * as http from 'node:http';
import { agent, h1Upstream, pool, request, route, service, startSidecar, type SidecarProc } from '../sidecar/helpers';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

/** An origin whose answer per path is in `behave`; it records what it saw. */
async function origin(t: Test, behave: Record<string, (req: http.IncomingMessage, n: number) => { status?: number; headers: Record<string, string | undefined>; body?: string; delayMs?: number }>) {
  const seen: Seen[] = [];
  const count = new Map<string, number>();
  const up = await h1Upstream(t, (req, res) => {
    const path = (req.url ?? '/').split('?')[0] as string;
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const n = (count.get(path) ?? 0) + 1;
    count.set(path, n);
    const b = behave[path];
    req.resume();
    req.on('end', () => {
      const a = b ? b(req, n) : { status: 404, headers: {}, body: 'no such path' };
      const send = () => res.writeHead(a.status ?? 200, { 'content-type': 'text/plain', ...a.headers } as http.OutgoingHttpHeaders).end(a.status === 304 ? undefined : (a.body ?? `${path} #${n}`));
      if (a.delayMs) setTimeout(send, a.delayMs);
      else send();
    });
  });
  return { up, seen, hits: (path: string) => seen.filter((s) => s.url.split('?')[0] === path).length };
}

async function cached(t: Test, up: { port: number }, args: string[] = [], rule: Record<string, unknown> = {}): Promise<SidecarProc> {
  return startSidecar(t, [service('origin', [{ port: up.port }]), route('origin', ['origin'], [{ name: 'all', backends: [{ service: 'origin' }], cache: {}, ...rule }])], { args });
}

t.test('RFC 9111 table: HIT / MISS / STALE / REVALIDATED / PASS through a sidecar', async (t) => {
  const lastModified = new Date(Date.now() - 3600_000).toUTCString();
  const o = await origin(t, {
    '/max-age': () => ({ headers: { 'cache-control': 'max-age=60' } }),
    '/s-maxage': () => ({ headers: { 'cache-control': 's-maxage=60, max-age=0' } }),
    '/no-store': () => ({ headers: { 'cache-control': 'no-store' } }),
    '/no-cache': (req) => (req.headers['if-none-match'] === '"nc1"' ? { status: 304, headers: { etag: '"nc1"', 'cache-control': 'no-cache' } } : { headers: { 'cache-control': 'no-cache', etag: '"nc1"' } }),
    '/private': () => ({ headers: { 'cache-control': 'private, max-age=60' } }),
    '/expires': () => ({ headers: { expires: new Date(Date.now() + 60_000).toUTCString(), date: new Date().toUTCString() } }),
    '/vary': (req) => ({ headers: { 'cache-control': 'max-age=60', vary: 'accept-language' }, body: `lang=${req.headers['accept-language']}` }),
    '/etag': (req) => (req.headers['if-none-match'] === '"e1"' ? { status: 304, headers: { etag: '"e1"', 'cache-control': 'max-age=1' } } : { headers: { 'cache-control': 'max-age=1', etag: '"e1"' }, body: 'etag body' }),
    '/last-modified': (req) =>
      req.headers['if-modified-since'] === lastModified ? { status: 304, headers: { 'cache-control': 'max-age=1' } } : { headers: { 'cache-control': 'max-age=1', 'last-modified': lastModified }, body: 'lm body' },
    '/must-revalidate': (req) =>
      req.headers['if-none-match'] === '"m1"' ? { status: 304, headers: { etag: '"m1"', 'cache-control': 'max-age=1, must-revalidate, stale-while-revalidate=60' } } : { headers: { 'cache-control': 'max-age=1, must-revalidate, stale-while-revalidate=60', etag: '"m1"' }, body: 'mr body' },
    '/swr': (_r, n) => ({ headers: { 'cache-control': 'max-age=1, stale-while-revalidate=60' }, body: `swr #${n}` }),
    '/sie': (_r, n) => (n === 1 ? { headers: { 'cache-control': 'max-age=1, stale-if-error=60' }, body: 'sie body' } : { status: 500, headers: {}, body: 'origin broke' }),
    '/unsafe': (req, n) => ({ headers: { 'cache-control': 'max-age=60' }, body: `${req.method} #${n}` }),
    '/auth-plain': () => ({ headers: { 'cache-control': 'max-age=60' } }),
    '/auth-public': () => ({ headers: { 'cache-control': 'public, max-age=60' } }),
    '/default-ttl': () => ({ headers: {} }),
  });
  const sc = await cached(t, o.up, [], { cache: { defaultTtlSeconds: 60 } });
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') => request({ port: sc.outbound, method, path, headers: { host: 'origin', ...headers } });
  const state = async (path: string, headers: Record<string, string> = {}, method = 'GET') => {
    const r = await get(path, headers, method);
    return `${r.status} ${r.headers['x-cache']}`;
  };

  // Phase 1: everything fresh.
  t.equal(await state('/max-age'), '200 MISS', 'max-age: first is a MISS');
  const hit = await get('/max-age');
  t.equal(`${hit.status} ${hit.headers['x-cache']}`, '200 HIT', 'max-age: then a HIT');
  t.match(hit.headers.age, /^\d+$/, 'a HIT carries Age');
  t.equal(hit.text, '/max-age #1', 'the stored body');
  t.equal(o.hits('/max-age'), 1, 'max-age: one origin request');
  t.equal(await state('/s-maxage'), '200 MISS');
  t.equal(await state('/s-maxage'), '200 HIT', 's-maxage (shared cache) wins over max-age=0');
  t.equal(await state('/no-store'), '200 MISS');
  t.not(await state('/no-store'), '200 HIT', 'no-store: never a HIT');
  t.equal(o.hits('/no-store'), 2, 'no-store: every request reaches the origin');
  t.equal(await state('/no-cache'), '200 MISS');
  t.equal(await state('/no-cache'), '200 REVALIDATED', 'no-cache: stored, but revalidated on every use');
  t.equal(o.seen.filter((s) => s.url === '/no-cache').at(-1)?.headers['if-none-match'], '"nc1"', 'with If-None-Match');
  t.equal(await state('/private'), '200 MISS');
  t.not(await state('/private'), '200 HIT', 'private: not stored by a shared cache');
  t.equal(o.hits('/private'), 2);
  t.equal(await state('/expires'), '200 MISS');
  t.equal(await state('/expires'), '200 HIT', 'Expires gives freshness');
  t.equal(await state('/vary', { 'accept-language': 'en' }), '200 MISS', 'Vary: en first');
  t.equal(await state('/vary', { 'accept-language': 'fr' }), '200 MISS', 'Vary: another language is another entry');
  const en = await get('/vary', { 'accept-language': 'en' });
  t.equal(`${en.headers['x-cache']} ${en.text}`, 'HIT lang=en', 'Vary: en served from its own entry');
  t.equal((await get('/vary', { 'accept-language': 'fr' })).text, 'lang=fr');
  t.equal(await state('/unsafe'), '200 MISS');
  t.equal(await state('/unsafe'), '200 HIT');
  t.equal(await state('/unsafe', {}, 'POST'), '200 PASS', 'unsafe methods are not cached');
  t.equal(await state('/unsafe'), '200 MISS', 'and a successful POST invalidates the URL');
  t.equal(await state('/auth-plain', { authorization: 'Bearer a' }), '200 MISS');
  t.equal(await state('/auth-plain', { authorization: 'Bearer a' }), '200 MISS', 'Authorization: not shared unless the response allows it');
  t.equal(o.hits('/auth-plain'), 2);
  t.equal(await state('/auth-public', { authorization: 'Bearer a' }), '200 MISS');
  t.equal(await state('/auth-public', { authorization: 'Bearer b' }), '200 HIT', 'Authorization: public responses are shared');
  t.equal(await state('/default-ttl'), '200 MISS');
  t.equal(await state('/default-ttl'), '200 HIT', 'no freshness given: the rule\u2019s defaultTtlSeconds');
  for (const p of ['/etag', '/last-modified', '/must-revalidate', '/swr', '/sie']) t.equal(await state(p), '200 MISS', `${p}: first is a MISS`);
  for (const p of ['/etag', '/last-modified', '/must-revalidate', '/swr', '/sie']) t.equal(await state(p), '200 HIT', `${p}: fresh for 1 s`);

  // Phase 2: the max-age=1 entries are stale now.
  await sleep(2100);
  const et = await get('/etag');
  t.equal(`${et.status} ${et.headers['x-cache']} ${et.text}`, '200 REVALIDATED etag body', 'ETag: revalidated, the origin answered 304');
  t.equal(o.seen.filter((s) => s.url === '/etag').at(-1)?.headers['if-none-match'], '"e1"', 'with If-None-Match');
  const lm = await get('/last-modified');
  t.equal(`${lm.status} ${lm.headers['x-cache']} ${lm.text}`, '200 REVALIDATED lm body', 'Last-Modified: revalidated');
  t.equal(o.seen.filter((s) => s.url === '/last-modified').at(-1)?.headers['if-modified-since'], lastModified, 'with If-Modified-Since');
  t.equal(await state('/must-revalidate'), '200 REVALIDATED', 'must-revalidate: never served stale, even with stale-while-revalidate');
  const swr = await get('/swr');
  t.equal(`${swr.headers['x-cache']} ${swr.text}`, 'STALE swr #1', 'stale-while-revalidate: the stale answer at once');
  for (let i = 0; i < 100 && o.hits('/swr') < 2; i++) await sleep(20);
  t.equal(o.hits('/swr'), 2, 'and one background revalidation');
  for (let i = 0; i < 100; i++) {
    const r = await get('/swr');
    if (r.text === 'swr #2') {
      t.equal(r.headers['x-cache'], 'HIT', 'the refreshed entry is served');
      break;
    }
    await sleep(20);
  }
  const sie = await get('/sie');
  t.equal(`${sie.status} ${sie.headers['x-cache']} ${sie.text}`, '200 STALE sie body', 'stale-if-error: the origin answered 500, the stale copy is served');
  t.equal(o.hits('/sie'), 2);
});

t.test('100 concurrent misses for one key make one upstream request', async (t) => {
  const o = await origin(t, { '/slow': () => ({ headers: { 'cache-control': 'max-age=60' }, delayMs: 300, body: 'slow body' }) });
  const sc = await cached(t, o.up);
  const ag = agent(t, 100);
  const out = await Promise.all(Array.from({ length: 100 }, () => request({ port: sc.outbound, path: '/slow', headers: { host: 'origin' }, agent: ag })));
  t.ok(out.every((r) => r.status === 200 && r.text === 'slow body'), 'every client got the body');
  t.equal(o.hits('/slow'), 1, 'the origin saw one request');
  const states = new Map<string, number>();
  for (const r of out) states.set(String(r.headers['x-cache']), (states.get(String(r.headers['x-cache'])) ?? 0) + 1);
  t.equal(states.get('MISS'), 1, 'one MISS');
  t.equal(states.get('HIT'), 99, 'the waiters are served from it');
  const m = (await request({ port: sc.admin, path: '/metrics' })).text;
  t.match(m, /meshlet_cache_coalesced_total\{route="origin\/all"\} 99/, 'coalesced waits counted');
  t.match(m, /meshlet_cache_requests_total\{route="origin\/all",result="hit"\} 99/);
  t.match(m, /meshlet_cache_requests_total\{route="origin\/all",result="miss"\} 1/);
});

t.test('memory stays within --cache-max-mb under 10,000 distinct keys; purge by key and prefix', async (t) => {
  const body = 'x'.repeat(1000);
  const o = await origin(t, {});
  o.up.server.removeAllListeners('request');
  o.up.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => res.writeHead(200, { 'cache-control': 'max-age=600' }).end(body));
  const sc = await cached(t, o.up, ['--cache-max-mb', '1']);
  const ag = agent(t, 16);
  const out = await pool(10_000, 16, (i) => request({ port: sc.outbound, path: `/k/${i}`, headers: { host: 'origin' }, agent: ag }));
  t.ok(out.every((r) => r.status === 200 && r.headers['x-cache'] === 'MISS'), '10,000 distinct keys, each a MISS');
  const m = (await request({ port: sc.admin, path: '/metrics' })).text;
  const num = (name: string) => Number(new RegExp(`^${name}(?:\\{\\})? (\\d+)`, 'm').exec(m)?.[1] ?? NaN);
  t.ok(num('meshlet_cache_bytes') <= 1024 * 1024, `cache bytes ${num('meshlet_cache_bytes')} within 1 MiB`);
  t.equal(num('meshlet_cache_max_bytes'), 1024 * 1024);
  t.ok(num('meshlet_cache_entries') > 100 && num('meshlet_cache_entries') < 10_000, `${num('meshlet_cache_entries')} entries kept, the oldest evicted`);
  t.equal(num('meshlet_cache_evictions_total') + num('meshlet_cache_entries'), 10_000, 'every key is either kept or counted as evicted');
  // The most recent keys are kept; purge them by key and by prefix.
  t.equal((await request({ port: sc.outbound, path: '/k/9999', headers: { host: 'origin' } })).headers['x-cache'], 'HIT');
  const purge = (body: unknown) => request({ port: sc.admin, method: 'POST', path: '/cache/purge', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  const one = await purge({ key: 'GET origin/k/9999' });
  t.same(one.json(), { purged: 1 }, 'purge by key');
  t.equal((await request({ port: sc.outbound, path: '/k/9999', headers: { host: 'origin' } })).headers['x-cache'], 'MISS', 'purged: the next one is a MISS');
  t.equal((await request({ port: sc.outbound, path: '/k/9998', headers: { host: 'origin' } })).headers['x-cache'], 'HIT', 'others untouched');
  const all = await purge({ prefix: 'GET origin/k/' });
  t.equal(all.json().purged, num('meshlet_cache_entries'), 'purge by prefix removes every entry under it');
  t.equal((await request({ port: sc.outbound, path: '/k/9998', headers: { host: 'origin' } })).headers['x-cache'], 'MISS');
  const bad = await purge({ key: 'a', prefix: 'b' });
  t.equal(bad.status, 400);
  t.match(bad.json().message, /exactly one of key, prefix/);
});

t.test('an answer larger than maxEntryBytes streams through unstored, to every waiting client', async (t) => {
  const big = Buffer.alloc(200_000, 'b');
  const o = await origin(t, {});
  o.up.server.removeAllListeners('request');
  o.up.server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(200, { 'cache-control': 'max-age=600' });
    // In pieces, so the cache sees the body grow past its limit mid-stream.
    res.write(big.subarray(0, 50_000));
    setTimeout(() => res.end(big.subarray(50_000)), 50);
  });
  const sc = await cached(t, o.up, [], { cache: { maxEntryBytes: 10_000 } });
  const ag = agent(t, 8);
  const out = await Promise.all(Array.from({ length: 5 }, () => request({ port: sc.outbound, path: '/big', headers: { host: 'origin' }, agent: ag })));
  t.ok(out.every((r) => r.status === 200 && r.body.equals(big)), 'every client got the whole body');
  const states = out.map((r) => String(r.headers['x-cache'])).sort();
  t.equal(states[0], 'MISS', `one MISS (the one the others waited for), the waiters PASS on their own: ${states.join(' ')}`);
  t.ok(states.every((s) => s === 'MISS' || s === 'PASS'), 'the rest PASS (or MISS when they came after it)');
  const again = await request({ port: sc.outbound, path: '/big', headers: { host: 'origin' } });
  t.equal(again.headers['x-cache'], 'MISS', 'not stored');
  t.ok(again.body.equals(big));
});
