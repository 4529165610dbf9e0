/**
 * A small metrics registry whose series are bound to their label sets ahead of time.
 *
 * `family.labels('outbound', 'catalog')` is called once (when a snapshot compiles, or the first
 * time a status code is seen) and returns a child; recording on the child is a field add
 * (`inc`), or a bucket search and two adds (`observe`). Label values are escaped and the
 * `{k="v",...}` string is built at bind time, so a scrape only concatenates. Rendered as the
 * Prometheus text format 0.0.4 or as OpenMetrics 1.0 (`negotiate()` picks from `Accept`).
 *
 * Label values must come from bounded sets (service and route names from the snapshot, status
 * codes, flags): never raw paths or header values.
 */
import type * as hdr from 'hdr-histogram-js';
// The JS histogram alone: the package's index also loads its WebAssembly build and the encoder
// (pako), ~15 MB of RSS a sidecar does not need until something asks for an exported window.
import Int32Histogram from 'hdr-histogram-js/dist/Int32Histogram';

const newHistogram = (): hdr.Histogram => new Int32Histogram(1, 3_600_000_000, 3) as unknown as hdr.Histogram;
type Encoding = typeof import('hdr-histogram-js/dist/encoding');
let encoding: Encoding | undefined;
const codec = (): Encoding => (encoding ??= require('hdr-histogram-js/dist/encoding') as Encoding);
import { systemClock, type Clock } from '../core/clock';

export type Format = 'prometheus' | 'openmetrics';

export const CONTENT_TYPES: Record<Format, string> = {
  prometheus: 'text/plain; version=0.0.4; charset=utf-8',
  openmetrics: 'application/openmetrics-text; version=1.0.0; charset=utf-8',
};

/** Picks the exposition format from an `Accept` header: OpenMetrics when it is asked for (q > 0). */
export function negotiate(accept: string | undefined): Format {
  if (!accept) return 'prometheus';
  for (const part of accept.split(',')) {
    const [type, ...params] = part.trim().split(';');
    if (type?.trim().toLowerCase() !== 'application/openmetrics-text') continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    if (q && !(Number(q.slice(2)) > 0)) continue;
    return 'openmetrics';
  }
  return 'prometheus';
}

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** Numbers as the exposition formats spell them. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function labelString(names: readonly string[], values: readonly string[], extra?: string): string {
  const parts: string[] = [];
  for (let i = 0; i < names.length; i++) parts.push(`${names[i]}="${escapeLabelValue(values[i] ?? '')}"`);
  if (extra) parts.push(extra);
  return parts.length ? `{${parts.join(',')}}` : '';
}

abstract class Family<C> {
  protected readonly children = new Map<string, { labels: string; child: C; values: readonly string[] }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    if (!NAME_RE.test(name)) throw new Error(`invalid metric name: ${name}`);
    for (const l of labelNames) if (!LABEL_RE.test(l) || l.startsWith('__')) throw new Error(`invalid label name on ${name}: ${l}`);
  }
  abstract readonly type: 'counter' | 'gauge' | 'histogram' | 'summary';
  protected abstract create(): C;

  /** The child bound to these label values (created once, then the same object). */
  labels(...values: string[]): C {
    if (values.length !== this.labelNames.length)
      throw new Error(`${this.name} takes ${this.labelNames.length} label values (${this.labelNames.join(', ')}), got ${values.length}`);
    const key = values.join('\u0001');
    let e = this.children.get(key);
    if (!e) {
      e = { labels: labelString(this.labelNames, values), child: this.create(), values };
      this.children.set(key, e);
    }
    return e.child;
  }

  /** Drops every child (for info-style gauges whose one label set changes). */
  clear(): void {
    this.children.clear();
  }

  /** Writes the samples (not the HELP/TYPE header). */
  abstract samples(out: string[]): void;

  /** The family name in the metadata lines (OpenMetrics drops a counter's `_total`). */
  metaName(format: Format): string {
    return format === 'openmetrics' && this.type === 'counter' ? this.name.replace(/_total$/, '') : this.name;
  }
}

