/** Consistent hashing on a request header (Ketama-style ring): requests with the same header value
 * go to the same endpoint, and an endpoint joining or leaving moves only its share of keys.
 * Requests without the header are spread at random. */
import type { RequestView } from '../policy/request-view';
import type { Picker } from './picker';
import type { Endpoint } from '../policy/types';
import type { PickerContext } from './registry';

/** 32-bit FNV-1a followed by a murmur3 finaliser, for a well-mixed ring position. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function ringHash(ctx: PickerContext): Picker {
  const eps = ctx.endpoints;
  const header = ctx.config.hashHeader ?? '';
  // Points per unit of weight, independent of how many endpoints there are, so that an endpoint
  // joining or leaving moves only the keys on its own points.
  const perWeight = ctx.config.ringSize ?? 128;
  const points: { h: number; ep: Endpoint }[] = [];
  for (const ep of eps) {
    const replicas = perWeight * ep.weight;
    for (let i = 0; i < replicas; i++) points.push({ h: hash32(`${ep.address}:${ep.port}_${i}`), ep });
  }
  points.sort((a, b) => a.h - b.h);
  const hashes = Uint32Array.from(points.map((p) => p.h));
  const owners = points.map((p) => p.ep);
  const rnd = ctx.random;
  return {
    pick(req: RequestView): Endpoint {
      const v = req.header(header);
      if (v === undefined) return eps[Math.floor(rnd() * eps.length)];
      const h = hash32(v);
      let lo = 0;
      let hi = hashes.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (hashes[mid] < h) lo = mid + 1;
        else hi = mid;
      }
      return owners[lo === hashes.length ? 0 : lo];
    },
  };
}
