/**
 * The tap as the observer feeds it: nothing is built while nobody watches; a watcher gets the
 * requests its filter matches (direction, destination, source, route) with method, path, status,
 * flag, latency, upstream and trace id, header values only for the names it asked (never
 * credentials), and at most its rate (a token bucket on a fake clock): the rest are counted as
 * dropped. Stopping the last watcher turns the tap off again.
 */
import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { MeshMetrics } from '../../../src/observability/mesh-metrics';
import { Observer } from '../../../src/observability/observer';
import { MAX_WATCHERS, TapError, TapHub, tapOptions, type TapEvent } from '../../../src/observability/tap';

const info = (p: string) => ({ method: 'GET', authority: 'web', path: p, protocol: 'http1' as const });

function setup() {
  const clock = new FakeClock();
  const tap = new TapHub(clock);
  const metrics = new MeshMetrics({ service: 'frontend', clock });
  const obs = new Observer({ metrics, tap, samplingPercent: 0, knownService: (n) => n === 'frontend' });
  return { clock, tap, obs, metrics };
}

t.test('off unless someone watches; then matching requests, filtered', async (t) => {
  const { tap, obs, metrics } = setup();
  t.equal(tap.active, false, 'off by default');
  const h = metrics.handle('outbound', 'catalog', 'catalog/split');
  const r0 = obs.begin('outbound', () => undefined, info('/before'), h);
  r0.end(200);

  const got: TapEvent[] = [];
  const w = tap.watch({ direction: 'outbound', destination: 'catalog' }, {}, (e) => got.push(e));
  t.equal(tap.active, true);
  const r1 = obs.begin('outbound', (n) => (n === 'traceparent' ? '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' : undefined), info('/items'), h);
  r1.upstream = '10.0.0.2:15006';
  r1.end(503, 'UH');
  const other = metrics.handle('outbound', 'pricing', 'pricing/default');
  obs.begin('outbound', () => undefined, info('/price'), other).end(200);
  obs.begin('inbound', () => undefined, info('/in')).end(200);
  t.equal(got.length, 1, 'only the outbound request to catalog');
  t.match(got[0], {
    type: 'request',
    direction: 'outbound',
    source: 'frontend',
    destination: 'catalog',
    route: 'catalog/split',
    method: 'GET',
    authority: 'web',
    path: '/items',
    protocol: 'HTTP/1.1',
    status: 503,
    flags: 'UH',
    upstream: '10.0.0.2:15006',
    traceId: '0af7651916cd43dd8448eb211c80319c',
  });
  t.type(got[0]!.latencyMs, 'number');
  t.notOk('headers' in got[0]!, 'no headers unless asked');
  t.notOk(got.some((e) => e.path === '/before'), 'nothing from before the watch');

  const routeOnly: TapEvent[] = [];
  const w2 = tap.watch({ route: 'pricing/default' }, {}, (e) => routeOnly.push(e));
  obs.begin('outbound', () => undefined, info('/price'), other).end(200);
  t.same(
    routeOnly.map((e) => e.path),
    ['/price'],
    'route filter',
  );
  w.stop();
  w2.stop();
  t.equal(tap.active, false, 'off again after the last watcher stops');
  t.equal(tap.watching, 0);
});

t.test('header values only for the names asked, never credentials', async (t) => {
  const { tap, obs } = setup();
  const got: TapEvent[] = [];
  const w = tap.watch({}, tapOptions(null, 'X-Canary, user-agent'), (e) => got.push(e));
  const hdrs: Record<string, string> = { 'x-canary': 'true', authorization: 'Bearer secret', 'user-agent': 'curl/8' };
  obs.begin('inbound', (n) => hdrs[n], info('/')).end(200);
  t.same(got[0]?.headers, { 'x-canary': 'true', 'user-agent': 'curl/8' });
  t.notOk(JSON.stringify(got).includes('secret'));
  w.stop();
  t.throws(() => tapOptions(null, 'authorization'), TapError, 'credentials are refused');
  t.throws(() => tapOptions(null, 'cookie'), /never shown/);
  t.throws(() => tapOptions(null, 'bad header'), /not a header name/);
  t.throws(() => tapOptions('0', null), /rate: expected an integer 1\.\.100/);
  t.throws(() => tapOptions('101', null), /rate/);
  t.throws(() => tapOptions('fast', null), /rate/);
  t.same(tapOptions('5', ''), { rate: 5 });
});

t.test('bounded rate: a token bucket per watcher, the rest counted as dropped', async (t) => {
  const { tap, obs, clock } = setup();
  const got: TapEvent[] = [];
  const w = tap.watch({}, { rate: 5 }, (e) => got.push(e));
  for (let i = 0; i < 20; i++) obs.begin('inbound', () => undefined, info(`/${i}`)).end(200);
  t.equal(got.length, 5, 'a burst of at most the rate');
  t.equal(w.takeDropped(), 15);
  t.equal(w.takeDropped(), 0, 'reset once taken');
  clock.advance(1000);
  for (let i = 0; i < 20; i++) obs.begin('inbound', () => undefined, info(`/${i}`)).end(200);
  t.equal(got.length, 10, 'refilled at the rate');
  clock.advance(200);
  obs.begin('inbound', () => undefined, info('/x')).end(200);
  t.equal(got.length, 11, 'one token after 200 ms at 5/s');
  w.stop();
});

t.test('at most MAX_WATCHERS at once', async (t) => {
  const { tap } = setup();
  const ws = Array.from({ length: MAX_WATCHERS }, () => tap.watch({}, {}, () => undefined));
  t.throws(() => tap.watch({}, {}, () => undefined), { code: 'too_many_watchers' });
  ws[0]!.stop();
  t.doesNotThrow(() => tap.watch({}, {}, () => undefined).stop());
  for (const w of ws) w.stop();
});
