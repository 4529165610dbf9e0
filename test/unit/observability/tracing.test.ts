/**
 * Trace context (W3C traceparent/tracestate v00, B3 single and multi, x-request-id), the
 * observer's header rewrite and sampling, and the span exporter against a real HTTP collector
 * (and a dead one: spans dropped and counted, never an error).
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { MeshMetrics } from '../../../src/observability/mesh-metrics';
import { Observer } from '../../../src/observability/observer';
import { cleanTracestate, extract, parseTraceparent } from '../../../src/observability/trace-context';
import { SpanExporter, toOtlp, type Span } from '../../../src/observability/tracing';

const TID = '4bf92f3577b34da6a3ce929d0e0e4736';
const SID = '00f067aa0ba902b7';
const hdrs = (o: Record<string, string>) => (n: string) => o[n];

t.test('traceparent version 00', async (t) => {
  t.same(parseTraceparent(`00-${TID}-${SID}-01`), { traceId: TID, parentId: SID, sampled: true });
  t.same(parseTraceparent(`00-${TID}-${SID}-00`), { traceId: TID, parentId: SID, sampled: false });
  t.same(parseTraceparent(`00-${TID}-${SID}-03`)?.sampled, true, 'sampled is bit 0');
  for (const bad of [
    `00-${TID.toUpperCase()}-${SID}-01`,
    `00-${'0'.repeat(32)}-${SID}-01`,
    `00-${TID}-${'0'.repeat(16)}-01`,
    `ff-${TID}-${SID}-01`,
    `00-${TID}-${SID}-01-extra`,
    `00-${TID.slice(1)}-${SID}-01`,
    'garbage',
    '',
  ])
    t.equal(parseTraceparent(bad), undefined, `invalid: ${JSON.stringify(bad)}`);
  t.ok(parseTraceparent(`01-${TID}-${SID}-01-future`), 'a later version may carry more fields');
});

t.test('extract: precedence, B3 forms, tracestate', async (t) => {
  t.same(extract(hdrs({ traceparent: `00-${TID}-${SID}-01`, tracestate: 'congo=t61rcWkgMzE, rojo=00f067aa0ba902b7' })), {
    traceId: TID,
    parentId: SID,
    sampled: true,
    tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7',
    format: 'w3c',
  });
  t.equal(extract(hdrs({ traceparent: 'bad', tracestate: 'a=b' })), undefined, 'an invalid traceparent drops tracestate too: a new trace');
  t.same(extract(hdrs({ b3: `${TID}-${SID}-1-1111111111111111` })), { traceId: TID, parentId: SID, sampled: true, format: 'b3' });
  t.same(extract(hdrs({ b3: `a3ce929d0e0e4736-${SID}` }))?.traceId, '0000000000000000a3ce929d0e0e4736', '64-bit B3 trace ids are left-padded');
  t.same(extract(hdrs({ b3: '0' })), { traceId: '', sampled: false, format: 'b3' }, 'b3: 0 is a decision only');
  t.same(extract(hdrs({ 'x-b3-traceid': TID, 'x-b3-spanid': SID, 'x-b3-sampled': '0' })), { traceId: TID, parentId: SID, sampled: false, format: 'b3multi' });
  t.same(extract(hdrs({ 'x-b3-traceid': TID, 'x-b3-spanid': SID, 'x-b3-flags': '1' }))?.sampled, true, 'the debug flag samples');
  t.equal(extract(hdrs({ 'x-b3-traceid': 'zz', 'x-b3-spanid': SID })), undefined);
  t.equal(extract(hdrs({ traceparent: `00-${TID}-${SID}-01`, b3: '0' }))?.format, 'w3c', 'traceparent wins over b3');
  t.equal(cleanTracestate('x'.repeat(600)), undefined, 'an oversized tracestate is dropped');
  t.equal(cleanTracestate('Bad Key=1'), undefined);
});

function observer(samplingPercent: number, exporter?: SpanExporter, random = () => 0.5): Observer {
  return new Observer({ metrics: new MeshMetrics({ service: 'web' }), samplingPercent, exporter, random });
}
const info = { method: 'GET', authority: 'catalog', path: '/items', protocol: 'http1' as const };

function asObj(flat: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) o[flat[i] as string] = flat[i + 1] as string;
  return o;
}

t.test('the observer rewrites trace headers for the next hop', async (t) => {
  const o = observer(0);
  const r = o.begin('outbound', hdrs({ traceparent: `00-${TID}-${SID}-01`, tracestate: 'k=v', 'x-request-id': 'req-1' }), info);
  const out = asObj(r.rewriteHeaders(['Traceparent', 'stale', 'x-request-id', 'req-1', 'accept', '*/*']));
  t.equal(out.traceparent, `00-${TID}-${r.spanId}-01`, 'same trace, this hop as parent, sampled kept');
  t.not(r.spanId, SID);
  t.equal(r.parentId, SID);
  t.equal(out.tracestate, 'k=v');
  t.equal(out['x-request-id'], 'req-1', 'x-request-id kept');
  t.equal(out.accept, '*/*');
  t.notOk('Traceparent' in out, 'the incoming trace header is replaced');
  t.equal(out['x-meshlet-source'], 'web', 'outbound: the calling service is named for the next sidecar');

  const fresh = o.begin('outbound', hdrs({}), info);
  const f = asObj(fresh.rewriteHeaders([]));
  t.match(f.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/, 'no context: a new trace, not sampled at 0%');
  t.match(f['x-request-id'], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'x-request-id generated');
  t.equal(fresh.parentId, undefined);

  t.ok(observer(100).begin('outbound', hdrs({}), info).sampled, '100%: sampled');
  t.notOk(observer(40, undefined, () => 0.5).begin('outbound', hdrs({}), info).sampled, '40% with a draw of 0.5: not sampled');
  t.ok(observer(60, undefined, () => 0.5).begin('outbound', hdrs({}), info).sampled, '60% with a draw of 0.5: sampled');
  t.ok(observer(0).begin('inbound', hdrs({ 'x-b3-traceid': TID, 'x-b3-spanid': SID, 'x-b3-sampled': '1' }), info).sampled, 'the caller sampled: always');

  const b3 = o.begin('outbound', hdrs({ b3: `${TID}-${SID}-1` }), info);
  t.equal(asObj(b3.rewriteHeaders(['b3', 'x'])).b3, `${TID}-${b3.spanId}-1-${SID}`, 'B3 single in, B3 single out (with the parent)');
  const multi = asObj(o.begin('outbound', hdrs({ 'x-b3-traceid': TID, 'x-b3-spanid': SID }), info).rewriteHeaders([]));
  t.equal(multi['x-b3-traceid'], TID, 'B3 multi in, B3 multi out');
  t.equal(multi['x-b3-parentspanid'], SID);

  const off = new Observer({ metrics: new MeshMetrics({ service: 'web' }), tracing: false });
  const passed = asObj(off.begin('outbound', hdrs({}), info).rewriteHeaders(['traceparent', 'as-is']));
  t.equal(passed.traceparent, 'as-is', 'tracing off: trace headers pass untouched');
});

