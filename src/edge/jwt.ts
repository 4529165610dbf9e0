/**
 * JWT authentication at the edge: bearer tokens (RFC 6750) carrying JWTs (RFC 7519) signed with
 * JWS (RFC 7515), verified with `jose` against issuers whose keys come from a JWKS URL (RFC 7517)
 * or are given inline.
 *
 * Behaviour follows Envoy's jwt_authn filter and Kong's jwt plugin where they agree:
 *  - Keys from a JWKS URL are cached (`JwksStore`, one per process, shared by every route and kept
 *    across snapshots). A token whose `kid` is unknown triggers a refresh, at most once per
 *    `minRefreshIntervalMs` (jose's "cooldown"), so forged kids cannot make us hammer the IdP.
 *    Keys older than `maxAgeMs` are refreshed in the background while the old ones keep serving;
 *    a failed refresh keeps the old keys ("served stale"): the IdP being down does not lock
 *    every client out.
 *  - Only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are accepted: `alg: none` and HMAC tokens
 *    (the RSA-public-key-as-HMAC-secret confusion) are refused before any key is looked up.
 *  - `exp` is required by default, `nbf`/`iat` are checked, with `clockSkewSeconds` of leeway;
 *    issuer and audiences must match; `requiredClaims` must be present.
 *  - Verified tokens are cached by their SHA-256 until they expire (bounded LRU), so a client
 *    that sends the same token on every request pays one signature check, not one per request.
 *  - Outcome: 401 + `WWW-Authenticate: Bearer error="invalid_token"` for a missing, malformed,
 *    expired or forged token; 403 + `error="insufficient_scope"` (RFC 6750 3.1) when the token is
 *    good but lacks a scope the route requires.
 *  - Claims are forwarded as headers the user names; those header names are always removed from
 *    the incoming request first, so a client cannot forge them. `Authorization` is stripped
 *    unless `forwardAuthorization` is set.
 *
 * Entry points: `compileJwtPolicy(raw, path, deps)` once per snapshot -> `JwtPolicy`, whose
 * `authenticate(headers)` the request stack calls.
 */
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import {
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import type { Clock } from '../core/clock';
import { ok, type Result } from '../core/result';
import { EdgeError, type EdgeErrorCode } from './errors';
import { firstHeader, type Headers } from './validate';
import { parseJwtConfig, type JwtClaimHeader, type JwtConfig, type JwtIssuerConfig } from './jwt-config';

export { ASYMMETRIC_ALGORITHMS, parseJwtConfig } from './jwt-config';
export type { JwtClaimHeader, JwtConfig, JwtIssuerConfig } from './jwt-config';

/** The longest a verified token is trusted without checking its signature again. */
const MAX_CACHE_MS = 300_000;

// ---------------------------------------------------------------------------------------------
// JWKS store

export type FetchLike = (url: string, init: { signal: AbortSignal; headers: Record<string, string> }) => Promise<{
  ok: boolean;
  status: number;
  headers: { get(name: string): string | null };
  arrayBuffer(): Promise<ArrayBuffer>;
}>;

export interface JwksStoreOptions {
  clock: Clock;
  /** Defaults to the global fetch (undici). */
  fetch?: FetchLike;
  /** Keys older than this are refreshed in the background (default 10 min). */
  maxAgeMs?: number;
  /** At most one fetch per URL in this interval, for unknown kids and failures alike (default 30 s). */
  minRefreshIntervalMs?: number;
  /** One fetch's deadline (default 5 s). */
  timeoutMs?: number;
  /** A JWKS document larger than this is refused (default 1 MiB). */
  maxBytes?: number;
}

export interface JwksStats {
  fetches: number;
  failures: number;
  keys: number;
  lastError: string | undefined;
}

type KeyGetter = (header: Parameters<JWTVerifyGetKey>[0], token: Parameters<JWTVerifyGetKey>[1]) => ReturnType<JWTVerifyGetKey>;

class JwksUnavailable extends Error {
  readonly code = 'JWKS_UNAVAILABLE';
}

/** The keys of one JWKS URL: fetched on first use, refreshed as the module header says. */
export class RemoteJwks {
  private local: ReturnType<typeof createLocalJWKSet> | undefined;
  private keyCount = 0;
  private fetchedAt = -Infinity;
  private lastAttempt = -Infinity;
  private inflight: Promise<void> | undefined;
  private fetches = 0;
  private failures = 0;
  private lastError: string | undefined;

  constructor(
    readonly uri: string,
    private readonly o: Required<Omit<JwksStoreOptions, 'fetch'>> & { fetch: FetchLike },
  ) {}

  stats(): JwksStats {
    return { fetches: this.fetches, failures: this.failures, keys: this.keyCount, lastError: this.lastError };
  }

  /** Starts a fetch now if none has been made (called when a policy naming this URL arrives). */
  warm(): void {
    if (!this.local && !this.inflight) void this.refresh().catch(() => undefined);
  }

  private mayRefresh(): boolean {
    return this.o.clock.monotonic() - this.lastAttempt >= this.o.minRefreshIntervalMs;
  }

  /** One fetch at a time; callers share it. Rejects only if no keys could be had at all. */
  private refresh(): Promise<void> {
    if (this.inflight) return this.inflight;
    this.lastAttempt = this.o.clock.monotonic();
    this.fetches++;
    const p = this.fetchOnce().then(
      ({ jwks, local }) => {
        this.local = local;
        this.keyCount = jwks.keys.length;
        this.fetchedAt = this.o.clock.monotonic();
        this.lastError = undefined;
      },
      (err: unknown) => {
        this.failures++;
        this.lastError = (err as Error).message;
        if (!this.local) throw new JwksUnavailable(`JWKS ${this.uri} unavailable: ${this.lastError}`);
      },
    );
    this.inflight = p.finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async fetchOnce(): Promise<{ jwks: JSONWebKeySet; local: ReturnType<typeof createLocalJWKSet> }> {
    const ac = new AbortController();
    const timer = this.o.clock.setTimeout(() => ac.abort(new Error(`timed out after ${this.o.timeoutMs} ms`)), this.o.timeoutMs);
    try {
      const res = await this.o.fetch(this.uri, { signal: ac.signal, headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const len = Number(res.headers.get('content-length') ?? '0');
      if (len > this.o.maxBytes) throw new Error(`larger than ${this.o.maxBytes} bytes`);
      const buf = await res.arrayBuffer();
      if (buf.byteLength > this.o.maxBytes) throw new Error(`larger than ${this.o.maxBytes} bytes`);
      let doc: unknown;
      try {
        doc = JSON.parse(Buffer.from(buf).toString('utf8'));
      } catch {
        throw new Error('not JSON');
      }
      const keys = (doc as { keys?: unknown } | null)?.keys;
      if (!Array.isArray(keys)) throw new Error('no "keys" list');
      const jwks = { keys: keys as JSONWebKeySet['keys'] };
      return { jwks, local: createLocalJWKSet(jwks) }; // throws on a malformed set: a failed fetch
    } catch (err) {
      if (ac.signal.aborted) throw ac.signal.reason as Error;
      throw err;
    } finally {
      timer.cancel();
    }
  }

  /** The key getter jose calls with the token's protected header. */
  readonly getKey: KeyGetter = async (header, token) => {
    if (!this.local) {
      if (!this.inflight && !this.mayRefresh()) throw new JwksUnavailable(`JWKS ${this.uri} unavailable: ${this.lastError ?? 'not fetched'}`);
      await this.refresh();
    } else if (this.o.clock.monotonic() - this.fetchedAt > this.o.maxAgeMs && this.mayRefresh()) {
      void this.refresh().catch(() => undefined); // background; the current keys keep serving
    }
    try {
      return await this.local!(header, token);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_JWKS_NO_MATCHING_KEY' || !(this.inflight || this.mayRefresh())) throw err;
      await this.refresh(); // unknown kid: a rotation, perhaps
      return this.local!(header, token);
    }
  };
}

/** One RemoteJwks per URL for the whole process: routes and snapshots share fetched keys. */
export class JwksStore {
  private readonly sources = new Map<string, RemoteJwks>();
  private readonly o: Required<Omit<JwksStoreOptions, 'fetch'>> & { fetch: FetchLike };

  constructor(opts: JwksStoreOptions) {
    this.o = {
      clock: opts.clock,
      fetch: opts.fetch ?? (globalThis.fetch as unknown as FetchLike),
      maxAgeMs: opts.maxAgeMs ?? 600_000,
      minRefreshIntervalMs: opts.minRefreshIntervalMs ?? 30_000,
      timeoutMs: opts.timeoutMs ?? 5_000,
      maxBytes: opts.maxBytes ?? 1 << 20,
    };
  }

  source(uri: string): RemoteJwks {
    let s = this.sources.get(uri);
    if (!s) this.sources.set(uri, (s = new RemoteJwks(uri, this.o)));
    return s;
  }

  /** Forgets URLs no policy names any more (call after a snapshot swap). */
  retain(uris: Iterable<string>): void {
    const keep = new Set(uris);
    for (const u of this.sources.keys()) if (!keep.has(u)) this.sources.delete(u);
  }
}

// ---------------------------------------------------------------------------------------------
// The policy the stack calls

export type JwtOutcome =
  | {
      ok: true;
      /** The verified payload; undefined when the token was optional and absent. */
      claims: JWTPayload | undefined;
      /** Headers to remove from the request before forwarding (spoofable claim headers, maybe Authorization). */
      removeHeaders: readonly string[];
      /** Headers to add, from claims. */
      setHeaders: readonly (readonly [string, string])[];
      /** Served from the verified-token cache. */
      cached: boolean;
    }
  | { ok: false; error: EdgeError };

interface Verified {
  claims: JWTPayload;
  setHeaders: (readonly [string, string])[];
  scopes: ReadonlySet<string>;
  /** Wall-clock ms after which the entry is no longer used (the token's exp + skew). */
  until: number;
}

interface CompiledIssuer {
  cfg: JwtIssuerConfig;
  getKey: KeyGetter;
  algorithms: Set<string>;
}

export interface JwtPolicyDeps {
  clock: Clock;
  jwks: JwksStore;
}

export class JwtPolicy {
  private readonly issuers = new Map<string, CompiledIssuer>();
  private readonly cache: LRUCache<string, Verified> | undefined;
  private readonly removeOk: readonly string[];
  private readonly requiredClaims: string[];

  constructor(
    readonly config: JwtConfig,
    private readonly deps: JwtPolicyDeps,
  ) {
    for (const iss of config.issuers) {
      let getKey: KeyGetter;
      if (iss.jwksUri) {
        const src = deps.jwks.source(iss.jwksUri);
        src.warm();
        getKey = src.getKey;
      } else {
        const local = createLocalJWKSet(iss.jwks!);
        getKey = (h, t) => local(h, t);
      }
      this.issuers.set(iss.issuer, { cfg: iss, getKey, algorithms: new Set(iss.algorithms) });
    }
    this.cache = config.tokenCacheSize > 0 ? new LRUCache({ max: config.tokenCacheSize }) : undefined;
    const remove = config.claimHeaders.map((c) => c.header);
    if (!config.forwardAuthorization) remove.push(config.header);
    this.removeOk = [...new Set(remove)];
    this.requiredClaims = [...new Set([...(config.requireExpiry ? ['exp'] : []), ...config.requiredClaims])];
  }

  /** Verified-token cache size (for metrics and tests). */
  cachedTokens(): number {
    return this.cache?.size ?? 0;
  }

  /** Checks the request's token. Never throws: failures come back as `{ ok: false, error }`. */
  async authenticate(headers: Headers): Promise<JwtOutcome> {
    const token = this.extract(headers);
    if (token === undefined) {
      if (!this.config.required) return { ok: true, claims: undefined, removeHeaders: this.removeOk, setHeaders: [], cached: false };
      return { ok: false, error: invalid('EDGE_JWT_MISSING', 'a bearer token is required') };
    }
    if (token === null) return { ok: false, error: invalid('EDGE_JWT_MALFORMED', 'the authorization header is not a Bearer token') };
    const key = this.cache ? createHash('sha256').update(token).digest('base64') : '';
    let v = this.cache?.get(key);
    let cached = true;
    if (v && this.deps.clock.now() >= v.until) {
      this.cache!.delete(key);
      v = undefined;
    }
    if (!v) {
      cached = false;
      const r = await this.verify(token);
      if (!r.ok) return r;
      v = r.value;
      this.cache?.set(key, v);
    }
    for (const s of this.config.scopes) {
      if (!v.scopes.has(s)) {
        const want = this.config.scopes.join(' ');
        return {
          ok: false,
          error: new EdgeError('EDGE_JWT_INSUFFICIENT_SCOPE', `the token lacks scope ${s}`, {
            'www-authenticate': `Bearer error="insufficient_scope", error_description="the token lacks a required scope", scope="${want}"`,
          }),
        };
      }
    }
    return { ok: true, claims: v.claims, removeHeaders: this.removeOk, setHeaders: v.setHeaders, cached };
  }

  /** undefined: no token; null: a header that is not a Bearer token. */
  private extract(headers: Headers): string | undefined | null {
    const raw = firstHeader(headers, this.config.header);
    if (raw === undefined || raw === '') return undefined;
    const sp = raw.indexOf(' ');
    if (sp < 0 || raw.slice(0, sp).toLowerCase() !== 'bearer') return null;
    const t = raw.slice(sp + 1).trim();
    return t === '' ? null : t;
  }

  private async verify(token: string): Promise<{ ok: true; value: Verified } | { ok: false; error: EdgeError }> {
    let alg: string | undefined;
    let iss: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
      iss = decodeJwt(token).iss;
    } catch {
      return { ok: false, error: invalid('EDGE_JWT_MALFORMED', 'the token is not a well-formed JWT') };
    }
    const issuer = iss === undefined ? undefined : this.issuers.get(iss);
    if (!issuer) return { ok: false, error: invalid('EDGE_JWT_UNKNOWN_ISSUER', 'the token issuer is not accepted') };
    if (alg === undefined || !issuer.algorithms.has(alg))
      return { ok: false, error: invalid('EDGE_JWT_ALG_NOT_ALLOWED', `algorithm ${alg ?? '(none)'} is not accepted`) };
    const now = this.deps.clock.now();
    try {
      const { payload } = await jwtVerify(token, issuer.getKey, {
        issuer: issuer.cfg.issuer,
        ...(issuer.cfg.audiences.length ? { audience: issuer.cfg.audiences } : {}),
        algorithms: issuer.cfg.algorithms,
        clockTolerance: this.config.clockSkewSeconds,
        currentDate: new Date(now),
        requiredClaims: this.requiredClaims,
      });
      // Kept until exp (+ skew, as the uncached check would allow), and never beyond MAX_CACHE_MS, so
      // a token without exp, or a key the issuer withdrew, is looked at again within minutes.
      const expMs = typeof payload.exp === 'number' ? (payload.exp + this.config.clockSkewSeconds) * 1000 : Infinity;
      const until = Math.min(expMs, now + MAX_CACHE_MS);
      return {
        ok: true,
        value: { claims: payload, setHeaders: claimHeaders(payload, this.config.claimHeaders), scopes: scopesOf(payload), until },
      };
    } catch (err) {
      return { ok: false, error: mapJoseError(err) };
    }
  }
}

function invalid(code: EdgeErrorCode, description: string): EdgeError {
  return new EdgeError(code, description, {
    'www-authenticate': `Bearer error="invalid_token", error_description="${description.replace(/["\\]/g, '')}"`,
  });
}

function mapJoseError(err: unknown): EdgeError {
  const e = err as { code?: string; claim?: string; reason?: string; message?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return invalid('EDGE_JWT_EXPIRED', 'the token has expired');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.claim === 'nbf' && e.reason === 'check_failed') return invalid('EDGE_JWT_NOT_YET_VALID', 'the token is not valid yet');
      if (e.claim === 'iat' && e.reason === 'check_failed') return invalid('EDGE_JWT_NOT_YET_VALID', 'the token was issued in the future');
      return invalid('EDGE_JWT_CLAIM_INVALID', `claim ${e.claim ?? '?'} ${e.reason === 'missing' ? 'is missing' : 'is not accepted'}`);
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return invalid('EDGE_JWT_BAD_SIGNATURE', 'the token signature does not verify');
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return invalid('EDGE_JWT_ALG_NOT_ALLOWED', 'the token algorithm is not accepted');
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return invalid('EDGE_JWT_UNKNOWN_KEY', 'no key of the issuer matches the token');
    case 'JWKS_UNAVAILABLE':
      return invalid('EDGE_JWT_JWKS_UNAVAILABLE', 'the issuer keys are unavailable');
    default:
      return invalid('EDGE_JWT_MALFORMED', 'the token is not a valid JWT');
  }
}

function claimAt(payload: JWTPayload, path: string): unknown {
  if (path in payload) return payload[path];
  let cur: unknown = payload;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** Header-safe text: Node refuses characters outside tab, 0x20-0x7e and 0x80-0xff in values. */
function headerSafe(v: string): string {
  // eslint-disable-next-line no-control-regex
  return /[^\t\x20-\x7e]/.test(v) ? encodeURIComponent(v) : v;
}

function claimHeaders(payload: JWTPayload, map: readonly JwtClaimHeader[]): (readonly [string, string])[] {
  const out: (readonly [string, string])[] = [];
  for (const { claim, header } of map) {
    const v = claimAt(payload, claim);
    if (v === undefined || v === null) continue;
    let s: string;
    if (typeof v === 'string') s = v;
    else if (typeof v === 'number' || typeof v === 'boolean') s = String(v);
    else if (Array.isArray(v) && v.every((x) => typeof x !== 'object' || x === null)) s = v.join(',');
    else s = JSON.stringify(v);
    out.push([header, headerSafe(s)]);
  }
  return out;
}

function scopesOf(payload: JWTPayload): Set<string> {
  const out = new Set<string>();
  for (const c of [payload.scope, payload.scp]) {
    if (typeof c === 'string') for (const s of c.split(' ')) if (s) out.add(s);
    if (Array.isArray(c)) for (const s of c) if (typeof s === 'string') out.add(s);
  }
  return out;
}

/** Parses and compiles in one step: what the snapshot compiler calls for a `jwt` block. */
export function compileJwtPolicy(raw: unknown, path: string, deps: JwtPolicyDeps): Result<JwtPolicy> {
  const r = parseJwtConfig(raw, path);
  return r.ok ? ok(new JwtPolicy(r.value, deps)) : r;
}
