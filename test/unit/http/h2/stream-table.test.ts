/**
 * `StreamTable` (src/http/h2/stream-table.ts), the open streams of an HTTP/2 session by id: it
 * must answer as a Map would, whatever the order streams close in, including streams that stay
 * open while many newer ones come and go (they leave the ring for its overflow map) and sessions
 * whose ring grows or reaches its largest size.
 */
import fc from 'fast-check';
import t from 'tap';
import { StreamTable } from '../../../../src/http/h2/stream-table';

interface S {
  readonly id: number;
}

/** Every observable answer of the table equals the Map's. */
function same(table: StreamTable<S>, model: Map<number, S>, probe: number[]): boolean {
  if (table.size !== model.size) return false;
  for (const id of probe) if (table.get(id) !== model.get(id)) return false;
  const values = table.values().map((s) => s.id);
  const expected = [...model.keys()].sort((a, b) => a - b);
  return values.length === expected.length && values.every((v, i) => v === expected[i]);
}

t.test('answers as a Map does over random opens and closes', async (t) => {
  // Ops: open the next stream, close the k-th open one (k from the oldest), close an id never
  // open, or a burst of short streams opened and closed while the others stay open.
  const op = fc.oneof(
    { weight: 5, arbitrary: fc.constant({ kind: 'open' as const }) },
    { weight: 4, arbitrary: fc.nat(64).map((k) => ({ kind: 'close' as const, k })) },
    { weight: 1, arbitrary: fc.constant({ kind: 'closeUnknown' as const }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 5000 }).map((n) => ({ kind: 'burst' as const, n })) },
  );
  let runs = 0;
  fc.assert(
    fc.property(fc.array(op, { maxLength: 300 }), fc.constantFrom(1, 2), (ops, first) => {
      runs++;
      const table = new StreamTable<S>();
      const model = new Map<number, S>();
      let next = first; // server sessions see odd ids; the parity does not matter to the table
      const open = (): void => {
        const s = { id: next };
        next += 2;
        table.set(s.id, s);
        model.set(s.id, s);
      };
      for (const o of ops) {
        if (o.kind === 'open') open();
        else if (o.kind === 'close') {
          const ids = [...model.keys()];
          if (ids.length === 0) continue;
          const id = ids[o.k % ids.length] as number;
          if (table.delete(id) !== model.delete(id)) return false;
        } else if (o.kind === 'closeUnknown') {
          if (table.delete(next + 2) !== false) return false;
        } else {
          for (let i = 0; i < o.n; i++) {
            const id = next;
            open();
            if (table.delete(id) !== model.delete(id)) return false;
          }
        }
        const probe = [...model.keys(), next, next + 2, 0];
        if (!same(table, model, probe)) return false;
      }
      return true;
    }),
    { numRuns: 300, seed: 20261205 },
  );
  t.equal(runs, 300, 'every generated sequence checked');
});

t.test('long-lived streams among thousands of short ones, and a full ring', async (t) => {
  const table = new StreamTable<S>();
  const model = new Map<number, S>();
  let id = 1;
  const open = (): S => {
    const s = { id };
    id += 2;
    table.set(s.id, s);
    model.set(s.id, s);
    return s;
  };
  const longLived = [open(), open(), open()];
  for (let i = 0; i < 10_000; i++) {
    const s = open();
    table.delete(s.id);
    model.delete(s.id);
  }
  for (const s of longLived) t.equal(table.get(s.id), s, `stream ${s.id} still found after 10,000 newer ones`);
  t.equal(table.size, 3);
  // More open at once than the ring's largest size: the rest in the overflow map.
  const many: S[] = [];
  for (let i = 0; i < 5000; i++) many.push(open());
  t.equal(table.size, 5003);
  t.ok(
    many.every((s) => table.get(s.id) === s),
    'all 5,000 found',
  );
  t.same(
    table.values().map((s) => s.id),
    [...model.keys()].sort((a, b) => a - b),
    'values: every open stream, oldest first',
  );
  for (const s of many.reverse()) table.delete(s.id);
  t.equal(table.size, 3);
  t.same(
    table.values().map((s) => s.id),
    longLived.map((s) => s.id),
  );
  table.set(longLived[0]!.id, longLived[0]!);
  t.equal(table.size, 3, 'setting a held id replaces it');
  table.clear();
  t.equal(table.size, 0);
  t.equal(table.get(longLived[0]!.id), undefined);
  t.same(table.values(), []);
});
