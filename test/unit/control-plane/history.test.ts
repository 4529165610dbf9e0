/**
 * The dashboard's history on a fake clock, with sidecar windows made by the real WindowChild:
 * each sample adds one point per series (service, caller, route, edge) with req/s, success rate
 * and exact p50/p90/p99 over the merged windows; the response breakdown is what was counted since
 * the previous sample (a sidecar restart does not go negative; a cluster sidecar's workers are
 * summed); points older than the retention go, and a series with none left is dropped.
 */
import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { MeshMetrics } from '../../../src/observability/mesh-metrics';
import { MeshHistory, sumResponses, type StatsReport } from '../../../control-plane/history';

function sidecar(clock: FakeClock, service: string) {
  return new MeshMetrics({ service, clock });
}

function report(id: string, m: MeshMetrics): StatsReport {
  return { id, ...m.stats() } as StatsReport;
}

t.test('points per series, deltas of responses, retention', async (t) => {
  const clock = new FakeClock();
  const fe = sidecar(clock, 'frontend');
  const web = sidecar(clock, 'web');
  const out = fe.handle('outbound', 'web', 'web/default');
  const inFromFe = web.handle('inbound', 'web', 'unknown', 'frontend');
  const inOutside = web.handle('inbound', 'web', 'unknown', 'unknown');
  const h = new MeshHistory({ sidecars: () => [], clock, intervalMs: 1000, retentionMs: 10_000 });

  for (let i = 0; i < 9; i++) {
    out.complete(200, undefined, 0.010, 0, 0);
    inFromFe.complete(200, undefined, 0.008, 0, 0);
  }
  out.complete(503, 'UH', 0.001, 0, 0);
  inOutside.complete(200, undefined, 0.020, 0, 0);
  clock.advance(1000);
  h.record({ at: clock.now(), reports: [report('fe-0', fe), report('web-0', web)], unreachable: [] });

  t.same(h.keys(''), ['caller/web/frontend', 'caller/web/unknown', 'edge/frontend/web', 'route/web/web/default', 'service/web'].sort());
  const route = h.points('route/web/web/default');
  t.equal(route.length, 1);
  t.match(route[0], { requests: 10, successRate: 0.9, responses: { '200 -': 9, '503 UH': 1 } });
  t.ok(route[0]!.p50Ms! >= 9.9 && route[0]!.p50Ms! <= 10.1, `p50 ${route[0]!.p50Ms}`);
  t.ok(route[0]!.p90Ms! <= route[0]!.p99Ms!, 'p90 <= p99');
  t.ok(route[0]!.rps > 0);
  t.match(h.points('service/web')[0], { requests: 10, successRate: 1 });
  t.match(h.points('caller/web/unknown')[0], { requests: 1, responses: { '200 -': 1 } });

  // Next sample: only what happened since.
  out.complete(200, undefined, 0.010, 0, 0);
  clock.advance(1000);
  h.record({ at: clock.now(), reports: [report('fe-0', fe), report('web-0', web)], unreachable: [] });
  const r2 = h.points('route/web/web/default');
  t.equal(r2.length, 2);
  t.same(r2[1]!.responses, { '200 -': 1 }, 'the delta since the previous sample');
  t.equal(r2[1]!.requests, 11, 'golden metrics are the trailing window');
  t.same(sumResponses(r2), { '200 -': 10, '503 UH': 1 }, 'a range sums to what happened in it');
  t.notOk(h.points('service/web')[1]?.responses, 'no responses since: none carried');

  // The frontend sidecar restarts: its counters start again from zero.
  const fe2 = sidecar(clock, 'frontend');
  fe2.handle('outbound', 'web', 'web/default').complete(200, undefined, 0.01, 0, 0);
  clock.advance(1000);
  h.record({ at: clock.now(), reports: [report('fe-0', fe2), report('web-0', web)], unreachable: [] });
  t.same(h.points('route/web/web/default')[2]!.responses, { '200 -': 1 }, 'a counter that went down counts as new');

  // Retention: 10 s; the series of the old windows stay only while they have points.
  clock.advance(12_000);
  h.record({ at: clock.now(), reports: [], unreachable: [{ id: 'web-0', service: 'web', error: 'timeout' }] });
  t.equal(h.size, 0, 'every point is older than the retention: every series dropped');
  t.same(h.latest()?.unreachable, [{ id: 'web-0', service: 'web', error: 'timeout' }]);
});

