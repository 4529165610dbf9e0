'use strict';
/**
 * The RSS verdict of a soak (bench/run.js --soak, bench/cpu.js --soak). A Node process's RSS is a
 * GC sawtooth (tens of percent, period of minutes), so "flat" is judged on what a leak changes:
 * the least-squares trend over the soak after warm-up, and the floor (10th percentile, i.e. after
 * a collection; not the minimum, which one sample caught mid-compaction can be) of the last third
 * against the first third. Both must stay within ±`limitPct` (5 %).
 */

/** Least-squares line through (t, v): { slope, intercept }. */
function fitLine(points) {
  const n = points.length;
  const mt = points.reduce((a, p) => a + p.t, 0) / n;
  const mv = points.reduce((a, p) => a + p.v, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - mt) * (p.v - mv);
    den += (p.t - mt) ** 2;
  }
  const slope = den > 0 ? num / den : 0;
  return { slope, intercept: mv - slope * mt };
}

const sign = (x) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}%`;

/**
 * `samples`: [{ t (s), v (RSS kB) }], in time order; the ones before `warmupS` are left out.
 * Returns { trendPct, trendKbPerMin, floorPct, floorFirstKb, floorLastKb, rssMinKb, rssMaxKb, pass, summary }.
 */
function rssVerdict(samples, warmupS, limitPct = 5) {
  const after = samples.filter((x) => x.t >= warmupS);
  if (after.length < 2) throw new Error(`soak: ${after.length} RSS samples after the warm-up; nothing to judge`);
  const tStart = after[0].t;
  const tEnd = after[after.length - 1].t;
  const { slope, intercept } = fitLine(after);
  const fitStart = intercept + slope * tStart;
  const trendPct = ((slope * (tEnd - tStart)) / fitStart) * 100;
  const third = (tEnd - tStart) / 3;
  const p10 = (xs) => xs.sort((a, b) => a - b)[Math.floor((xs.length - 1) * 0.1)];
  const floorFirstKb = p10(after.filter((x) => x.t <= tStart + third).map((x) => x.v));
  const floorLastKb = p10(after.filter((x) => x.t >= tEnd - third).map((x) => x.v));
  const floorPct = ((floorLastKb - floorFirstKb) / floorFirstKb) * 100;
  return {
    trendPct,
    trendKbPerMin: slope * 60,
    floorPct,
    floorFirstKb,
    floorLastKb,
    rssMinKb: Math.min(...after.map((x) => x.v)),
    rssMaxKb: Math.max(...after.map((x) => x.v)),
    pass: Math.abs(trendPct) <= limitPct && Math.abs(floorPct) <= limitPct,
    summary: `trend ${sign(trendPct)}, floor ${sign(floorPct)} over ${((tEnd - tStart) / 60).toFixed(1)} min`,
  };
}

module.exports = { fitLine, rssVerdict, sign };
