'use strict';
/**
 * Turns the measurements of one run into tables (terminal and Markdown), the goals verdicts and
 * the per-feature cost table. Every figure is also shown as a ratio against nginx and against the
 * bare undici proxy measured in the same run.
 */

const PCTS = ['p50', 'p99', 'p999'];
const PCT_LABEL = { p50: 'p50', p99: 'p99', p999: 'p99.9' };

const fmt = {
  int: (v) => (v === undefined || v === null || Number.isNaN(v) ? '-' : Math.round(v).toLocaleString('en-US')),
  num: (v, d = 1) => (v === undefined || v === null || Number.isNaN(v) ? '-' : v.toFixed(d)),
  mb: (kb) => (kb === undefined || kb === null ? '-' : (kb / 1024).toFixed(1)),
  ratio: (v) => (v === undefined || v === null || !Number.isFinite(v) ? 'n/a' : `${v.toFixed(2)}x`),
};

/** Added latency (µs) of a contender over direct at each percentile, for a rate key. */
function added(results, name, rateKey) {
  const c = results.contenders[name];
  // The direct latency measured in the same seconds (paired), else direct's own run.
  const base = c?.pairedDirect?.[rateKey] ?? results.contenders.direct?.rates?.[rateKey];
  const out = {};
  for (const p of PCTS) {
    const cv = c?.rates?.[rateKey]?.latencyUs?.[p];
    const dv = base?.latencyUs?.[p];
    out[p] = cv === undefined || dv === undefined ? undefined : name === 'direct' ? 0 : cv - dv;
  }
  // p99: the median over one-second windows of (proxy p99 - paired direct p99). One burst on the
  // machine (a timer tick, another process) moves a whole-phase p99 a lot and this one little.
  const cw = c?.rates?.[rateKey]?.windowsP99Us;
  const dw = c?.pairedDirect?.[rateKey]?.windowsP99Us;
  if (name !== 'direct' && Array.isArray(cw) && Array.isArray(dw) && cw.length >= 3) {
    const diffs = [];
    for (let i = 0; i < Math.min(cw.length, dw.length); i++) if (cw[i] != null && dw[i] != null) diffs.push(cw[i] - dw[i]);
    if (diffs.length >= 3) {
      diffs.sort((a, b) => a - b);
      out.p99Phase = out.p99;
      out.p99 = diffs.length % 2 ? diffs[(diffs.length - 1) / 2] : (diffs[diffs.length / 2 - 1] + diffs[diffs.length / 2]) / 2;
    }
  }
  return out;
}

/** The figures of one contender, flat: the unit every table and ratio is built from. */
function figures(results, name) {
  const c = results.contenders[name];
  const f = {
    rps: c?.wrk?.rps,
    cpuUsPerReq: c?.cpuUsPerReq,
    rssIdleKb: c?.rssIdleKb,
    rssStartKb: c?.rssStartKb,
    rssPeakKb: c?.rssPeakKb,
    h2Rps: c?.h2?.rps,
    h2CpuUsPerReq: c?.h2?.cpuUsPerReq,
    grpcRps: c?.grpc?.rps,
    grpcCpuUsPerReq: c?.grpc?.cpuUsPerReq,
  };
  for (const r of results.rateKeys) {
    const a = added(results, name, r);
    for (const p of PCTS) f[`added_${r}_${p}`] = a[p];
  }
  return f;
}

/** a / b, undefined when it would not mean anything (b missing or not positive). */
function ratio(a, b) {
  if (a === undefined || b === undefined || a === null || b === null) return undefined;
  if (!(b > 0)) return undefined;
  return a / b;
}

function ratios(results, name, ref) {
  const f = figures(results, name);
  const r = figures(results, ref);
  const out = {};
  // A negative added latency is noise (a proxy cannot make requests faster): no ratio of it.
  for (const k of Object.keys(f)) out[k] = k.startsWith('added_') && f[k] < 0 ? undefined : ratio(f[k], r[k]);
  return out;
}