t.test('bounded: a series keeps at most retention / interval points', async (t) => {
  const clock = new FakeClock();
  const fe = sidecar(clock, 'frontend');
  const out = fe.handle('outbound', 'web', 'web/default');
  const h = new MeshHistory({ sidecars: () => [], clock, intervalMs: 1000, retentionMs: 5000 });
  for (let i = 0; i < 30; i++) {
    out.complete(200, undefined, 0.001, 0, 0);
    clock.advance(1000);
    h.record({ at: clock.now(), reports: [report('fe-0', fe)], unreachable: [] });
  }
  t.ok(h.points('edge/frontend/web').length <= 6, `${h.points('edge/frontend/web').length} points`);
});

t.test('cluster-mode sidecars: each worker listed, counters summed once', async (t) => {
  const clock = new FakeClock();
  const w1 = sidecar(clock, 'web');
  const w2 = sidecar(clock, 'web');
  w1.handle('inbound', 'web', 'unknown').complete(200, undefined, 0.001, 0, 0);
  w2.handle('inbound', 'web', 'unknown').complete(500, undefined, 0.001, 0, 0);
  const h = new MeshHistory({ sidecars: () => [], clock });
  clock.advance(1000);
  const merged: StatsReport = { id: 'web-0', service: 'web', routes: [...w1.stats().routes, ...w2.stats().routes] };
  h.record({ at: clock.now(), reports: [merged], unreachable: [] });
  t.match(h.points('service/web')[0], { requests: 2, successRate: 0.5, responses: { '200 -': 1, '500 -': 1 } });
});

t.test('sampling asks the connected sidecars and lists the ones that fail', async (t) => {
  const clock = new FakeClock();
  const fe = sidecar(clock, 'frontend');
  fe.handle('outbound', 'web', 'web/default').complete(200, undefined, 0.001, 0, 0);
  const asked: string[] = [];
  const h = new MeshHistory({
    sidecars: () => [
      { id: 'fe-0', service: 'frontend', address: '127.0.0.1', adminPort: 1 },
      { id: 'web-0', service: 'web', address: '127.0.0.1', adminPort: 2 },
      { id: 'old-0', service: 'web', address: '127.0.0.1' },
    ],
    clock,
    intervalMs: 1000,
    fetch: async (s) => {
      asked.push(s.id);
      if (s.id === 'web-0') throw new Error('no answer within 2000 ms');
      return report(s.id, fe);
    },
  });
  h.start();
  clock.advance(1000);
  await new Promise((r) => setImmediate(r));
  t.same(asked.sort(), ['fe-0', 'web-0']);
  t.same(h.latest()?.unreachable, [
    { id: 'old-0', service: 'web', error: 'no admin port registered' },
    { id: 'web-0', service: 'web', error: 'no answer within 2000 ms' },
  ]);
  t.equal(h.points('edge/frontend/web').length, 1);
  await h.stop();
  clock.advance(5000);
  await new Promise((r) => setImmediate(r));
  t.equal(asked.length, 2, 'stopped: no more samples');
});

