#!/usr/bin/env node
'use strict';
/**
 * Observability overhead, in-process: the CPU the sidecar's per-request observability hooks cost,
 * without sockets, parsers or the rest of the proxy in the way. See bench/README.md.
 *
 *   node bench/observability.js                      # the table (~20 s)
 *   node bench/observability.js --json               # the same as JSON on stdout
 *   node bench/observability.js --only all --reps 1  # one configuration (e.g. under --cpu-prof)
 *
 * Options: --iterations N (requests per repetition, default 200000), --reps N (default 5),
 * --only a,b (configurations), --log-file PATH (access-log destination, default /dev/null), --json.
 * It runs under the sidecar's Node flags (the built dist/src/cli/main.js's shebang: bench/lib/node-flags.js),
 * re-executing itself when started without them.
 *
 * Each synthetic request goes through the same calls sidecar/exchange.ts makes, on the real
 * ProxyStats / Observer / SpanExporter from dist/: `observer.begin` (reading the forwarded,
 * lower-cased header list through a getter), `rewriteHeaders`, `setRoute`, `upstream`,
 * `responseBytes +=`, `end(status, flag)` (metrics, span queued, access-log line). The access
 * log goes through the pino destination the sidecar builds (asynchronous, 12 KiB batches); the
 * span exporter points at a port nobody listens on (its timer fires every second, formats a
 * batch, fails to connect, drops and counts it; past 2048 queued spans, `add` drops). The loop
 * yields to the event loop every 100 requests so those writes, timers and failed exports run
 * and are counted: CPU is `process.cpuUsage()` (user + system, all threads) over the whole
 * repetition, including handing the last access-log lines to the destination and waiting
 * until it has written everything, ÷ requests. The median of the repetitions is reported.
 */
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..');
const dist = (p) => path.join(ROOT, 'dist', p);

/** Requests per event-loop turn (the loop yields between chunks so I/O and timers run). */
const CHUNK = 100;

/**
 * The configurations. `none` is the hooks with all three off (what every request pays anyway:
 * the x-request-id and the header copy); the others switch features on.
 */
const CONFIGS = [
  { name: 'none', label: 'all off (hooks only: x-request-id, header copy)', metrics: false, tracing: false, accessLog: 0 },
  { name: 'metrics', label: 'metrics', metrics: true, tracing: false, accessLog: 0 },
  { name: 'tracing', label: 'tracing, default sampling (1% of new traces)', metrics: false, tracing: true, sampling: 1, accessLog: 0 },
  { name: 'tracing-100', label: 'tracing, 100% sampled, collector dead', metrics: false, tracing: true, sampling: 100, sampledCallers: true, accessLog: 0 },
  { name: 'accesslog', label: 'access log, every request', metrics: false, tracing: false, accessLog: 1 },
  { name: 'all', label: 'metrics + tracing (1%) + access log', metrics: true, tracing: true, sampling: 1, accessLog: 1, goal: 3 },
  { name: 'all-100', label: 'metrics + tracing (100%) + access log', metrics: true, tracing: true, sampling: 100, sampledCallers: true, accessLog: 1 },
];

/**
 * Realistic forwarded header lists (as forwardRequestHeaders leaves them: lower-cased, host
 * dropped, x-forwarded-* and via added). Outbound from the app mostly without trace context,
 * some with W3C or B3 context; inbound from another sidecar with x-meshlet-source and traceparent.
 */
