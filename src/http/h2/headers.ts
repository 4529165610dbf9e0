/**
 * Header lists of meshlet's own HTTP/2 layer (server: src/http/h2/session.ts; client:
 * src/http/h2/client.ts, which uses `responseHead` and `requestFields` below): the request's
 * checks of RFC 9113 8.2 and 8.3 and node's `IncomingHttpHeaders` object built in the same pass;
 * response, informational and trailer header objects (node's `OutgoingHttpHeaders`) turned into
 * flat [name, value, ...] lists for the HPACK encoder, refused the way node:http2 refuses them
 * (lib/internal/http2/util.js `mapToHeaders`: the same error codes, so callers that catch them
 * keep working).
 *
 * HAND-WRITTEN HOT-PATH CODE: runs once per request and once per response head.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';

/** An error as node:http2 throws it (`code` as node's: ERR_HTTP2_INVALID_CONNECTION_HEADERS, ...). */
export class H2Error extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'H2Error';
  }
}

/** node's kSingleValueHeaders: a repeated one keeps its first value in the header object. */
export const SINGLE_VALUE: ReadonlySet<string> = new Set([
  ':status',
  ':method',
  ':authority',
  ':scheme',
  ':path',
  ':protocol',
  'access-control-allow-credentials',
  'access-control-max-age',
  'access-control-request-method',
  'age',
  'authorization',
  'content-encoding',
  'content-language',
  'content-length',
  'content-location',
  'content-md5',
  'content-range',
  'content-type',
  'date',
  'dnt',
  'etag',
  'expires',
  'from',
  'host',
  'if-match',
  'if-modified-since',
  'if-none-match',
  'if-range',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'range',
  'referer',
  'retry-after',
  'tk',
  'upgrade-insecure-requests',
  'user-agent',
  'x-content-type-options',
]);

/** Connection-specific fields (RFC 9113 8.2.2), as node refuses them on the way out (plus `te` other than "trailers"). */
const CONNECTION_SPECIFIC = new Set(['connection', 'upgrade', 'http2-settings', 'keep-alive', 'proxy-connection', 'transfer-encoding']);

/** tchar (RFC 9110 5.6.2) without upper-case letters: what an HTTP/2 field name may hold. */
const NAME_CHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") NAME_CHAR[c.charCodeAt(0)] = 1;

function validName(name: string): boolean {
  const n = name.length;
  if (n === 0) return false;
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c >= 128 || NAME_CHAR[c] === 0) return false;
  }
  return true;
}

/** No NUL, CR or LF anywhere, no SP or HTAB at either end (RFC 9113 8.2.1). */
function validValue(v: string): boolean {
  const n = v.length;
  if (n === 0) return true;
  let c = v.charCodeAt(0);
  if (c === 0x20 || c === 0x09) return false;
  c = v.charCodeAt(n - 1);
  if (c === 0x20 || c === 0x09) return false;
  for (let i = 0; i < n; i++) {
    c = v.charCodeAt(i);
    if (c === 0 || c === 0x0a || c === 0x0d) return false;
  }
  return true;
}

/** What the request check found: the header object, or why the request is malformed (a stream PROTOCOL_ERROR). */
export interface RequestHead {
  headers: IncomingHttpHeaders;
  /** undefined when the request is well-formed. */
  error: string | undefined;
}

/**
 * Header objects are built on a fast-mode object and given their null prototype (as node's
 * `toHeaderObject` makes them) once complete (`sealHeaders`). `Object.create(null)` makes a
 * dictionary-mode object whose hash table is reallocated as fields are added: measured on
 * `requestHead` alone, a 13-field request head (a sidecar-to-sidecar hop's) allocated 1,761 bytes
 * in ~1.3 µs that way, 185 bytes in ~1.15 µs this way (`setPrototypeOf(null)` keeps the object's
 * fast map). While the object is built its prototype is an empty null-prototype object: no
 * inherited name (`constructor`, `__proto__`) is seen by `addField`.
 */
