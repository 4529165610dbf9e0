/** The wire schema (what users write) derived from an internal one; see wire.ts. Loads TypeBox: used by the build, the docs and error reporting only. */
import { Kind, Type, type TSchema } from '@sinclair/typebox';
import { META, meta } from './constants';
import { formatDuration } from './validate';

type Obj = Record<string, unknown>;
type S = TSchema & Obj;

/** Duration strings: a number with ms, s, m or h ("250ms", "1.5s"). */
const DURATION_PATTERN = '^\\s*\\d+(\\.\\d+)?(ms|s|m|h)\\s*$';
const STRUCTURAL = new Set(['type', 'properties', 'required', 'items', 'anyOf', 'patternProperties']);

function options(s: S): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(s)) if (!STRUCTURAL.has(k)) out[k] = v;
  return out;
}

const isOptional = (s: TSchema): boolean => (s as unknown as Record<symbol, unknown>)[Symbol.for('TypeBox.Optional')] === 'Optional';

/** The schema of the wire form of an internal schema. */
export function wireSchema(schema: TSchema): TSchema {
  const s = schema as S;
  const m = meta(s);
  if (m.wireSchema) return m.wireSchema;
  if (m.duration) {
    const range = `${formatDuration(m.duration.minMs)} to ${formatDuration(m.duration.maxMs)}`;
    return Type.String({
      description: `${s.description ?? ''} A duration such as "250ms" or "2s" (${range}).`.trim(),
      pattern: DURATION_PATTERN,
      ...(typeof s.default === 'number' ? { default: formatDuration(s.default) } : {}),
      [META]: m,
    });
  }
  switch (s[Kind]) {
    case 'Object': {
      const props: Record<string, TSchema> = {};
      for (const [k, p] of Object.entries(s.properties as Record<string, S>)) {
        const pm = meta(p);
        const w = wireSchema(p);
        props[pm.wire ?? k] = isOptional(p) || p.default !== undefined || pm.optional ? Type.Optional(w) : w;
      }
      return Type.Object(props, options(s));
    }
    case 'Array':
      return Type.Array(wireSchema(s.items as TSchema), options(s));
    case 'Union':
      return Type.Union((s.anyOf as TSchema[]).map(wireSchema), options(s));
    default:
      return s;
  }
}

