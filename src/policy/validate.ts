/**
 * A small validation toolkit for the policy parser: every check records a field-path error and
 * returns undefined instead of throwing, so one pass reports every problem in a document.
 */
import type { FieldError } from '../core/result';
import { validateRegex } from './regex';

export type Obj = Record<string, unknown>;

export class Checker {
  readonly errors: FieldError[] = [];

  error(path: string, message: string): undefined {
    this.errors.push({ path, message });
    return undefined;
  }

  /** The value must be a plain object whose keys are all in `allowed`. */
  object(v: unknown, path: string, allowed: readonly string[]): Obj | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return this.error(path, `must be an object, got ${typeName(v)}`);
    const o = v as Obj;
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k)) this.error(join(path, k), `unknown field${suggest(k, allowed)}`);
    }
    return o;
  }

  /** An object used as a map (any keys), with string values. */
  stringMap(v: unknown, path: string, keyCheck?: (k: string, p: string) => void): Record<string, string> | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return this.error(path, `must be a map of strings, got ${typeName(v)}`);
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(v as Obj)) {
      const p = join(path, k);
      if (typeof val !== 'string') this.error(p, `must be a string, got ${typeName(val)}`);
      else {
        keyCheck?.(k, p);
        out[k] = val;
      }
    }
    return out;
  }

  array(v: unknown, path: string, opts: { min?: number; max?: number } = {}): unknown[] | undefined {
    if (!Array.isArray(v)) return this.error(path, `must be a list, got ${typeName(v)}`);
    if (opts.min !== undefined && v.length < opts.min) return this.error(path, `must have at least ${opts.min} item${opts.min === 1 ? '' : 's'}`);
    if (opts.max !== undefined && v.length > opts.max) return this.error(path, `must have at most ${opts.max} items`);
    return v;
  }

  string(v: unknown, path: string, opts: { nonEmpty?: boolean; pattern?: RegExp; patternText?: string; maxLength?: number } = {}): string | undefined {
    if (typeof v !== 'string') return this.error(path, `must be a string, got ${typeName(v)}`);
    if ((opts.nonEmpty ?? true) && v.length === 0) return this.error(path, 'must not be empty');
    if (opts.maxLength !== undefined && v.length > opts.maxLength) return this.error(path, `must be at most ${opts.maxLength} characters`);
    if (opts.pattern && !opts.pattern.test(v)) return this.error(path, `invalid value ${JSON.stringify(v)}: ${opts.patternText ?? `must match ${opts.pattern}`}`);
    return v;
  }

  oneOf<T extends string>(v: unknown, path: string, values: readonly T[]): T | undefined {
    if (typeof v !== 'string' || !values.includes(v as T)) {
      return this.error(path, `must be one of ${values.join(', ')}; got ${JSON.stringify(v)}`);
    }
    return v as T;
  }

  boolean(v: unknown, path: string): boolean | undefined {
    if (typeof v !== 'boolean') return this.error(path, `must be true or false, got ${typeName(v)}`);
    return v;
  }

  integer(v: unknown, path: string, min: number, max: number): number | undefined {
    if (typeof v !== 'number' || !Number.isInteger(v)) return this.error(path, `must be an integer, got ${typeName(v)}`);
    if (v < min || v > max) return this.error(path, `must be between ${min} and ${max}, got ${v}`);
    return v;
  }

  number(v: unknown, path: string, min: number, max: number): number | undefined {
    if (typeof v !== 'number' || !Number.isFinite(v)) return this.error(path, `must be a number, got ${typeName(v)}`);
    if (v < min || v > max) return this.error(path, `must be between ${min} and ${max}, got ${v}`);
    return v;
  }

  /** A duration such as "250ms", "1.5s", "2m", "1h" → milliseconds. */
  duration(v: unknown, path: string, opts: { minMs?: number; maxMs?: number } = {}): number | undefined {
    if (typeof v !== 'string') return this.error(path, `must be a duration string such as "250ms" or "2s", got ${typeName(v)}`);
    const ms = parseDuration(v);
    if (ms === undefined) return this.error(path, `invalid duration ${JSON.stringify(v)}: use a number with ms, s, m or h, e.g. "250ms"`);
    const min = opts.minMs ?? 1;
    const max = opts.maxMs ?? 24 * 3600_000;
    if (ms < min) return this.error(path, `must be at least ${formatDuration(min)}`);
    if (ms > max) return this.error(path, `must be at most ${formatDuration(max)}`);
    return ms;
  }

  regex(v: unknown, path: string): string | undefined {
    const s = this.string(v, path);
    if (s === undefined) return undefined;
    const err = validateRegex(s);
    if (err !== undefined) return this.error(path, err);
    return s;
  }

  required(o: Obj, key: string, path: string): unknown {
    if (o[key] === undefined) {
      this.error(join(path, key), 'is required');
      return undefined;
    }
    return o[key];
  }
}

export function join(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  if (!/^[A-Za-z_$][\w$-]*$/.test(key)) return `${path}[${JSON.stringify(key)}]`;
  return path ? `${path}.${key}` : key;
}

export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return `a string (${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)})`;
  return `${typeof v} ${String(v)}`;
}

export function suggest(k: string, allowed: readonly string[]): string {
  const lower = k.toLowerCase();
  const near = allowed.find((a) => a.toLowerCase() === lower || distance(a.toLowerCase(), lower) <= 2);
  return near ? ` (did you mean "${near}"?)` : `; allowed: ${allowed.join(', ')}`;
}

function distance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  const dp = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) dp[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      dp[i][j] = Math.min(dp[i - 1][j] + 1, dp[i][j - 1] + 1, dp[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return dp[a.length][b.length];
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(s.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * UNITS[m[2]];
  return Number.isFinite(ms) ? Math.round(ms * 1000) / 1000 : undefined;
}

/** The inverse of parseDuration, choosing the largest unit that divides evenly. */
export function formatDuration(ms: number): string {
  if (ms >= 3_600_000 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1000 && ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
