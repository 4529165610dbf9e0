/**
 * The pre-bound registry: children are bound once, recording adds, both exposition formats
 * render what promtool accepts, hdr quantiles follow a sliding window on a fake clock.
 */
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { MeshMetrics } from '../../../src/observability/mesh-metrics';
import { negotiate, Registry } from '../../../src/observability/metrics';

function promtool(text: string): { status: number | null; out: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, out: r.stdout + r.stderr };
}

t.test('children are bound once and rendered with escaped labels', async (t) => {
  const r = new Registry();
  const c = r.counter('demo_requests_total', 'Requests.', ['path_class']);
  const a = c.labels('a"b\\c\nd');
  t.equal(c.labels('a"b\\c\nd'), a, 'the same label values give the same child');
  a.inc();
  a.inc(2);
  const g = r.gauge('demo_in_flight', 'In flight.');
  g.set(4);
  const text = r.render();
  t.match(text, /^demo_requests_total\{path_class="a\\"b\\\\c\\nd"\} 3$/m, 'quotes, backslashes and newlines escaped');
  t.match(text, /^# TYPE demo_in_flight gauge\ndemo_in_flight 4$/m);
  t.throws(() => c.labels(), /takes 1 label values/, 'the wrong number of label values is an error');
  t.throws(() => r.counter('demo_requests_total', 'again'), /registered twice/);
  t.throws(() => r.counter('demo_bad', 'x'), /end in _total/);
  t.throws(() => r.gauge('bad-name', 'x'), /invalid metric name/);
  t.throws(() => r.gauge('ok_name', 'x', ['__reserved']), /invalid label name/);
});

t.test('a histogram renders cumulative buckets, +Inf, _sum and _count', async (t) => {
  const r = new Registry();
  const h = r.histogram('demo_duration_seconds', 'Durations.', ['route'], [0.1, 1]);
  const c = h.labels('r1');
  for (const v of [0.05, 0.1, 0.5, 3]) c.observe(v);
  const text = r.render();
  t.match(text, /^demo_duration_seconds_bucket\{route="r1",le="0\.1"\} 2$/m, 'le is inclusive');
  t.match(text, /^demo_duration_seconds_bucket\{route="r1",le="1"\} 3$/m);
  t.match(text, /^demo_duration_seconds_bucket\{route="r1",le="\+Inf"\} 4$/m);
  t.match(text, /^demo_duration_seconds_sum\{route="r1"\} 3\.65$/m);
  t.match(text, /^demo_duration_seconds_count\{route="r1"\} 4$/m);
  t.throws(() => r.histogram('demo_bad_seconds', 'x', [], [1, 1]), /must increase/);
});

t.test('hdr quantiles over a sliding window, on a fake clock', async (t) => {
  const clock = new FakeClock();
  const m = new MeshMetrics({ service: 'web', clock, windowMs: 60_000 });
  const h = m.handle('outbound', 'catalog', 'catalog/0');
  for (let i = 1; i <= 1000; i++) h.complete(200, undefined, i / 1000, 10, 20);
  let s = h.window.snapshot([0.5, 0.9, 0.99, 0.999]);
  t.equal(s.count, 1000);
  t.ok(Math.abs((s.values[0] as number) - 0.5) <= 0.0005, `p50 ${s.values[0]} within 0.1% of 0.5 s`);
  t.ok(Math.abs((s.values[2] as number) - 0.99) <= 0.001, `p99 ${s.values[2]} within 0.1% of 0.99 s`);
  t.ok(Math.abs((s.values[3] as number) - 0.999) <= 0.001, `p99.9 ${s.values[3]}`);
  clock.advance(30_000);
  for (let i = 0; i < 100; i++) h.complete(200, undefined, 2, 0, 0);
  s = h.window.snapshot([0.5]);
  t.equal(s.count, 1100, 'half a window later both sets count');
  clock.advance(35_000);
  s = h.window.snapshot([0.5, 0.99]);
  t.equal(s.count, 100, 'the first set slid out of the window');
  t.ok(Math.abs((s.values[0] as number) - 2) <= 0.002, 'only the recent values remain');
  clock.advance(120_000);
  t.equal(h.window.snapshot([0.5]).count, 0, 'an idle window empties');
  const text = m.registry.render();
  t.match(text, /^meshlet_request_duration_window_seconds\{direction="outbound",source="web",destination="catalog",route="catalog\/0",quantile="0\.99"\} NaN$/m, 'an empty window reads NaN');
  t.match(text, /^meshlet_request_duration_seconds_count\{direction="outbound",source="web",destination="catalog",route="catalog\/0"\} 1100$/m, 'the histogram keeps every request');
  t.match(text, /^meshlet_request_bytes_total\{[^}]*\} 10000$/m);
  t.match(text, /^meshlet_response_bytes_total\{[^}]*\} 20000$/m);
});

t.test('request counters: code class, code and flag; unknown codes and flags stay bounded', async (t) => {
  const m = new MeshMetrics({ service: 'web' });
  const h = m.handle('outbound', 'catalog', 'catalog/0');
  h.count(200);
  h.count(200);
  h.count(503, 'UF');
  h.count(999, 'made-up');
  t.equal(h.total, 4);
  const text = m.registry.render();
  t.match(text, /response_code_class="2xx",response_code="200",response_flags="-"\} 2$/m);
  t.match(text, /response_code_class="5xx",response_code="503",response_flags="UF"\} 1$/m);
  t.match(text, /response_code_class="unknown",response_code="0",response_flags="other"\} 1$/m, 'out-of-range code and unknown flag fold into bounded values');
});