export class CounterChild {
  value = 0;
  inc(n = 1): void {
    this.value += n;
  }
}

export class Counter extends Family<CounterChild> {
  readonly type = 'counter';
  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    if (!name.endsWith('_total')) throw new Error(`counter names end in _total: ${name}`);
    super(name, help, labelNames);
  }
  protected create(): CounterChild {
    return new CounterChild();
  }
  inc(n = 1): void {
    this.labels().inc(n);
  }
  samples(out: string[]): void {
    for (const e of this.children.values()) out.push(`${this.name}${e.labels} ${formatValue(e.child.value)}`);
  }
}

export class GaugeChild {
  value = 0;
  set(v: number): void {
    this.value = v;
  }
  inc(n = 1): void {
    this.value += n;
  }
  dec(n = 1): void {
    this.value -= n;
  }
}

export class Gauge extends Family<GaugeChild> {
  readonly type = 'gauge';
  private collector?: (g: Gauge) => void;
  protected create(): GaugeChild {
    return new GaugeChild();
  }
  set(v: number): void {
    this.labels().set(v);
  }
  /** A callback run at scrape time to set values read from elsewhere. */
  onCollect(fn: (g: Gauge) => void): this {
    this.collector = fn;
    return this;
  }
  samples(out: string[]): void {
    this.collector?.(this);
    for (const e of this.children.values()) out.push(`${this.name}${e.labels} ${formatValue(e.child.value)}`);
  }
}

/** Bucket bounds in seconds, for request durations (1 ms .. 10 s). */
export const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class HistogramChild {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > (b[i] as number)) i++;
    if (i < b.length) (this.counts as unknown as number[])[i]++;
    this.sum += v;
    this.count++;
  }
}

export class Histogram extends Family<HistogramChild> {
  readonly type = 'histogram';
  private readonly leLabels: string[];
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    readonly bounds: readonly number[] = DURATION_BUCKETS,
  ) {
    super(name, help, labelNames);
    if (labelNames.includes('le')) throw new Error(`a histogram cannot have an "le" label: ${name}`);
    for (let i = 1; i < bounds.length; i++) if (!((bounds[i] as number) > (bounds[i - 1] as number))) throw new Error(`histogram buckets must increase: ${name}`);
    this.leLabels = [...bounds.map((b) => `le="${formatValue(b)}"`), 'le="+Inf"'];
  }
  protected create(): HistogramChild {
    return new HistogramChild(this.bounds);
  }
  observe(v: number): void {
    this.labels().observe(v);
  }
  samples(out: string[]): void {
    for (const e of this.children.values()) {
      const c = e.child;
      const base = e.labels ? e.labels.slice(0, -1) + ',' : '{';
      let cum = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cum += c.counts[i] as number;
        out.push(`${this.name}_bucket${base}${this.leLabels[i]}} ${cum}`);
      }
      out.push(`${this.name}_bucket${base}${this.leLabels[this.bounds.length]}} ${c.count}`);
      out.push(`${this.name}_sum${e.labels} ${formatValue(c.sum)}`);
      out.push(`${this.name}_count${e.labels} ${c.count}`);
    }
  }
}

export interface WindowOptions {
  /** The window length (default 60 s), made of `slices` sub-histograms rotated in turn (default 6). */
  windowMs?: number;
  slices?: number;
  clock?: Clock;
}

/**
 * Precise quantiles over a sliding window, on hdr-histogram-js: values are recorded in
 * microseconds (1 µs .. 1 h, 3 significant digits) into the current slice; a slice older than
 * the window is reset and reused. Quantiles merge the live slices at scrape time. A slice (and the
 * merge target) is made when first needed (~92 KB of counts each): a window that saw a few
 * requests carries one, not seven.
 */
