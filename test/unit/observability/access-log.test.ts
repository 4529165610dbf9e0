/**
 * The access log as the observer writes it: the same JSON a pino `info` of the fields would
 * give (strings escaped exactly as JSON.stringify does, the ISO timestamp), batched to a text
 * stream or encoded into one Buffer a batch for the sidecar's own destination (ACCESS_LOG_DESTINATION),
 * nothing lost at a flush, and the level set at runtime applied to each line. Also: the span the
 * observer queues carries its name and tags, built at export time, and a full queue counts the
 * drop before anything is built.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import t from 'tap';
import { MeshMetrics } from '../../../src/observability/mesh-metrics';
import { ACCESS_LOG_DESTINATION, Observer } from '../../../src/observability/observer';
import { SpanExporter, toZipkin, type Span } from '../../../src/observability/tracing';

const info = (p: string) => ({ method: 'GET', authority: 'web', path: p, protocol: 'http1' as const });
const none = () => undefined;

t.test('a text stream: lines batched, the same JSON as pino, level applied per line', async (t) => {
  const chunks: string[] = [];
  const stream = { write: (s: string) => void chunks.push(s) };
  const logger = pino({ level: 'info', base: undefined, timestamp: false }, stream).child({ log: 'access', service: 'web' });
  const m = new MeshMetrics({ service: 'web' });
  const o = new Observer({ metrics: m, tracing: true, samplingPercent: 0, accessLog: { logger, sample: 1 } });
  const h = m.handle('outbound', 'cat"alog', 'r\n1');
  const odd = '/p"a\\th\n\u0001?é';
  for (let i = 0; i < 3; i++) {
    const r = o.begin('outbound', (n) => (n === 'x-request-id' ? `id-${i}` : undefined), info(i === 1 ? odd : `/items/${i}`), h);
    r.upstream = '10.0.0.1:80';
    r.responseBytes = 20;
    r.end(i === 2 ? 503 : 200, i === 2 ? 'UH' : undefined);
  }
  t.equal(chunks.length, 0, 'batched: nothing written per line');
  o.flushAccessLog();
  t.equal(chunks.length, 1, 'one write for the batch');
  const lines = (chunks[0] as string).split('\n');
  t.equal(lines.pop(), '', 'every line ends in a newline');
  const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.equal(parsed.length, 3);
  const second = parsed[1] as Record<string, unknown>;
  t.same(Object.keys(second), [
    'level', 'log', 'service', 'start_time', 'direction', 'method', 'authority', 'path', 'protocol', 'response_code', 'response_flags',
    'bytes_received', 'bytes_sent', 'duration_ms', 'upstream_host', 'route', 'destination', 'trace_id', 'request_id',
  ]);
  t.match(second, { level: 30, log: 'access', service: 'web', direction: 'outbound', method: 'GET', path: odd, protocol: 'HTTP/1.1', response_code: 200, response_flags: '-', bytes_sent: 20, upstream_host: '10.0.0.1:80', route: 'r\n1', destination: 'cat"alog', request_id: 'id-1' });
  t.equal(lines[1], JSON.stringify(second), 'byte for byte what JSON.stringify gives');
  t.match(parsed[2], { response_code: 503, response_flags: 'UH' });
  t.match(String(second.trace_id), /^[0-9a-f]{32}$/);

  logger.level = 'warn';
  o.begin('outbound', none, info('/quiet'), h).end(200);
  o.flushAccessLog();
  t.equal(chunks.length, 1, 'at warn: no line');
  logger.level = 'info';
  o.begin('outbound', none, info('/loud'), h).end(200);
  t.equal(chunks.length, 1);
  await new Promise((r) => setTimeout(r, 250));
  t.equal(chunks.length, 2, 'a lone line is written by the flush timer');
  t.match(JSON.parse(chunks[1] as string), { path: '/loud' });
});

t.test('the sidecar destination (Buffers): every line written, in order, across batches', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-access-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'access.log');
  const dest = pino.destination({ dest: file, ...ACCESS_LOG_DESTINATION });
  await new Promise((r) => dest.once('ready', r));
  const logger = pino({ level: 'info', base: undefined, timestamp: false }, dest).child({ log: 'access', service: 'web' });
  const m = new MeshMetrics({ service: 'web' });
  const o = new Observer({ metrics: m, tracing: false, accessLog: { logger, sample: 1, buffers: true } });
  const h = m.handle('outbound', 'catalog', 'r1');
  const n = 2000;
  for (let i = 0; i < n; i++) o.begin('outbound', none, info(`/items/${i}/${'é✓'.repeat(i % 7)}`), h).end(200);
  o.flushAccessLog();
  dest.flushSync();
  const lines = readFileSync(file, 'utf8').trim().split('\n');
  t.equal(lines.length, n, 'every line, over several batches');
  lines.forEach((l, i) => {
    const p = (JSON.parse(l) as { path: string }).path;
    if (p !== `/items/${i}/${'é✓'.repeat(i % 7)}`) t.fail(`line ${i}: ${p}`);
  });
  dest.end();
});

t.test('spans: name and tags built at export; a full queue drops before building', async (t) => {
  const m = new MeshMetrics({ service: 'web' });
  const dropped = m.registry.counter('meshlet_trace_spans_dropped_total', 'x', ['reason']);
  const exported = m.registry.counter('meshlet_trace_spans_exported_total', 'x');
  const exporter = new SpanExporter({ url: 'http://127.0.0.1:1/api/v2/spans', format: 'zipkin', service: 'web', maxQueue: 2, intervalMs: 60_000, counters: { dropped, exported } });
  const queued: Span[] = [];
  const add = exporter.add.bind(exporter);
  exporter.add = (s: Span) => {
    queued.push(s);
    add(s);
  };
  const o = new Observer({ metrics: m, samplingPercent: 100, exporter });
  const h = m.handle('inbound', 'web', 'in', 'frontend');
  for (let i = 0; i < 3; i++) {
    const r = o.begin('inbound', (k) => (k === 'x-request-id' ? 'rid' : undefined), info('/x'), h);
    r.end(504, 'UT');
  }
  t.equal(queued.length, 2, 'the third span was not built: the queue was full');
  t.equal(exporter.dropped, 1);
  t.match(m.registry.render(), /^meshlet_trace_spans_dropped_total\{reason="queue_full"\} 1$/m);
  const [z] = toZipkin(queued.slice(0, 1), 'web') as Record<string, unknown>[];
  t.match(z, {
    kind: 'SERVER',
    name: 'GET in',
    tags: { 'http.method': 'GET', 'http.path': '/x', 'http.status_code': '504', 'http.host': 'web', 'meshlet.route': 'in', 'meshlet.direction': 'inbound', 'guid:x-request-id': 'rid', 'meshlet.response_flags': 'UT', error: '504' },
  });
  await exporter.close();
});