t.test('the sidecar metric set passes promtool (text 0.0.4); the OpenMetrics rendering has its shape', async (t) => {
  const clock = new FakeClock();
  const m = new MeshMetrics({ service: 'web', clock });
  const h = m.handle('outbound', 'catalog', 'catalog/0');
  h.active.value = 1;
  h.complete(200, undefined, 0.012, 5, 50);
  h.complete(503, 'UF', 0.001, 0, 0);
  m.handle('inbound', 'web', 'unknown').complete(200, undefined, 0.003, 0, 7);
  m.refusals.labels('header too large').inc();
  m.retry('catalog');
  m.timeout('catalog');
  m.breaker('catalog/rule-0', 'open');
  m.ejection('catalog');
  m.mirror('catalog-next');
  m.acks.inc();
  m.setPolicy('abc123', clock.now() - 5000);
  const prom = m.registry.render('prometheus');
  const p = promtool(prom);
  t.equal(p.status, 0, `promtool check metrics (text 0.0.4): ${p.out}`);
  t.match(prom, /^meshlet_circuit_breaker_state\{route="catalog\/rule-0"\} 2$/m);
  t.match(prom, /^meshlet_mirrored_requests_total\{destination="catalog-next"\} 1$/m);
  t.match(prom, /^meshlet_policy_info\{version="abc123"\} 1$/m);
  t.match(prom, /^meshlet_policy_age_seconds \d/m);
  const om = m.registry.render('openmetrics');
  t.match(om, /^# TYPE meshlet_requests counter$/m, 'OpenMetrics names the counter family without _total');
  t.match(om, /^meshlet_requests_total\{/m, 'and keeps _total on its samples');
  t.match(om, /\n# EOF\n$/, 'and ends with # EOF');
  m.setPolicy('def456', clock.now());
  t.notMatch(m.registry.render(), /version="abc123"/, 'only the version in force is reported');
});

t.test('content negotiation on Accept', async (t) => {
  t.equal(negotiate(undefined), 'prometheus');
  t.equal(negotiate('text/plain'), 'prometheus');
  t.equal(negotiate('application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'), 'openmetrics', "Prometheus's own Accept");
  t.equal(negotiate('application/openmetrics-text; q=0'), 'prometheus', 'q=0 refuses it');
});

t.test('the window rate is over the time that has data (meshlet stat RPS)', async (t) => {
  const clock = new FakeClock();
  const m = new MeshMetrics({ service: 'web', clock, windowMs: 60_000 });
  const { WindowMerge } = await import('../../../src/observability/metrics');
  const h = m.handle('outbound', 'catalog', 'catalog/0');
  const rps = (): number => {
    const w = new WindowMerge();
    w.add(h.window.export());
    return w.rps;
  };
  clock.advance(400);
  h.complete(200, undefined, 0.001, 0, 0);
  t.equal(rps(), 1, 'one request just now: 1/s (over at least a second), not 1 over the process age');
  clock.advance(120_000);
  t.equal(rps(), 0, 'nothing in the window');
  // 300 requests over 10 s, after a quiet minute.
  for (let i = 0; i < 300; i++) {
    h.complete(200, undefined, 0.001, 0, 0);
    clock.advance(10_000 / 300);
  }
  t.ok(Math.abs(rps() - 30) < 0.5, `300 requests in the last 10 s read ~30/s, got ${rps()}`);
  clock.advance(40_000);
  t.ok(Math.abs(rps() - 6) < 0.2, `then 40 s of silence: 300 over the 50 s since the first, got ${rps()}`);
});

t.test('a combination of known flags (UF,URX) keeps its label value; made-up parts fold into other', async (t) => {
  const m = new MeshMetrics({ service: 'web' });
  const h = m.handle('outbound', 'catalog', 'catalog/0');
  h.count(503, 'UF,URX');
  h.count(503, 'UF,URX');
  h.count(502, 'UR,RBX');
  h.count(503, 'UF,bogus');
  t.equal(h.total, 4);
  const text = m.registry.render();
  t.match(text, /response_code="503",response_flags="UF,URX"\} 2$/m);
  t.match(text, /response_code="502",response_flags="UR,RBX"\} 1$/m);
  t.match(text, /response_code="503",response_flags="other"\} 1$/m);
});
