/**
 * The protobuf JSON mapping (https://protobuf.dev/programming-guides/json/), on protobufjs
 * reflection objects built once per snapshot:
 *
 * - `jsonToMessage`: JSON (already parsed) -> encoded protobuf bytes. Field names in their JSON
 *   (lowerCamelCase or json_name) or original form; int64 as strings or numbers; enums by name or
 *   number; bytes as base64; the well-known types (Timestamp, Duration, Struct/Value/ListValue,
 *   wrappers, FieldMask, Empty, Any). Unknown fields and wrong types throw a JsonMappingError that
 *   names the field path.
 * - `messageToJson`: protobuf bytes -> a JSON value, with the same rules (int64 as strings, enums
 *   by name, JSON names), default values omitted unless `emitDefaults`.
 */
import * as protobuf from 'protobufjs';
import { JsonMappingError } from './errors';

export { JsonMappingError };

/** A value that came from the URL (path variable or query parameter): text for any scalar. */
export class UrlText {
  constructor(readonly text: string) {}
}

interface FieldIndex {
  byName: Map<string, protobuf.Field>;
}

const indexes = new WeakMap<protobuf.Type, FieldIndex>();

export function jsonName(f: protobuf.Field): string {
  const o = f.options?.json_name;
  return typeof o === 'string' ? o : f.name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Both the JSON name and the original name of every field. */
export function fieldIndex(t: protobuf.Type): FieldIndex {
  let ix = indexes.get(t);
  if (!ix) {
    const byName = new Map<string, protobuf.Field>();
    for (const f of t.fieldsArray) {
      f.resolve();
      byName.set(f.name, f);
      byName.set(jsonName(f), f);
      // protobufjs's bundled well-known types name their fields in camelCase; accept the proto names too.
      const snake = f.name.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
      if (!byName.has(snake)) byName.set(snake, f);
    }
    ix = { byName };
    indexes.set(t, ix);
  }
  return ix;
}

export function lookupField(t: protobuf.Type, name: string): protobuf.Field | undefined {
  return fieldIndex(t).byName.get(name);
}

// --------------------------------------------------------------------------------- JSON -> proto

export function jsonToMessage(t: protobuf.Type, json: unknown): Uint8Array {
  const obj = toMessageObject(t, json, '');
  return t.encode(t.fromObject(obj)).finish();
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof UrlText) return JSON.stringify(v.text);
  if (typeof v === 'object') return 'an object';
  return JSON.stringify(v);
}

function at(path: string, key: string | number): string {
  return typeof key === 'number' ? `${path}[${key}]` : path ? `${path}.${key}` : key;
}

function toMessageObject(t: protobuf.Type, v: unknown, path: string): Record<string, unknown> {
  const wkt = WKT_FROM_JSON[t.fullName];
  if (wkt) return wkt(t, v, path);
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof UrlText)
    throw new JsonMappingError(path, `expected an object for ${t.fullName.slice(1)}, got ${describe(v)}`);
  const ix = fieldIndex(t);
  const out: Record<string, unknown> = {};
  const oneofs = new Map<string, string>();
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    const f = ix.byName.get(k);
    const p = at(path, k);
    if (!f) throw new JsonMappingError(p, `unknown field (${t.fullName.slice(1)} has ${t.fieldsArray.map(jsonName).join(', ') || 'no fields'})`);
    if (f.name in out) throw new JsonMappingError(p, `field ${f.name} set twice (as ${JSON.stringify(jsonName(f))} and ${JSON.stringify(f.name)})`);
    if (val === null && !(f.resolvedType instanceof protobuf.Type && f.resolvedType.fullName === '.google.protobuf.Value')) continue;
    if (f.partOf && !f.partOf.name.startsWith('_')) {
      const prev = oneofs.get(f.partOf.name);
      if (prev) throw new JsonMappingError(p, `only one of oneof ${f.partOf.name} may be set (also ${prev})`);
      oneofs.set(f.partOf.name, k);
    }
    out[f.name] = fieldValue(f, val, p);
  }
  return out;
}