function headerSets(sampled) {
  const f = sampled ? '01' : '00';
  const common = ['user-agent', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36', 'accept', 'application/json', 'accept-encoding', 'gzip, deflate, br'];
  const fwd = ['x-forwarded-for', '10.0.3.17', 'x-forwarded-proto', 'http', 'via', '1.1 meshlet'];
  return [
    { direction: 'outbound', method: 'GET', path: '/api/v1/catalog/items', flat: [...common, ...fwd] },
    { direction: 'outbound', method: 'POST', path: '/api/v1/orders', flat: [...common, 'content-type', 'application/json', 'content-length', '348', 'cookie', 'session=4f9a8c2e1b7d; theme=dark', ...fwd] },
    {
      direction: 'outbound',
      method: 'GET',
      path: '/api/v1/users/1234/profile',
      flat: [...common, 'authorization', 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl', 'traceparent', `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-${f}`, 'tracestate', 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7', 'x-request-id', '7d1b1a1e-3a0f-4b8a-9c51-2f4f1f0c9e11', ...fwd],
    },
    {
      direction: 'outbound',
      method: 'GET',
      path: '/healthz/deep',
      flat: [...common, 'x-b3-traceid', '80f198ee56343ba864fe8b2a57d3eff7', 'x-b3-spanid', 'e457b5a2e4d86bd1', 'x-b3-sampled', sampled ? '1' : '0', ...fwd],
    },
    {
      direction: 'inbound',
      method: 'GET',
      path: '/items/42',
      flat: [...common, 'x-meshlet-source', 'frontend', 'traceparent', `00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-${f}`, 'x-request-id', 'f81d4fae-7dec-41d0-a765-00a0c91e6bf6', ...fwd],
    },
  ];
}

const STATUSES = [
  [200, undefined],
  [200, undefined],
  [200, undefined],
  [201, undefined],
  [200, undefined],
  [200, undefined],
  [304, undefined],
  [200, undefined],
  [200, undefined],
  [404, undefined],
  [200, undefined],
  [200, undefined],
  [503, 'UH'],
  [200, undefined],
  [200, undefined],
  [504, 'UT'],
];

function flatHeader(flat, name) {
  for (let i = 0; i < flat.length; i += 2) if (flat[i] === name) return flat[i + 1];
  return undefined;
}

/** A loopback port with nothing listening on it (the dead collector). */
function deadPort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const tick = () => new Promise((r) => setImmediate(r));

/** One configuration: a fresh ProxyStats built like sidecar/index.ts builds it. */
async function setupConfig(c, o) {
  const pino = require('pino');
  const { ProxyStats } = require(dist('src/observability/proxy-stats.js'));
  const { SpanExporter } = require(dist('src/observability/tracing.js'));
  const { ACCESS_LOG_DESTINATION } = require(dist('src/observability/observer.js'));
  let dest;
  let accessLogger;
  if (c.accessLog > 0) {
    // As sidecar/index.ts: pino.destination with the same options; a child with log/service.
    dest = pino.destination({ dest: o.logFile, ...ACCESS_LOG_DESTINATION });
    accessLogger = pino({ level: 'info', base: undefined, timestamp: false }, dest).child({ log: 'access', service: 'bench' });
  }
  const stats = new ProxyStats({
    service: 'bench',
    recordMetrics: c.metrics,
    tracing: c.tracing,
    samplingPercent: c.sampling,
    processMetrics: false,
    knownService: (n) => n === 'frontend',
    accessLog: accessLogger ? { logger: accessLogger, sample: c.accessLog, buffers: true } : undefined,
  });
  let exporter;
  if (c.tracing) {
    const m = stats.metrics.registry;
    exporter = new SpanExporter({
      url: `http://127.0.0.1:${o.deadPort}/api/v2/spans`,
      format: 'zipkin',
      service: 'bench',
      counters: {
        exported: m.counter('meshlet_trace_spans_exported_total', 'Spans the collector accepted.'),
        dropped: m.counter('meshlet_trace_spans_dropped_total', 'Spans dropped: queue full or export failed.', ['reason']),
      },
    });
    stats.observer.exporter = exporter;
  }
  const observer = stats.observer;
  const outboundHandle = stats.route('outbound', 'upstream', 'upstream');
  const sets = headerSets(!!c.sampledCallers);
  const nSets = sets.length;
  const infos = sets.map((s) => ({ method: s.method, authority: 'upstream', path: s.path, protocol: 'http1' }));

  const runN = async (n) => {
    let sink = 0;
    for (let done = 0; done < n; ) {
      const end = Math.min(n, done + CHUNK);
      for (let i = done; i < end; i++) {
        const s = sets[i % nSets];
        const flat = s.flat;
        const outbound = s.direction === 'outbound';
        // exchange.ts: begin with the route's handle (outbound, backend already picked).
        const r = observer.begin(s.direction, (name) => flatHeader(flat, name), infos[i % nSets], outbound ? outboundHandle : undefined, undefined);
        const fwd = r.rewriteHeaders(flat);
        sink += fwd.length;
        if (outbound) r.setRoute(outboundHandle);
        r.upstream = outbound ? '10.0.7.21:8080' : '127.0.0.1:8080';
        r.responseBytes += 1187;
        const st = STATUSES[i & 15];
        r.end(st[0], st[1]);
      }
      done = end;
      await tick();
    }
    return sink;
  };

  return {
    c,
    /** One repetition: CPU µs per request, the destination drained inside the window. */
    async rep(n) {
      const t0 = process.cpuUsage();
      const sink = await runN(n);
      if (dest) {
        observer.flushAccessLog();
        await new Promise((r) => dest.flush(r));
      }
      const d = process.cpuUsage(t0);
      if (sink === 0) throw new Error('no headers forwarded?');
      return (d.user + d.system) / n;
    },
    async close() {
      if (exporter) await exporter.close();
      return exporter ? { dropped: exporter.dropped, exported: exporter.exported } : undefined;
    },
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * Runs the configurations interleaved (repetition 1 of each, then repetition 2 of each, ...) so
 * that drift on a shared machine hits them alike; returns { params, rows }. "over all off" is
 * the median of the per-repetition differences to `none` (paired, same round).
 */
async function run(opts = {}) {
  const o = {
    iterations: opts.iterations ?? 200_000,
    reps: opts.reps ?? 5,
    logFile: opts.logFile ?? '/dev/null',
    only: opts.only,
    deadPort: await deadPort(),
  };
  if (!fs.existsSync(dist('src/observability/proxy-stats.js'))) throw new Error('dist/ is not built: npm run build');
  let configs = CONFIGS.filter((c) => !o.only || o.only.includes(c.name));
  if (configs.length === 0) throw new Error(`no configuration matches; known: ${CONFIGS.map((c) => c.name).join(', ')}`);
  // The differences need the baseline in every round.
  if (!configs.some((c) => c.name === 'none')) configs = [CONFIGS[0], ...configs];
  const runs = [];
  for (const c of configs) runs.push(await setupConfig(c, o));
  // Warm-up: JIT, label sets bound, status counters created.
  for (const r of runs) await r.rep(Math.min(o.iterations, 50_000));
  const samples = runs.map(() => []);
  for (let rep = 0; rep < o.reps; rep++) for (let i = 0; i < runs.length; i++) samples[i].push(await runs[i].rep(o.iterations));
  const base = samples[runs.findIndex((r) => r.c.name === 'none')];
  const rows = [];
  for (let i = 0; i < runs.length; i++) {
    const c = runs[i].c;
    const xs = samples[i];
    const row = {
      name: c.name,
      label: c.label,
      medianUs: median(xs),
      minUs: Math.min(...xs),
      maxUs: Math.max(...xs),
      samplesUs: xs,
      overNoneUs: c.name === 'none' ? undefined : median(xs.map((x, k) => x - base[k])),
      spans: await runs[i].close(),
      goalUs: c.goal,
    };
    if (row.goalUs !== undefined) row.pass = row.overNoneUs <= row.goalUs;
    rows.push(row);
  }
  return { params: { iterations: o.iterations, reps: o.reps, logFile: o.logFile, node: process.version, execArgv: process.execArgv }, rows };
}

const f2 = (x) => (x === undefined ? '-' : x.toFixed(2));

/** The table as rows of strings (for bench/lib/report.js and the terminal). */
function table(res) {
  const head = ['configuration', 'CPU µs/req (median)', 'min – max', 'cost over "all off"', 'goal (cost)'];
  const rows = res.rows.map((r) => [
    `${r.label} [${r.name}]`,
    f2(r.medianUs),
    `${f2(r.minUs)} – ${f2(r.maxUs)}`,
    f2(r.overNoneUs),
    r.goalUs === undefined ? '' : `≤ ${r.goalUs} µs: ${r.pass ? 'PASS' : 'FAIL'}`,
  ]);
  return { head, rows };
}

module.exports = { run, table, CONFIGS };

/** The sidecar's Node flags (the built main.js shebang, src/cli/main.ts): the young generation size matters here. */
const SIDECAR_NODE_FLAGS = require('./lib/node-flags').nodeFlagsOf(path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js'));

if (require.main === module && !process.execArgv.some((a) => a.startsWith('--max-semi-space-size'))) {
  // Run again under the sidecar's flags (other Node flags, e.g. --cpu-prof, are kept).
  const { spawnSync } = require('node:child_process');
  const r = spawnSync(process.execPath, [...SIDECAR_NODE_FLAGS, ...process.execArgv, __filename, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
} else if (require.main === module) {
  const { values } = parseArgs({
    options: {
      iterations: { type: 'string' },
      reps: { type: 'string' },
      only: { type: 'string' },
      'log-file': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(/\/\*\*\n([\s\S]*?)\n \*\//.exec(fs.readFileSync(__filename, 'utf8'))[1].replace(/^ \*( |$)/gm, '') + '\n');
    process.exit(0);
  }
  const num = (v, d) => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`expected a positive integer, got ${v}`);
    return n;
  };
  run({ iterations: num(values.iterations, 200_000), reps: num(values.reps, 5), only: values.only?.split(','), logFile: values['log-file'] })
    .then((res) => {
      if (values.json) process.stdout.write(JSON.stringify(res, null, 2) + '\n');
      else {
        const { textTable } = require('./lib/report');
        const t = table(res);
        process.stdout.write(`Observability overhead (in-process), ${res.params.iterations} requests × ${res.params.reps} reps, node ${res.params.node}\n`);
        process.stdout.write(textTable(t.head, t.rows) + '\n');
      }
      process.exit(0);
    })
    .catch((err) => {
      process.stderr.write(`observability bench: ${err.stack ?? err.message}\n`);
      process.exit(1);
    });
}
