/**
 * google.api.http path templates, compiled once per snapshot:
 *
 *     Template = "/" Segments [ Verb ] ;
 *     Segments = Segment { "/" Segment } ;
 *     Segment  = "*" | "**" | LITERAL | Variable ;
 *     Variable = "{" FieldPath [ "=" Segments ] "}" ;
 *     FieldPath = IDENT { "." IDENT } ;
 *     Verb     = ":" LITERAL ;
 *
 * `{name}` is `{name=*}`. A variable matching one segment gets its value percent-decoded; one
 * matching several (`{name=shelves/*\/books/*}`, `**`) keeps `/` between segments and decodes
 * each segment, as the HttpRule documentation specifies for multi-segment expansion.
 */

export type Segment = { kind: 'literal'; value: string } | { kind: 'any' } | { kind: 'rest' };

export interface TemplateVariable {
  /** Field path, e.g. ['book', 'name']. */
  fieldPath: readonly string[];
  /** Index of the first segment it covers and one past the last. */
  start: number;
  end: number;
}

export interface PathTemplate {
  source: string;
  segments: readonly Segment[];
  variables: readonly TemplateVariable[];
  verb?: string;
  /** Literal segments count, used to prefer the most specific template. */
  literals: number;
  hasRest: boolean;
}

export class TemplateError extends Error {
  constructor(template: string, reason: string) {
    super(`invalid path template ${JSON.stringify(template)}: ${reason}`);
    this.name = 'TemplateError';
  }
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LITERAL = /^[A-Za-z0-9\-._~!$&'()+,;=@%]+$/;

export function parseTemplate(src: string): PathTemplate {
  if (!src.startsWith('/')) throw new TemplateError(src, 'must start with "/"');
  let body = src.slice(1);
  let verb: string | undefined;
  // The verb is a ':' after the last '/' and outside braces.
  const lastSlash = body.lastIndexOf('/');
  const lastBrace = body.lastIndexOf('}');
  const colon = body.indexOf(':', Math.max(lastSlash, lastBrace) + 1);
  if (colon >= 0) {
    verb = body.slice(colon + 1);
    body = body.slice(0, colon);
    if (!LITERAL.test(verb)) throw new TemplateError(src, `invalid verb ${JSON.stringify(verb)}`);
  }
  if (body === '') throw new TemplateError(src, 'needs at least one segment');
  const segments: Segment[] = [];
  const variables: TemplateVariable[] = [];
  const seen = new Set<string>();
  let i = 0;
  const parseSegment = (raw: string): Segment => {
    if (raw === '*') return { kind: 'any' };
    if (raw === '**') return { kind: 'rest' };
    if (raw === '' || !LITERAL.test(raw)) throw new TemplateError(src, `invalid segment ${JSON.stringify(raw)}`);
    return { kind: 'literal', value: raw };
  };
  while (i < body.length) {
    if (body[i] === '{') {
      const close = body.indexOf('}', i);
      if (close < 0) throw new TemplateError(src, 'unclosed "{"');
      const inner = body.slice(i + 1, close);
      if (inner.includes('{')) throw new TemplateError(src, 'nested variables are not allowed');
      const eq = inner.indexOf('=');
      const fp = eq < 0 ? inner : inner.slice(0, eq);
      const fieldPath = fp.split('.');
      if (!fieldPath.every((p) => IDENT.test(p))) throw new TemplateError(src, `invalid field path ${JSON.stringify(fp)}`);
      if (seen.has(fp)) throw new TemplateError(src, `field ${JSON.stringify(fp)} appears twice`);
      seen.add(fp);
      const start = segments.length;
      const sub = eq < 0 ? '*' : inner.slice(eq + 1);
      if (sub === '') throw new TemplateError(src, `empty pattern for ${JSON.stringify(fp)}`);
      for (const s of sub.split('/')) segments.push(parseSegment(s));
      variables.push({ fieldPath, start, end: segments.length });
      i = close + 1;
    } else {
      let j = body.indexOf('/', i);
      if (j < 0) j = body.length;
      const raw = body.slice(i, j);
      if (raw.includes('{') || raw.includes('}')) throw new TemplateError(src, `a variable must be a whole segment: ${JSON.stringify(raw)}`);
      segments.push(parseSegment(raw));
      i = j;
    }
    if (i < body.length) {
      if (body[i] !== '/') throw new TemplateError(src, `unexpected ${JSON.stringify(body[i])} after a variable`);
      i++;
      if (i === body.length) throw new TemplateError(src, 'must not end with "/"');
    }
  }
  const restAt = segments.findIndex((s) => s.kind === 'rest');
  if (restAt >= 0 && restAt !== segments.length - 1) throw new TemplateError(src, '"**" must be the last segment');
  const t: PathTemplate = {
    source: src,
    segments,
    variables,
    literals: segments.filter((s) => s.kind === 'literal').length,
    hasRest: restAt >= 0,
  };
  if (verb !== undefined) t.verb = verb;
  return t;
}

/** The variables' values (decoded) when `path` (no query string) matches, else undefined. */
export function matchTemplate(t: PathTemplate, path: string): string[] | undefined {
  if (!path.startsWith('/')) return undefined;
  let p = path.slice(1);
  if (t.verb !== undefined) {
    const suffix = ':' + t.verb;
    if (!p.endsWith(suffix)) return undefined;
    p = p.slice(0, -suffix.length);
  }
  const parts = p.split('/');
  const segs = t.segments;
  // `**` matches zero or more segments.
  if (t.hasRest ? parts.length < segs.length - 1 : parts.length !== segs.length) return undefined;
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i] as Segment;
    const part = parts[i] as string;
    if (s.kind === 'literal') {
      if (part !== s.value) return undefined;
    } else if (s.kind === 'any') {
      if (part === '') return undefined;
    }
    // 'rest' matches the remaining parts, possibly none
  }
  const out: string[] = [];
  for (const v of t.variables) {
    const end = t.hasRest && v.end === segs.length ? parts.length : v.end;
    const covered = parts.slice(v.start, end);
    const value = covered.length === 1 ? decode(covered[0] as string) : covered.map(decodeKeepSlash).join('/');
    if (value === undefined) return undefined;
    out.push(value);
  }
  return out;
}

function decode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/** Multi-segment: `%2F` stays encoded so that the segments stay recognisable. */
function decodeKeepSlash(s: string): string {
  return s
    .split(/%2F/i)
    .map((x) => decode(x) ?? x)
    .join('%2F');
}
