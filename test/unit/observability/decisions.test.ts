/**
 * The ring of recent decisions (`meshlet explain --last`): what a slot records, that a reused
 * slot stops taking writes from the request that held it before, and how the CLI prints a
 * request that was retried.
 */
import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { MeshCall } from '../../../src/core/layer';
import { DecisionRing, MAX_TRIES, orderHops, TEXT_BYTES } from '../../../src/observability/decisions';
import type { CompiledRule } from '../../../src/policy/compiled';
import { formatLast } from '../../../src/cli/explain';

const rule = {
  statName: 'catalog/rest',
  routeName: 'catalog',
  ruleName: 'rest',
  timeoutMs: 3000,
  retries: { attempts: 2, perTryTimeoutMs: 1000, retryOn: ['5xx'] },
} as unknown as CompiledRule;

/** The observe layer's handle, as far as a decision reads it: the request's start and end times. */
function observed(c: MeshCall, clock: FakeClock): { t1: number } {
  const obs = { requestId: c.header('x-request-id') ?? '', route: { source: 'frontend' }, t0: clock.monotonic(), t1: 0 };
  c.obs = obs as unknown as MeshCall['obs'];
  return obs;
}

function call(id: string, direction: 'inbound' | 'outbound' = 'outbound'): MeshCall {
  const c = new MeshCall(direction, 'http', 'http1', 'GET', '/items?x=1', 'catalog', undefined, ['x-request-id', id], null, '1.1');
  c.rule = rule;
  c.backend = { service: 'catalog', subset: 'v1', weight: 100 };
  return c;
}

t.test('a slot records the route, every try, the buckets and the end, read from the call', async (t) => {
  const clock = new FakeClock();
  const ring = new DecisionRing(4, clock);
  const c = call('r1');
  ring.claim(c);
  const obs = observed(c, clock);
  const d = c.decision!;
  clock.advance(1);
  const t1 = d.tryBegin(c.decisionSeq, '10.0.0.1:80');
  d.tryResponse(c.decisionSeq, t1, 503);
  clock.advance(5);
  d.tryDone(c.decisionSeq, t1, undefined);
  clock.advance(10);
  const t2 = d.tryBegin(c.decisionSeq, '10.0.0.2:80');
  d.limit(c.decisionSeq, 'per-caller', 'frontend', 'allowed');
  clock.advance(2);
  d.tryResponse(c.decisionSeq, t2, 200);
  d.tryDone(c.decisionSeq, t2, undefined);
  c.tries = 2;
  c.destination = 'catalog';
  c.deadline = clock.monotonic() + 2982;
  c.target = { key: '10.0.0.2:80', address: '10.0.0.2', port: 80, protocol: 'http1' };
  obs.t1 = clock.monotonic();
  d.finish(c.decisionSeq, 200, undefined, undefined);
  t.equal(d.call, undefined, 'the call is not kept once it ended');
  const [found] = ring.find('r1');
  const j = found!.toJSON('fe-0', 'frontend');
  t.match(j, {
    sidecar: 'fe-0',
    service: 'frontend',
    requestId: 'r1',
    direction: 'outbound',
    method: 'GET',
    path: '/items?x=1',
    route: 'catalog/rest',
    rule: 'rest',
    backend: { service: 'catalog', subset: 'v1' },
    timeoutMs: 3000,
    retryPolicy: { attempts: 2, perTryTimeoutMs: 1000, retryOn: ['5xx'] },
    tries: [
      { endpoint: '10.0.0.1:80', status: 503, startMs: 1, durationMs: 5 },
      { endpoint: '10.0.0.2:80', status: 200, startMs: 16, durationMs: 2 },
    ],
    triesSent: 2,
    rateLimits: [{ limit: 'per-caller', bucket: 'frontend', outcome: 'allowed' }],
    status: 200,
    durationMs: 18,
  });
  t.notOk('flags' in j);
  const text = formatLast({ requestId: 'r1', asked: 1, kept: 4, decisions: [j] });
  t.match(text, /5\. tries: 2 tries \(1 retry\); policy: up to 2 retries on 5xx\n     try 1 at \+1ms: 10\.0\.0\.1:80 -> 503 in 5ms\n     try 2 at \+16ms: 10\.0\.0\.2:80 -> 200 in 2ms\n=> 200 in 18ms/);
  t.match(text, /4\. rate limits: 1 bucket\(s\) counted\n     limit "per-caller", bucket "frontend": allowed/);
});

