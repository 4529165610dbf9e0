#!/usr/bin/env node
'use strict';
/**
 * The edge response cache on its own (no HTTP): the cost of a HIT in `HttpCache.handle` (key,
 * LRU lookup, RFC 9111 freshness check by http-cache-semantics, response headers with Age), next
 * to a reference measured in the same run: a plain Map lookup returning the stored response (the
 * floor for any in-memory cache). Also a MISS that stores (in-process origin), and the cost of a
 * coalesced wave of 100 concurrent misses.
 *
 *   node bench/cache.js            # 2 s per scenario
 *   node bench/cache.js --quick    # 0.5 s per scenario
 *
 * Needs `npm run build` first (it loads dist/). Numbers are noisy on a shared machine.
 */
const path = require('node:path');
const { parseArgs } = require('node:util');

const dist = path.join(__dirname, '..', 'dist', 'src');
const { HttpCache, parseCacheConfig } = require(path.join(dist, 'edge', 'cache'));
const { systemClock } = require(path.join(dist, 'core', 'clock'));

const { values: cli } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
const MS = cli.quick ? 500 : 2000;

async function measure(fn) {
  for (let i = 0; i < 500; i++) await fn();
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < MS) {
    for (let i = 0; i < 200; i++) await fn();
    n += 200;
  }
  return ((performance.now() - t0) * 1000) / n;
}

(async () => {
  const body = Buffer.alloc(2048, 'x');
  const resHeaders = { 'content-type': 'application/json', 'cache-control': 'max-age=3600', etag: '"abc"', date: new Date().toUTCString() };
  const origin = async () => ({ status: 200, headers: { ...resHeaders, date: new Date().toUTCString() }, body });
  const reqHeaders = { accept: 'application/json', 'user-agent': 'bench', 'accept-encoding': 'gzip' };
  const cache = new HttpCache(parseCacheConfig({ maxBytes: 256 << 20 }).value, { clock: systemClock });
  await cache.handle({ method: 'GET', host: 'api.test', path: '/catalog/1?page=2', headers: reqHeaders }, origin);

  const map = new Map([['GET api.test/catalog/1?page=2', { status: 200, headers: resHeaders, body }]]);
  const refUs = await measure(async () => {
    const r = map.get(`GET ${'api.test'}${'/catalog/1?page=2'}`);
    if (!r) throw new Error('ref miss');
    return { ...r, headers: { ...r.headers, 'x-cache': 'HIT' } };
  });
  const hitUs = await measure(async () => {
    const r = await cache.handle({ method: 'GET', host: 'api.test', path: '/catalog/1?page=2', headers: reqHeaders }, origin);
    if (r.headers['x-cache'] !== 'HIT') throw new Error(`expected HIT, got ${r.headers['x-cache']}`);
  });
  let item = 0;
  const missUs = await measure(async () => {
    const r = await cache.handle({ method: 'GET', host: 'api.test', path: `/item/${item++}`, headers: reqHeaders }, origin);
    if (r.headers['x-cache'] !== 'MISS') throw new Error('expected MISS');
  });
  let calls = 0;
  const slowOrigin = async () => (calls++, await new Promise((r) => setImmediate(r)), origin());
  let wave = 0;
  const waveUs = await measure(async () => {
    const p = `/wave/${wave++}`;
    await Promise.all(Array.from({ length: 100 }, () => cache.handle({ method: 'GET', host: 'api.test', path: p, headers: reqHeaders }, slowOrigin)));
  });
  console.log('Edge cache, in-process (us/op; lower is better)');
  console.log(`reference Map lookup        ${refUs.toFixed(2).padStart(8)}`);
  console.log(`HIT                         ${hitUs.toFixed(2).padStart(8)}   ${(hitUs / refUs).toFixed(1)}x the Map lookup`);
  console.log(`MISS + store                ${missUs.toFixed(2).padStart(8)}`);
  console.log(`100 concurrent misses       ${waveUs.toFixed(2).padStart(8)}   (${(waveUs / 100).toFixed(2)} us per request; ${(calls / wave).toFixed(2)} origin calls per wave)`);
  console.log(`stats: ${JSON.stringify(cache.stats())}`);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
