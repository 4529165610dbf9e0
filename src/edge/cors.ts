/**
 * CORS per route, answered at the gateway: the CORS protocol of the Fetch standard
 * (fetch.spec.whatwg.org, "CORS protocol"; RFC 6454 for origins), with Envoy's and Kong's
 * configuration fields.
 *  - A preflight (OPTIONS with Origin and Access-Control-Request-Method) never reaches the
 *    service: allowed -> 204 with Access-Control-Allow-Origin/-Methods/-Headers/-Credentials and
 *    -Max-Age; refused (origin, method or a header not allowed) -> 403 without CORS headers,
 *    with EDGE_CORS_REJECTED saying which, so the browser blocks and the developer can read why.
 *  - An actual request from an allowed origin gets Access-Control-Allow-Origin (+ -Credentials,
 *    -Expose-Headers) on its response; from another origin, nothing (the browser blocks it).
 *    `Vary: Origin` whenever the answer depends on the origin.
 *  - Origins: exact (`https://app.example.com`), `*`, or one leading label wildcard
 *    (`https://*.example.com`, which does not match `https://example.com`). `*` with
 *    credentials is refused when the config compiles (Fetch forbids it; echoing any origin
 *    would let every site read users' responses).
 *
 * Entry point: `compileCors(raw, path)` once per snapshot -> `CorsPolicy.evaluate(method, headers)`.
 */
import { fail, ok, type Result } from '../core/result';
import { EdgeError } from './errors';
import { Checker, HEADER_NAME, firstHeader, join, type Headers } from './validate';

export interface CorsConfig {
  allowOrigins: string[];
  allowMethods: string[];
  /** Request headers a preflight may ask for; `*` allows any (echoed when credentials are on). */
  allowHeaders: string[];
  exposeHeaders: string[];
  allowCredentials: boolean;
  maxAgeSeconds: number;
}

