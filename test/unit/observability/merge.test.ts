import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { mergeExpositions } from '../../../src/observability/merge';
import { Registry } from '../../../src/observability/metrics';

/** One process's registry, as a worker of a `--concurrency N` sidecar has it. */
function worker(requests: number, active: number, durations: number[], lag: number, clock: FakeClock) {
  const r = new Registry();
  r.counter('meshlet_requests_total', 'Requests.', ['route']).labels('a').inc(requests);
  r.gauge('meshlet_active_requests', 'In flight.').set(active);
  r.gauge('nodejs_eventloop_lag_max_seconds', 'Lag.').set(lag);
  r.gauge('process_start_time_seconds', 'Start.').set(1000 + lag * 1000);
  r.counter('meshlet_policy_acks_total', 'Acks.').inc(5);
  const h = r.histogram('meshlet_request_duration_seconds', 'Durations.', ['route'], [0.1, 1]);
  const w = r.windowSummary('meshlet_request_duration_window_seconds', 'Window.', ['route'], { clock });
  for (const d of durations) {
    h.labels('a').observe(d);
    w.labels('a').observe(d);
  }
  return { text: r.render('prometheus'), windows: { meshlet_request_duration_window_seconds: w.exports() } };
}

t.test('counters and histograms sum, gauges by meaning, the primary owns its families, windows merge', async (t) => {
  const clock = new FakeClock();
  const primary = new Registry();
  primary.counter('meshlet_policy_acks_total', 'Acks.').inc(1);
  const parts = [{ text: primary.render() }, worker(3, 1, [0.05, 0.5, 2], 0.01, clock), worker(4, 2, [0.05, 0.05, 0.05, 0.05], 0.03, clock)];
  const m = mergeExpositions(parts);
  t.match(m, /^meshlet_requests_total\{route="a"\} 7$/m, 'counter summed');
  t.match(m, /^meshlet_active_requests 3$/m, 'in-flight gauge summed');
  t.match(m, /^nodejs_eventloop_lag_max_seconds 0\.03$/m, 'lag: the worst');
  t.match(m, /^process_start_time_seconds 1010$/m, 'start time: the earliest');
  t.match(m, /^meshlet_policy_acks_total 1$/m, "ACKs: the primary's, not the workers'");
  t.match(m, /^meshlet_request_duration_seconds_bucket\{route="a",le="0\.1"\} 5$/m, 'buckets summed');
  t.match(m, /^meshlet_request_duration_seconds_bucket\{route="a",le="\+Inf"\} 7$/m);
  t.match(m, /^meshlet_request_duration_seconds_count\{route="a"\} 7$/m);
  t.match(m, /^meshlet_request_duration_window_seconds_count\{route="a"\} 7$/m, 'window counts merged');
  t.match(m, /^meshlet_request_duration_window_seconds\{route="a",quantile="0\.5"\} 0\.05/m, 'median over both windows');
  t.match(m, /^meshlet_request_duration_window_seconds\{route="a",quantile="0\.999"\} 2/m, "the slowest request, from one worker's window");
  t.equal(m.match(/^# TYPE meshlet_requests_total counter$/gm)?.length, 1, 'one header per family');
  const sum = Number(/^meshlet_request_duration_window_seconds_sum\{route="a"\} (\S+)$/m.exec(m)?.[1]);
  t.ok(Math.abs(sum - 2.75) < 0.01, `window sum ${sum} ~ 2.75`);
  const om = mergeExpositions(parts, 'openmetrics');
  t.match(om, /^# TYPE meshlet_requests counter$/m, 'OpenMetrics family name');
  t.match(om, /^meshlet_requests_total\{route="a"\} 7$/m);
  t.ok(om.endsWith('# EOF\n'));
  t.equal(mergeExpositions([]), '', 'nothing to merge');
  t.equal(mergeExpositions([{ text: '# HELP x_total X.\n# TYPE x_total counter\n' }]), '', 'families without samples are left out');
});