const BUILDING: object = Object.create(null) as object;

function newHeaderObject<T>(): T {
  return Object.create(BUILDING) as T;
}

function sealHeaders<T extends object>(obj: T): T {
  Object.setPrototypeOf(obj, null);
  return obj;
}

/** Adds one field to a header object as node's `toHeaderObject` does. */
function addField(obj: Record<string, string | string[] | undefined>, name: string, value: string): void {
  const existing = obj[name];
  if (existing === undefined) {
    obj[name] = name === 'set-cookie' ? [value] : value;
  } else if (!SINGLE_VALUE.has(name)) {
    if (name === 'cookie') obj[name] = `${existing as string}; ${value}`;
    else if (name === 'set-cookie') (existing as string[]).push(value);
    else obj[name] = `${existing as string}, ${value}`;
  }
}

/**
 * HAND-WRITTEN HOT PATH. Checks a request's decoded field list (RFC 9113 8.2, 8.3; RFC 8441 for
 * `:protocol` when `connectProtocol`) and builds its header object in the same pass.
 */
export function requestHead(fields: readonly string[], connectProtocol: boolean): RequestHead {
  const obj = newHeaderObject<Record<string, string | string[] | undefined>>();
  const head: RequestHead = { headers: obj as IncomingHttpHeaders, error: undefined };
  let regular = false;
  let method: string | undefined;
  let scheme: string | undefined;
  let path: string | undefined;
  let authority: string | undefined;
  let protocol: string | undefined;
  const n = fields.length;
  for (let i = 0; i < n; i += 2) {
    const name = fields[i]!;
    const value = fields[i + 1]!;
    if (name.charCodeAt(0) === 0x3a) {
      if (regular) return fail(head, `pseudo-header ${name} after a regular field`);
      switch (name) {
        case ':method':
          if (method !== undefined) return fail(head, 'duplicate :method');
          method = value;
          break;
        case ':scheme':
          if (scheme !== undefined) return fail(head, 'duplicate :scheme');
          scheme = value;
          break;
        case ':path':
          if (path !== undefined) return fail(head, 'duplicate :path');
          path = value;
          break;
        case ':authority':
          if (authority !== undefined) return fail(head, 'duplicate :authority');
          authority = value;
          break;
        case ':protocol':
          if (!connectProtocol) return fail(head, ':protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL');
          if (protocol !== undefined) return fail(head, 'duplicate :protocol');
          protocol = value;
          break;
        default:
          return fail(head, `pseudo-header ${name} not allowed in a request`);
      }
      if (!validValue(value)) return fail(head, `invalid value of ${name}`);
      obj[name] = value;
      continue;
    }
    regular = true;
    if (!validName(name)) return fail(head, `invalid field name ${JSON.stringify(name)}`);
    if (CONNECTION_SPECIFIC.has(name)) return fail(head, `connection-specific field ${name}`);
    if (name === 'te' && value !== 'trailers') return fail(head, 'te other than "trailers"');
    if (!validValue(value)) return fail(head, `invalid value of ${name}`);
    addField(obj, name, value);
  }
  if (method === undefined || method === '') return fail(head, 'no :method');
  if (method === 'CONNECT') {
    if (protocol === undefined) {
      if (authority === undefined || scheme !== undefined || path !== undefined) return fail(head, 'CONNECT needs :authority and no :scheme or :path');
      sealHeaders(obj);
      return head;
    }
    if (scheme === undefined || path === undefined || path === '' || authority === undefined) return fail(head, 'extended CONNECT needs :scheme, :path and :authority');
    sealHeaders(obj);
    return head;
  }
  if (protocol !== undefined) return fail(head, ':protocol on a method other than CONNECT');
  if (scheme === undefined || path === undefined || path === '') return fail(head, 'no :scheme or :path');
  if (path.charCodeAt(0) !== 0x2f && !(path === '*' && method === 'OPTIONS') && (scheme === 'http' || scheme === 'https')) return fail(head, ':path neither absolute nor "*"');
  sealHeaders(obj);
  return head;
}

