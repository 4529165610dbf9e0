/**
 * Load balancing through the real sidecar: a weighted 80/20 split between two subsets, exact
 * round-robin over three endpoints, and least-request (power of two choices) steering away from
 * an endpoint that holds its requests open.
 */
import type * as http from 'node:http';
import t from 'tap';
import { agent, destinationPolicy, echo, h1Upstream, pool, request, route, service, startSidecar, within } from './helpers';

t.test('weighted split 80/20 between two subsets', async (t) => {
  const v1 = await h1Upstream(t, echo('v1'));
  const v2 = await h1Upstream(t, echo('v2'));
  const sc = await startSidecar(t, [
    service('catalog', [
      { port: v1.port, labels: { version: 'v1' } },
      { port: v2.port, labels: { version: 'v2' } },
    ]),
    destinationPolicy('catalog', {
      subsets: [
        { name: 'v1', labels: { version: 'v1' } },
        { name: 'v2', labels: { version: 'v2' } },
      ],
    }),
    route('catalog', ['catalog'], [
      {
        backends: [
          { service: 'catalog', subset: 'v1', weight: 80 },
          { service: 'catalog', subset: 'v2', weight: 20 },
        ],
      },
    ]),
  ]);
  const a = agent(t);
  const N = 2000;
  const served = await pool(N, 16, async () => (await request({ port: sc.outbound, path: '/', headers: { host: 'catalog' }, agent: a })).headers['x-served-by']);
  const n1 = served.filter((s) => s === 'v1').length;
  const n2 = served.filter((s) => s === 'v2').length;
  t.equal(n1 + n2, N, 'every request served by v1 or v2');
  t.equal(v1.hits + v2.hits, N, 'the upstreams saw each request once');
  // Binomial(2000, 0.8): standard deviation 0.9 points, so ±4 points is beyond 4 sigma.
  const share = (100 * n1) / N;
  t.ok(Math.abs(share - 80) <= 4, `v1 share ${share.toFixed(1)}% is 80% ± 4 points (v1 ${n1}, v2 ${n2})`);
});

t.test('round-robin over three endpoints is exactly even', async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map(async (n) => h1Upstream(t, echo(n))));
  const sc = await startSidecar(t, [
    service(
      'rr',
      ups.map((u) => ({ port: u.port })),
    ),
    destinationPolicy('rr', { loadBalancer: { type: 'round-robin' } }),
  ]);
  const a = agent(t, 8);
  const N = 600;
  const served = await pool(N, 8, async () => (await request({ port: sc.outbound, path: '/', headers: { host: 'rr' }, agent: a })).headers['x-served-by']);
  const counts = { a: 0, b: 0, c: 0 } as Record<string, number>;
  for (const s of served) counts[String(s)]++;
  t.same(counts, { a: N / 3, b: N / 3, c: N / 3 }, 'each endpoint served a third, by the implicit route on the service name');
});

t.test('least-request prefers the endpoint that is not busy', async (t) => {
  // `busy` holds every request open until the end of the test; `idle` answers at once. Requests
  // are sent one at a time, and the next one only after the previous one was answered (idle) or
  // received (busy), so the sidecar always sees `busy` with k >= 1 requests in flight and `idle`
  // with 0. Power of two choices then picks `busy` only when both random choices land on it:
  // p = 1/4 (1/2 for the very first request), against 1/2 for a load-blind picker.
  const held: http.ServerResponse[] = [];
  let onBusy: (() => void) | undefined;
  const busy = await h1Upstream(t, (req, res) => {
    req.resume();
    held.push(res);
    onBusy?.();
  });
  const idle = await h1Upstream(t, echo('idle'));
  const sc = await startSidecar(t, [
    service('pricing', [{ port: busy.port }, { port: idle.port }]),
    destinationPolicy('pricing', { loadBalancer: { type: 'least-request' } }),
  ]);
  const a = agent(t, Infinity);
  const N = 400;
  const pending: Promise<unknown>[] = [];
  const wrong: unknown[] = [];
  for (let i = 0; i < N; i++) {
    const arrivedAtBusy = new Promise<'busy'>((r) => (onBusy = () => r('busy')));
    const res = request({ port: sc.outbound, path: '/', headers: { host: 'pricing' }, agent: a });
    pending.push(res);
    const first = await within(Promise.race([arrivedAtBusy, res.then(() => 'idle' as const)]), 10_000, `request ${i} to arrive somewhere`);
    onBusy = undefined;
    if (first === 'idle' && (await res).headers['x-served-by'] !== 'idle') wrong.push((await res).headers['x-served-by']);
  }
  t.same(wrong, [], 'every answered request was answered by idle');
  t.equal(busy.hits + idle.hits, N, 'every request reached an upstream');
  t.equal(held.length, busy.hits);
  // Expected busy.hits ~ 100 (sd ~ 8.7); a load-blind picker gives ~ 200. 160 is ~7 sd away from both.
  t.ok(busy.hits < 160, `the busy endpoint got ${busy.hits} of ${N} requests (expected about ${N / 4}, fair share ${N / 2})`);
  t.ok(idle.hits > 240, `the idle endpoint got ${idle.hits} of ${N}`);
  // Release the held requests: they complete normally.
  for (const res of held) res.writeHead(200, { 'x-served-by': 'busy' }).end('late');
  const all = (await within(Promise.all(pending), 15_000, 'the held requests to complete')) as { status: number }[];
  t.ok(
    all.every((r) => r.status === 200),
    'every request, held or not, completed with 200',
  );
});
