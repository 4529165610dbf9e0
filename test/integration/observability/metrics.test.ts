/**
 * A live sidecar's /metrics after real traffic: promtool accepts it, OpenMetrics when asked,
 * the golden metrics carry route and destination, and hdr quantiles are there. The log level
 * changes at runtime through the admin port (access-log lines stop at `warn`), and
 * `--access-log 0` switches the access log off.
 */
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { echo, h1Upstream, h2Client, h2Request, rawExchange, request, route, service, startSidecar, within } from '../sidecar/helpers';

const waitFor = <T>(what: string, f: () => T | undefined): Promise<T> =>
  within(
    (async () => {
      for (;;) {
        const v = f();
        if (v !== undefined) return v;
        await new Promise((r) => setTimeout(r, 50));
      }
    })(),
    15_000,
    what,
  );

t.test('live /metrics: promtool, OpenMetrics, golden metrics per route', async (t) => {
  const up = await h1Upstream(t, echo('web'));
  const sc = await startSidecar(t, [service('web', [{ port: up.port }]), route('web', ['web'], [{ name: 'all', backends: [{ service: 'web' }] }])], {
    service: 'frontend',
    args: ['--access-log', '0'],
  });
  for (let i = 0; i < 3; i++) t.equal((await request({ port: sc.outbound, method: 'POST', path: `/item/${i}`, headers: { host: 'web' }, body: 'hello' })).status, 200);
  t.equal((await request({ port: sc.outbound, path: '/', headers: { host: 'nowhere' } })).status, 404);

  const m = await request({ port: sc.admin, path: '/metrics' });
  t.match(String(m.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  const check = spawnSync('promtool', ['check', 'metrics'], { input: m.text, encoding: 'utf8', timeout: 20_000 });
  t.equal(check.status, 0, `promtool check metrics: ${check.stdout}${check.stderr}`);
  const L = 'direction="outbound",source="frontend",destination="web",route="web/all"';
  t.match(m.text, new RegExp(`^meshlet_requests_total\\{${L},response_code_class="2xx",response_code="200",response_flags="-"\\} 3$`, 'm'));
  t.match(m.text, new RegExp(`^meshlet_request_duration_seconds_count\\{${L}\\} 3$`, 'm'), 'duration histogram');
  t.match(m.text, new RegExp(`^meshlet_request_duration_window_seconds\\{${L},quantile="0.99"\\} \\d`, 'm'), 'hdr p99');
  t.match(m.text, new RegExp(`^meshlet_request_bytes_total\\{${L}\\} 15$`, 'm'), 'request bytes');
  t.match(m.text, new RegExp(`^meshlet_response_bytes_total\\{${L}\\} [1-9]\\d*$`, 'm'), 'response bytes');
  t.match(m.text, new RegExp(`^meshlet_active_requests\\{${L}\\} 0$`, 'm'), 'nothing in flight');
  t.notMatch(m.text, /item\/\d/, 'no raw paths in labels');
  t.match(m.text, /^meshlet_upstream_pools\{protocol="http1"\} 1$/m);
  t.match(m.text, /^process_resident_memory_bytes \d+$/m);
  t.match(m.text, /^process_cpu_seconds_total [\d.e-]+$/m);
  t.match(m.text, /^nodejs_eventloop_lag_p99_seconds [\d.e-]+$/m);
  t.match(m.text, /^meshlet_policy_age_seconds [\d.e-]+$/m);
  t.notOk(sc.logs.some((l) => l.log === 'access'), '--access-log 0: no access-log lines');

  const om = await request({ port: sc.admin, path: '/metrics', headers: { accept: 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5' } });
  t.match(String(om.headers['content-type']), /^application\/openmetrics-text; version=1\.0\.0/, 'OpenMetrics when asked');
  t.match(om.text, /^# TYPE meshlet_requests counter$/m);
  t.match(om.text, /# EOF\n$/);
});

t.test('request bytes count what arrived: chunked HTTP/1.1 and HTTP/2 bodies without a content-length', async (t) => {
  const up = await h1Upstream(t, echo('web'));
  const sc = await startSidecar(t, [service('web', [{ port: up.port }], 'http1'), route('web', ['web'], [{ name: 'all', backends: [{ service: 'web' }] }])], {
    service: 'frontend',
    args: ['--access-log', '1'],
  });
  // 11 + 7 bytes in two chunks, chunked framing (its size lines and CRLFs are not body bytes).
  const chunked = await rawExchange(
    sc.outbound,
    'POST /c HTTP/1.1\r\nhost: web\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nb\r\nhello world\r\n7\r\n, again\r\n0\r\n\r\n',
  );
  t.equal(chunked.status, 200);
  t.match(chunked.text, /"bodyBytes":18/, 'the upstream got all 18 bytes');
  const h2 = h2Client(t, sc.outbound);
  const r = await h2Request(h2, { ':method': 'POST', ':path': '/h2', ':authority': 'web' }, 'x'.repeat(40_000));
  t.equal(r.status, 200);
  t.match(r.body.toString(), /"bodyBytes":40000/);
  const m = await request({ port: sc.admin, path: '/metrics' });
  const L = 'direction="outbound",source="frontend",destination="web",route="web/all"';
  t.match(m.text, new RegExp(`^meshlet_request_bytes_total\\{${L}\\} 40018$`, 'm'), 'request bytes: 18 + 40000');
  const line = await waitFor('the access line of the chunked request', () => sc.logs.find((l) => l.log === 'access' && l.path === '/c'));
  t.equal(line.bytes_received, 18, 'the access log counts the chunked body');
  const h2line = await waitFor('the access line of the h2 request', () => sc.logs.find((l) => l.log === 'access' && l.path === '/h2'));
  t.equal(h2line.bytes_received, 40000);
});

t.test('the log level changes at runtime through the admin port', async (t) => {
  const up = await h1Upstream(t, echo('web'));
  const sc = await startSidecar(t, [service('web', [{ port: up.port }])], { service: 'frontend', args: ['--access-log', '1'] });
  const get = await request({ port: sc.admin, path: '/logging' });
  t.same(get.json(), { level: 'info' });
  const call = (id: string) => request({ port: sc.outbound, path: '/', headers: { host: 'web', 'x-request-id': id } });
  t.equal((await call('one')).status, 200);
  await waitFor('the access line of request one', () => sc.logs.find((l) => l.log === 'access' && l.request_id === 'one'));

  const bad = await request({ port: sc.admin, method: 'POST', path: '/logging?level=loud', body: '' });
  t.equal(bad.status, 400, 'an unknown level is refused');
  t.match(bad.text, /level must be one of trace, debug, info/);
  const set = await request({ port: sc.admin, method: 'POST', path: '/logging?level=warn', body: '' });
  t.same(set.json(), { level: 'warn' }, 'level set to warn');
  t.equal((await call('two')).status, 200);
  t.same((await request({ port: sc.admin, method: 'POST', path: '/logging?level=info', body: '' })).json(), { level: 'info' });
  t.equal((await call('three')).status, 200);
  await waitFor('the access line of request three', () => sc.logs.find((l) => l.log === 'access' && l.request_id === 'three'));
  t.notOk(sc.logs.some((l) => l.request_id === 'two'), 'at warn, the access log was quiet');
});
