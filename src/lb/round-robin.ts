/** Smooth weighted round-robin (nginx's algorithm): with equal weights a plain rotation; with
 * weights, an interleaved sequence in which each endpoint appears in proportion to its weight. */
import type { Picker } from './picker';
import type { Endpoint } from '../policy/types';
import type { PickerContext } from './registry';

export function roundRobin(ctx: PickerContext): Picker {
  const eps = ctx.endpoints;
  const n = eps.length;
  if (eps.every((e) => e.weight === eps[0].weight)) {
    // Start at a random offset so that many sidecars do not all hit endpoint 0 first.
    let i = Math.floor(ctx.random() * n);
    return {
      pick(): Endpoint {
        i = i + 1 === n ? 0 : i + 1;
        return eps[i];
      },
    };
  }
  const current = new Array<number>(n).fill(0);
  const total = eps.reduce((s, e) => s + e.weight, 0);
  return {
    pick(): Endpoint {
      let best = 0;
      for (let j = 0; j < n; j++) {
        current[j] += eps[j].weight;
        if (current[j] > current[best]) best = j;
      }
      current[best] -= total;
      return eps[best];
    },
  };
}
