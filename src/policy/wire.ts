/**
 * The wire form, derived from the one schema (schema.ts): `wireSchema()` (wire-schema.ts) gives
 * what users write (validated by the compiled checks, published as JSON Schema), `toInternal()`
 * walks the internal schema, or its generated plan (no TypeBox at run time), and turns a valid wire
 * document into the internal form (durations -> ms, renames, defaults, lower-cased names) and
 * `fromInternal()` is its inverse (what the control plane pushes, `meshlet get -o yaml`).
 * Renames are data (the `wire` and `hook` annotations); the six odd conversions are HOOKS below.
 */
import type { TSchema } from '@sinclair/typebox';
import type { FieldError } from '../core/result';
import { meta, type Meta } from './constants';
import { validateRegex } from './regex';
import { formatDuration, join, parseDuration } from './validate';

type Obj = Record<string, unknown>;
type S = TSchema & Obj;

/** TypeBox's kind of a schema node (`Symbol.for('TypeBox.Kind')`), or `~kind` in a generated plan. */
const KIND = Symbol.for('TypeBox.Kind');
export const PLAN_KIND = '~kind';
const kindOf = (s: S): unknown => (s as unknown as Record<symbol, unknown>)[KIND] ?? s[PLAN_KIND];

type Errs = FieldError[];
const isPlainObject = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * A wire document -> the internal form. Range, regex and map-key errors go to `errs`. Meant for a
 * document the schema accepted; on one it refused, it still walks what is well-typed, so that
 * those errors are reported with the schema's in one pass (the result is then thrown away).
 */
export function toInternal(schema: TSchema, v: unknown, path: string, errs: Errs): unknown {
  const s = schema as S;
  const m = meta(s);
  if (m.hook) return HOOKS[m.hook].in(v, path, errs);
  if (m.duration) {
    const ms = typeof v === 'string' ? parseDuration(v) : undefined;
    if (ms === undefined) return v;
    if (ms < m.duration.minMs) errs.push({ path, message: `must be at least ${formatDuration(m.duration.minMs)}` });
    else if (ms > m.duration.maxMs) errs.push({ path, message: `must be at most ${formatDuration(m.duration.maxMs)}` });
    return ms;
  }
  switch (kindOf(s)) {
    case 'Object': {
      if (!isPlainObject(v)) return v;
      const o = v;
      const out: Obj = {};
      for (const [k, p] of Object.entries(s.properties as Record<string, S>)) {
        const wk = meta(p).wire ?? k;
        let wv = o[wk];
        if (wv === undefined) {
          if (p.default === undefined) continue;
          if (!isPlainObject(p.default)) {
            out[k] = structuredClone(p.default);
            continue;
          }
          wv = structuredClone(p.default);
        }
        out[k] = toInternal(p, wv, join(path, wk), errs);
      }
      return out;
    }
    case 'Array':
      if (!Array.isArray(v)) return v;
      return v.map((x, i) => toInternal(s.items as TSchema, x, join(path, i), errs));
    case 'Record': {
      if (!isPlainObject(v)) return v;
      const out: Record<string, string> = {};
      for (const [k, val] of Object.entries(v as Record<string, string>)) {
        if (m.keys && !new RegExp(m.keys.pattern).test(k)) errs.push({ path: join(path, k), message: m.keys.message });
        out[m.lowerKeys ? k.toLowerCase() : k] = val;
      }
      return out;
    }
    case 'String': {
      if (typeof v !== 'string') return v;
      const str = v;
      if (m.regex) {
        const e = validateRegex(str);
        if (e !== undefined) errs.push({ path, message: e });
      }
      return m.lower ? str.toLowerCase() : str;
    }
    default:
      return v;
  }
}

/** The internal form -> the wire form (durations as strings, renames undone, defaults kept). */
export function fromInternal(schema: TSchema, v: unknown): unknown {
  const s = schema as S;
  const m = meta(s);
  if (m.hook) return HOOKS[m.hook].out(v);
  if (m.duration) return formatDuration(v as number);
  switch (kindOf(s)) {
    case 'Object': {
      const o = v as Obj;
      const out: Obj = {};
      for (const [k, p] of Object.entries(s.properties as Record<string, S>)) if (o[k] !== undefined) out[meta(p).wire ?? k] = fromInternal(p, o[k]);
      return out;
    }
    case 'Array':
      return (v as unknown[]).map((x) => fromInternal(s.items as TSchema, x));
    case 'Record':
      return { ...(v as Obj) };
    default:
      return v;
  }
}

const HOOKS: Record<NonNullable<Meta['hook']>, { in: (v: unknown, path: string, errs: Errs) => unknown; out: (v: unknown) => unknown }> = {
  method: {
    in: (v) => (Array.isArray(v) ? [...(v as string[])] : [v as string]),
    out: (v) => ((v as string[]).length === 1 ? (v as string[])[0] : [...(v as string[])]),
  },
  tracing: { in: (v) => (isPlainObject(v) ? v.samplingPercent : v), out: (v) => ({ samplingPercent: v }) },
  retryOn: {
    in: (v) => (typeof v === 'string' ? v.split(',').map((x) => x.trim()) : [...(v as string[])]),
    out: (v) => [...(v as string[])],
  },
  descriptor: {
    in: (v, path, errs) =>
      (Array.isArray(v) ? v : []).flatMap((d: unknown, i) => {
        if (typeof d === 'string') return [{ key: d }];
        if (!isPlainObject(d)) return [];
        const o = d;
        if ((o.key === undefined) === (o.header === undefined)) {
          errs.push({ path: join(path, i), message: 'set exactly one of key, header' });
          return [];
        }
        return [o.key !== undefined ? { key: o.key } : { header: String(o.header).toLowerCase() }];
      }),
    out: (v) => (v as Obj[]).map((d) => (d.key !== undefined ? d.key : { header: d.header })),
  },
  resourceVersion: { in: (v) => String(v), out: (v) => v },
  // API keys: a hash, or {hash, expiresAt}; inside always the object. Out: the hash alone when it
  // never expires, so documents written before expiry existed read back unchanged.
  apiKeys: {
    in: (v, path, errs) =>
      (Array.isArray(v) ? v : []).flatMap((k: unknown, i) => {
        if (typeof k === 'string') return [{ hash: k }];
        if (!isPlainObject(k)) return [];
        if (k.expiresAt === undefined) return [{ hash: k.hash }];
        if (typeof k.expiresAt === 'string' && Number.isNaN(Date.parse(k.expiresAt))) errs.push({ path: join(join(path, i), 'expiresAt'), message: `is not a real time: ${JSON.stringify(k.expiresAt)}` });
        return [{ hash: k.hash, expiresAt: k.expiresAt }];
      }),
    out: (v) => (v as Obj[]).map((k) => (k.expiresAt === undefined ? k.hash : { hash: k.hash, expiresAt: k.expiresAt })),
  },
};