export class WindowChild {
  private readonly slices: (hdr.Histogram | undefined)[];
  /** Failed requests (5xx or none) per slice, beside the durations. */
  private readonly errors: Float64Array;
  /** When each slice got its first value (monotonic ms; NaN while empty): the rate's time base. */
  private readonly firstAt: Float64Array;
  private readonly sliceMs: number;
  private readonly windowMs: number;
  private readonly createdAt: number;
  private current = 0;
  private sliceEnd: number;
  private merged: hdr.Histogram | undefined;
  constructor(
    private readonly clock: Clock,
    windowMs: number,
    n: number,
  ) {
    this.slices = new Array<hdr.Histogram | undefined>(n).fill(undefined);
    this.errors = new Float64Array(n);
    this.firstAt = new Float64Array(n).fill(NaN);
    this.windowMs = windowMs;
    this.sliceMs = windowMs / n;
    this.createdAt = clock.monotonic();
    this.sliceEnd = this.createdAt + this.sliceMs;
  }
  private rotate(now: number): void {
    if (now < this.sliceEnd) return;
    const steps = Math.min(this.slices.length, Math.floor((now - this.sliceEnd) / this.sliceMs) + 1);
    for (let i = 0; i < steps; i++) {
      this.current = (this.current + 1) % this.slices.length;
      this.slices[this.current]?.reset();
      this.errors[this.current] = 0;
      this.firstAt[this.current] = NaN;
    }
    this.sliceEnd += Math.floor((now - this.sliceEnd) / this.sliceMs + 1) * this.sliceMs;
  }
  /** Records a duration in seconds. */
  observe(seconds: number, failed = false): void {
    const now = this.clock.monotonic();
    this.rotate(now);
    if (Number.isNaN(this.firstAt[this.current])) this.firstAt[this.current] = now;
    const us = Math.min(3_600_000_000, Math.max(1, Math.round(seconds * 1e6)));
    (this.slices[this.current] ??= newHistogram()).recordValue(us);
    if (failed) (this.errors as unknown as number[])[this.current]++;
  }

  private merge(): hdr.Histogram {
    this.rotate(this.clock.monotonic());
    const m = (this.merged ??= newHistogram());
    m.reset();
    for (const s of this.slices) if (s !== undefined && s.totalCount > 0) m.add(s);
    return m;
  }

  /**
   * The window for aggregation elsewhere: the merged histogram (hdr compressed base64, values in
   * µs), failed requests, and the seconds that have data: from the first value still in the
   * window to now, at least one second (so a burst of 300 requests in the last 10 s of a quiet
   * minute reads 30/s, not 5/s, and one request is 1/s, not a fraction of the process's age).
   */
  export(): { count: number; errors: number; seconds: number; histogram: string } {
    const m = this.merge();
    const now = this.clock.monotonic();
    let errors = 0;
    for (const e of this.errors) errors += e;
    let first = Infinity;
    for (const t of this.firstAt) if (t < first) first = t;
    const span = first === Infinity ? this.windowMs : Math.min(this.windowMs, now - first);
    return { count: m.totalCount, errors, seconds: Math.max(span / 1000, 1), histogram: m.totalCount ? codec().encodeIntoCompressedBase64(m) : '' };
  }
  /** The window merged: count, sum (seconds) and the value at each quantile (seconds). */
  snapshot(quantiles: readonly number[]): { count: number; sum: number; values: number[] } {
    const m = this.merge();
    const count = m.totalCount;
    return {
      count,
      sum: count ? (m.mean * count) / 1e6 : 0,
      values: quantiles.map((q) => (count ? m.getValueAtPercentile(q * 100) / 1e6 : NaN)),
    };
  }
}

/** Decodes windows exported by `WindowChild.export` (from several sidecars) and merges them. */
export class WindowMerge {
  private readonly h = newHistogram();
  count = 0;
  errors = 0;
  /** Requests per second, summed over the merged windows. */
  rps = 0;
  add(w: { count: number; errors: number; seconds: number; histogram: string }): void {
    this.count += w.count;
    this.errors += w.errors;
    this.rps += w.seconds > 0 ? w.count / w.seconds : 0;
    if (w.histogram) this.h.add(codec().decodeFromCompressedBase64(w.histogram));
  }
  /** A quantile (0..1) in milliseconds, or null for an empty window. */
  quantileMs(q: number): number | null {
    return this.h.totalCount ? this.h.getValueAtPercentile(q * 100) / 1000 : null;
  }
  /** The sum of the merged durations, in seconds (hdr's mean times the count, as `WindowChild.snapshot`). */
  sumSeconds(): number {
    return this.h.totalCount ? (this.h.mean * this.h.totalCount) / 1e6 : 0;
  }
  /** The share of requests that did not fail, or null with no requests. */
  successRate(): number | null {
    return this.count ? (this.count - this.errors) / this.count : null;
  }
}

