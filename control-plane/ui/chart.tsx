/**
 * A uPlot time-series chart that follows the page's colour scheme. Each chart also carries a
 * visually hidden summary (latest values) for screen readers and tests.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';

export interface Line {
  label: string;
  values: (number | null)[];
  /** A CSS custom property name (`--series-1`). */
  color: string;
}

interface Props {
  title: string;
  times: number[];
  lines: Line[];
  unit: string;
  format: (v: number | null) => string;
  /** Fixed y range (success rate 0..1). */
  range?: [number, number];
}

/** Whether the page is dark now (follows prefers-color-scheme as it changes). */
export function useDark(): boolean {
  const mq = window.matchMedia('(prefers-color-scheme: dark)');
  const [dark, setDark] = useState(mq.matches);
  useEffect(() => {
    const f = (e: MediaQueryListEvent): void => setDark(e.matches);
    mq.addEventListener('change', f);
    return () => mq.removeEventListener('change', f);
  }, []);
  return dark;
}

const MIN_SPAN_S = 300;
const X_TICKS_S = [60, 120, 300, 600, 900];
const hhmm = (t: number): string => new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

const css = (name: string): string => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';

export function Chart({ title, times, lines, unit, format, range }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const dark = useDark();
  const key = lines.map((l) => l.label).join('|');

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const axis = { stroke: css('--muted'), grid: { stroke: css('--grid'), width: 1 }, ticks: { stroke: css('--grid'), width: 1 } };
    const opts: uPlot.Options = {
      width: Math.max(260, el.clientWidth),
      height: 170,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      // At least five minutes wide, ticks a minute or more apart, shown as HH:MM: a chart with
      // two points (a fresh mesh) reads as time, not as sub-second ticks.
      scales: { x: { time: true, range: (_u, min, max) => [Math.min(min, max - MIN_SPAN_S), max] }, y: range ? { range } : { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{ ...axis, incrs: X_TICKS_S, values: (_u, ticks) => ticks.map(hhmm) }, { ...axis, size: 72, values: (_u, ticks) => ticks.map((v) => format(v)) }],
      series: [{}, ...lines.map((l) => ({ label: l.label, stroke: css(l.color), width: 2, spanGaps: false, value: (_u: uPlot, v: number | null) => format(v) }))],
    };
    const p = new uPlot(opts, [times, ...lines.map((l) => l.values)] as uPlot.AlignedData, el);
    plot.current = p;
    const ro = new ResizeObserver(() => p.setSize({ width: Math.max(260, el.clientWidth), height: 170 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      p.destroy();
      plot.current = null;
    };
    // Rebuilt when the set of lines or the colour scheme changes (colours are read at build);
    // new data alone is pushed with setData below.
  }, [key, dark]);

  useEffect(() => {
    plot.current?.setData([times, ...lines.map((l) => l.values)] as uPlot.AlignedData);
  }, [times, lines]);

  const latest = lines.map((l) => `${l.label} ${format(l.values[l.values.length - 1] ?? null)}`).join(', ');
  return (
    <figure class="chart" data-points={times.length}>
      <figcaption>
        {title} <span class="unit">({unit})</span>
      </figcaption>
      <div ref={box} class="chart-plot" role="img" aria-label={`${title}: ${times.length} points over time; latest ${latest || 'none'}`} />
    </figure>
  );
}
