/**
 * User-supplied regular expressions (route path, header and query-parameter matches) run on
 * request data, so they run in linear time: a pattern like `^/(a|aa)+$` must not let one request
 * stall the sidecar's event loop, as V8's backtracking engine would (each extra character doubling
 * the time). This module is the one place that decides which patterns are allowed and how they run:
 *
 * - `validateRegex(pattern)`: undefined, or why the pattern is refused. The parser calls it, so the
 *   error reaches the API's 400, `meshlet apply` and the NACK with its field path.
 * - `compileRegex(pattern)`: a full-string matcher (as Envoy's safe_regex: `/v[0-9]+` does not
 *   match `/v1/x`), built once per snapshot.
 *
 * Engine: RE2 through the `re2` package (a native addon built by node-gyp), as Envoy uses it. Its
 * per-match cost was measured against the alternatives (Node 20, `^/api/v[0-9]+/users/[a-z0-9-]+$`
 * on a 21-byte path): V8 backtracking 39 ns (not linear), re2 185 ns, V8's experimental linear
 * engine (`l` flag) 1.5 us, re2-wasm 6.4 us. `re2` is an optional dependency: where it could not be
 * built (no compiler), V8's linear engine runs the same patterns (enabled here with
 * `--enable-experimental-regexp-engine`, so no Node flag is needed on any command line).
 *
 * Accepted syntax: a JavaScript regular expression (no flags) that RE2 can run: no backreferences
 * (`\1`, `\k<name>`), no lookahead or lookbehind, counted repetitions up to {1000}. Refused as
 * well: a compiled program larger than `REGEX_MAX_PROGRAM_SIZE` (like Envoy's `max_program_size`,
 * estimated as RE2 counts it: counted repetitions are expanded), and the redundant nested
 * quantifier `(x+)+` (the same language as `x+`; the classic ReDoS form, refused so a pattern
 * written for a backtracking engine elsewhere is fixed at the source).
 */
import * as v8 from 'node:v8';

/** Largest program accepted, in RE2-like instructions (Envoy's max_program_size is of this kind). */
export const REGEX_MAX_PROGRAM_SIZE = 2000;
/** Longest pattern accepted, in characters. */
export const REGEX_MAX_LENGTH = 1024;

export interface LinearRegex {
  readonly source: string;
  /** Whether the whole string matches. */
  test(s: string): boolean;
}

type Engine = { name: 're2' | 'v8-linear'; make(anchored: string): LinearRegex };

function loadEngine(): Engine {
  try {
    const RE2 = require('re2') as new (src: string, flags?: string) => LinearRegex;
    return { name: 're2', make: (src) => new RE2(src, 'u') };
  } catch {
    v8.setFlagsFromString('--enable-experimental-regexp-engine');
    return { name: 'v8-linear', make: (src) => new RegExp(src, 'l') };
  }
}

/**
 * Loaded by the first pattern (validated or compiled), not with the module: the addon's code and
 * relocations are ~0.7 MB of resident memory that a sidecar whose policies have no regular
 * expression (most) never needs.
 */
let loaded: Engine | undefined;
const engine = (): Engine => (loaded ??= loadEngine());

/** Which engine runs the patterns: `re2`, or `v8-linear` where the addon is missing. */
export function regexEngine(): Engine['name'] {
  return engine().name;
}

/** Why `pattern` cannot be a match pattern, or undefined when it can. */
export function validateRegex(pattern: string): string | undefined {
  if (pattern.length > REGEX_MAX_LENGTH) return `regular expression longer than ${REGEX_MAX_LENGTH} characters`;
  try {
    new RegExp(pattern);
  } catch (e) {
    return `invalid regular expression: ${(e as Error).message.replace(/^Invalid regular expression: /, '')}`;
  }
  const scan = scanPattern(pattern);
  if (scan.unsupported) return `${scan.unsupported}: not supported (RE2 syntax, matched in linear time)`;
  if (scan.nested) return `nested quantifier ${JSON.stringify(scan.nested)} is redundant and a catastrophic-backtracking (ReDoS) pattern: write the inner expression once with one quantifier`;
  if (scan.size > REGEX_MAX_PROGRAM_SIZE) return `regular expression too large: program size about ${scan.size}, limit ${REGEX_MAX_PROGRAM_SIZE} (reduce counted repetitions like {n,m})`;
  try {
    engine().make(anchor(pattern));
  } catch (e) {
    return `invalid regular expression: ${(e as Error).message.replace(/^Invalid regular expression: /, '')} (RE2 syntax, matched in linear time)`;
  }
  return undefined;
}

/** A full-string matcher for a pattern `validateRegex` accepted. Throws on one it refuses. */
export function compileRegex(pattern: string): LinearRegex {
  const err = validateRegex(pattern);
  if (err !== undefined) throw new Error(err);
  return engine().make(anchor(pattern));
}