t.test('a request still in flight is found by its id and shown as such; the tries a slot holds are bounded', async (t) => {
  const clock = new FakeClock();
  const ring = new DecisionRing(4, clock);
  const c = call('r2');
  ring.claim(c);
  observed(c, clock);
  for (let i = 0; i < MAX_TRIES + 3; i++) c.decision!.tryBegin(c.decisionSeq, `10.0.0.${i}:80`);
  clock.advance(7);
  const j = ring.find('r2')[0]!.toJSON('s', 'svc');
  t.equal(j.inFlight, true);
  t.equal(j.durationMs, 7);
  t.equal(j.tries.length, MAX_TRIES);
});

t.test('the ring is bounded: a reused slot ignores the request that held it before', async (t) => {
  const clock = new FakeClock();
  const ring = new DecisionRing(2, clock);
  const old = call('old');
  ring.claim(old);
  const slot = old.decision!;
  const a = call('a');
  ring.claim(a);
  const b = call('b');
  ring.claim(b);
  t.equal(b.decision, slot, 'the third request takes the first one\'s slot');
  t.equal(slot.tryBegin(old.decisionSeq, '10.0.0.9:80'), -1, 'the old request\'s try is not recorded');
  slot.limit(old.decisionSeq, 'x', 'y', 'limited');
  slot.finish(old.decisionSeq, 500, 'UF', 'old');
  t.equal(slot.done, false, 'nor its end');
  b.decision!.finish(b.decisionSeq, 204, undefined, undefined);
  a.decision!.finish(a.decisionSeq, 200, undefined, undefined);
  t.same(ring.find('old'), []);
  t.same(ring.find('b').map((d) => [d.status, d.nTries, d.nLimits]), [[204, 0, 0]]);
  t.same(ring.recent(5).map((d) => d.requestId), ['b', 'a'], 'newest first');
  t.throws(() => new DecisionRing(0, clock), /positive size/);
});

t.test("a slot keeps the request's id, authority and path as they were, whatever their length and characters", async (t) => {
  const clock = new FakeClock();
  const ring = new DecisionRing(2, clock);
  const cases: [string, string, string][] = [
    ['short', 'catalog', '/items?x=1'],
    // Longer than a slot's bytes: kept as a string.
    ['long-path', 'catalog', '/search?q=' + 'x'.repeat(TEXT_BYTES * 2)],
    // Multi-byte characters, and a path that needs exactly the slot's last bytes.
    ['\u00e9t\u00e9-\u2603', 'caf\u00e9.example', '/\u00fc\u00f1\u00ee/\u{1F600}'],
    ['f'.repeat(36), 'a'.repeat(60), '/' + 'p'.repeat(TEXT_BYTES - 36 - 60 - 1)],
    ['e'.repeat(36), 'a'.repeat(60), '/' + 'p'.repeat(TEXT_BYTES - 36 - 60 - 2) + '\u00e9'],
    ['', '', ''],
  ];
  for (const [id, authority, path] of cases) {
    const c = new MeshCall('outbound', 'http', 'http1', 'GET', path, authority, undefined, id ? ['x-request-id', id] : [], null, '1');
    ring.claim(c);
    c.decision!.finish(c.decisionSeq, 200, undefined, undefined);
    const j = ring.recent(1)[0]!.toJSON('s', 'svc');
    t.same([j.requestId, j.authority, j.path], [id, authority, path], `${id.slice(0, 12)} ${path.length} chars`);
    if (id) t.equal(ring.find(id).length, 1, 'found by its id');
  }
  // Slots across several blocks of bytes each keep their own request's strings.
  const big = new DecisionRing(600, clock);
  for (let i = 0; i < 600; i++) {
    const c = new MeshCall('outbound', 'http', 'http1', 'GET', `/p/${i}`, `h${i}`, undefined, ['x-request-id', `id-${i}`], null, '1');
    big.claim(c);
    c.decision!.finish(c.decisionSeq, 200, undefined, undefined);
  }
  let same = 0;
  for (let i = 0; i < 600; i++) {
    const [d] = big.find(`id-${i}`);
    if (d && d.path === `/p/${i}` && d.authority === `h${i}`) same++;
  }
  t.equal(same, 600, 'every one of 600 slots holds its own id, path and authority');
  // A slot taken again holds nothing of its last request until the new one ends, whether that
  // request's strings were copied or kept (a path longer than the slot).
  for (const p of ['/short', '/long/' + 'l'.repeat(TEXT_BYTES)]) {
    const before = new MeshCall('outbound', 'http', 'http1', 'GET', p, 'n', undefined, ['x-request-id', 'x'.repeat(TEXT_BYTES)], null, '1');
    ring.claim(before);
    before.decision!.finish(before.decisionSeq, 200, undefined, undefined);
    ring.claim(new MeshCall('outbound', 'http', 'http1', 'GET', '/other', 'o', undefined, [], null, '1'));
    const c = new MeshCall('outbound', 'http', 'http1', 'GET', '/new', 'n', undefined, ['x-request-id', 'new'], null, '1');
    ring.claim(c);
    t.equal(c.decision, before.decision, 'the same slot');
    t.same([c.decision!.requestId, c.decision!.authority, c.decision!.path], ['', '', '']);
  }
});

