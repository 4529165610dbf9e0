/**
 * Small field-path validators shared by the edge modules' `compile*` functions, so a bad config
 * is refused with `spec.jwt.issuers[0].jwksUri: must be an http(s) URL`-style errors (the same
 * FieldError shape the policy parser, the API and NACKs use). Config is compiled once per
 * snapshot; nothing here runs per request.
 */
import type { FieldError } from '../core/result';

export class Checker {
  readonly errors: FieldError[] = [];

  err(path: string, message: string): void {
    this.errors.push({ path, message });
  }

  obj(v: unknown, path: string): Record<string, unknown> | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      this.err(path, 'must be an object');
      return undefined;
    }
    return v as Record<string, unknown>;
  }

  /** Unknown fields are refused: a typo must not silently turn a protection off. */
  known(o: Record<string, unknown>, path: string, fields: readonly string[]): void {
    for (const k of Object.keys(o)) if (!fields.includes(k)) this.err(join(path, k), 'unknown field');
  }

  str(v: unknown, path: string, opts: { optional?: boolean; nonEmpty?: boolean } = {}): string | undefined {
    if (v === undefined && opts.optional) return undefined;
    if (typeof v !== 'string' || (opts.nonEmpty !== false && v.length === 0)) {
      this.err(path, v === undefined ? 'is required' : 'must be a non-empty string');
      return undefined;
    }
    return v;
  }

  bool(v: unknown, path: string, dflt: boolean): boolean {
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') {
      this.err(path, 'must be true or false');
      return dflt;
    }
    return v;
  }

  int(v: unknown, path: string, dflt: number, min: number, max: number): number {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.err(path, `must be an integer from ${min} to ${max}`);
      return dflt;
    }
    return v;
  }

  strList(v: unknown, path: string, opts: { optional?: boolean; min?: number } = {}): string[] {
    if (v === undefined && opts.optional !== false) {
      if ((opts.min ?? 0) > 0) this.err(path, 'is required');
      return [];
    }
    if (!Array.isArray(v)) {
      this.err(path, 'must be a list of strings');
      return [];
    }
    if (v.length < (opts.min ?? 0)) this.err(path, `must have at least ${opts.min} item(s)`);
    const out: string[] = [];
    v.forEach((x, i) => {
      if (typeof x !== 'string' || x.length === 0) this.err(`${path}[${i}]`, 'must be a non-empty string');
      else out.push(x);
    });
    return out;
  }

  list(v: unknown, path: string, opts: { min?: number; max?: number } = {}): unknown[] {
    if (v === undefined) {
      if ((opts.min ?? 0) > 0) this.err(path, 'is required');
      return [];
    }
    if (!Array.isArray(v)) {
      this.err(path, 'must be a list');
      return [];
    }
    if (v.length < (opts.min ?? 0)) this.err(path, `must have at least ${opts.min} item(s)`);
    if (opts.max !== undefined && v.length > opts.max) this.err(path, `must have at most ${opts.max} items`);
    return v;
  }
}

export function join(path: string, field: string): string {
  return path ? `${path}.${field}` : field;
}

/** RFC 9110 token characters: what a header name may be made of. */
export const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** A request header value as Node gives it. */
export type HeaderValue = string | string[] | undefined;
export type Headers = Record<string, HeaderValue>;

export function firstHeader(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}