function fail(head: RequestHead, why: string): RequestHead {
  head.error = why;
  return head;
}

/**
 * Checks a trailer block received on a request (no pseudo-header, valid names and values) and
 * builds its header object; undefined when it is malformed.
 */
export function trailerHead(fields: readonly string[]): IncomingHttpHeaders | undefined {
  const obj = newHeaderObject<Record<string, string | string[] | undefined>>();
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i]!;
    const value = fields[i + 1]!;
    if (!validName(name) || CONNECTION_SPECIFIC.has(name) || !validValue(value)) return undefined;
    addField(obj, name, value);
  }
  return sealHeaders(obj) as IncomingHttpHeaders;
}

// ------------------------------------------------------------------------------- outgoing

let cachedDate: string | undefined;
function clearDate(): void {
  cachedDate = undefined;
}
/** The Date header value, cached for up to a second (node's utcDate does the same). */
export function utcDate(): string {
  if (cachedDate === undefined) {
    cachedDate = new Date().toUTCString();
    setTimeout(clearDate, 1000 - new Date().getMilliseconds()).unref();
  }
  return cachedDate;
}

/** Which pseudo-headers a header object may carry: a response head, a request head, or none (trailers). */
const enum Pseudo {
  Status,
  None,
  /** A request head: the request pseudo-headers were appended first (requestFields). */
  Request,
}

/**
 * HAND-WRITTEN HOT PATH. Appends the fields of a header object (node's OutgoingHttpHeaders) to
 * `out` as mapToHeaders would send them: names lower-cased, undefined values and empty names
 * skipped, arrays one field per element, refusals thrown with node's error codes.
 * Pseudo-headers are never appended (the caller puts `:status` first).
 */
function appendFields(out: string[], headers: OutgoingHttpHeaders, pseudo: Pseudo): void {
  for (const key in headers) {
    const value = headers[key];
    if (value === undefined || key === '') continue;
    const name = key.toLowerCase();
    if (name.charCodeAt(0) === 0x3a) {
      if (pseudo === Pseudo.Status && name === ':status') continue;
      if (pseudo === Pseudo.Request && REQUEST_PSEUDO.has(key)) continue;
      throw new H2Error('ERR_HTTP2_INVALID_PSEUDOHEADER', `"${name}" is an invalid pseudoheader or is used incorrectly`);
    }
    if (name.includes(' ')) throw new H2Error('ERR_INVALID_HTTP_TOKEN', `Header name must be a valid HTTP token ["${name}"]`);
    if (Array.isArray(value)) {
      if (value.length === 0) continue;
      if (value.length > 1 && SINGLE_VALUE.has(name)) throw new H2Error('ERR_HTTP2_HEADER_SINGLE_VALUE', `Header field "${name}" must only have a single value`);
      if (CONNECTION_SPECIFIC.has(name) || (name === 'te' && (value.length > 1 || String(value[0]) !== 'trailers'))) throw connectionHeader(name);
      for (let j = 0; j < value.length; j++) out.push(name, String(value[j]));
      continue;
    }
    const v = typeof value === 'string' ? value : String(value);
    if (CONNECTION_SPECIFIC.has(name) || (name === 'te' && v !== 'trailers')) throw connectionHeader(name);
    out.push(name, v);
  }
}

function connectionHeader(name: string): H2Error {
  return new H2Error('ERR_HTTP2_INVALID_CONNECTION_HEADERS', `HTTP/1 Connection specific headers are forbidden: "${name}"`);
}