function fieldValue(f: protobuf.Field, v: unknown, path: string): unknown {
  if (f.map) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new JsonMappingError(path, `expected an object (map), got ${describe(v)}`);
    const mf = f as unknown as protobuf.MapField;
    const out: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      const p = at(path, k);
      const key = mapKey(mf.keyType, k, p);
      if (val === null) throw new JsonMappingError(p, 'map values must not be null');
      out[key] = singular(f, val, p);
    }
    return out;
  }
  if (f.repeated) {
    const list = v instanceof UrlText ? [v] : v;
    if (!Array.isArray(list)) throw new JsonMappingError(path, `expected an array, got ${describe(v)}`);
    return list.map((x, i) => {
      if (x === null) throw new JsonMappingError(at(path, i), 'array elements must not be null');
      return singular(f, x, at(path, i));
    });
  }
  return singular(f, v, path);
}

function mapKey(keyType: string, k: string, path: string): string {
  switch (keyType) {
    case 'string':
      return k;
    case 'bool':
      if (k !== 'true' && k !== 'false') throw new JsonMappingError(path, 'map key must be "true" or "false"');
      return k;
    default:
      scalar(keyType, new UrlText(k), path);
      return k;
  }
}

function singular(f: protobuf.Field, v: unknown, path: string): unknown {
  const rt = f.resolvedType;
  if (rt instanceof protobuf.Type) return toMessageObject(rt, v, path);
  if (rt instanceof protobuf.Enum) return enumValue(rt, v, path);
  return scalar(f.type, v, path);
}

function enumValue(e: protobuf.Enum, v: unknown, path: string): number {
  if (e.fullName === '.google.protobuf.NullValue' && v === null) return 0;
  const text = v instanceof UrlText ? v.text : v;
  if (typeof text === 'string') {
    const n = e.values[text];
    if (n !== undefined) return n;
    if (v instanceof UrlText && /^-?\d+$/.test(text)) return Number(text);
    throw new JsonMappingError(path, `unknown value ${JSON.stringify(text)} for enum ${e.fullName.slice(1)} (one of ${Object.keys(e.values).join(', ')})`);
  }
  if (typeof text === 'number' && Number.isInteger(text) && text >= -2147483648 && text <= 2147483647) return text;
  throw new JsonMappingError(path, `expected an enum name or number for ${e.fullName.slice(1)}, got ${describe(v)}`);
}

const INT_RANGE: Record<string, [bigint, bigint]> = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  sint32: [-(2n ** 31n), 2n ** 31n - 1n],
  sfixed32: [-(2n ** 31n), 2n ** 31n - 1n],
  uint32: [0n, 2n ** 32n - 1n],
  fixed32: [0n, 2n ** 32n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  sint64: [-(2n ** 63n), 2n ** 63n - 1n],
  sfixed64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
  fixed64: [0n, 2n ** 64n - 1n],
};

function scalar(type: string, v: unknown, path: string): unknown {
  const fromUrl = v instanceof UrlText;
  const raw = fromUrl ? (v as UrlText).text : v;
  switch (type) {
    case 'string':
      if (typeof raw !== 'string') throw new JsonMappingError(path, `expected a string, got ${describe(v)}`);
      return raw;
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      if (fromUrl && (raw === 'true' || raw === 'false')) return raw === 'true';
      throw new JsonMappingError(path, `expected true or false, got ${describe(v)}`);
    case 'bytes': {
      if (typeof raw !== 'string' || !/^[A-Za-z0-9+/\-_]*={0,2}$/.test(raw)) throw new JsonMappingError(path, `expected base64 bytes, got ${describe(v)}`);
      return Buffer.from(raw.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    }
    case 'double':
    case 'float': {
      if (typeof raw === 'number') return raw;
      if (raw === 'NaN') return NaN;
      if (raw === 'Infinity') return Infinity;
      if (raw === '-Infinity') return -Infinity;
      if (typeof raw === 'string' && raw.trim() !== '' && Number.isFinite(Number(raw))) return Number(raw);
      throw new JsonMappingError(path, `expected a number, got ${describe(v)}`);
    }
    default: {
      const range = INT_RANGE[type];
      if (!range) throw new JsonMappingError(path, `unsupported field type ${type}`);
      let n: bigint;
      if (typeof raw === 'number') {
        if (!Number.isInteger(raw)) throw new JsonMappingError(path, `expected an integer, got ${describe(v)}`);
        if (!Number.isSafeInteger(raw) && type.endsWith('64')) throw new JsonMappingError(path, `${raw} is not exact as a JSON number: send 64-bit integers as strings`);
        n = BigInt(raw);
      } else if (typeof raw === 'string' && /^-?\d+$/.test(raw.trim())) {
        n = BigInt(raw.trim());
      } else if (typeof raw === 'string' && /^-?\d+(\.0+)?(e\d+)?$/i.test(raw.trim()) && Number.isInteger(Number(raw))) {
        n = BigInt(Number(raw));
      } else throw new JsonMappingError(path, `expected an integer${type.endsWith('64') ? ' (a number or a decimal string)' : ''}, got ${describe(v)}`);
      if (n < range[0] || n > range[1]) throw new JsonMappingError(path, `${n} is out of range for ${type}`);
      return type.endsWith('64') ? n.toString() : Number(n);
    }
  }
}

// ------------------------------------------------------------------ well-known types, JSON -> proto

type FromJson = (t: protobuf.Type, v: unknown, path: string) => Record<string, unknown>;

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;
const MIN_SECONDS = -62135596800; // 0001-01-01T00:00:00Z
const MAX_SECONDS = 253402300799; // 9999-12-31T23:59:59Z

/** The actual name of a well-known type's field (snake_case or camelCase, as loaded). */
function fn(t: protobuf.Type, protoName: string): string {
  return (lookupField(t, protoName) as protobuf.Field).name;
}

function sub(t: protobuf.Type, protoName: string): protobuf.Type {
  const f = lookupField(t, protoName) as protobuf.Field;
  f.resolve();
  return f.resolvedType as protobuf.Type;
}

/** Reads a field of a toObject() result by its proto name, whichever form it was loaded in. */
function get(o: Record<string, unknown>, protoName: string): unknown {
  const v = o[protoName];
  return v !== undefined ? v : o[protoName.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())];
}