const ORIGIN = /^https?:\/\/(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$/;

export function parseCorsConfig(raw: unknown, path = 'cors'): Result<CorsConfig> {
  const c = new Checker();
  const o = c.obj(raw, path);
  if (!o) return fail(c.errors);
  c.known(o, path, ['allowOrigins', 'allowMethods', 'allowHeaders', 'exposeHeaders', 'allowCredentials', 'maxAgeSeconds']);
  const allowOrigins = c.strList(o.allowOrigins, join(path, 'allowOrigins'), { min: 1 });
  allowOrigins.forEach((x, i) => {
    if (x !== '*' && !ORIGIN.test(x)) c.err(`${join(path, 'allowOrigins')}[${i}]`, `${JSON.stringify(x)} must be *, scheme://host[:port] or scheme://*.domain[:port]`);
  });
  const allowMethods = (o.allowMethods === undefined ? ['GET', 'HEAD', 'POST'] : c.strList(o.allowMethods, join(path, 'allowMethods'), { min: 1 })).map((m) => m.toUpperCase());
  allowMethods.forEach((m, i) => {
    if (!HEADER_NAME.test(m)) c.err(`${join(path, 'allowMethods')}[${i}]`, 'must be a method name');
  });
  const headerList = (k: 'allowHeaders' | 'exposeHeaders') => {
    const l = c.strList(o[k], join(path, k)).map((h) => h.toLowerCase());
    l.forEach((h, i) => {
      if (h !== '*' && !HEADER_NAME.test(h)) c.err(`${join(path, k)}[${i}]`, 'must be a header name or *');
    });
    return l;
  };
  const cfg: CorsConfig = {
    allowOrigins,
    allowMethods,
    allowHeaders: headerList('allowHeaders'),
    exposeHeaders: headerList('exposeHeaders'),
    allowCredentials: c.bool(o.allowCredentials, join(path, 'allowCredentials'), false),
    maxAgeSeconds: c.int(o.maxAgeSeconds, join(path, 'maxAgeSeconds'), 600, 0, 86400),
  };
  if (cfg.allowCredentials && cfg.allowOrigins.includes('*')) c.err(join(path, 'allowOrigins'), '* cannot be used with allowCredentials: list the origins');
  return c.errors.length ? fail(c.errors) : ok(cfg);
}

export function compileCors(raw: unknown, path = 'cors'): Result<CorsPolicy> {
  const r = parseCorsConfig(raw, path);
  return r.ok ? ok(new CorsPolicy(r.value)) : r;
}

export type CorsOutcome =
  /** Not a CORS request (no Origin): nothing to do. */
  | { kind: 'none' }
  /** A preflight: answer it now with this status and these headers (no body for 204). */
  | { kind: 'preflight'; status: 204; headers: Record<string, string> }
  | { kind: 'rejected'; error: EdgeError; headers: Record<string, string> }
  /** An actual request: forward it, add these headers to the response. */
  | { kind: 'actual'; headers: Record<string, string> };

export class CorsPolicy {
  private readonly exact: Set<string>;
  private readonly any: boolean;
  private readonly suffixes: { scheme: string; suffix: string; port: string }[];
  private readonly methods: Set<string>;
  private readonly methodsText: string;
  private readonly anyHeader: boolean;
  private readonly headers: Set<string>;
  private readonly expose: string;

  constructor(readonly config: CorsConfig) {
    this.any = config.allowOrigins.includes('*');
    this.exact = new Set(config.allowOrigins.filter((o) => !o.includes('*')).map((o) => o.toLowerCase()));
    this.suffixes = config.allowOrigins
      .filter((o) => o.includes('://*.'))
      .map((o) => {
        const m = /^(https?):\/\/\*(\.[^:]+)(:\d+)?$/.exec(o.toLowerCase())!;
        return { scheme: m[1], suffix: m[2], port: m[3] ?? '' };
      });
    this.methods = new Set(config.allowMethods);
    this.methodsText = config.allowMethods.join(', ');
    this.anyHeader = config.allowHeaders.includes('*');
    this.headers = new Set(config.allowHeaders);
    this.expose = config.exposeHeaders.join(', ');
  }

  originAllowed(origin: string): boolean {
    if (this.any) return true;
    const o = origin.toLowerCase();
    if (this.exact.has(o)) return true;
    const m = /^(https?):\/\/([^/:]+)(:\d+)?$/.exec(o);
    if (!m) return false;
    return this.suffixes.some((s) => s.scheme === m[1] && (m[3] ?? '') === s.port && m[2].endsWith(s.suffix) && m[2].length > s.suffix.length);
  }

  evaluate(method: string, reqHeaders: Headers): CorsOutcome {
    const origin = firstHeader(reqHeaders, 'origin');
    if (origin === undefined) return { kind: 'none' };
    const varyOrigin = !(this.any && !this.config.allowCredentials);
    const base: Record<string, string> = varyOrigin ? { vary: 'Origin' } : {};
    const acrm = firstHeader(reqHeaders, 'access-control-request-method');
    const preflight = method.toUpperCase() === 'OPTIONS' && acrm !== undefined;
    const allowed = this.originAllowed(origin);
    if (!preflight) {
      if (!allowed) return { kind: 'actual', headers: base };
      const h: Record<string, string> = { ...base, 'access-control-allow-origin': varyOrigin ? origin : '*' };
      if (this.config.allowCredentials) h['access-control-allow-credentials'] = 'true';
      if (this.expose) h['access-control-expose-headers'] = this.expose;
      return { kind: 'actual', headers: h };
    }
    const vary = { vary: varyOrigin ? 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers' : 'Access-Control-Request-Method, Access-Control-Request-Headers' };
    const reject = (why: string): CorsOutcome => ({ kind: 'rejected', error: new EdgeError('EDGE_CORS_REJECTED', `CORS preflight refused: ${why}`), headers: vary });
    if (!allowed) return reject(`origin ${origin} is not allowed`);
    if (!this.methods.has(acrm.toUpperCase())) return reject(`method ${acrm} is not allowed`);
    const asked = (firstHeader(reqHeaders, 'access-control-request-headers') ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean);
    if (!this.anyHeader) for (const h of asked) if (!this.headers.has(h)) return reject(`header ${h} is not allowed`);
    const h: Record<string, string> = {
      ...vary,
      'access-control-allow-origin': varyOrigin ? origin : '*',
      'access-control-allow-methods': this.methodsText,
      'access-control-max-age': String(this.config.maxAgeSeconds),
    };
    if (asked.length) h['access-control-allow-headers'] = this.anyHeader && !this.config.allowCredentials ? '*' : asked.join(', ');
    if (this.config.allowCredentials) h['access-control-allow-credentials'] = 'true';
    return { kind: 'preflight', status: 204, headers: h };
  }
}
