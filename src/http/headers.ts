/**
 * Header handling for a proxy hop (RFC 9110 §7.6): hop-by-hop headers are dropped, including
 * every header the `Connection` header names; `x-forwarded-for`, `x-forwarded-proto` and `via`
 * are set. Works on Node's flat `rawHeaders` arrays so a request's headers are walked once and
 * never turned into an object on the hot path.
 */
import { FLAG_HEADER as FLAG } from '../core/errors';
import { SINGLE_VALUE, utcDate } from './h2/headers';

/**
 * This hop's `via` entries (RFC 9110 §7.6.3), one per protocol version a message arrives in: made
 * once per process (StackContext.via), not per message.
 */
export interface ViaHops {
  /** `1.1 <name>`. */
  readonly h1: string;
  /** `2 <name>`. */
  readonly h2: string;
}

/** The entries of the hop named `name` (`meshlet`, `meshlet-gateway`). */
export function viaHops(name: string): ViaHops {
  return { h1: `1.1 ${name}`, h2: `2 ${name}` };
}

/**
 * The response header names a listener keeps from its clients (the gateway: `x-meshlet-*` but its
 * `keepMeshHeaders`), asked of every name, in any case, that a response head or HTTP/2 trailer
 * set would carry. Set on a response (`H1Response.omit`, `H2Response.omit`) by its listener's
 * handler and applied by their head and trailer writers, whichever path the head takes.
 */
export type HeaderOmit = (name: string) => boolean;

/** The `headers` object less the names `omit` drops: `headers` itself when it drops none. */
export function withoutOmitted<T extends object | undefined>(headers: T, omit: HeaderOmit): T {
  if (!headers) return headers;
  let out: Record<string, unknown> | undefined;
  for (const k in headers) {
    if (!omit(k)) continue;
    out ??= { ...headers };
    delete out[k];
  }
  return (out ?? headers) as T;
}

/** Hop-by-hop headers (RFC 9110 §7.6.1, plus the de-facto ones proxies also strip). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  // Answered by this hop (Node sends the 100 Continue), never forwarded.
  'expect',
  // HTTP/2 only: forbidden in HTTP/1.1 and connection-specific in HTTP/2 (RFC 9113 §8.2.2).
  'http2-settings',
]);

/**
 * `isHopByHop(name)` without hashing `name`: asked of every field of every forwarded head. By
 * length, then against the one or two names of that length; where `name` is an object key or a
 * cached lower-case name (internalized strings), each compare is a pointer compare.
 */
export function isHopByHop(name: string): boolean {
  switch (name.length) {
    case 2:
      return name === 'te';
    case 6:
      return name === 'expect';
    case 7:
      return name === 'trailer' || name === 'upgrade';
    case 10:
      return name === 'connection' || name === 'keep-alive';
    case 14:
      return name === 'http2-settings';
    case 16:
      return name === 'proxy-connection';
    case 17:
      return name === 'transfer-encoding';
    case 18:
      return name === 'proxy-authenticate';
    case 19:
      return name === 'proxy-authorization';
    default:
      return false;
  }
}

// Header names repeat from message to message (an upstream sends the same `Content-Type`,
// `Content-Length`, `Date`, `Server` every time), and llhttp hands each as a fresh string:
// lower-casing them through a cache skips a new string and, as an object key, a string-table
// lookup per name (measured: 6 names of an nginx response, ~480 ns with toLowerCase, ~235 ns
// through the cache). Bounded in entries and name length: odd names cannot grow it.
const lowerCache = new Map<string, string>();

// The names nearly every message carries, in the spellings clients, servers and llhttp hand over
// (lower case and Capital-Case), by length: a fresh name string found here is never hashed (its
// hash, the Map probe and the compare of its characters were ~300 instructions a name). A
// candidate is compared only when the name's first and last characters are its own, so a name
// costs about one string compare, found or not. Names not here go through the cache.
const COMMON_NAMES = [
  'accept', 'accept-encoding', 'accept-language', 'accept-ranges', 'authorization', 'cache-control',
  'connection', 'content-encoding', 'content-length', 'content-type', 'cookie', 'date', 'etag',
  'expires', 'host', 'if-modified-since', 'if-none-match', 'keep-alive', 'last-modified', 'location',
  'origin', 'pragma', 'referer', 'server', 'set-cookie', 'te', 'traceparent', 'tracestate',
  'transfer-encoding', 'upgrade', 'user-agent', 'vary', 'via', 'x-forwarded-for', 'x-forwarded-proto',
  'x-request-id',
];
/** By length: each candidate's first and last character codes (`first << 8 | last`), spelling and lower-case name. */
interface CommonNames {
  keys: number[];
  spellings: string[];
  lowers: string[];
}
const commonByLength: (CommonNames | undefined)[] = [];
for (const lower of COMMON_NAMES) {
  const capital = lower.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
  const spellings = new Set([lower, capital, ...(lower === 'etag' ? ['ETag'] : lower === 'x-request-id' ? ['X-Request-ID'] : [])]);
  const bucket = (commonByLength[lower.length] ??= { keys: [], spellings: [], lowers: [] });
  for (const spelling of spellings) {
    bucket.keys.push((spelling.charCodeAt(0) << 8) | spelling.charCodeAt(spelling.length - 1));
    bucket.spellings.push(spelling);
    bucket.lowers.push(lower);
  }
}

