/** Weighted random choice: a cumulative-weight table built once, a binary search per pick. */
import type { Picker } from './picker';
import type { Endpoint } from '../policy/types';
import type { PickerContext } from './registry';

export function weightedIndex(cumulative: readonly number[], r: number): number {
  const target = r * cumulative[cumulative.length - 1];
  let lo = 0;
  let hi = cumulative.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cumulative[mid] > target) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export function cumulativeWeights(weights: readonly number[]): number[] {
  let sum = 0;
  return weights.map((w) => (sum += w));
}

export function random(ctx: PickerContext): Picker {
  const eps = ctx.endpoints;
  const rnd = ctx.random;
  if (eps.every((e) => e.weight === eps[0].weight)) return { pick: (): Endpoint => eps[Math.floor(rnd() * eps.length)] };
  const cum = cumulativeWeights(eps.map((e) => e.weight));
  return { pick: (): Endpoint => eps[weightedIndex(cum, rnd())] };
}
