/**
 * The demo chain frontend -> catalog -> pricing, each app behind its own `meshlet sidecar`
 * process, the apps forwarding the trace headers as mesh apps are asked to. A test collector
 * (Zipkin v2 JSON) receives the spans: one trace id, one server span per inbound hop and one
 * client span per outbound hop, each the child of the span before it. The access logs carry the
 * same trace id and request id.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { priceOf, startDemoApp } from '../../../src/demo/app';
import { request, service, startSidecar, within, type SidecarProc } from '../sidecar/helpers';

interface ZSpan {
  traceId: string;
  id: string;
  parentId?: string;
  kind: 'SERVER' | 'CLIENT';
  name: string;
  localEndpoint: { serviceName: string };
  tags: Record<string, string>;
}

async function zipkin(t: Test): Promise<{ url: string; spans: ZSpan[]; posts: number }> {
  const c = { url: '', spans: [] as ZSpan[], posts: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (b: Buffer) => chunks.push(b));
    req.on('end', () => {
      c.posts++;
      if (req.method === 'POST' && req.url === '/api/v2/spans' && req.headers['content-type'] === 'application/json')
        c.spans.push(...(JSON.parse(Buffer.concat(chunks).toString('utf8')) as ZSpan[]));
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  );
  c.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v2/spans`;
  return c;
}

async function until<T>(what: string, f: () => T | undefined, ms = 15_000): Promise<T> {
  return within(
    (async () => {
      for (;;) {
        const v = f();
        if (v !== undefined) return v;
        await new Promise((r) => setTimeout(r, 50));
      }
    })(),
    ms,
    what,
  );
}

t.test('frontend -> catalog -> pricing: one trace, the right parent chain, exported to the collector', async (t) => {
  const collector = await zipkin(t);
  const trace = ['--trace-collector', collector.url, '--trace-sampling', '0', '--access-log', '1'];
  const proxies: Record<string, SidecarProc | undefined> = {};
  const app = async (role: 'frontend' | 'catalog') => {
    const a = await startDemoApp(role, { proxy: () => ({ host: '127.0.0.1', port: proxies[role]!.outbound }) });
    t.teardown(() => a.close());
    return a;
  };
  // pricing as a plain HTTP leaf (the demo's pricing is gRPC behind transcoding; this test is
  // about trace propagation over three HTTP hops).
  const http = await import('node:http');
  const leaf = http.createServer((req, res) => {
    const item = decodeURIComponent((req.url ?? '').split('/').pop() ?? '');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ service: 'pricing', item, price: priceOf(item) }));
  });
  await new Promise<void>((r) => leaf.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => leaf.close(() => r())));
  const pricingApp = { port: (leaf.address() as import('node:net').AddressInfo).port };
  const pricing = await startSidecar(t, [service('pricing', [{ port: pricingApp.port }])], { service: 'pricing', appPort: pricingApp.port, args: trace });
  proxies.pricing = pricing;
  const catalogApp = await app('catalog');
  const catalog = await startSidecar(t, [service('pricing', [{ port: pricing.inbound }])], { service: 'catalog', appPort: catalogApp.port, args: trace });
  proxies.catalog = catalog;
  const frontendApp = await app('frontend');
  const frontend = await startSidecar(t, [service('catalog', [{ port: catalog.inbound }])], { service: 'frontend', appPort: frontendApp.port, args: trace });
  proxies.frontend = frontend;

  // The caller sampled (sampling is 0% otherwise): the decision travels the whole chain.
  const root = 'a1b2c3d4e5f60718a1b2c3d4e5f60718';
  const caller = '1111222233334444';
  const res = await request({ port: frontend.inbound, path: '/', headers: { host: 'frontend', traceparent: `00-${root}-${caller}-01`, 'x-request-id': 'rid-42' } });
  t.equal(res.status, 200, `the chain answered: ${res.text}`);
  t.equal(res.json().catalog.items.length, 2, 'catalog priced both items through pricing');

  const spans = await until('7 spans at the collector', () => (collector.spans.length >= 7 ? collector.spans : undefined));
  t.equal(spans.length, 7, 'one server span per inbound hop (1 + 1 + 2), one client span per outbound hop (1 + 2)');
  t.same(new Set(spans.map((s) => s.traceId)), new Set([root]), 'one trace id, the caller’s');
  const byId = new Map(spans.map((s) => [s.id, s]));
  const of = (svc: string, kind: string) => spans.filter((s) => s.localEndpoint.serviceName === svc && s.kind === kind);
  const [feServer] = of('frontend', 'SERVER');
  const [feClient] = of('frontend', 'CLIENT');
  const [catServer] = of('catalog', 'SERVER');
  t.equal(feServer?.parentId, caller, 'frontend server span: child of the caller');
  t.equal(feClient?.parentId, feServer?.id, 'frontend -> catalog client span: child of the frontend server span');
  t.equal(catServer?.parentId, feClient?.id, 'catalog server span: child of that client span');
  const catClients = of('catalog', 'CLIENT');
  t.equal(catClients.length, 2);
  for (const c of catClients) t.equal(c.parentId, catServer?.id, 'catalog -> pricing client span: child of the catalog server span');
  const prServers = of('pricing', 'SERVER');
  t.same(new Set(prServers.map((s) => s.parentId)), new Set(catClients.map((c) => c.id)), 'each pricing server span: child of one catalog client span');
  t.equal(byId.size, 7, 'span ids are unique');
  t.equal(feClient?.tags['http.status_code'], '200');
  t.equal(feClient?.tags['guid:x-request-id'], 'rid-42', 'x-request-id kept along the chain');
  t.equal(prServers[0]?.tags['guid:x-request-id'], 'rid-42');

  // Access logs: one JSON line per request, with the trace id and request id.
  const line = await until('the catalog access-log line', () => catalog.logs.find((l) => l.log === 'access' && l.direction === 'outbound'));
  t.match(line, {
    service: 'catalog',
    method: 'GET',
    authority: 'pricing',
    path: /^\/price\//,
    protocol: 'HTTP/1.1',
    response_code: 200,
    response_flags: '-',
    upstream_host: `127.0.0.1:${pricing.inbound}`,
    trace_id: root,
    request_id: 'rid-42',
    destination: 'pricing',
  });
  t.type(line.duration_ms, 'number');
  t.ok((line.bytes_sent as number) > 0, 'response bytes counted');
  t.match(String(line.start_time), /^\d{4}-\d\d-\d\dT/);

  // Unsampled requests still propagate ids but export nothing.
  const before = collector.spans.length;
  const r2 = await request({ port: frontend.inbound, path: '/', headers: { host: 'frontend' } });
  t.equal(r2.status, 200);
  const l2 = await until('the unsampled request in the access log', () =>
    frontend.logs.find((l) => l.log === 'access' && l.direction === 'inbound' && l.request_id !== 'rid-42'),
  );
  t.match(l2.trace_id, /^[0-9a-f]{32}$/, 'a new trace id was started');
  t.not(l2.trace_id, root);
  t.match(l2.request_id, /^[0-9a-f-]{36}$/, 'and a request id generated');
  const m = await request({ port: frontend.admin, path: '/metrics' });
  t.match(m.text, /^meshlet_trace_spans_exported_total [12]$/m, 'the frontend sidecar exported its sampled spans only');
  t.equal(collector.spans.length, before, 'nothing more reached the collector');
});

t.test('a dead collector costs nothing: requests succeed, spans are dropped and counted', async (t) => {
  const up = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { up.close(() => r()); up.closeAllConnections(); }));
  const upPort = (up.address() as AddressInfo).port;
  const sc = await startSidecar(t, [service('web', [{ port: upPort }])], {
    service: 'client',
    args: ['--trace-collector', 'http://127.0.0.1:1/api/v2/spans', '--trace-sampling', '100', '--trace-format', 'otlp'],
  });
  for (let i = 0; i < 3; i++) t.equal((await request({ port: sc.outbound, path: '/', headers: { host: 'web' } })).status, 200, 'answered');
  const dropped = await within(
    (async () => {
      for (;;) {
        const m = await request({ port: sc.admin, path: '/metrics' });
        if (/^meshlet_trace_spans_dropped_total\{reason="export_failed"\} 3$/m.test(m.text)) return m.text;
        await new Promise((r) => setTimeout(r, 100));
      }
    })(),
    15_000,
    'meshlet_trace_spans_dropped_total{reason="export_failed"} 3',
  );
  t.match(dropped, /^meshlet_trace_spans_exported_total 0$/m);
});

t.test('tracing flags are checked', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const { MAIN } = await import('../sidecar/helpers');
  for (const [flag, value, msg] of [
    ['--trace-sampling', '150', /--trace-sampling: expected a number from 0 to 100/],
    ['--trace-format', 'jaeger', /--trace-format must be zipkin or otlp/],
    ['--trace-collector', 'nope', /--trace-collector: expected an http\(s\) URL/],
    ['--access-log', '2', /--access-log: expected a number from 0 to 1/],
    ['--tracing', 'maybe', /--tracing must be on or off/],
  ] as const) {
    const r = spawnSync(process.execPath, [MAIN, 'sidecar', '--service', 'x', '--config', '/nonexistent.yaml', flag, value], { encoding: 'utf8', timeout: 20_000 });
    t.equal(r.status, 2, `${flag} ${value}: usage error`);
    t.match(r.stderr, msg);
  }
});

t.test('a Route rule samples its own share of new traces (tracing.samplingPercent)', async (t) => {
  const collector = await zipkin(t);
  const up = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => up.close(() => r())));
  const port = (up.address() as AddressInfo).port;
  const sc = await startSidecar(
    t,
    [
      service('app', [{ port }]),
      {
        apiVersion: 'meshlet.dev/v1',
        kind: 'Route',
        metadata: { name: 'app' },
        spec: {
          hosts: ['app'],
          rules: [
            { name: 'traced', matches: [{ path: { prefix: '/traced' } }], backends: [{ service: 'app' }], tracing: { samplingPercent: 100 } },
            { name: 'plain', backends: [{ service: 'app' }] },
          ],
        },
      },
    ],
    { service: 'web', args: ['--trace-collector', collector.url, '--trace-sampling', '0'] },
  );
  for (let i = 0; i < 5; i++) {
    t.equal((await request({ port: sc.outbound, path: '/traced', headers: { host: 'app' } })).status, 200);
    t.equal((await request({ port: sc.outbound, path: '/other', headers: { host: 'app' } })).status, 200);
  }
  const spans = await until('5 spans at the collector', () => (collector.spans.length >= 5 ? collector.spans : undefined));
  await new Promise((r) => setTimeout(r, 1500)); // one more export interval: nothing else arrives
  t.equal(collector.spans.length, 5, 'only the rule sampling 100% exported spans (the sidecar samples 0%)');
  t.same(new Set(spans.map((s) => s.tags['meshlet.route'])), new Set(['app/traced']));
});