t.test('ejections across samples: how long an endpoint stays out, how often it goes out, within the retention', async (t) => {
  const clock = new FakeClock();
  const t0 = clock.now();
  const h = new MeshHistory({ sidecars: () => [], clock, intervalMs: 1000, retentionMs: 10_000 });
  const rep = (id: string, ejected: string[]): StatsReport =>
    ({ id, service: 'frontend', routes: [], resilience: { breakers: [], rateLimits: [], ejected: ejected.length ? [{ service: 'web', endpoints: ejected }] : [] } }) as StatsReport;
  const sample = (...reports: StatsReport[]): void => {
    clock.advance(1000);
    h.record({ at: clock.now(), reports, unreachable: [] });
  };
  sample(rep('fe-0', ['10.0.0.1:80']), rep('fe-1', []));
  sample(rep('fe-0', ['10.0.0.1:80', '10.0.0.2:80']), rep('fe-1', ['10.0.0.1:80']));
  sample(rep('fe-0', ['10.0.0.1:80']), rep('fe-1', []));
  sample(rep('fe-0', ['10.0.0.1:80', '10.0.0.2:80']));
  t.same(h.ejections(), [
    { service: 'web', endpoint: '10.0.0.1:80', ejectedSince: t0 + 1000, ejectedForMs: 3000, ejections: 1, seenBy: ['fe-0'] },
    { service: 'web', endpoint: '10.0.0.2:80', ejectedSince: t0 + 4000, ejectedForMs: 0, ejections: 2, seenBy: ['fe-0'] },
  ]);
  sample();
  t.same(h.ejections().map((e) => [e.endpoint, e.ejectedForMs, e.ejections]), [['10.0.0.2:80', 0, 2], ['10.0.0.1:80', 0, 1]], 'both back: their ejections are remembered, the most ejected first');
  for (let i = 0; i < 10; i++) sample();
  t.same(h.ejections(), [], 'forgotten after the retention');
});

t.test("gateway certificates: each connected gateway's last reported list, kept through a missed sample, gone when it disconnects", async (t) => {
  const clock = new FakeClock();
  let connected = ['edge-0', 'edge-1', 'fe-0'];
  let failing = new Set<string>();
  let renewed = false;
  const cert = (file: string, notAfter: string) => ({ listener: 'https', file, subject: 'CN=a.example.com', names: ['a.example.com'], serial: '01', notBefore: '2026-01-01T00:00:00.000Z', notAfter });
  const h = new MeshHistory({
    sidecars: () => connected.map((id) => ({ id, service: id.startsWith('edge') ? 'edge' : 'frontend', address: '127.0.0.1', adminPort: 1 })),
    clock,
    intervalMs: 1000,
    fetch: async (s) => {
      if (failing.has(s.id)) throw new Error('no answer');
      if (s.id === 'fe-0') return { id: s.id, service: s.service, routes: [] };
      return { id: s.id, service: s.service, routes: [], certificates: [cert('/c/a.crt', renewed && s.id === 'edge-0' ? '2027-01-01T00:00:00.000Z' : '2026-03-01T00:00:00.000Z'), cert('/c/b.crt', '2026-02-01T00:00:00.000Z')] };
    },
  });
  await h.sample();
  const list = () => h.certificates().map((c) => `${c.gateway} ${c.file} ${c.notAfter.slice(0, 10)}`);
  t.same(list(), ['edge-0 /c/b.crt 2026-02-01', 'edge-1 /c/b.crt 2026-02-01', 'edge-0 /c/a.crt 2026-03-01', 'edge-1 /c/a.crt 2026-03-01'], 'soonest to expire first; sidecars report none');
  t.equal(h.certificates()[0]?.service, 'edge');
  t.equal(h.certificates()[0]?.sampledAt, new Date(clock.now()).toISOString());
  failing = new Set(['edge-1']);
  renewed = true;
  clock.advance(1000);
  await h.sample();
  t.same(list(), ['edge-0 /c/b.crt 2026-02-01', 'edge-1 /c/b.crt 2026-02-01', 'edge-1 /c/a.crt 2026-03-01', 'edge-0 /c/a.crt 2027-01-01'], 'a renewed file replaces the old; a sample that missed edge-1 keeps what it last said');
  failing = new Set();
  connected = ['edge-0', 'fe-0'];
  clock.advance(1000);
  await h.sample();
  t.same(list(), ['edge-0 /c/b.crt 2026-02-01', 'edge-0 /c/a.crt 2027-01-01'], 'a gateway that disconnected is forgotten');
});