export const WINDOW_QUANTILES = [0.5, 0.9, 0.99, 0.999];

/** A Prometheus summary whose quantiles come from a sliding-window hdr histogram. */
export class WindowSummary extends Family<WindowChild> {
  readonly type = 'summary';
  private readonly clock: Clock;
  private readonly windowMs: number;
  private readonly nSlices: number;
  constructor(name: string, help: string, labelNames: readonly string[], opts: WindowOptions = {}) {
    super(name, help, labelNames);
    if (labelNames.includes('quantile')) throw new Error(`a summary cannot have a "quantile" label: ${name}`);
    this.clock = opts.clock ?? systemClock;
    this.windowMs = opts.windowMs ?? 60_000;
    this.nSlices = opts.slices ?? 6;
  }
  protected create(): WindowChild {
    return new WindowChild(this.clock, this.windowMs, this.nSlices);
  }
  /** Each child's window, for views that aggregate (`meshlet stat`). */
  entries(): { values: readonly string[]; child: WindowChild }[] {
    return [...this.children.values()].map((e) => ({ values: e.values, child: e.child }));
  }
  /** Each child's window keyed by its rendered label set (`{a="x"}`), for a merge across processes (`mergeExpositions`). */
  exports(): Record<string, ReturnType<WindowChild['export']>> {
    const out: Record<string, ReturnType<WindowChild['export']>> = {};
    for (const e of this.children.values()) out[e.labels] = e.child.export();
    return out;
  }
  samples(out: string[]): void {
    for (const e of this.children.values()) {
      const s = e.child.snapshot(WINDOW_QUANTILES);
      const base = e.labels ? e.labels.slice(0, -1) + ',' : '{';
      WINDOW_QUANTILES.forEach((q, i) => out.push(`${this.name}${base}quantile="${q}"} ${formatValue(s.values[i] as number)}`));
      out.push(`${this.name}_sum${e.labels} ${formatValue(s.sum)}`);
      out.push(`${this.name}_count${e.labels} ${s.count}`);
    }
  }
}

type AnyFamily = Counter | Gauge | Histogram | WindowSummary;

export class Registry {
  private readonly families: AnyFamily[] = [];
  private readonly names = new Set<string>();
  private readonly collectors: (() => void)[] = [];

  register<F extends AnyFamily>(f: F): F {
    if (this.names.has(f.name)) throw new Error(`metric registered twice: ${f.name}`);
    this.names.add(f.name);
    this.families.push(f);
    return f;
  }
  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.register(new Counter(name, help, labelNames));
  }
  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.register(new Gauge(name, help, labelNames));
  }
  histogram(name: string, help: string, labelNames: readonly string[] = [], bounds?: readonly number[]): Histogram {
    return this.register(new Histogram(name, help, labelNames, bounds));
  }
  windowSummary(name: string, help: string, labelNames: readonly string[] = [], opts?: WindowOptions): WindowSummary {
    return this.register(new WindowSummary(name, help, labelNames, opts));
  }
  /** Runs before every render (to refresh gauges read from elsewhere). */
  beforeCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  render(format: Format = 'prometheus'): string {
    for (const c of this.collectors) c();
    const out: string[] = [];
    for (const f of this.families) {
      const samples: string[] = [];
      f.samples(samples);
      if (samples.length === 0) continue;
      const meta = f.metaName(format);
      out.push(`# HELP ${meta} ${escapeHelp(f.help)}`, `# TYPE ${meta} ${f.type}`);
      for (const s of samples) out.push(s);
    }
    if (format === 'openmetrics') out.push('# EOF');
    return out.length ? out.join('\n') + '\n' : '';
  }
}