function text(v: unknown): unknown {
  return v instanceof UrlText ? v.text : v;
}

function wrapper(type: string): FromJson {
  return (_t, v, path) => ({ value: scalar(type, v, path) });
}

const WKT_FROM_JSON: Record<string, FromJson> = {
  '.google.protobuf.Timestamp': (_t, v, path) => {
    const s = text(v);
    const m = typeof s === 'string' ? RFC3339.exec(s) : null;
    if (!m) throw new JsonMappingError(path, `expected an RFC 3339 timestamp such as "2024-01-31T12:00:00Z", got ${describe(v)}`);
    const [, y, mo, d, h, mi, se, frac, off] = m as unknown as string[];
    const date = new Date(0);
    date.setUTCFullYear(Number(y), Number(mo) - 1, Number(d)); // unlike Date.UTC, years 0-99 stay as they are
    date.setUTCHours(Number(h), Number(mi), Number(se), 0);
    if (date.getUTCDate() !== Number(d) || date.getUTCMonth() !== Number(mo) - 1 || Number(h) > 23 || Number(mi) > 59 || Number(se) > 59)
      throw new JsonMappingError(path, `invalid date or time in ${JSON.stringify(s)}`);
    let seconds = Math.floor(date.getTime() / 1000);
    if (off && off.toUpperCase() !== 'Z') {
      const sign = off[0] === '-' ? -1 : 1;
      seconds -= sign * (Number(off.slice(1, 3)) * 3600 + Number(off.slice(4, 6)) * 60);
    }
    if (seconds < MIN_SECONDS || seconds > MAX_SECONDS) throw new JsonMappingError(path, 'timestamp out of range (years 0001 to 9999)');
    const nanos = frac ? Number(frac.padEnd(9, '0')) : 0;
    return { seconds: String(seconds), nanos };
  },
  '.google.protobuf.Duration': (_t, v, path) => {
    const s = text(v);
    const m = typeof s === 'string' ? /^(-)?(\d{1,12})(?:\.(\d{1,9}))?s$/.exec(s) : null;
    if (!m) throw new JsonMappingError(path, `expected a duration such as "1.5s", got ${describe(v)}`);
    const neg = m[1] === '-';
    const secs = Number(m[2]);
    if (secs > 315576000000) throw new JsonMappingError(path, 'duration out of range');
    const nanos = m[3] ? Number(m[3].padEnd(9, '0')) : 0;
    return { seconds: String(neg ? -secs : secs), nanos: neg ? -nanos : nanos };
  },
  '.google.protobuf.FieldMask': (_t, v, path) => {
    const s = text(v);
    if (typeof s !== 'string') throw new JsonMappingError(path, `expected a field mask string such as "name,author.displayName", got ${describe(v)}`);
    const paths = s === '' ? [] : s.split(',').map((p) => p.trim().split('.').map((x) => x.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase())).join('.'));
    return { paths };
  },
  '.google.protobuf.Struct': (t, v, path) => structFromJson(t, v, path),
  '.google.protobuf.Value': (t, v, path) => valueFromJson(t, v, path),
  '.google.protobuf.ListValue': (t, v, path) => listFromJson(t, v, path),
  '.google.protobuf.DoubleValue': wrapper('double'),
  '.google.protobuf.FloatValue': wrapper('float'),
  '.google.protobuf.Int64Value': wrapper('int64'),
  '.google.protobuf.UInt64Value': wrapper('uint64'),
  '.google.protobuf.Int32Value': wrapper('int32'),
  '.google.protobuf.UInt32Value': wrapper('uint32'),
  '.google.protobuf.BoolValue': wrapper('bool'),
  '.google.protobuf.StringValue': wrapper('string'),
  '.google.protobuf.BytesValue': wrapper('bytes'),
  '.google.protobuf.Any': (t, v, path) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof UrlText) throw new JsonMappingError(path, `expected an object with "@type", got ${describe(v)}`);
    const { '@type': url, ...rest } = v as Record<string, unknown>;
    if (typeof url !== 'string') throw new JsonMappingError(at(path, '@type'), 'is required for google.protobuf.Any');
    const inner = lookupAnyType(t, url, at(path, '@type'));
    const body = WKT_FROM_JSON[inner.fullName] ? (rest as { value?: unknown }).value : rest;
    const obj = toMessageObject(inner, body, path);
    return { [fn(t, 'type_url')]: url, value: inner.encode(inner.fromObject(obj)).finish() };
  },
};