/** The status a response head gives (node: `headers[':status'] | 0 || 200`), checked as node checks it. */
export function responseStatus(headers: OutgoingHttpHeaders): number {
  const raw = headers[':status'];
  const status = (Number(raw) | 0) || 200;
  if (status < 200 || status > 599) throw new H2Error('ERR_HTTP2_STATUS_INVALID', `Invalid status code: ${String(raw)}`);
  return status;
}

/** The field list of a response head: `:status` first, the fields, a Date unless given. */
export function responseFields(headers: OutgoingHttpHeaders, status: number): string[] {
  const out: string[] = [':status', String(status)];
  appendFields(out, headers, Pseudo.Status);
  if (headers.date == null) out.push('date', utcDate());
  return out;
}

/** The field list of an informational (1xx) head, checked as node's `additionalHeaders`. */
export function infoFields(headers: OutgoingHttpHeaders): string[] {
  const raw = headers[':status'];
  const out: string[] = [];
  if (raw != null) {
    const status = Number(raw) | 0;
    if (status === 101) throw new H2Error('ERR_HTTP2_STATUS_101', 'HTTP status code 101 (Switching Protocols) is forbidden in HTTP/2');
    if (status < 100 || status >= 200) throw new H2Error('ERR_HTTP2_INVALID_INFO_STATUS', `Invalid informational status code: ${String(raw)}`);
    out.push(':status', String(status));
  }
  appendFields(out, headers, Pseudo.Status);
  return out;
}

/** The field list of trailers (no pseudo-header allowed). */
export function trailerFields(headers: OutgoingHttpHeaders): string[] {
  const out: string[] = [];
  appendFields(out, headers, Pseudo.None);
  return out;
}

// ------------------------------------------------------------------------- client side (client.ts)

/** What the response check found: the header object and its status, or why the response is malformed. */
export interface ResponseHead {
  headers: IncomingHttpHeaders;
  /** The `:status` (0 when malformed). */
  status: number;
  /** undefined when the response head is well-formed. */
  error: string | undefined;
}

/**
 * HAND-WRITTEN HOT PATH (once per upstream response). Checks a response's decoded field list as
 * RFC 9113 8.3.2 and 8.2 ask (exactly one `:status` of three digits, no other pseudo-header, no
 * pseudo-header after a regular field, valid lower-case names, no connection-specific field, `te`
 * only "trailers", values without NUL/CR/LF or surrounding whitespace) and builds its header
 * object in the same pass, as node's `toHeaderObject` (`:status` a number).
 */
export function responseHead(fields: readonly string[]): ResponseHead {
  const obj = newHeaderObject<Record<string, string | string[] | number | undefined>>();
  const head: ResponseHead = { headers: obj as IncomingHttpHeaders, status: 0, error: undefined };
  let regular = false;
  let status = -1;
  const n = fields.length;
  for (let i = 0; i < n; i += 2) {
    const name = fields[i]!;
    const value = fields[i + 1]!;
    if (name.charCodeAt(0) === 0x3a) {
      if (regular) return failResponse(head, `pseudo-header ${name} after a regular field`);
      if (name !== ':status') return failResponse(head, `pseudo-header ${name} not allowed in a response`);
      if (status !== -1) return failResponse(head, 'duplicate :status');
      if (value.length !== 3 || !/^[1-5]\d\d$/.test(value)) return failResponse(head, `invalid :status ${JSON.stringify(value)}`);
      status = Number(value);
      obj[':status'] = status;
      continue;
    }
    regular = true;
    if (!validName(name)) return failResponse(head, `invalid field name ${JSON.stringify(name)}`);
    if (CONNECTION_SPECIFIC.has(name)) return failResponse(head, `connection-specific field ${name}`);
    if (name === 'te' && value !== 'trailers') return failResponse(head, 'te other than "trailers"');
    if (!validValue(value)) return failResponse(head, `invalid value of ${name}`);
    addField(obj as Record<string, string | string[] | undefined>, name, value);
  }
  if (status === -1) return failResponse(head, 'no :status');
  if (status === 101) return failResponse(head, ':status 101 is not allowed in HTTP/2');
  head.status = status;
  sealHeaders(obj);
  return head;
}

