/**
 * Request ids (src/observability/trace-context.ts `newRequestId`), now sliced from a string of 64
 * ids formatted at once: every id a UUID v4 in canonical form (version digit 4, variant digit
 * 8-b), no two alike across many refills, and every hex digit appearing in every random position.
 */
import t from 'tap';
import { newRequestId } from '../../../src/observability/trace-context';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

t.test('request ids: UUID v4 form, unique across pool refills, random digits everywhere', async (t) => {
  const N = 64 * 200 + 7;
  const seen = new Set<string>();
  let bad = 0;
  // Per character position, the digits seen there.
  const digits: Set<string>[] = Array.from({ length: 36 }, () => new Set());
  for (let i = 0; i < N; i++) {
    const id = newRequestId();
    if (!UUID_V4.test(id)) bad++;
    seen.add(id);
    for (let p = 0; p < 36; p++) (digits[p] as Set<string>).add(id[p] as string);
  }
  t.equal(bad, 0, 'every id in canonical UUID v4 form');
  t.equal(seen.size, N, 'no id twice');
  for (let p = 0; p < 36; p++) {
    const d = digits[p] as Set<string>;
    if (p === 8 || p === 13 || p === 18 || p === 23) t.same([...d], ['-'], `position ${p}: a dash`);
    else if (p === 14) t.same([...d], ['4'], 'position 14: the version');
    else if (p === 19) t.same([...d].sort(), ['8', '9', 'a', 'b'], 'position 19: the variant, all four');
    else if (d.size !== 16) t.fail(`position ${p}: only ${d.size} of 16 hex digits`);
  }
  t.not(newRequestId(), newRequestId(), 'two calls, two ids');
});