function lookupAnyType(t: protobuf.Type, url: string, path: string): protobuf.Type {
  const name = url.slice(url.lastIndexOf('/') + 1);
  try {
    return t.root.lookupType(name);
  } catch {
    throw new JsonMappingError(path, `unknown type ${JSON.stringify(url)}`);
  }
}

function structFromJson(st: protobuf.Type, v: unknown, path: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof UrlText) throw new JsonMappingError(path, `expected an object, got ${describe(v)}`);
  const vt = sub(st, 'fields');
  const fields: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) fields[k] = valueFromJson(vt, x, at(path, k));
  return { fields };
}

function listFromJson(lt: protobuf.Type, v: unknown, path: string): Record<string, unknown> {
  if (!Array.isArray(v)) throw new JsonMappingError(path, `expected an array, got ${describe(v)}`);
  const vt = sub(lt, 'values');
  return { values: v.map((x, i) => valueFromJson(vt, x, at(path, i))) };
}

function valueFromJson(vt: protobuf.Type, v: unknown, path: string): Record<string, unknown> {
  if (v instanceof UrlText) return { [fn(vt, 'string_value')]: v.text };
  if (v === null) return { [fn(vt, 'null_value')]: 0 };
  if (typeof v === 'number') return { [fn(vt, 'number_value')]: v };
  if (typeof v === 'string') return { [fn(vt, 'string_value')]: v };
  if (typeof v === 'boolean') return { [fn(vt, 'bool_value')]: v };
  if (Array.isArray(v)) return { [fn(vt, 'list_value')]: listFromJson(sub(vt, 'list_value'), v, path) };
  return { [fn(vt, 'struct_value')]: structFromJson(sub(vt, 'struct_value'), v, path) };
}

// --------------------------------------------------------------------------------- proto -> JSON

export interface ToJsonOptions {
  /** Print fields at their default value (proto3 scalars, empty repeated/map) too. */
  emitDefaults?: boolean;
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, bytes: String, json: true, defaults: false };
const TO_OBJECT_DEFAULTS: protobuf.IConversionOptions = { ...TO_OBJECT, defaults: true, arrays: true, objects: true };

export function messageToJson(t: protobuf.Type, bytes: Uint8Array, opts: ToJsonOptions = {}): unknown {
  const msg = t.decode(bytes);
  return objectToJson(t, t.toObject(msg, opts.emitDefaults ? TO_OBJECT_DEFAULTS : TO_OBJECT), opts);
}

function objectToJson(t: protobuf.Type, o: Record<string, unknown>, opts: ToJsonOptions): unknown {
  const wkt = WKT_TO_JSON[t.fullName];
  if (wkt) return wkt(t, o, opts);
  const out: Record<string, unknown> = {};
  for (const f of t.fieldsArray) {
    const v = o[f.name];
    if (v === undefined || v === null) continue;
    // proto3 optional and message fields are only present when set; defaults apply to the rest.
    if (f.map) {
      const m: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) m[k] = valueToJson(f, x, opts);
      out[jsonName(f)] = m;
    } else if (f.repeated) out[jsonName(f)] = (v as unknown[]).map((x) => valueToJson(f, x, opts));
    else out[jsonName(f)] = valueToJson(f, v, opts);
  }
  return out;
}