interface Collector {
  url: string;
  bodies: unknown[];
  status: number;
}

async function collector(t: Test): Promise<Collector> {
  const c: Collector = { url: '', bodies: [], status: 202 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (b: Buffer) => chunks.push(b));
    req.on('end', () => {
      c.bodies.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      res.writeHead(c.status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }));
  c.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v2/spans`;
  return c;
}

const span = (i: number): Span => ({
  traceId: TID,
  spanId: `00000000000000${String(i).padStart(2, '0')}`,
  parentId: SID,
  kind: 'CLIENT',
  name: 'GET catalog/0',
  startUs: 1_700_000_000_000_000,
  durationUs: 1500,
  remote: '127.0.0.1:8080',
  tags: { 'http.status_code': '503' },
  error: true,
});

t.test('batched Zipkin export; a dead collector drops and counts', async (t) => {
  const c = await collector(t);
  const m = new MeshMetrics({ service: 'web' });
  const counters = {
    exported: m.registry.counter('meshlet_trace_spans_exported_total', 'x'),
    dropped: m.registry.counter('meshlet_trace_spans_dropped_total', 'x', ['reason']),
  };
  const e = new SpanExporter({ url: c.url, format: 'zipkin', service: 'web', maxBatch: 2, maxQueue: 4, counters });
  for (let i = 0; i < 5; i++) e.add(span(i));
  await e.flush();
  t.equal(c.bodies.length, 2, 'two batches of at most 2');
  const first = (c.bodies[0] as Record<string, unknown>[])[0] as Record<string, unknown>;
  t.match(first, { traceId: TID, id: '0000000000000000', parentId: SID, kind: 'CLIENT', duration: 1500, localEndpoint: { serviceName: 'web' }, remoteEndpoint: { ipv4: '127.0.0.1', port: 8080 }, tags: { error: '503' } });
  t.equal(e.exported, 4);
  t.equal(e.dropped, 1, 'the fifth span found the queue full');
  c.status = 500;
  e.add(span(9));
  await e.flush();
  t.equal(e.dropped, 2, 'a batch the collector refused is dropped');
  await e.close();

  const dead = new SpanExporter({ url: 'http://127.0.0.1:1/api/v2/spans', format: 'zipkin', service: 'web', counters });
  dead.add(span(1));
  await dead.flush();
  t.equal(dead.dropped, 1, 'nobody listening: dropped, no exception');
  await dead.close();
  t.match(m.registry.render(), /^meshlet_trace_spans_dropped_total\{reason="export_failed"\} 2$/m);
  t.throws(() => new SpanExporter({ url: 'ftp://x/', format: 'zipkin', service: 'web' }), /http\(s\)/);
});

t.test('a failing collector: the exporter backs off and drops spans before queueing them', async (t) => {
  const c = await collector(t);
  c.status = 503;
  const clock = new FakeClock();
  const e = new SpanExporter({ url: c.url, format: 'zipkin', service: 'web', maxBatch: 2, intervalMs: 1000, clock });
  for (let i = 0; i < 5; i++) if (e.accepting()) e.add(span(i));
  await e.flush();
  t.equal(c.bodies.length, 1, 'one refused POST, not one per batch: the rest of the queue is dropped with it');
  t.equal(e.dropped, 5);
  t.notOk(e.accepting(), 'within the back-off (1 interval) a finished span is refused');
  t.equal(e.dropped, 6, 'and counted as dropped');
  clock.advance(1001);
  t.ok(e.accepting(), 'after the back-off spans are taken again');
  e.add(span(7));
  await e.flush();
  t.equal(c.bodies.length, 2);
  t.equal(e.dropped, 7);
  clock.advance(1001);
  t.notOk(e.accepting(), 'a second failure in a row doubles the back-off (2 intervals)');
  clock.advance(1000);
  t.ok(e.accepting());
  c.status = 202;
  e.add(span(8));
  await e.flush();
  t.equal(e.exported, 1, 'the collector is back: exported');
  t.ok(e.accepting(), 'and no back-off after a success');
  await e.close();
});

t.test('a flush sends what was queued when it began, not what arrives during its POSTs', async (t) => {
  const c = await collector(t);
  const e = new SpanExporter({ url: c.url, format: 'zipkin', service: 'web', maxBatch: 2, intervalMs: 60_000 });
  for (let i = 0; i < 3; i++) e.add(span(i));
  const done = e.flush();
  // Spans finishing while the first POST is in flight.
  for (let i = 3; i < 6; i++) e.add(span(i));
  await done;
  t.equal(e.exported, 3, 'the three queued before the flush');
  t.equal(c.bodies.length, 2);
  await e.flush();
  t.equal(e.exported, 6, 'the later ones go with the next flush');
  await e.close();
});

t.test('OTLP/HTTP JSON shape', async (t) => {
  const o = toOtlp([span(1)], 'web') as { resourceSpans: { resource: unknown; scopeSpans: { spans: Record<string, unknown>[] }[] }[] };
  t.same(o.resourceSpans[0]?.resource, { attributes: [{ key: 'service.name', value: { stringValue: 'web' } }] });
  t.match(o.resourceSpans[0]?.scopeSpans[0]?.spans[0], {
    traceId: TID,
    parentSpanId: SID,
    kind: 3,
    startTimeUnixNano: '1700000000000000000',
    endTimeUnixNano: '1700000000001500000',
    status: { code: 2 },
  });
});
