/** Least request by the power of N (default two) random choices: pick N endpoints at random and
 * send to the one with the fewest active requests relative to its weight. */
import type { Picker } from './picker';
import type { Endpoint } from '../policy/types';
import type { PickerContext } from './registry';

export function leastRequest(ctx: PickerContext): Picker {
  const eps = ctx.endpoints;
  const n = eps.length;
  const stats = ctx.stats;
  const rnd = ctx.random;
  const choices = Math.min(ctx.config.choiceCount ?? 2, n);
  if (n === 1) return { pick: () => eps[0] };
  return {
    pick(): Endpoint {
      let best = eps[Math.floor(rnd() * n)];
      let bestLoad = (stats.active(best) + 1) / best.weight;
      for (let k = 1; k < choices; k++) {
        const cand = eps[Math.floor(rnd() * n)];
        const load = (stats.active(cand) + 1) / cand.weight;
        if (load < bestLoad) {
          best = cand;
          bestLoad = load;
        }
      }
      return best;
    },
  };
}
