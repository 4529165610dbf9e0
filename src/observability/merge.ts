/**
 * One exposition from several processes: a `--concurrency N` sidecar's primary merges what its
 * workers render (Prometheus text 0.0.4) into one scrape, so a dashboard sees one sidecar, not N
 * series that clash.
 *
 * Per family, by type and meaning:
 * - counters and histograms (buckets, _sum, _count): summed;
 * - gauges: summed (requests in flight, pools, open WebSockets, RSS), except the few whose sum
 *   means nothing: `min` for a start time, for "is Redis up" and for a gateway certificate's
 *   expiry, `max` for event-loop lag and a route breaker's state (the worst worker shows);
 * - families the primary owns (policy ACK/NACK counts and the version in force) come from the
 *   first exposition alone: the primary's;
 * - summaries (sliding-window quantiles) cannot be merged from their text: each process also sends
 *   its windows (`WindowSummary.exports()`, hdr histograms), merged here before the quantiles.
 */
import { formatValue, WindowMerge, WINDOW_QUANTILES, type Format } from './metrics';

export type WindowExports = Record<string, Record<string, { count: number; errors: number; seconds: number; histogram: string }>>;

export interface Exposition {
  /** Prometheus text 0.0.4, as `Registry.render('prometheus')` writes it (no timestamps). */
  text: string;
  /** Summary family name -> rendered label set -> exported window. */
  windows?: WindowExports;
}

type Rule = 'sum' | 'max' | 'min' | 'first';

const RULES: Record<string, Rule> = {
  meshlet_policy_acks_total: 'first',
  meshlet_policy_nacks_total: 'first',
  meshlet_policy_info: 'first',
  meshlet_policy_applied_timestamp_seconds: 'first',
  meshlet_policy_age_seconds: 'first',
  process_start_time_seconds: 'min',
  meshlet_ratelimit_redis_up: 'min',
  nodejs_eventloop_lag_p99_seconds: 'max',
  nodejs_eventloop_lag_max_seconds: 'max',
  meshlet_circuit_breaker_state: 'max',
  // Every gateway worker serves the same certificate files: the earliest expiry any of them holds.
  meshlet_gateway_certificate_expiry_timestamp_seconds: 'min',
};

interface Fam {
  name: string;
  help: string;
  type: string;
  rule: Rule;
  /** Series key (sample name + label set) -> value, in order of first appearance. */
  series: Map<string, number>;
}

function parseValue(s: string): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  return Number(s);
}

function combine(rule: Rule, a: number, b: number): number {
  switch (rule) {
    case 'sum':
      return a + b;
    case 'max':
      return Math.max(a, b);
    case 'min':
      return Math.min(a, b);
    case 'first':
      return a;
  }
}

/** Merges expositions (the first one is the primary's) and renders the result in `format`. */
export function mergeExpositions(parts: readonly Exposition[], format: Format = 'prometheus'): string {
  const fams = new Map<string, Fam>();
  const order: Fam[] = [];
  const family = (name: string): Fam => {
    let f = fams.get(name);
    if (!f) {
      f = { name, help: '', type: 'untyped', rule: RULES[name] ?? 'sum', series: new Map() };
      fams.set(name, f);
      order.push(f);
    }
    return f;
  };
  parts.forEach((part, index) => {
    let cur: Fam | undefined;
    for (const line of part.text.split('\n')) {
      if (line === '') continue;
      if (line.startsWith('# HELP ')) {
        const rest = line.slice(7);
        const sp = rest.indexOf(' ');
        cur = family(sp < 0 ? rest : rest.slice(0, sp));
        if (!cur.help) cur.help = sp < 0 ? '' : rest.slice(sp + 1);
        continue;
      }
      if (line.startsWith('# TYPE ')) {
        const [name, type] = line.slice(7).split(' ') as [string, string];
        cur = family(name);
        cur.type = type ?? 'untyped';
        continue;
      }
      if (line.startsWith('#') || !cur) continue;
      if (cur.type === 'summary') continue; // rebuilt from the windows below
      if (cur.rule === 'first' && index > 0) continue;
      const sp = line.lastIndexOf(' ');
      const key = line.slice(0, sp);
      const v = parseValue(line.slice(sp + 1));
      const was = cur.series.get(key);
      cur.series.set(key, was === undefined ? v : combine(cur.rule, was, v));
    }
  });

  const out: string[] = [];
  for (const f of order) {
    const samples: string[] = [];
    if (f.type === 'summary') {
      const merged = new Map<string, WindowMerge>();
      for (const part of parts)
        for (const [labels, w] of Object.entries(part.windows?.[f.name] ?? {})) {
          let m = merged.get(labels);
          if (!m) merged.set(labels, (m = new WindowMerge()));
          m.add(w);
        }
      for (const [labels, m] of merged) {
        const base = labels ? labels.slice(0, -1) + ',' : '{';
        for (const q of WINDOW_QUANTILES) {
          const ms = m.quantileMs(q);
          samples.push(`${f.name}${base}quantile="${q}"} ${formatValue(ms === null ? NaN : ms / 1000)}`);
        }
        samples.push(`${f.name}_sum${labels} ${formatValue(m.sumSeconds())}`, `${f.name}_count${labels} ${m.count}`);
      }
    } else {
      for (const [key, v] of f.series) samples.push(`${key} ${formatValue(v)}`);
    }
    if (samples.length === 0) continue;
    const meta = format === 'openmetrics' && f.type === 'counter' ? f.name.replace(/_total$/, '') : f.name;
    out.push(`# HELP ${meta} ${f.help}`, `# TYPE ${meta} ${f.type}`, ...samples);
  }
  if (format === 'openmetrics') out.push('# EOF');
  return out.length ? out.join('\n') + '\n' : '';
}
