/**
 * The admission webhook's side of injection: the plan of plan.ts as an RFC 6902 JSONPatch
 * against the pod the API server sent. Lists are replaced whole (a patch that inserts at
 * indexes would break if the pod changed between our read and the apply; the API server
 * applies it to exactly the object it sent us, but whole lists are also easier to read).
 */
import type { Plan } from './plan';
import { editList, LISTS } from './plan';

export type PatchOp = { op: 'add' | 'replace'; path: string; value: unknown };

/** JSON Pointer escaping (RFC 6901): `~` -> `~0`, `/` -> `~1`, as annotation keys need. */
export function pointer(...parts: string[]): string {
  return parts.map((p) => '/' + p.replace(/~/g, '~0').replace(/\//g, '~1')).join('');
}

export function jsonPatch(pod: { metadata?: { annotations?: unknown }; spec?: Record<string, unknown> }, plan: Extract<Plan, { action: 'inject' }>): PatchOp[] {
  const ops: PatchOp[] = [];
  if (!pod.metadata) ops.push({ op: 'add', path: '/metadata', value: {} });
  const ann = pod.metadata?.annotations;
  if (!ann || typeof ann !== 'object') ops.push({ op: 'add', path: '/metadata/annotations', value: plan.annotations });
  else for (const [k, v] of Object.entries(plan.annotations)) ops.push({ op: 'add', path: pointer('metadata', 'annotations', k), value: v });
  const spec = pod.spec ?? {};
  for (const name of LISTS) {
    const edit = plan.lists[name];
    const current = Array.isArray(spec[name]) ? (spec[name] as unknown[]) : undefined;
    const next = editList(current, edit);
    if (!current && next.length === 0) continue;
    ops.push({ op: current ? 'replace' : 'add', path: pointer('spec', name), value: next });
  }
  return ops;
}