/** `name.toLowerCase()`, for a header name. */
export function lowerName(name: string): string {
  const len = name.length;
  const common = commonByLength[len];
  if (common !== undefined) {
    const key = (name.charCodeAt(0) << 8) | name.charCodeAt(len - 1);
    const keys = common.keys;
    for (let i = 0; i < keys.length; i++) if (keys[i] === key && name === common.spellings[i]) return common.lowers[i] as string;
  }
  const hit = lowerCache.get(name);
  if (hit !== undefined) return hit;
  const lower = name.toLowerCase();
  if (lowerCache.size < 512 && name.length <= 64) lowerCache.set(name, lower);
  return lower;
}

// The text before a header's value in an HTTP/1.1 head, `\r\n` ending the line before it
// included: a head is then two pieces a field (this and the value) for its one join, not four
// (name, ': ', value, '\r\n'). A join's cost goes by its pieces (measured: a 12-field head,
// ~1,100 against ~1,600 ns). Names repeat from message to message (and are hashed already by
// lowerName's lookup); bounded as that cache is.
const lineCache = new Map<string, string>();

/** `\r\n${name}: `: what precedes a field's value in an HTTP/1.1 head (see lineCache). */
export function lineStart(name: string): string {
  const hit = lineCache.get(name);
  if (hit !== undefined) return hit;
  // Flattened once (a cons string would be copied at every join of a head that uses it).
  const line = `\r\n${name}: `;
  if (lineCache.size >= 512 || name.length > 64) return line;
  const flat = Buffer.from(line, 'latin1').toString('latin1');
  lineCache.set(name, flat);
  return flat;
}

/** Tokens of the Connection header(s), lower-cased, less the hop-by-hop names: the extra headers this hop must drop. */
export function connectionTokens(raw: readonly string[]): Set<string> | undefined {
  let out: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length !== 10 || !isConnection(name)) continue;
    const toks = tokensOf(raw[i + 1] as string);
    if (toks === undefined) continue;
    if (out === undefined) out = toks;
    else {
      out = new Set(out);
      for (const t of toks) out.add(t);
    }
  }
  return out;
}

function isConnection(name: string): boolean {
  return name === 'connection' || name === 'Connection' || name.toLowerCase() === 'connection';
}

// Nearly every message carries the same one or two Connection values ("keep-alive", "close"):
// their token sets are computed once. Bounded: a client cycling through odd values cannot grow it.
const tokenCache = new Map<string, Set<string> | undefined>();
function tokensOf(value: string): Set<string> | undefined {
  const hit = tokenCache.get(value);
  if (hit !== undefined || tokenCache.has(value)) return hit;
  // Tokens that name a hop-by-hop header are left out (every user drops those anyway): the usual
  // `keep-alive` then leaves nothing to drop and no set to ask per field.
  let out: Set<string> | undefined;
  for (const tok of value.split(',')) {
    const t = tok.trim().toLowerCase();
    if (t && !isHopByHop(t)) (out ??= new Set()).add(t);
  }
  if (tokenCache.size < 64 && value.length <= 128) tokenCache.set(value, out);
  return out;
}

export interface ForwardInfo {
  /** The downstream peer's address, appended to x-forwarded-for. */
  remoteAddress: string | undefined;
  /** Scheme the client used towards this hop. */
  proto: 'http' | 'https';
  /** This hop's `via` entry for the version the request arrived in (`ViaHops`). */
  via: string;
  /** When set, the upstream Host/authority (a rewrite or the original authority). */
  host?: string;
  /** Drop `host` from the copy (HTTP/2 carries it as :authority instead). */
  dropHost?: boolean;
}

/**
 * The headers to send upstream, as a flat `[name, value, ...]` array with lower-case names:
 * hop-by-hop and Connection-named headers and HTTP/2 pseudo-headers removed, the forwarding
 * headers added or extended.
 */
export function forwardRequestHeaders(raw: readonly string[], info: ForwardInfo): string[] {
  const drop = connectionTokens(raw);
  const out: string[] = [];
  let xff: string | undefined;
  let via: string | undefined;
  let sawHost = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = lowerName(raw[i] as string);
    const value = raw[i + 1] as string;
    if (name.charCodeAt(0) === 58 /* : */) continue;
    if (isHopByHop(name) || (drop !== undefined && drop.has(name))) {
      // `te: trailers` is the one TE value HTTP/2 allows, and gRPC requires it end to end.
      if (name === 'te' && /(^|,)\s*trailers\s*(;|,|$)/i.test(value)) out.push('te', 'trailers');
      continue;
    }
    if (name === 'x-forwarded-for') {
      xff = xff === undefined ? value : `${xff}, ${value}`;
      continue;
    }
    if (name === 'via') {
      via = via === undefined ? value : `${via}, ${value}`;
      continue;
    }
    if (name === 'x-forwarded-proto') continue;
    if (name === 'host') {
      if (sawHost || info.dropHost) continue;
      sawHost = true;
      out.push('host', info.host ?? value);
      continue;
    }
    out.push(name, value);
  }
  if (!sawHost && !info.dropHost && info.host !== undefined) out.push('host', info.host);
  const peer = info.remoteAddress ? stripV4Mapped(info.remoteAddress) : undefined;
  if (peer) out.push('x-forwarded-for', xff === undefined ? peer : `${xff}, ${peer}`);
  else if (xff !== undefined) out.push('x-forwarded-for', xff);
  out.push('x-forwarded-proto', info.proto);
  const hop = info.via;
  out.push('via', via === undefined ? hop : `${via}, ${hop}`);
  return out;
}