function failResponse(head: ResponseHead, why: string): ResponseHead {
  head.error = why;
  return head;
}

/**
 * HAND-WRITTEN HOT PATH (once per upstream request, src/http/upstream.ts). The field list of a
 * request head built straight from a proxy's flat `[name, value, ...]` list, with no header
 * object in between: what `requestFields` makes of the object `{ ':method', ':path',
 * ':authority', ':scheme', ...the list }`, the same fields in the same order. Undefined, and
 * nothing refused, when the list has anything that object would treat otherwise (a name
 * repeated, merged there into one entry; an empty, pseudo, digit-led, connection-specific,
 * non-ASCII or space-holding name; `te` other than "trailers"): the caller then builds the object, which
 * refuses or reorders as before. One array, of the exact length (the object and the list grown
 * push by push were ~1.1 KB per request on a sidecar-to-sidecar hop).
 */
export function requestFieldsOf(method: string, path: string, authority: string, scheme: string, raw: readonly string[]): string[] | undefined {
  const n = raw.length & ~1;
  const out = new Array<string>(8 + n);
  out[0] = ':method';
  out[1] = method;
  out[2] = ':path';
  out[3] = path;
  out[4] = ':authority';
  out[5] = authority;
  out[6] = ':scheme';
  out[7] = scheme;
  for (let i = 0; i < n; i += 2) {
    const key = raw[i]!;
    const c = key.charCodeAt(0);
    // Empty, ':' (a pseudo-header), a digit (an integer-like key goes first in an object).
    if (key.length === 0 || c === 0x3a || (c >= 0x30 && c <= 0x39)) return undefined;
    // As the object's `key.toLowerCase()` (ASCII only here), without a new string for a name
    // already in lower case.
    let upper = false;
    for (let k = 0; k < key.length; k++) {
      const ch = key.charCodeAt(k);
      if (ch === 0x20 || ch >= 0x80) return undefined;
      if (ch >= 0x41 && ch <= 0x5a) upper = true;
    }
    const name = upper ? key.toLowerCase() : key;
    if (CONNECTION_SPECIFIC.has(name)) return undefined;
    const value = raw[i + 1]!;
    if (name === 'te' && value !== 'trailers') return undefined;
    for (let j = 8; j < 8 + i; j += 2) if (out[j] === name) return undefined;
    out[8 + i] = name;
    out[9 + i] = value;
  }
  return out;
}

/** The pseudo-headers a request may carry (node's mapToHeaders refuses others). */
const REQUEST_PSEUDO = new Set([':method', ':scheme', ':authority', ':path', ':protocol']);

/**
 * HAND-WRITTEN HOT PATH (once per upstream request). The field list of a request head (node's
 * `OutgoingHttpHeaders`, as `ClientHttp2Session.request` takes it): the pseudo-headers first in
 * the order given (any other than :method/:scheme/:authority/:path/:protocol refused with node's
 * ERR_HTTP2_INVALID_PSEUDOHEADER), then the regular fields, refused as `appendFields` refuses
 * them (connection-specific fields, several values of a single-value field).
 */
export function requestFields(headers: OutgoingHttpHeaders): string[] {
  const out: string[] = [];
  for (const key in headers) {
    if (key.charCodeAt(0) !== 0x3a) continue;
    const value = headers[key];
    if (value === undefined) continue;
    if (!REQUEST_PSEUDO.has(key)) throw new H2Error('ERR_HTTP2_INVALID_PSEUDOHEADER', `"${key}" is an invalid pseudoheader or is used incorrectly`);
    if (Array.isArray(value)) throw new H2Error('ERR_HTTP2_HEADER_SINGLE_VALUE', `Header field "${key}" must only have a single value`);
    out.push(key, String(value));
  }
  appendFields(out, headers, Pseudo.Request);
  return out;
}
