/**
 * Schema errors in our words. Runs only on a document the compiled check refused: TypeBox's
 * error iterator walks the wire schema, and each error becomes `{ path: 'spec.rules[1].bogus',
 * message: 'unknown field; allowed: ...' }` — the messages users had before the schema existed.
 * One error per field path; in a union (`method: GET` or a list) the branch of the value's
 * own type is the one reported.
 */
import { Kind, type TSchema } from '@sinclair/typebox';
import { Errors, ValueErrorType, type ValueError } from '@sinclair/typebox/errors';
import type { FieldError } from '../core/result';
import { meta } from './constants';
import { join, suggest, typeName } from './validate';

type S = TSchema & Record<string, unknown>;

export function schemaErrors(schema: TSchema, value: unknown): FieldError[] {
  const out: FieldError[] = [];
  const seen = new Set<string>();
  const visit = (errors: Iterable<ValueError>): void => {
    for (const e of errors) {
      if (e.type === ValueErrorType.Union && !isEnum(e.schema)) {
        const i = branchOf(e.schema as S, e.value);
        if (i >= 0) {
          visit(e.errors[i]);
          continue;
        }
      }
      const path = fieldPath(e.path, value);
      if (seen.has(path)) continue;
      seen.add(path);
      out.push({ path, message: message(e, value) });
    }
  };
  visit(Errors(schema, value));
  return out;
}

/** `/spec/rules/1/bogus` -> `spec.rules[1].bogus`, indexes only where the value is a list. */
function fieldPath(pointer: string, root: unknown): string {
  let path = '';
  let cur: unknown = root;
  for (const raw of pointer.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(cur)) {
      path = join(path, Number(seg));
      cur = cur[Number(seg)];
    } else {
      path = join(path, seg);
      cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[seg] : undefined;
    }
  }
  return path;
}

function parentOf(pointer: string, root: unknown): Record<string, unknown> {
  let cur: unknown = root;
  for (const seg of pointer.split('/').slice(1, -1)) cur = (cur as Record<string, unknown>)[seg.replace(/~1/g, '/').replace(/~0/g, '~')];
  return cur as Record<string, unknown>;
}

const isEnum = (s: TSchema): boolean => s[Kind] === 'Union' && (s.anyOf as TSchema[]).every((x) => x[Kind] === 'Literal');

/** Which branch of a union takes values of this JSON type (-1: none, or more than one). */
function branchOf(s: S, v: unknown): number {
  const hits = (s.anyOf as S[]).flatMap((b, i) => (accepts(b, v) ? [i] : []));
  return hits.length === 1 ? hits[0] : -1;
}

function accepts(s: S, v: unknown): boolean {
  switch (s[Kind]) {
    case 'String':
      return typeof v === 'string';
    case 'Integer':
    case 'Number':
      return typeof v === 'number';
    case 'Boolean':
      return typeof v === 'boolean';
    case 'Literal':
      return typeof v === typeof s.const;
    case 'Array':
      return Array.isArray(v);
    case 'Object':
    case 'Record':
      return v !== null && typeof v === 'object' && !Array.isArray(v);
    case 'Union':
      return (s.anyOf as S[]).some((b) => accepts(b, v));
    default:
      return false;
  }
}

function describe(s: S): string {
  switch (s[Kind]) {
    case 'String':
      return 'a string';
    case 'Integer':
      return 'an integer';
    case 'Number':
      return 'a number';
    case 'Array':
      return 'a list';
    case 'Object':
    case 'Record':
      return 'an object';
    case 'Union':
      return (s.anyOf as S[]).map(describe).join(' or ');
    default:
      return JSON.stringify(s.const);
  }
}

const limitNote = (s: S): string => {
  const l = meta(s).limit;
  return l ? ` (limit ${l})` : '';
};

function message(e: ValueError, root: unknown): string {
  const s = e.schema as S;
  const m = meta(s);
  const v = e.value;
  const T = ValueErrorType;
  if (e.type === T.ObjectRequiredProperty || v === undefined) return m.required ?? 'is required';
  if (m.duration) {
    if (typeof v !== 'string') return `must be a duration string such as "250ms" or "2s", got ${typeName(v)}`;
    return `invalid duration ${JSON.stringify(v)}: use a number with ms, s, m or h, e.g. "250ms"`;
  }
  switch (e.type) {
    case T.ObjectAdditionalProperties: {
      const key = e.path.slice(e.path.lastIndexOf('/') + 1).replace(/~1/g, '/').replace(/~0/g, '~');
      const refused = m.refused?.[key];
      if (refused) return refused(parentOf(e.path, root));
      return `unknown field${suggest(key, Object.keys(s.properties as object))}`;
    }
    case T.Object:
      return s[Kind] === 'Record' ? `must be a map of strings, got ${typeName(v)}` : `must be an object, got ${typeName(v)}`;
    case T.ObjectMaxProperties:
      return `must have at most ${s.maxProperties as number} entries${limitNote(s)}`;
    case T.Array:
      return `must be a list, got ${typeName(v)}`;
    case T.ArrayMinItems:
      return `must have at least ${s.minItems as number} item${s.minItems === 1 ? '' : 's'}`;
    case T.ArrayMaxItems:
      return `must have at most ${s.maxItems as number} items${limitNote(s)}`;
    case T.String:
      return `must be a string, got ${typeName(v)}`;
    case T.StringMinLength:
      return 'must not be empty';
    case T.StringMaxLength:
      return `must be at most ${s.maxLength as number} characters${limitNote(s)}`;
    case T.StringPattern:
      if (m.patternMessage?.includes('{value}')) return m.patternMessage.replace('{value}', JSON.stringify(v));
      return `invalid value ${JSON.stringify(v)}: ${m.patternMessage ?? `must match ${s.pattern as string}`}`;
    case T.Boolean:
      return `must be true or false, got ${typeName(v)}`;
    case T.Integer:
      return `must be an integer, got ${typeName(v)}`;
    case T.Number:
      return `must be a number, got ${typeName(v)}`;
    case T.IntegerMinimum:
    case T.IntegerMaximum:
    case T.NumberMinimum:
    case T.NumberMaximum:
      return `must be between ${s.minimum as number} and ${s.maximum as number}, got ${String(v)}`;
    case T.Literal:
      return `must be ${JSON.stringify(s.const)}, got ${JSON.stringify(v)}`;
    case T.Union:
      if (isEnum(s)) return `must be one of ${(s.anyOf as S[]).map((x) => String(x.const)).join(', ')}; got ${JSON.stringify(v)}`;
      return `must be ${describe(s)}, got ${typeName(v)}`;
    default:
      return e.message;
  }
}

