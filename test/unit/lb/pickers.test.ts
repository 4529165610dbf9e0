import t from 'tap';
import { ActiveRequests, buildPicker, endpointKey } from '../../../src/lb';
import type { RequestView } from '../../../src/policy/compiled';
import type { Endpoint, LoadBalancer } from '../../../src/policy/types';

const eps = (n: number, weights?: number[]): Endpoint[] =>
  Array.from({ length: n }, (_, i) => ({ service: 's', address: '10.0.0.' + (i + 1), port: 80, labels: {}, weight: weights?.[i] ?? 1, meshed: true }));
const req = (h: Record<string, string> = {}): RequestView => ({ method: 'GET', path: '/', query: '', authority: 's', header: (n) => h[n] });
const stats = new ActiveRequests();
const make = (config: LoadBalancer, endpoints: Endpoint[], random = Math.random) => buildPicker({ endpoints, config, stats, random });

function histogram(pick: () => Endpoint | undefined, n: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const e = pick()!;
    m.set(e.address, (m.get(e.address) ?? 0) + 1);
  }
  return m;
}

t.test('round-robin rotates evenly', async (t) => {
  const p = make({ type: 'round-robin' }, eps(3));
  const h = histogram(() => p.pick(req()), 300);
  t.same([...h.values()], [100, 100, 100]);
  const first = p.pick(req())!;
  const second = p.pick(req())!;
  t.not(first.address, second.address, 'consecutive picks differ');
});

t.test('weighted round-robin follows weights, smoothly', async (t) => {
  const p = make({ type: 'round-robin' }, eps(3, [5, 1, 1]));
  const seq = Array.from({ length: 7 }, () => p.pick(req())!.address);
  t.same(seq.filter((a) => a === '10.0.0.1').length, 5);
  t.not(seq.slice(0, 3).join(), '10.0.0.1,10.0.0.1,10.0.0.1', 'interleaved, not bursty');
});

t.test('random is uniform within tolerance', async (t) => {
  const p = make({ type: 'random' }, eps(4));
  const h = histogram(() => p.pick(req()), 20_000);
  for (const v of h.values()) t.ok(Math.abs(v - 5000) < 400, `~5000: ${v}`);
  const w = make({ type: 'random' }, eps(2, [3, 1]));
  const hw = histogram(() => w.pick(req()), 20_000);
  t.ok(Math.abs(hw.get('10.0.0.1')! / 20_000 - 0.75) < 0.02);
});

t.test('least-request (P2C) avoids the loaded endpoint', async (t) => {
  const endpoints = eps(3);
  const p = make({ type: 'least-request' }, endpoints);
  for (let i = 0; i < 50; i++) stats.begin(endpointKey(endpoints[0]));
  const h = histogram(() => p.pick(req()), 3000);
  // The loaded endpoint is only chosen when both random choices land on it (1/9 of the time).
  t.ok((h.get('10.0.0.1') ?? 0) < 3000 / 9 + 120, `loaded endpoint picked ${h.get('10.0.0.1')} times`);
  for (let i = 0; i < 50; i++) stats.end(endpointKey(endpoints[0]));
  t.equal(stats.active(endpoints[0]), 0);
  const even = histogram(() => p.pick(req()), 3000);
  for (const v of even.values()) t.ok(Math.abs(v - 1000) < 200, `even without load: ${v}`);
});

t.test('in-flight counts stay right and bounded while endpoints come and go', async (t) => {
  const a = new ActiveRequests();
  const ep = (address: string, port: number): Endpoint => ({ service: 's', address, port, labels: {}, weight: 1, meshed: false });
  const busy = ep('10.9.0.1', 80);
  const bk = endpointKey(busy);
  for (let i = 0; i < 3; i++) a.begin(bk);
  // 10,000 endpoints, each one request that ends (pods replaced over a long life).
  for (let i = 0; i < 10_000; i++) {
    const k = endpointKey({ address: `10.8.${i >> 8}.${i & 255}`, port: 8080 });
    a.begin(k);
    a.end(k);
  }
  t.equal(a.active(busy), 3, 'a busy endpoint keeps its count through the pruning');
  t.ok(a.size <= 128, `idle endpoints are dropped: ${a.size} cells`);
  // An end without a begin (or one too many) never goes below zero.
  a.end('10.7.0.1:80');
  for (let i = 0; i < 5; i++) a.end(bk);
  t.equal(a.active(busy), 0);
  a.begin(bk);
  t.equal(a.active(busy), 1);
  t.equal(a.active(ep('10.7.0.1', 80)), 0);
  // IPv6 keys are their own.
  const v6 = ep('fd00::1', 80);
  a.begin(endpointKey(v6));
  t.equal(a.active(v6), 1);
});

t.test('ring-hash is sticky and moves few keys when an endpoint leaves', async (t) => {
  const all = eps(5);
  const p = make({ type: 'ring-hash', hashHeader: 'x-user' }, all);
  const q = make({ type: 'ring-hash', hashHeader: 'x-user' }, all.slice(0, 4));
  let moved = 0;
  const h = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const r = req({ 'x-user': 'user-' + i });
    const a = p.pick(r)!;
    t.equal(p.pick(r)!.address, a.address);
    h.set(a.address, (h.get(a.address) ?? 0) + 1);
    const b = q.pick(r)!;
    if (a.address !== '10.0.0.5' && a.address !== b.address) moved++;
  }
  t.equal(moved, 0, 'keys on surviving endpoints stay put');
  for (const v of h.values()) t.ok(v > 200 && v < 700, `reasonably balanced: ${v}`);
  t.ok(p.pick(req()), 'no header: still picks');
});

t.test('no endpoints: nothing', async (t) => {
  t.equal(make({ type: 'round-robin' }, []).pick(req()), undefined);
  t.throws(() => make({ type: 'nope' as 'random' }, eps(1)));
});