/** Rows of strings -> an aligned plain-text table. */
function textTable(head, rows) {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (r) => r.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

function mdTable(head, rows) {
  const esc = (s) => String(s).replace(/\|/g, '\\|');
  const left = (h, i) => i === 0 || /^(notes|goal|actual|target|result|feature|measured as)/.test(h);
  return [`| ${head.map(esc).join(' | ')} |`, `| ${head.map((h, i) => (left(h, i) ? '---' : '---:')).join(' | ')} |`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

const triple = (o, key, fn) => PCTS.map((p) => fn(o[`${key}_${p}`])).join(' / ');

/**
 * The two h2 cells of a contender: `n/a` for one that does not serve h2c, `FAILED` when h2load
 * did not speak h2c or saw errors, `-` when the h2 column was not run (--no-h2).
 */
function h2Cells(results, name, f) {
  if (!results.params?.h2) return ['-', '-'];
  if (!(results.h2Contenders ?? []).includes(name)) return ['n/a', 'n/a'];
  const c = results.contenders[name];
  if (c?.h2?.error || (!c?.h2 && c?.error)) return ['FAILED', 'FAILED'];
  return [fmt.int(f.h2Rps), fmt.num(f.h2CpuUsPerReq)];
}

/**
 * The two gRPC cells, the same way: `n/a` for a contender that does not proxy gRPC, `FAILED` when
 * the gRPC upstream, a grpc-js check or the h2load run failed, `-` when not run (--no-grpc).
 */
function grpcCells(results, name, f) {
  if (!results.params?.grpc) return ['-', '-'];
  if (!(results.grpcContenders ?? []).includes(name)) return ['n/a', 'n/a'];
  const c = results.contenders[name];
  if (c?.grpc?.error || (!c?.grpc && c?.error)) return ['FAILED', 'FAILED'];
  return [fmt.int(f.grpcRps), fmt.num(f.grpcCpuUsPerReq)];
}

/** The main table, absolute values. */
function mainTable(results) {
  const head = ['contender', 'max req/s', 'CPU µs/req', 'proxy core %', 'h2 req/s', 'h2 CPU µs/req', 'grpc req/s', 'grpc CPU µs/req'];
  for (const r of results.rateKeys) head.push(`added µs @${r} p50/p99/p99.9`);
  head.push('RSS idle MB', 'RSS peak MB', 'notes');
  const rows = results.order.map((name) => {
    const c = results.contenders[name];
    const f = figures(results, name);
    const row = [name, fmt.int(f.rps), fmt.num(f.cpuUsPerReq), c.coreBusyPct === undefined ? '-' : fmt.int(c.coreBusyPct), ...h2Cells(results, name, f), ...grpcCells(results, name, f)];
    for (const r of results.rateKeys) row.push(triple(f, `added_${r}`, fmt.int));
    row.push(fmt.mb(f.rssIdleKb), fmt.mb(f.rssPeakKb), (c.notes ?? []).join('; '));
    return row;
  });
  return { head, rows };
}

function ratioTable(results, ref) {
  const head = ['contender', 'max req/s', 'CPU µs/req', 'h2 req/s', 'h2 CPU µs/req', 'grpc req/s', 'grpc CPU µs/req'];
  for (const r of results.rateKeys) head.push(`added @${r} p50/p99/p99.9`);
  head.push('RSS idle', 'RSS peak');
  const rows = results.order
    .filter((n) => results.contenders[n])
    .map((name) => {
      const q = ratios(results, name, ref);
      const row = [name, fmt.ratio(q.rps), fmt.ratio(q.cpuUsPerReq), fmt.ratio(q.h2Rps), fmt.ratio(q.h2CpuUsPerReq), fmt.ratio(q.grpcRps), fmt.ratio(q.grpcCpuUsPerReq)];
      for (const r of results.rateKeys) row.push(triple(q, `added_${r}`, fmt.ratio));
      row.push(fmt.ratio(q.rssIdleKb), fmt.ratio(q.rssPeakKb));
      return row;
    });
  return { head, rows };
}

/** Raw (not subtracted) latencies from intended send time, for reference. */
function latencyTable(results) {
  const head = ['contender'];
  for (const r of results.rateKeys) head.push(`@${r} p50/p99/p99.9 µs`, `@${r} paired direct p50/p99/p99.9 µs`, `@${r} achieved req/s`, `@${r} errors`);
  const lat = (x) => (x?.latencyUs ? PCTS.map((p) => fmt.int(x.latencyUs[p])).join(' / ') : '-');
  const rows = results.order.map((name) => {
    const c = results.contenders[name];
    const row = [name];
    for (const r of results.rateKeys) {
      const x = c.rates?.[r];
      row.push(lat(x), lat(c.pairedDirect?.[r]));
      row.push(x ? fmt.int(x.recorded / x.durationS) : '-');
      row.push(x ? String(x.errors + x.non2xx + x.unfinished) : '-');
    }
    return row;
  });
  return { head, rows };
}

/**
 * A variant's cost from alternating rounds: the median of its per-round differences to the
 * baseline's round (the two measured seconds apart), which cancels the drift that a difference of
 * two medians keeps. Undefined unless both have the same number of rounds.
 */
function roundCost(c, ref) {
  const a = c?.rounds;
  const b = ref?.rounds;
  if (!a || !b || a.length !== b.length || a.length === 0) return undefined;
  const d = a.map((x, i) => x.cpuUsPerReq - b[i].cpuUsPerReq).sort((x, y) => x - y);
  return d[Math.floor(d.length / 2)];
}

/**
 * Per-feature CPU cost: variant minus `meshlet-off`, from the wrk (max load) runs. The baseline is
 * the copy of meshlet-off measured in the variants' own alternating rounds when there is one.
 */
function featureTable(results) {
  const off = results.variants?.['meshlet-off'] ?? results.contenders['meshlet-off'];
  const base = off?.cpuUsPerReq;
  const head = ['feature', 'measured as', 'CPU µs/req', 'cost µs/req (on - off)', 'max req/s'];
  const rows = [];
  const add = (feature, name, c, b = base, ref = off) => {
    if (!c) return;
    rows.push([feature, name, fmt.num(c.cpuUsPerReq), b === undefined || c.cpuUsPerReq === undefined ? '-' : fmt.num(roundCost(c, ref) ?? c.cpuUsPerReq - b, 2), fmt.int(c.wrk?.rps)]);
  };
  add('policies off (baseline)', 'meshlet-off', off);
  add('1,000 routes (+ explicit route)', 'meshlet-routes', results.variants?.['meshlet-routes']);
  add('weighted split, 2 subsets', 'meshlet-split', results.variants?.['meshlet-split']);
  add('route timeout', 'meshlet-timeout', results.variants?.['meshlet-timeout']);
  add('retry policy (2 attempts, per-try timeout)', 'meshlet-retries', results.variants?.['meshlet-retries']);
  add('route circuit breaker', 'meshlet-breaker', results.variants?.['meshlet-breaker']);
  add('connection/request limits', 'meshlet-limits', results.variants?.['meshlet-limits']);
  add('outlier detection', 'meshlet-outlier', results.variants?.['meshlet-outlier']);
  add('fault injection (gated, not firing)', 'meshlet-fault', results.variants?.['meshlet-fault']);
  add('mirror 100% (a copy per request)', 'meshlet-mirror', results.variants?.['meshlet-mirror']);
  // The full chain ran with the contenders, in their rounds: its baseline is theirs.
  const offContender = results.contenders['meshlet-off'];
  add('full chain', 'meshlet-full', results.contenders['meshlet-full'], offContender?.cpuUsPerReq, offContender);
  // Inbound variants: the rate limit's cost is measured against the inbound path without policy.
  const inbound = results.variants?.['meshlet-inbound'];
  add('inbound path, no policy (baseline for the next row)', 'meshlet-inbound', inbound, undefined);
  add('rate limit: 2 local limits, on the inbound path', 'meshlet-ratelimit', results.variants?.['meshlet-ratelimit'], inbound?.cpuUsPerReq, inbound);
  // Observability, one at a time, against the same sidecar with all three off.
  const none = results.variants?.['meshlet-obs-none'];
  if (none) {
    const nb = none.cpuUsPerReq;
    const addObs = (feature, name) => {
      const c = results.variants?.[name];
      if (!c) return;
      rows.push([feature, name, fmt.num(c.cpuUsPerReq), nb === undefined || c.cpuUsPerReq === undefined ? '-' : `${fmt.num(roundCost(c, none) ?? c.cpuUsPerReq - nb, 2)} (vs obs-none)`, fmt.int(c.wrk?.rps)]);
    };
    rows.push(['observability all off (baseline)', 'meshlet-obs-none', fmt.num(nb), '-', fmt.int(none.wrk?.rps)]);
    addObs('metrics (goal: all three ≤ 3 µs)', 'meshlet-obs-metrics');
    addObs('tracing, 100% sampled, collector down', 'meshlet-obs-tracing');
    addObs('access log, every request', 'meshlet-obs-accesslog');
    addObs('metrics + tracing + access log', 'meshlet-obs-all');
  }
  return { head, rows };
}

/** bench/gateway-tls.js: the gateway (TLS + routing) vs nginx (TLS + proxy_pass). */
function gatewayTlsTable(results) {
  const o = results.gatewayTls;
  if (!o) return '';
  return '\n### Gateway: TLS + routing vs nginx\n\n' + require('../gateway-tls').table(o) + '\n';
}

function cacheHitTable(results) {
  const o = results.cacheHit;
  if (!o) return '';
  return '\n### Response cache HIT vs nginx proxy_cache\n\n' + require('../cache-hit').table(o) + '\n';
}

/** bench/observability.js: the per-request CPU of the observability hooks, in-process. */
function observabilityTable(results) {
  const o = results.observability;
  if (!o || o.error || !o.rows) return undefined;
  return require('../observability').table(o);
}

function observabilityNote(results) {
  const o = results.observability;
  if (!o) return '';
  if (o.error) return `FAILED: ${o.error}`;
  return `bench/observability.js: the sidecar's observer hooks alone (begin, header rewrite, end: metrics, span, access-log line to /dev/null through the sidecar's destination), ${o.params.iterations} synthetic requests × ${o.params.reps} rounds, configurations interleaved, CPU = process.cpuUsage (all threads) ÷ requests, median; "cost" = median paired difference to all off. Node ${[o.params.node, ...(o.params.execArgv ?? [])].join(' ')}, on core ${results.env.proxyCpu}.`;
}

/** The goals from the issue, evaluated on the full-chain sidecar. */
function goals(results, soak) {
  const full = figures(results, 'meshlet-full');
  const undici = figures(results, 'undici-proxy');
  const hp = figures(results, 'http-proxy');
  const ngx = figures(results, 'nginx');
  const r1k = results.rateKeys[0];
  const check = (goal, actual, target, pass) => ({ goal, actual, target, pass: actual === undefined || pass === undefined ? 'n/a' : pass ? 'PASS' : 'FAIL' });
  const def = (...xs) => xs.every((x) => x !== undefined && x !== null && !Number.isNaN(x));
  const out = [];
  out.push(check('full chain CPU per request', def(full.cpuUsPerReq) ? `${fmt.num(full.cpuUsPerReq)} µs` : undefined, '≤ 30 µs', def(full.cpuUsPerReq) ? full.cpuUsPerReq <= 30 : undefined));
  const rr = (a, b) => (def(a, b) && b > 0 ? a / b : undefined);
  const vsU = rr(full.rps, undici.rps);
  const vsH = rr(full.rps, hp.rps);
  const vsN = rr(full.rps, ngx.rps);
  out.push(check('max req/s vs bare undici', vsU === undefined ? undefined : fmt.ratio(vsU), '≥ 1.25x', vsU === undefined ? undefined : vsU >= 1.25));
  out.push(check('max req/s vs bare http-proxy', vsH === undefined ? undefined : fmt.ratio(vsH), '≥ 2x', vsH === undefined ? undefined : vsH >= 2));
  out.push(check('max req/s vs nginx', vsN === undefined ? undefined : fmt.ratio(vsN), '≥ 0.33x', vsN === undefined ? undefined : vsN >= 0.33));
  const a = full[`added_${r1k}_p99`];
  const n = ngx[`added_${r1k}_p99`];
  // nginx's added p99 can be ~0 or even negative in a noisy run; compare against at least 1 µs.
  const limit = def(n) ? 1.5 * Math.max(n, 1) : undefined;
  out.push(
    check(
      `added p99 @${r1k} vs nginx's added p99`,
      def(a, n) ? `${fmt.int(a)} µs vs ${fmt.int(n)} µs${n > 0 ? ` (${fmt.ratio(a / n)})` : ''}` : undefined,
      '≤ 1.5x nginx',
      def(a, limit) ? a <= limit : undefined,
    ),
  );
  // The CPU ratios to nginx per protocol and the mesh hop's, each against the reference measured
  // in the same rounds (bench/run.js: medians of alternating rounds).
  const vsNginx = (label, a, b, limit) => {
    const x = rr(a, b);
    out.push(check(label, x === undefined ? undefined : `${fmt.num(a)} vs ${fmt.num(b)} µs (${fmt.ratio(x)})`, `≤ ${limit}x nginx`, x === undefined ? undefined : x <= limit));
  };
  vsNginx('HTTP/1.1 CPU per request vs nginx', full.cpuUsPerReq, ngx.cpuUsPerReq, 2.2);
  vsNginx('HTTP/2 (h2c) CPU per request vs nginx', full.h2CpuUsPerReq, ngx.h2CpuUsPerReq, 2);
  vsNginx('gRPC unary CPU per call vs nginx', full.grpcCpuUsPerReq, ngx.grpcCpuUsPerReq, 2);
  const hop = results.hop?.rows;
  if (hop) {
    const d = hop['meshlet x2 (default)']?.cpuUsPerReq;
    const n2 = hop['nginx x2']?.cpuUsPerReq;
    const up = hop['meshlet x2 (http2Upgrade: true)']?.cpuUsPerReq;
    const x = rr(d, n2);
    out.push(check('mesh hop (default), CPU per request vs two nginx', x === undefined ? undefined : `${fmt.num(d)} vs ${fmt.num(n2)} µs (${fmt.ratio(x)})`, '≤ 2.5x', x === undefined ? undefined : x <= 2.5));
    const y = rr(up, d);
    out.push(check('mesh hop, http2Upgrade vs plain HTTP/1.1 (off by default until ≤ 1x)', y === undefined ? undefined : `${fmt.num(up)} vs ${fmt.num(d)} µs (${fmt.ratio(y)})`, '≤ 1x', y === undefined ? undefined : y <= 1));
  }
  const tail = results.tail;
  if (tail && !tail.error) {
    const m = tail.sum['meshlet.p999'];
    const n = tail.sum['nginx.p999'];
    out.push(
      check(
        `added p99.9 @${tail.rate / 1000}k vs nginx's, ${tail.ratios.length} runs (bench/tail.js)`,
        `${fmt.int(m.median)} µs (${fmt.int(m.min)}..${fmt.int(m.max)}) vs ${fmt.int(n.median)} µs (${fmt.int(n.min)}..${fmt.int(n.max)}); ≤ 2x in ${tail.ratios.filter((r) => r <= 2).length}/${tail.ratios.length}` +
          (tail.voided ? `; ${tail.voided} pair(s) run again after a platform pause` : ''),
        '≤ 2x nginx in every run',
        tail.met ?? tail.ratios.every((r) => r <= 2),
      ),
    );
  } else if (tail?.error) out.push({ goal: 'added p99.9 @5k vs nginx (bench/tail.js)', actual: `FAILED: ${tail.error.split('\n')[0]}`, target: '≤ 2x nginx in every run', pass: 'n/a' });
  const start = def(full.rssStartKb) ? ` (${fmt.mb(full.rssStartKb)} MB 300 ms after start)` : '';
  out.push(check('RSS idle', def(full.rssIdleKb) ? `${fmt.mb(full.rssIdleKb)} MB${start}` : undefined, '≤ 60 MB', def(full.rssIdleKb) ? full.rssIdleKb <= 60 * 1024 : undefined));
  out.push(check('RSS peak', def(full.rssPeakKb) ? `${fmt.mb(full.rssPeakKb)} MB` : undefined, '≤ 100 MB', def(full.rssPeakKb) ? full.rssPeakKb <= 100 * 1024 : undefined));
  const obsAll = results.observability?.rows?.find((r) => r.name === 'all');
  if (obsAll && def(obsAll.overNoneUs))
    out.push(check('observability: metrics + tracing (1%) + access log, in-process', `${fmt.num(obsAll.overNoneUs, 2)} µs`, '≤ 3 µs', obsAll.overNoneUs <= 3));
  const gw = results.gatewayTls;
  if (gw && !gw.error && def(gw.ratio)) out.push(check('gateway TLS + routing vs nginx TLS proxy, CPU per request', fmt.ratio(gw.ratio), '≤ 3x', gw.ratio <= 3));
  const ch = results.cacheHit;
  if (ch && !ch.error && def(ch.ratio)) out.push(check('response cache HIT vs nginx proxy_cache HIT, CPU per request', fmt.ratio(ch.ratio), '≤ 2x', ch.ratio <= 2));
  if (soak) out.push(check(`soak RSS flat (${soak.source})`, soak.summary ?? '?', '±5% (trend and floor)', soak.pass));
  else out.push({ goal: 'soak RSS flat', actual: 'not run (npm run bench -- --soak)', target: '±5%', pass: 'n/a' });
  return out;
}

function goalsTable(g) {
  return { head: ['goal (full chain)', 'actual', 'target', 'result'], rows: g.map((x) => [x.goal, x.actual ?? '-', x.target, x.pass]) };
}

function backgroundLine(results) {
  const b = results.env.backgroundBusyPct;
  if (!b) return '';
  const busy = [...b.before, ...b.after].some((x) => x > 10);
  return `Background CPU (other processes, before / after the run): core busy % ${b.before.join(', ')} / ${b.after.join(', ')}${busy ? ' — the machine was not quiet; treat these figures as noisy.' : '.'}`;
}

/** The mesh hop (bench/run.js hopBench): two proxies in a row, CPU summed over both. */
function hopTable(results) {
  const h = results.hop;
  if (!h || h.error || !h.rows) return undefined;
  const ref = h.rows['nginx x2'];
  const head = ['client -> A -> B -> upstream', 'max req/s', 'CPU µs/req (A + B)', 'CPU ratio vs two nginx', 'p99 µs (wrk)'];
  const rows = Object.entries(h.rows).map(([k, r]) => [k, fmt.int(r.rps), fmt.num(r.cpuUsPerReq), ref ? `${(r.cpuUsPerReq / ref.cpuUsPerReq).toFixed(2)}×` : '-', r.p99Us === undefined ? '-' : fmt.int(r.p99Us)]);
  return { head, rows };
}

function renderText(results, g) {
  const parts = [];
  parts.push(`meshlet bench — ${results.profile} run, ${results.startedAt}`);
  parts.push(`${results.env.cpuModel}; node ${results.env.node}; proxy on core ${results.env.proxyCpu}, upstream + load on core ${results.env.loadCpu}`);
  parts.push(backgroundLine(results));
  parts.push('');
  let t = mainTable(results);
  parts.push(textTable(t.head, t.rows));
  parts.push('');
  parts.push('ratio vs nginx:');
  t = ratioTable(results, 'nginx');
  parts.push(textTable(t.head, t.rows));
  parts.push('');
  parts.push('ratio vs undici-proxy:');
  t = ratioTable(results, 'undici-proxy');
  parts.push(textTable(t.head, t.rows));
  parts.push('');
  const ht = hopTable(results);
  if (ht || results.hop?.error) {
    parts.push('mesh hop (two proxies in a row):');
    parts.push(ht ? textTable(ht.head, ht.rows) : `FAILED: ${results.hop.error}`);
    parts.push('');
  }
  t = featureTable(results);
  parts.push('per-feature cost (CPU at max load):');
  parts.push(textTable(t.head, t.rows));
  parts.push('');
  if (results.gatewayTls) parts.push(gatewayTlsTable(results));
  if (results.cacheHit) parts.push(cacheHitTable(results));
  const ot = observabilityTable(results);
  if (results.observability) {
    parts.push('observability overhead (in-process):');
    if (ot) parts.push(textTable(ot.head, ot.rows));
    else parts.push(observabilityNote(results));
    parts.push('');
  }
  t = goalsTable(g);
  parts.push(textTable(t.head, t.rows));
  return parts.join('\n');
}

function renderMarkdown(results, g) {
  const parts = [];
  parts.push(`# meshlet bench — ${results.startedAt}`);
  parts.push('');
  parts.push(`Profile **${results.profile}** (${results.cmd}). ${results.env.cpuModel}, ${results.env.cores} cores; node ${results.env.node}; ${results.env.tools}.`);
  parts.push(
    `Proxy pinned to core ${results.env.proxyCpu}; upstream nginx, wrk and the load generator on core ${results.env.loadCpu}. wrk: ${results.params.wrkThreads} thread, ${results.params.wrkConnections} connections, ${results.params.wrkSeconds} s (after ${results.params.warmSeconds} s warm-up). Fixed-rate runs: ${results.params.rateSeconds} s each after ${results.params.rateWarmSeconds} s warm-up, ${results.params.loadConnections} connections, latency from intended send time. Load average at start: ${results.env.loadavg}.` +
      (results.params.h2
        ? ` HTTP/2 column: h2load, h2c prior knowledge, ${results.params.h2Threads} thread, ${results.params.h2Clients} connections × ${results.params.h2Streams} streams, ${results.params.h2Seconds} s (after ${results.params.h2WarmSeconds} s warm-up), on core ${results.env.loadCpu}; upstream stays HTTP/1.1 (direct: the upstream's own h2c listener).`
        : '') +
      (results.params.grpc
        ? ` gRPC column: h2load sending gRPC unary calls (grpc.testing.TestService/UnaryCall, ${results.params.grpcPayloadBytes} B payload each way), h2c, ${results.params.h2Clients} connections × ${results.params.h2Streams} streams, ${results.params.grpcSeconds} s (after ${results.params.grpcWarmSeconds} s warm-up), on core ${results.env.loadCpu}, to an nginx gRPC upstream (a static gRPC message + grpc-status 0 trailer) over h2c; checked with a grpc-js call before and after.`
        : ''),
  );
  parts.push('');
  parts.push(backgroundLine(results));
  parts.push('');
  parts.push('Added latency = contender latency − direct latency at the same percentile and rate (µs), direct being measured in the same seconds (paired, interleaved). Negative values are noise. ' + (results.params.throughputRounds > 0 ? `max req/s and CPU µs/req: the median of ${results.params.throughputRounds} interleaved rounds of ${results.params.roundSeconds} s (every proxy in turn, so that the machine's drift over the run hits all alike; the single run is wrkSingle in the JSON); CPU µs/req = proxy utime+stime over a wrk run ÷ requests.` : 'CPU µs/req = proxy utime+stime over the measured wrk run ÷ requests.') + ' "proxy core %" below ~95 means the proxy was not the bottleneck at max load. h2 req/s and h2 CPU µs/req: ' + (results.params.throughputRounds > 0 ? `the same, the median of ${results.params.throughputRounds} interleaved h2load rounds of ${results.params.roundH2Seconds ?? 2} s (the single ${results.params.h2Seconds} s run is h2.single in the JSON)` : 'the same over an h2load run') + ' (h2c downstream); n/a = the contender does not serve h2c; FAILED = h2load did not negotiate h2c or saw errors (see notes). The h2 proxy core % is in the JSON (`h2.coreBusyPct`). RSS idle: ' + (results.params.settledIdle ? 'a copy of the contender left without traffic for 20 s (after V8\'s memory reducer); the figure 300 ms after start is `rssStartKb` in the JSON.' : 'RSS 300 ms after start (--quick has no settled-idle probe).') + '  grpc req/s and grpc CPU µs/req: the same for gRPC unary calls (h2c both ways, rounds as for h2); n/a = the contender does not proxy gRPC; FAILED = the gRPC upstream or a grpc-js call through the contender failed, or h2load saw errors or responses without a message (gRPC errors; see notes).' + (results.grpcUpstreamError ? ` **The gRPC upstream failed its check: ${results.grpcUpstreamError}**` : ''));
  parts.push('');
  parts.push('## Results');
  parts.push('');
  let t = mainTable(results);
  parts.push(mdTable(t.head, t.rows));
  parts.push('');
  parts.push('## Ratio vs nginx');
  parts.push('');
  t = ratioTable(results, 'nginx');
  parts.push(mdTable(t.head, t.rows));
  parts.push('');
  parts.push('## Ratio vs bare undici proxy');
  parts.push('');
  t = ratioTable(results, 'undici-proxy');
  parts.push(mdTable(t.head, t.rows));
  parts.push('');
  const ht = hopTable(results);
  if (ht || results.hop?.error) {
    parts.push('## Mesh hop (client -> proxy A -> proxy B -> upstream)');
    parts.push('');
    parts.push('Two nginx chained against two sidecars registered through a control plane (the hop between them as by default: HTTP/1.1; and with `http2Upgrade: true`: HTTP/1.1 multiplexed over HTTP/2), both proxies pinned to the proxy core; wrk as for max req/s, with `--latency`. CPU µs/req is summed over both proxies. ' + (results.hop?.rows?.['nginx x2']?.rounds?.length > 1 ? `The first two rows: the median of ${results.hop.rows['nginx x2'].rounds.length} alternating rounds (nginx x2, meshlet x2, nginx x2, ...; each round in the JSON); the last: one run after the policy change.` : ''));
    parts.push('');
    parts.push(ht ? mdTable(ht.head, ht.rows) : `FAILED: ${results.hop.error}`);
    parts.push('');
  }
  if (results.tail) {
    parts.push('## Tail at 5,000 req/s (bench/tail.js --runs 3)');
    parts.push('');
    if (results.tail.error) parts.push(`FAILED: ${results.tail.error}`);
    else {
      parts.push(
        'nginx and the full chain in turn, each paired with the upstream, from the open-loop generator; added latency (µs) = proxy − paired direct; median (min..max) over the runs. ' +
          'Each proxy first serves one phase that is not counted (the sidecar compiles its hot code then); a pair in which the machine stopped a core for 20 ms or more (a real-time sleeper on each core sees it: bench/native/hiccup.c) is set aside and run again.',
      );
      parts.push('');
      const rowOf = (who, sum = results.tail.sum, label = who) => [label, ...['p50', 'p99', 'p999'].map((k) => { const v = sum[`${who}.${k}`]; return `${fmt.int(v.median)} (${fmt.int(v.min)}..${fmt.int(v.max)})`; })];
      const rows = [rowOf('nginx'), rowOf('meshlet')];
      const pd = results.tail.paired;
      // The paired estimator (bench/README.md): percentiles of each proxied slot's latency minus the adjacent direct slot's.
      if (pd) rows.push(rowOf('nginx', pd.sum, 'nginx, paired'), rowOf('meshlet', pd.sum, `meshlet, paired (≤ 2x nginx's in ${pd.within}/${pd.ratios.length})`));
      parts.push(mdTable(['proxy', 'added p50', 'added p99', 'added p99.9'], rows));
      parts.push('');
      parts.push(`\`${results.tail.verdict}\``);
    }
    parts.push('');
  }
  parts.push('## Per-feature cost');
  parts.push('');
  if (results.variants?.['meshlet-off']?.rounds?.length > 1)
    parts.push(`The variants and a copy of meshlet-off as their baseline, measured in ${results.variants['meshlet-off'].rounds.length} alternating rounds: CPU µs/req is the median of a variant's rounds, its cost the median of its per-round differences to the baseline (the full chain: to meshlet-off in the contenders' rounds).`, '');
  t = featureTable(results);
  parts.push(mdTable(t.head, t.rows));
  parts.push('');
  if (results.gatewayTls) parts.push(gatewayTlsTable(results));
  if (results.cacheHit) parts.push(cacheHitTable(results));
  if (results.observability) {
    parts.push('## Observability overhead (in-process)');
    parts.push('');
    parts.push(observabilityNote(results));
    const ot = observabilityTable(results);
    if (ot) {
      parts.push('');
      parts.push(mdTable(ot.head, ot.rows));
    }
    parts.push('');
  }
  parts.push('## Goals');
  parts.push('');
  t = goalsTable(g);
  parts.push(mdTable(t.head, t.rows));
  parts.push('');
  parts.push('## Raw latency (from intended send time, not subtracted)');
  parts.push('');
  t = latencyTable(results);
  parts.push(mdTable(t.head, t.rows));
  parts.push('');
  return parts.join('\n');
}

module.exports = { renderText, renderMarkdown, goals, figures, ratios, added, textTable, mdTable, fmt };