function valueToJson(f: protobuf.Field, v: unknown, opts: ToJsonOptions): unknown {
  const rt = f.resolvedType;
  if (rt instanceof protobuf.Type) return objectToJson(rt, v as Record<string, unknown>, opts);
  if (rt instanceof protobuf.Enum && rt.fullName === '.google.protobuf.NullValue') return null;
  return v;
}

type ToJson = (t: protobuf.Type, o: Record<string, unknown>, opts: ToJsonOptions) => unknown;

function unwrap(def: unknown): ToJson {
  return (_t, o) => (o.value === undefined ? def : o.value);
}

function nanosText(nanos: number): string {
  if (nanos === 0) return '';
  const s = String(Math.abs(nanos)).padStart(9, '0');
  if (s.endsWith('000000')) return '.' + s.slice(0, 3);
  if (s.endsWith('000')) return '.' + s.slice(0, 6);
  return '.' + s;
}

const WKT_TO_JSON: Record<string, ToJson> = {
  '.google.protobuf.Timestamp': (_t, o) => {
    const seconds = Number(o.seconds ?? 0);
    const nanos = Number(o.nanos ?? 0);
    const iso = new Date(seconds * 1000).toISOString(); // yyyy-mm-ddThh:mm:ss.000Z
    return iso.slice(0, 19) + nanosText(nanos) + 'Z';
  },
  '.google.protobuf.Duration': (_t, o) => {
    const seconds = BigInt(String(o.seconds ?? '0'));
    const nanos = Number(o.nanos ?? 0);
    const neg = seconds < 0n || nanos < 0;
    const abs = seconds < 0n ? -seconds : seconds;
    return `${neg ? '-' : ''}${abs}${nanosText(nanos)}s`;
  },
  '.google.protobuf.FieldMask': (_t, o) =>
    ((o.paths as string[] | undefined) ?? []).map((p) => p.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())).join(','),
  '.google.protobuf.Struct': (_t, o) => structToJson(o),
  '.google.protobuf.Value': (_t, o) => valueToJsonWkt(o),
  '.google.protobuf.ListValue': (_t, o) => ((o.values as Record<string, unknown>[] | undefined) ?? []).map(valueToJsonWkt),
  '.google.protobuf.DoubleValue': unwrap(0),
  '.google.protobuf.FloatValue': unwrap(0),
  '.google.protobuf.Int64Value': unwrap('0'),
  '.google.protobuf.UInt64Value': unwrap('0'),
  '.google.protobuf.Int32Value': unwrap(0),
  '.google.protobuf.UInt32Value': unwrap(0),
  '.google.protobuf.BoolValue': unwrap(false),
  '.google.protobuf.StringValue': unwrap(''),
  '.google.protobuf.BytesValue': unwrap(''),
  '.google.protobuf.Empty': () => ({}),
  '.google.protobuf.Any': (t, o, opts) => {
    // protobufjs's own Any wrapper has already expanded a known type (json: true).
    if (typeof o['@type'] === 'string') return o;
    const url = String(get(o, 'type_url') ?? '');
    if (!url) return {};
    const inner = lookupAnyType(t, url, '@type');
    const bytes = Buffer.from(String(o.value ?? ''), 'base64');
    const json = messageToJson(inner, bytes, opts);
    return WKT_TO_JSON[inner.fullName] ? { '@type': url, value: json } : { '@type': url, ...(json as object) };
  },
};

function structToJson(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries((o.fields as Record<string, Record<string, unknown>> | undefined) ?? {})) out[k] = valueToJsonWkt(v);
  return out;
}

function valueToJsonWkt(o: Record<string, unknown>): unknown {
  if (get(o, 'null_value') !== undefined) return null;
  const n = get(o, 'number_value');
  if (n !== undefined) return n;
  const s = get(o, 'string_value');
  if (s !== undefined) return s;
  const b = get(o, 'bool_value');
  if (b !== undefined) return b;
  const st = get(o, 'struct_value');
  if (st !== undefined) return structToJson(st as Record<string, unknown>);
  const l = get(o, 'list_value') as Record<string, unknown> | undefined;
  if (l !== undefined) return ((l.values as Record<string, unknown>[] | undefined) ?? []).map(valueToJsonWkt);
  return null;
}
