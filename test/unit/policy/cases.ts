/**
 * The table runner of the policy parse tests: each case is parsed; a rejected one must carry an
 * error at exactly its field path (and message), an accepted one must come back frozen and
 * survive the wire form (`toWire`, as the control plane pushes it) unchanged.
 */
import t from 'tap';
import { parseResource, toWire } from '../../../src/policy/parse';
import type { Resource } from '../../../src/policy/types';

export interface Case {
  name: string;
  input: unknown;
  /** Expected error: the exact field path, and a pattern for the message. */
  error?: { path: string; message?: RegExp };
  check?: (r: Resource) => void;
}

export function runCases(cases: readonly Case[]): void {
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const r = parseResource(c.input);
      if (c.error) {
        t.notOk(r.ok, 'is rejected');
        if (r.ok) return;
        const hit = r.errors.find((e) => e.path === c.error!.path);
        t.ok(hit, `has an error at ${c.error.path}; got ${JSON.stringify(r.errors)}`);
        if (hit && c.error.message) t.match(hit.message, c.error.message);
      } else {
        t.ok(r.ok, `is accepted: ${r.ok ? '' : JSON.stringify(r.errors)}`);
        if (r.ok) {
          t.ok(Object.isFrozen(r.value) && Object.isFrozen(r.value.spec), 'is frozen');
          c.check?.(r.value);
          const again = parseResource(toWire(r.value));
          t.ok(again.ok, 'wire form re-parses');
          if (again.ok) t.same(again.value, r.value, 'wire form round-trips');
        }
      }
    });
  }
}