function anchor(pattern: string): string {
  return `^(?:${pattern})$`;
}

interface Scan {
  size: number;
  unsupported?: string;
  nested?: string;
}

/**
 * One pass over the pattern (already valid JavaScript): finds what RE2 cannot run, redundant
 * nested quantifiers, and estimates the program size the way RE2 builds it (an atom is about one
 * instruction, a group adds two, a quantifier one, `x{n,m}` repeats x max(n,m) times).
 */
function scanPattern(p: string): Scan {
  interface Frame {
    size: number; // the alternatives closed so far
    seq: number; // the current alternative
    last: number; // size of the last atom (what a quantifier applies to)
    lastStart: number; // where the last atom starts in the pattern
    lastQuantified: boolean; // the last atom carries an unbounded quantifier
    atoms: number; // atoms in the current alternative
    alts: number;
    start: number;
  }
  const CAP = 1e9;
  const stack: Frame[] = [];
  let f: Frame = { size: 0, seq: 0, last: 0, lastStart: 0, lastQuantified: false, atoms: 0, alts: 1, start: 0 };
  const out: Scan = { size: 0 };
  const atom = (size: number, start: number): void => {
    f.seq = Math.min(CAP, f.seq + size);
    f.last = size;
    f.lastStart = start;
    f.lastQuantified = false;
    f.atoms++;
  };
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    const start = i;
    if (c === '\\') {
      const n = p[i + 1] ?? '';
      if (/[1-9]/.test(n)) return { ...out, unsupported: `backreference \\${n}` };
      if (n === 'k' && p[i + 2] === '<') return { ...out, unsupported: 'named backreference \\k<...>' };
      i++;
      if ((n === 'p' || n === 'P') && p[i + 1] === '{') i = p.indexOf('}', i);
      else if (n === 'u' && p[i + 1] === '{') i = p.indexOf('}', i);
      else if (n === 'u') i += 4;
      else if (n === 'x') i += 2;
      else if (n === 'c') i += 1;
      atom(1, start);
    } else if (c === '[') {
      i++;
      if (p[i] === '^') i++;
      if (p[i] === ']') i++;
      while (i < p.length && p[i] !== ']') i += p[i] === '\\' ? 2 : 1;
      atom(1, start);
    } else if (c === '(') {
      if (p.startsWith('(?=', i) || p.startsWith('(?!', i)) return { ...out, unsupported: `lookahead ${p.slice(i, i + 3)}` };
      if (p.startsWith('(?<=', i) || p.startsWith('(?<!', i)) return { ...out, unsupported: `lookbehind ${p.slice(i, i + 4)}` };
      if (p.startsWith('(?:', i)) i += 2;
      else if (p.startsWith('(?<', i)) i = p.indexOf('>', i);
      stack.push(f);
      f = { size: 0, seq: 0, last: 0, lastStart: 0, lastQuantified: false, atoms: 0, alts: 1, start };
    } else if (c === ')') {
      const inner = f;
      const body = inner.size + inner.seq + 2;
      // `(x+)`: one alternative, one atom, unboundedly quantified: `(x+)+` is redundant.
      const single = inner.alts === 1 && inner.atoms === 1 && inner.lastQuantified;
      f = stack.pop() as Frame;
      atom(Math.min(CAP, body), inner.start);
      if (single && /^[*+]|^\{\d+,\}/.test(p.slice(i + 1))) {
        const q = /^([*+]|\{\d+,\})\??/.exec(p.slice(i + 1))?.[0] ?? '';
        out.nested = p.slice(inner.start, i + 1) + q;
      }
    } else if (c === '|') {
      f.size = Math.min(CAP, f.size + f.seq + 1);
      f.seq = 0;
      f.atoms = 0;
      f.alts++;
    } else if (c === '*' || c === '+' || c === '?') {
      f.seq = Math.min(CAP, f.seq + 1);
      if (c !== '?') f.lastQuantified = true;
      if (p[i + 1] === '?') i++;
    } else if (c === '{' && /^\{\d+(,\d*)?\}/.test(p.slice(i))) {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(p.slice(i)) as RegExpExecArray;
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : m[3] === '' ? min + 1 : Number(m[3]);
      const times = Math.max(min, max, 1);
      // x{n,m}: the atom n..m times in the program (it was counted once already).
      f.seq = Math.min(CAP, f.seq + f.last * (times - 1) + 1);
      if (m[3] === '') f.lastQuantified = true;
      i += m[0].length - 1;
      if (p[i + 1] === '?') i++;
    } else {
      atom(1, start);
    }
  }
  out.size = Math.min(CAP, f.size + f.seq);
  return out;
}