/** The names a response's Connection header lists (lower-cased, less the hop-by-hop names), dropped with it at this hop. */
export function connectionDrops(headers: Record<string, string | string[] | undefined>): ReadonlySet<string> | undefined {
  const conn = headers['connection'];
  return conn === undefined ? undefined : tokensOf(Array.isArray(conn) ? conn.join(',') : conn);
}

/**
 * Response headers from upstream (an object, as undici and node:http2 give them) cleaned for the
 * downstream hop: hop-by-hop and Connection-named headers and pseudo-headers removed. `via` is
 * extended by `hop` (this hop's entry, `ViaHops`). Returns a new object.
 */
export function forwardResponseHeaders(headers: Record<string, string | string[] | undefined>, hop: string): Record<string, string | string[]> {
  const drop = connectionDrops(headers);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined || name.charCodeAt(0) === 58) continue;
    if (isHopByHop(name) || (drop !== undefined && drop.has(name))) continue;
    out[name] = v;
  }
  const via = out['via'];
  out['via'] = via === undefined ? hop : `${Array.isArray(via) ? via.join(', ') : via}, ${hop}`;
  return out;
}

/**
 * HAND-WRITTEN HOT PATH (once per HTTP/2 response on meshlet's own framing). In one pass, the
 * field list that `responseFields` (src/http/h2/headers.ts) makes of the object
 * `forwardResponseHeaders(headers, hop)` with `x-meshlet-flags` extended by `flags`
 * and `:status` set: `:status` first, the same fields in the same order (`via` and the flag
 * header where the upstream had them, else last), a Date unless the upstream sent one; no header
 * object in between. Undefined when anything there would go otherwise (a name not lower-case,
 * digit-led or holding a space; several values of a single-value field; `via` or the flag header
 * as an array; a status outside 200..599): the caller then takes the object path, which refuses
 * or reorders as before.
 */
export function forwardResponseFields(
  headers: Record<string, string | string[] | undefined>,
  status: number,
  hop: string,
  flags: string,
): ResponseFields | undefined {
  if (!(status >= 200 && status <= 599)) return undefined;
  const drop = connectionDrops(headers);
  const out: string[] = [':status', String(status)];
  let viaAt = -1;
  let flagAt = -1;
  let date = false;
  let contentLength: string | undefined;
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined || name.charCodeAt(0) === 58) continue;
    if (isHopByHop(name) || (drop !== undefined && drop.has(name))) continue;
    if (name === '') continue;
    const c = name.charCodeAt(0);
    if ((c >= 48 && c <= 57) || lowerName(name) !== name || name.includes(' ')) return undefined;
    if (name === 'via' || (name === FLAG && flags !== '')) {
      if (typeof v !== 'string') return undefined;
      if (name === 'via') viaAt = out.length + 1;
      else flagAt = out.length + 1;
      out.push(name, v);
      continue;
    }
    if (name === 'date') date = true;
    if (typeof v === 'string') {
      if (name === 'content-length') contentLength = v;
      out.push(name, v);
      continue;
    }
    if (v.length > 1 && SINGLE_VALUE.has(name)) return undefined;
    for (let j = 0; j < v.length; j++) out.push(name, String(v[j]));
  }
  if (viaAt < 0) out.push('via', hop);
  else out[viaAt] = `${out[viaAt]!}, ${hop}`;
  if (flags !== '') {
    if (flagAt < 0) out.push(FLAG, flags);
    else out[flagAt] = out[flagAt] ? `${out[flagAt]!},${flags}` : flags;
  }
  if (!date) out.push('date', utcDate());
  return { fields: out, contentLength };
}

/** A forwarded response head as its field list, and its content-length (for the bodiless check). */
export interface ResponseFields {
  fields: string[];
  contentLength: string | undefined;
}

function stripV4Mapped(a: string): string {
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

/** Applies a route's header edits to a flat `[name, value, ...]` list (lower-case names). */
export function editFlat(flat: string[], edits: { apply(headers: Record<string, string | string[] | undefined>): void }): string[] {
  const o: Record<string, string | string[] | undefined> = {};
  for (let i = 0; i < flat.length; i += 2) {
    const n = flat[i] as string;
    const v = flat[i + 1] as string;
    const prev = o[n];
    o[n] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  edits.apply(o);
  const out: string[] = [];
  for (const n in o) {
    const v = o[n];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(n, x);
    else out.push(n, v);
  }
  return out;
}