t.test('inbound: the caller, the rate-limit outcome, the app', async (t) => {
  const clock = new FakeClock();
  const ring = new DecisionRing(8, clock);
  const c = new MeshCall('inbound', 'grpc', 'http2', 'POST', '/pkg.Svc/Get', 'pricing', undefined, ['x-request-id', 'g1'], null, '2');
  ring.claim(c);
  c.decision!.limit(c.decisionSeq, 'global', 'frontend', 'limited');
  c.decision!.finish(c.decisionSeq, 200, 'RL', undefined, 8);
  const j = ring.find('g1')[0]!.toJSON('p-0', 'pricing');
  t.match(j, { direction: 'inbound', kind: 'grpc', status: 200, flags: 'RL', grpcStatus: 8, rateLimits: [{ outcome: 'limited' }] });
  t.notOk('durationMs' in j, 'answered before the observe layer: not timed');
  t.match(formatLast({ requestId: 'g1', asked: 3, kept: 8, decisions: [j] }), /1\. caller: unknown \(not a known service\), no client certificate\n2\. rate limits: 1 bucket\(s\) counted\n     limit "global", bucket "frontend": limited\n=> 200 grpc-status 8 RL, answered by the sidecar before forwarding\n/);
});

t.test('hops in the order the request travelled, though the sidecars clocks disagree by a millisecond', async (t) => {
  // frontend → catalog → pricing (twice); catalog's wall clock runs 1 ms late, so by `start`
  // alone its inbound record would sort after its own calls' callee.
  const rec = (sidecar: string, service: string, direction: 'inbound' | 'outbound', start: number, peer?: string) =>
    direction === 'inbound' ? { sidecar, service, direction, start, ...(peer ? { source: peer } : {}) } : { sidecar, service, direction, start, backend: { service: peer as string } };
  const found = [
    rec('pricing-0', 'pricing', 'inbound', 1000.6, 'catalog'),
    rec('catalog-0', 'catalog', 'inbound', 1001.1, 'frontend'),
    rec('frontend-0', 'frontend', 'outbound', 1000.2, 'catalog'),
    rec('catalog-0', 'catalog', 'outbound', 1001.3, 'pricing'),
    rec('pricing-0', 'pricing', 'inbound', 1000.9, 'catalog'),
    rec('frontend-0', 'frontend', 'inbound', 1000.1),
    rec('catalog-0', 'catalog', 'outbound', 1001.5, 'pricing'),
  ];
  const hops = (rs: { sidecar: string; direction: string; start: number }[]) => rs.map((r) => `${r.sidecar} ${r.direction} ${r.start}`);
  t.same(hops(orderHops(found)), [
    'frontend-0 inbound 1000.1',
    'frontend-0 outbound 1000.2',
    'catalog-0 inbound 1001.1',
    'catalog-0 outbound 1001.3',
    'pricing-0 inbound 1000.6',
    'catalog-0 outbound 1001.5',
    'pricing-0 inbound 1000.9',
  ]);
  t.same(hops([...found].sort((a, b) => a.start - b.start)).slice(2, 3), ['pricing-0 inbound 1000.6'], 'by start alone the order is wrong');
  // A caller outside the mesh (no source), or one that kept no record: oldest first.
  const lone = [rec('catalog-0', 'catalog', 'outbound', 5, 'pricing'), rec('catalog-0', 'catalog', 'inbound', 4, 'web'), rec('pricing-0', 'pricing', 'inbound', 3, 'catalog')];
  t.same(hops(orderHops(lone)), ['catalog-0 inbound 4', 'catalog-0 outbound 5', 'pricing-0 inbound 3']);
  t.same(orderHops([]), []);
});
