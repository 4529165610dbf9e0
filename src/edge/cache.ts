/**
 * An in-memory shared HTTP cache for the gateway (and, later, a sidecar's outbound side),
 * following RFC 9111. The freshness, reuse and revalidation rules come from
 * `http-cache-semantics` (shared-cache mode), not from code of ours:
 *  - Cache-Control max-age / s-maxage / no-store / no-cache / private / public, Expires, Vary,
 *    ETag and Last-Modified revalidation (If-None-Match / If-Modified-Since, 304 refresh),
 *    stale-while-revalidate (RFC 5861: served STALE, refreshed in the background) and
 *    stale-if-error (served STALE when the origin fails or answers 5xx).
 *  - Only GET and HEAD are looked up and stored; a successful unsafe request (POST, PUT, PATCH,
 *    DELETE) invalidates the entries of its URL (RFC 9111 4.4).
 *  - A request carrying Authorization is only answered from, and only stored into, the cache
 *    when the response allows it (`public`, `s-maxage`, `must-revalidate`: RFC 9111 3.5).
 * Where the library is stricter than the RFC we correct it, in `policyView` below: it treats
 * `must-revalidate` / `proxy-revalidate` as "revalidate always", where the RFC says "never serve
 * stale"; we hide them from the library and enforce the RFC meaning ourselves.
 *
 * What the cache adds: a configurable key (method, host, path, chosen query parameters and
 * headers), a default TTL for responses that give no freshness, an `lru-cache` bounded by bytes
 * with a per-entry cap, `Age` and `x-cache: HIT | MISS | STALE | REVALIDATED | PASS` on every
 * answer, request coalescing (concurrent misses for one key make one upstream request; a key
 * whose response turned out uncacheable is remembered for `hitForPassSeconds` so its requests
 * stop queueing behind each other, as Varnish's hit-for-pass), counters, purge by key or prefix.
 *
 * Bodies are buffered (`Buffer`): the stack hands the cache responses up to `maxEntryBytes` whole.
 *
 * Entry point: `new HttpCache(config, { clock })` once per route snapshot (or `compileCacheConfig`
 * from raw config), then `cache.handle(request, upstream)` per request.
 */
import CachePolicy from 'http-cache-semantics';
import { LRUCache } from 'lru-cache';
import type { Clock } from '../core/clock';
import { fail, ok, type Result } from '../core/result';
import { Checker, HEADER_NAME, join, type Headers } from './validate';

export interface CacheKeyConfig {
  /** Include the Host (authority) in the key (default true). */
  host: boolean;
  /** Which query parameters take part in the key: all (default), none, or these names (sorted). */
  query: 'all' | 'none' | string[];
  /** Request headers that take part in the key (lower-case), beyond what Vary asks for. */
  headers: string[];
}

export interface CacheConfig {
  /** Total bytes kept (bodies + headers + keys, estimated). */
  maxBytes: number;
  /** A response larger than this is passed through, not stored. */
  maxEntryBytes: number;
  /** Freshness given to cacheable-by-default responses that carry none (0: only explicit freshness). */
  defaultTtlSeconds: number;
  /** How long a key whose response was not storable skips coalescing. */
  hitForPassSeconds: number;
  key: CacheKeyConfig;
}

export type CacheState = 'HIT' | 'MISS' | 'STALE' | 'REVALIDATED' | 'PASS';

export interface CacheRequest {
  method: string;
  /** The authority (Host / :authority). */
  host: string;
  /** Path with query string, as received. */
  path: string;
  headers: Headers;
}

export interface CacheResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** How the cache reaches the origin (later: the rest of the mesh stack). May throw on failure. */
export type CacheUpstream = (req: CacheRequest) => Promise<CacheResponse>;

export interface CacheStats {
  hits: number;
  misses: number;
  stale: number;
  revalidated: number;
  passes: number;
  coalesced: number;
  stores: number;
  evictions: number;
  tooLarge: number;
  purged: number;
  backgroundErrors: number;
  entries: number;
  bytes: number;
  /** Auxiliary maps, bounded by count: variants known per key, hit-for-pass markers, in-flight fetches. */
  varyKeys: number;
  passKeys: number;
  inflight: number;
}

const DEFAULTS: CacheConfig = {
  maxBytes: 64 << 20,
  maxEntryBytes: 1 << 20,
  defaultTtlSeconds: 0,
  hitForPassSeconds: 10,
  key: { host: true, query: 'all', headers: [] },
};

/** Validates a raw `cache` block into a CacheConfig, with field paths. */
export function parseCacheConfig(raw: unknown, path = 'cache'): Result<CacheConfig> {
  const c = new Checker();
  const o = c.obj(raw ?? {}, path);
  if (!o) return fail(c.errors);
  c.known(o, path, ['maxBytes', 'maxEntryBytes', 'defaultTtlSeconds', 'hitForPassSeconds', 'key']);
  const maxBytes = c.int(o.maxBytes, join(path, 'maxBytes'), DEFAULTS.maxBytes, 1024, 2 ** 40);
  const maxEntryBytes = c.int(o.maxEntryBytes, join(path, 'maxEntryBytes'), Math.min(DEFAULTS.maxEntryBytes, maxBytes), 1, 2 ** 40);
  if (maxEntryBytes > maxBytes) c.err(join(path, 'maxEntryBytes'), 'must not exceed maxBytes');
  const key: CacheKeyConfig = { ...DEFAULTS.key };
  if (o.key !== undefined) {
    const kp = join(path, 'key');
    const ko = c.obj(o.key, kp);
    if (ko) {
      c.known(ko, kp, ['host', 'query', 'headers']);
      key.host = c.bool(ko.host, join(kp, 'host'), true);
      if (ko.query === 'all' || ko.query === 'none' || ko.query === undefined) key.query = (ko.query as 'all' | 'none' | undefined) ?? 'all';
      else if (Array.isArray(ko.query)) key.query = [...c.strList(ko.query, join(kp, 'query'))].sort();
      else c.err(join(kp, 'query'), 'must be "all", "none" or a list of parameter names');
      key.headers = c.strList(ko.headers, join(kp, 'headers')).map((h) => h.toLowerCase());
      key.headers.forEach((h, i) => {
        if (!HEADER_NAME.test(h)) c.err(`${join(kp, 'headers')}[${i}]`, 'must be a header name');
      });
    }
  }
  const cfg: CacheConfig = {
    maxBytes,
    maxEntryBytes,
    defaultTtlSeconds: c.int(o.defaultTtlSeconds, join(path, 'defaultTtlSeconds'), DEFAULTS.defaultTtlSeconds, 0, 365 * 86400),
    hitForPassSeconds: c.int(o.hitForPassSeconds, join(path, 'hitForPassSeconds'), DEFAULTS.hitForPassSeconds, 0, 3600),
    key,
  };
  return c.errors.length ? fail(c.errors) : ok(cfg);
}

export function compileCache(raw: unknown, path: string, deps: { clock: Clock }): Result<HttpCache> {
  const r = parseCacheConfig(raw, path);
  return r.ok ? ok(new HttpCache(r.value, deps)) : r;
}

/**
 * Where entries live: an LRU bounded by bytes (and the two auxiliary maps bounded by count). One
 * per process when several caches share the byte bound (`--cache-max-bytes`), each cache keeping
 * its entries under its own namespace.
 */
export class CacheStore {
  readonly lru: LRUCache<string, Entry>;
  readonly varyIndex: LRUCache<string, string[]>;
  readonly passUntil: LRUCache<string, number>;
  evictions = 0;
  constructor(
    readonly maxBytes: number,
    maxEntryBytes = maxBytes,
  ) {
    this.lru = new LRUCache<string, Entry>({
      maxSize: maxBytes,
      maxEntrySize: Math.min(maxBytes, maxEntryBytes + 64 * 1024),
      sizeCalculation: (e) => e.size,
      dispose: (_v, _k, reason) => {
        if (reason === 'evict') this.evictions++;
      },
    });
    // Bounded by count; sized so that a cache full of tiny entries still has room for their keys.
    const maxKeys = Math.max(1000, Math.floor(maxBytes / 512));
    this.varyIndex = new LRUCache({ max: maxKeys });
    this.passUntil = new LRUCache({ max: maxKeys });
  }
  get bytes(): number {
    return this.lru.calculatedSize;
  }
  get entries(): number {
    return this.lru.size;
  }
}

interface Entry {
  primary: string;
  /** The LRU key: primary + the request's values of the Vary headers. */
  key: string;
  status: number;
  /** The origin's headers (what the client sees, plus Age). */
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  policy: CachePolicy;
  /** must-revalidate / proxy-revalidate: never served stale. */
  mustRevalidate: boolean;
  staleIfError: number;
  /** May be served to, and was allowed for, requests with Authorization. */
  authOk: boolean;
  size: number;
  /** Fast HIT path (see `handle`): fresh until this wall-clock ms; headers as `serve` makes them, without Age/Date. */
  freshUntil: number;
  storedAt: number;
  ageAtStore: number;
  hitHeaders: Record<string, string | string[] | undefined>;
}

interface Fetched {
  entry: Entry | undefined;
  res: CacheResponse;
}

/** RFC 9110 15.1: statuses cacheable by default (what a default TTL may apply to). */
const CACHEABLE_BY_DEFAULT = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]);
const CONDITIONAL = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range'];
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

function parseCC(v: string | string[] | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (v === undefined) return out;
  for (const part of (Array.isArray(v) ? v.join(',') : v).split(',')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    if (eq < 0) out.set(p.toLowerCase(), '');
    else out.set(p.slice(0, eq).trim().toLowerCase(), p.slice(eq + 1).trim().replace(/^"|"$/g, ''));
  }
  return out;
}

function str(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

export class HttpCache {
  private readonly inflight = new Map<string, Promise<Fetched>>();
  private readonly Policy: typeof CachePolicy;
  private readonly m = {
    hits: 0,
    misses: 0,
    stale: 0,
    revalidated: 0,
    passes: 0,
    coalesced: 0,
    stores: 0,
    tooLarge: 0,
    purged: 0,
    backgroundErrors: 0,
  };

  private readonly shared: CacheStore;
  private readonly ns: string;
  private readonly lru: LRUCache<string, Entry>;
  private readonly varyIndex: LRUCache<string, string[]>;
  private readonly passUntil: LRUCache<string, number>;

  constructor(
    readonly config: CacheConfig,
    private readonly deps: { clock: Clock; /** Shared with other caches (one byte bound per process). */ store?: CacheStore; /** This cache's key prefix in a shared store. */ namespace?: string },
  ) {
    const clock = deps.clock;
    // The library reads time through `now()`, a method: a subclass puts it on our clock. (The
    // base constructor calls now(), so the clock comes from this closure, not a field.)
    this.Policy = class extends CachePolicy {
      now(): number {
        return clock.now();
      }
    };
    this.shared = deps.store ?? new CacheStore(config.maxBytes, config.maxEntryBytes);
    this.ns = deps.namespace ? `${deps.namespace}\u0002` : '';
    this.lru = this.shared.lru;
    this.varyIndex = this.shared.varyIndex;
    this.passUntil = this.shared.passUntil;
  }

  stats(): CacheStats {
    return {
      ...this.m,
      evictions: this.shared.evictions,
      entries: this.lru.size,
      bytes: this.lru.calculatedSize,
      varyKeys: this.varyIndex.size,
      passKeys: this.passUntil.size,
      inflight: this.inflight.size,
    };
  }

  /** The key a request is stored under (without its Vary part): `GET host/path?query|h:name=value`. */
  primaryKey(req: CacheRequest, method = req.method): string {
    return this.pk(req, method).slice(this.ns.length);
  }

  /** The key as stored (with this cache's namespace). */
  private pk(req: CacheRequest, method: string): string {
    return `${this.ns}${method} ${this.config.key.host ? req.host.toLowerCase() : ''}${this.keyUrl(req.path)}${this.keyHeaders(req.headers)}`;
  }

  /**
   * Removes entries: `{ key }` one primary key (all its Vary variants), `{ prefix }` every key
   * starting with it (e.g. `GET api.example.com/catalog/`). Returns how many entries went.
   */
  purge(sel: { key: string } | { prefix: string }): number {
    const prefix = this.ns + ('key' in sel ? `${sel.key}\u0000` : sel.prefix);
    let n = 0;
    for (const k of [...this.lru.keys()]) {
      if (k.startsWith(prefix)) {
        this.lru.delete(k);
        n++;
      }
    }
    for (const k of [...this.varyIndex.keys()]) if (`${k}\u0000`.startsWith(prefix) || k.startsWith(prefix)) this.varyIndex.delete(k);
    this.m.purged += n;
    return n;
  }

  /**
   * The fast HIT path, synchronous (the cache layer answers with it before making a promise or a
   * closure; `handle` starts with it too): a fresh entry for a GET or HEAD that carries nothing
   * that changes the library's answer (no Authorization, Cache-Control, Pragma or validators) is
   * a HIT by RFC 9111 4.2 without asking http-cache-semantics again: the entry's freshness
   * deadline and headers were computed by it when the entry was stored. Age is its age then plus
   * the time resident (RFC 9111 4.2.3), as the library computes it; Date is formatted once a
   * second. Undefined: not a fast HIT, ask `handle`. Costs a key string and an LRU lookup.
   */
  freshHit(req: CacheRequest): CacheResponse | undefined {
    const method = req.method;
    if (method !== 'GET' && method !== 'HEAD') return undefined;
    const h = req.headers;
    if (h.authorization !== undefined || h['cache-control'] !== undefined || h.pragma !== undefined || h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined) return undefined;
    const entry = this.lru.get(this.variantKey(this.pk(req, method), h));
    if (entry === undefined) return undefined;
    const now = this.deps.clock.now();
    if (!(now < entry.freshUntil)) return undefined;
    this.m.hits++;
    const headers = { ...entry.hitHeaders, age: `${Math.round(entry.ageAtStore + (now - entry.storedAt) / 1000)}`, date: httpDate(now), 'x-cache': 'HIT' };
    return { status: entry.status, headers, body: method === 'HEAD' ? EMPTY : entry.body };
  }

  /** Answers a request from the cache or through `upstream`. Upstream failures propagate (thrown) unless stale-if-error applies. */
  async handle(req: CacheRequest, upstream: CacheUpstream): Promise<CacheResponse> {
    const method = req.method.toUpperCase();
    if (method !== 'GET' && method !== 'HEAD') {
      const res = await upstream(req);
      if (!SAFE.has(method) && res.status < 400) {
        this.purge({ key: this.primaryKey(req, 'GET') });
        this.purge({ key: this.primaryKey(req, 'HEAD') });
      }
      this.m.passes++;
      return withState(res, 'PASS');
    }
    const fast = this.freshHit(req);
    if (fast !== undefined) return fast;
    const primary = this.pk(req, method);
    const auth = req.headers.authorization !== undefined;
    const vkey = this.variantKey(primary, req.headers);
    const entry = this.lru.get(vkey);

    const preq = this.policyRequest(req, method);
    if (entry && (!auth || entry.authOk)) {
      const stale = entry.policy.stale();
      if (!(stale && entry.mustRevalidate)) {
        const ev = entry.policy.evaluateRequest(preq);
        if (ev.response && !ev.revalidation) {
          this.m.hits++;
          return this.serve(entry, 'HIT', req, ev.response.headers);
        }
        if (ev.response && ev.revalidation && !ev.revalidation.synchronous) {
          this.m.stale++;
          this.background(vkey, entry, req, preq, upstream);
          return this.serve(entry, 'STALE', req, ev.response.headers);
        }
      }
      // Must go to the origin: a conditional request with the entry's validators.
      const r = await this.coalesce(`R${vkey}`, () => this.revalidate(entry, req, preq, upstream));
      return this.answer(r, req);
    }

    if (auth) return this.answer(await this.fetch(primary, req, preq, upstream), req);
    const pass = this.passUntil.get(primary);
    if (pass !== undefined && pass > this.deps.clock.now()) {
      this.m.passes++;
      return withState(await upstream(req), 'PASS');
    }
    const leader = !this.inflight.has(`M${vkey}`);
    const r = await this.coalesce(`M${vkey}`, () => this.fetch(primary, req, preq, upstream));
    if (leader) return this.answer(r, req);
    // A follower: the leader's response, just received from the origin, serves it if it was
    // stored and fits this request's Vary values (even a no-cache one: it is as fresh as a
    // revalidation would make it).
    if (r.entry && r.entry.key === this.variantKey(primary, req.headers)) {
      this.m.hits++;
      return this.serve(r.entry, 'HIT', req);
    }
    if (r.entry === undefined) {
      // Not storable: fetch for ourselves (the leader's answer may be personal).
      this.m.passes++;
      return withState(await upstream(req), 'PASS');
    }
    // Stored, but for another variant (Vary): our own miss.
    return this.answer(await this.fetch(primary, req, preq, upstream), req);
  }

  // -------------------------------------------------------------------------------------------

  private answer(r: Fetched, req: CacheRequest): CacheResponse {
    if (r.entry) return this.serve(r.entry, r.res.headers['x-cache'] as CacheState, req);
    return r.res;
  }

  private coalesce(key: string, fn: () => Promise<Fetched>): Promise<Fetched> {
    const cur = this.inflight.get(key);
    if (cur) {
      this.m.coalesced++;
      return cur;
    }
    const p = fn().finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private background(vkey: string, entry: Entry, req: CacheRequest, preq: CachePolicy.Request, upstream: CacheUpstream): void {
    if (this.inflight.has(`R${vkey}`)) return;
    void this.coalesce(`R${vkey}`, () => this.revalidate(entry, req, preq, upstream, true)).catch(() => {
      this.m.backgroundErrors++;
    });
  }

  /** A miss: fetch unconditionally (the client's own validators are answered by us), store if allowed. */
  private async fetch(primary: string, req: CacheRequest, preq: CachePolicy.Request, upstream: CacheUpstream): Promise<Fetched> {
    this.m.misses++;
    const res = await upstream({ ...req, headers: preq.headers });
    const entry = this.store(primary, req, preq, res);
    return { entry, res: withState(res, 'MISS') };
  }

  private async revalidate(entry: Entry, req: CacheRequest, preq: CachePolicy.Request, upstream: CacheUpstream, background = false): Promise<Fetched> {
    const headers = entry.policy.revalidationHeaders(preq) as Headers;
    let res: CacheResponse;
    try {
      res = await upstream({ ...req, headers });
    } catch (err) {
      if (!background && this.staleIfError(entry)) {
        this.m.stale++;
        return { entry, res: withState(emptyRes(entry), 'STALE') };
      }
      throw err;
    }
    if (res.status >= 500 && this.staleIfError(entry)) {
      if (!background) this.m.stale++;
      return { entry, res: withState(emptyRes(entry), 'STALE') };
    }
    if (res.status === 304) {
      // RFC 9111 4.3.4: the stored response, its headers updated from the 304.
      const merged: Record<string, string | string[] | undefined> = { ...entry.headers };
      for (const [k, v] of Object.entries(res.headers)) if (!['content-length', 'transfer-encoding', 'content-encoding', 'x-cache'].includes(k)) merged[k] = v;
      const fresh = this.store(entry.primary, req, preq, { status: entry.status, headers: merged, body: entry.body });
      if (!background) this.m.revalidated++;
      if (fresh) return { entry: fresh, res: withState(emptyRes(fresh), 'REVALIDATED') };
      return { entry: undefined, res: withState({ status: entry.status, headers: merged, body: entry.body }, 'REVALIDATED') };
    }
    if (!background) this.m.misses++;
    const stored = this.store(entry.primary, req, preq, res);
    if (!stored) this.lru.delete(entry.key);
    return { entry: stored, res: withState(res, 'MISS') };
  }

  private staleIfError(e: Entry): boolean {
    return e.staleIfError > 0 && !e.mustRevalidate && e.policy.age() < e.policy.maxAge() + e.staleIfError;
  }

  private store(primary: string, req: CacheRequest, preq: CachePolicy.Request, res: CacheResponse): Entry | undefined {
    const cc = parseCC(res.headers['cache-control']);
    const vary = str(res.headers.vary);
    const varyNames = vary ? [...new Set(vary.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean))].sort() : [];
    const mustRevalidate = cc.has('must-revalidate') || cc.has('proxy-revalidate');
    const policy = new this.Policy(preq, { status: res.status, headers: this.policyView(res, cc) }, { shared: true, cacheHeuristic: 0 });
    const hasValidator = res.headers.etag !== undefined || res.headers['last-modified'] !== undefined;
    const storable = policy.storable() && !varyNames.includes('*') && (policy.timeToLive() > 0 || hasValidator);
    if (!storable) {
      if (req.headers.authorization === undefined && this.config.hitForPassSeconds > 0)
        this.passUntil.set(primary, this.deps.clock.now() + this.config.hitForPassSeconds * 1000);
      return undefined;
    }
    if (res.body.length > this.config.maxEntryBytes) {
      this.m.tooLarge++;
      if (this.config.hitForPassSeconds > 0) this.passUntil.set(primary, this.deps.clock.now() + this.config.hitForPassSeconds * 1000);
      return undefined;
    }
    this.passUntil.delete(primary);
    const headers: Record<string, string | string[] | undefined> = {};
    let hbytes = 0;
    for (const [k, v] of Object.entries(res.headers)) {
      if (v === undefined || k === 'x-cache' || k.startsWith(':')) continue;
      headers[k] = v;
      hbytes += k.length + (Array.isArray(v) ? v.join('').length : String(v).length) + 4;
    }
    const key = this.variantKey(primary, req.headers, varyNames);
    const entry: Entry = {
      primary,
      key,
      status: res.status,
      headers,
      body: res.body,
      policy,
      mustRevalidate,
      staleIfError: Number(cc.get('stale-if-error') ?? 0) || 0,
      authOk: cc.has('public') || cc.has('s-maxage') || cc.has('must-revalidate'),
      size: 0,
      freshUntil: -Infinity,
      storedAt: this.deps.clock.now(),
      ageAtStore: policy.age(),
      hitHeaders: {},
    };
    if (!policy.stale()) {
      entry.freshUntil = entry.storedAt + (policy.maxAge() - entry.ageAtStore) * 1000;
      const h = policy.responseHeaders() as Record<string, string | string[] | undefined>;
      delete h.age;
      delete h.date;
      delete h.warning;
      if (headers['cache-control'] !== undefined) h['cache-control'] = headers['cache-control'];
      else delete h['cache-control'];
      for (const k of Object.keys(h)) if (h[k] === undefined) delete h[k]; // served as they are (no cleanHeaders on a fast HIT)
      entry.hitHeaders = h;
    }
    this.varyIndex.set(primary, varyNames);
    // Estimated footprint: body, headers, key (UTF-16), and ~1 KiB for the policy and entry objects.
    entry.size = res.body.length + hbytes * 2 + key.length * 2 + 1024;
    this.lru.set(key, entry);
    this.m.stores++;
    return entry;
  }

  /**
   * What the library is shown of a response: must-/proxy-revalidate removed (we enforce them, see
   * the header comment) and, when configured, `s-maxage=defaultTtl` for a response that is
   * cacheable by default but names no freshness. The client still sees the origin's headers.
   */
  private policyView(res: CacheResponse, cc: Map<string, string>): CachePolicy.Headers {
    const view: CachePolicy.Headers = { ...res.headers };
    const parts: string[] = [];
    for (const [k, v] of cc) if (k !== 'must-revalidate' && k !== 'proxy-revalidate') parts.push(v === '' ? k : `${k}=${v}`);
    const explicit = cc.has('max-age') || cc.has('s-maxage') || res.headers.expires !== undefined;
    const forbids = cc.has('no-store') || cc.has('no-cache') || cc.has('private');
    if (this.config.defaultTtlSeconds > 0 && !explicit && !forbids && CACHEABLE_BY_DEFAULT.has(res.status)) parts.push(`s-maxage=${this.config.defaultTtlSeconds}`);
    if (parts.length) view['cache-control'] = parts.join(', ');
    else delete view['cache-control'];
    return view;
  }

  /** `computed`: the entry's response headers (with Age) when evaluateRequest already made them. */
  private serve(entry: Entry, state: CacheState, req: CacheRequest, computed?: CachePolicy.Headers): CacheResponse {
    const h = (computed ?? entry.policy.responseHeaders()) as Record<string, string | string[] | undefined>;
    if (entry.headers['cache-control'] !== undefined) h['cache-control'] = entry.headers['cache-control'];
    else delete h['cache-control'];
    h['x-cache'] = state;
    // The client's own validators, answered here (RFC 9110 13.1.1 / 13.1.3).
    const inm = str(req.headers['if-none-match']);
    const ims = str(req.headers['if-modified-since']);
    const etag = str(entry.headers.etag);
    const lm = str(entry.headers['last-modified']);
    let notModified = false;
    if (inm !== undefined) notModified = etag !== undefined && (inm.trim() === '*' || inm.split(',').some((t) => t.trim().replace(/^W\//, '') === etag.replace(/^W\//, '')));
    else if (ims !== undefined && lm !== undefined) notModified = Date.parse(lm) <= Date.parse(ims);
    if (notModified && entry.status === 200) {
      delete h['content-length'];
      return { status: 304, headers: h, body: Buffer.alloc(0) };
    }
    return { status: entry.status, headers: h, body: req.method.toUpperCase() === 'HEAD' ? Buffer.alloc(0) : entry.body };
  }

  private policyRequest(req: CacheRequest, method: string): CachePolicy.Request {
    const headers: Headers = {};
    for (const [k, v] of Object.entries(req.headers)) if (!CONDITIONAL.includes(k)) headers[k] = v;
    headers.host = this.config.key.host ? req.host.toLowerCase() : '';
    return { method, url: this.keyUrl(req.path), headers: headers as CachePolicy.Headers };
  }

  private variantKey(primary: string, headers: Headers, names = this.varyIndex.get(primary)): string {
    if (!names || names.length === 0) return `${primary}\u0000`;
    return `${primary}\u0000${names.map((n) => `${n}=${str(headers[n]) ?? ''}`).join('\u0001')}`;
  }

  private keyUrl(path: string): string {
    const q = path.indexOf('?');
    if (q < 0 || this.config.key.query === 'all') return path;
    const base = path.slice(0, q);
    if (this.config.key.query === 'none') return base;
    const params = new URLSearchParams(path.slice(q + 1));
    const kept = this.config.key.query.flatMap((name) => params.getAll(name).map((v) => `${encodeURIComponent(name)}=${encodeURIComponent(v)}`));
    return kept.length ? `${base}?${kept.join('&')}` : base;
  }

  private keyHeaders(h: Headers): string {
    if (this.config.key.headers.length === 0) return '';
    return `|${this.config.key.headers.map((n) => `${n}=${str(h[n]) ?? ''}`).join('|')}`;
  }
}

const EMPTY = Buffer.alloc(0);
let dateSecond = -1;
let dateText = '';

/** An IMF-fixdate (RFC 9110 5.6.7) for `ms`, formatted once per second. */
function httpDate(ms: number): string {
  const sec = Math.floor(ms / 1000);
  if (sec !== dateSecond) {
    dateSecond = sec;
    dateText = new Date(sec * 1000).toUTCString();
  }
  return dateText;
}

function withState(res: CacheResponse, state: CacheState): CacheResponse {
  return { ...res, headers: { ...res.headers, 'x-cache': state } };
}

/** A placeholder response whose only use is to carry the state; `serve` builds the real one. */
function emptyRes(e: Entry): CacheResponse {
  return { status: e.status, headers: {}, body: Buffer.alloc(0) };
}

/**
 * The caches of one process (sidecar or gateway): one store bounded by `--cache-max-bytes`, one
 * `HttpCache` per (rule, cache config), kept across snapshots while the config is the same (a
 * policy update elsewhere does not empty the cache). Purges reach every cache.
 */
export class CacheRegistry {
  private made: CacheStore | undefined;
  private readonly caches = new Map<string, HttpCache>();

  constructor(
    readonly maxBytes: number,
    private readonly clock: Clock,
  ) {}

  /**
   * The shared store, made by the first rule with a cache: its key LRUs preallocate a slot per
   * possible key (131,072 each for 64 MiB, ~4 MB of arrays), which a process without a cache rule
   * (most sidecars) should not carry.
   */
  get store(): CacheStore {
    return (this.made ??= new CacheStore(this.maxBytes));
  }

  /** Evictions, bytes and entries of the store (zeros while no rule has a cache). */
  totals(): { evictions: number; bytes: number; entries: number } {
    const s = this.made;
    return s ? { evictions: s.evictions, bytes: s.bytes, entries: s.entries } : { evictions: 0, bytes: 0, entries: 0 };
  }

  /** The cache of a rule (`route/rule`) with this config; its entries survive snapshots that keep the config. */
  cache(rule: string, config: Omit<CacheConfig, 'maxBytes'>): HttpCache {
    const cfg: CacheConfig = { ...config, maxBytes: this.maxBytes, maxEntryBytes: Math.min(config.maxEntryBytes, this.maxBytes) };
    const id = `${rule}\u0001${JSON.stringify(cfg)}`;
    let c = this.caches.get(id);
    if (!c) {
      // A changed config is a new namespace: entries keyed the old way are not served, and age out.
      for (const [k, old] of this.caches)
        if (k.startsWith(`${rule}\u0001`)) {
          old.purge({ prefix: '' });
          this.caches.delete(k);
          this.retire(rule, old.stats());
        }
      this.caches.set(id, (c = new HttpCache(cfg, { clock: this.clock, store: this.store, namespace: `${rule}\u0001${this.caches.size}` })));
    }
    return c;
  }

  /** Every cache's entries under a key (all its Vary variants) or a key prefix; how many went. */
  purge(sel: { key: string } | { prefix: string }): number {
    let n = 0;
    for (const c of this.caches.values()) n += c.purge(sel);
    return n;
  }

  private readonly retired = new Map<string, CacheStats>();
  private retire(rule: string, s: CacheStats): void {
    const r = this.retired.get(rule);
    if (!r) return void this.retired.set(rule, { ...s });
    for (const k of Object.keys(s) as (keyof CacheStats)[]) r[k] += s[k];
  }

  /** Per rule: the counters of its caches so far (a rule whose config changed got a new cache; its counts carry on). */
  rules(): { rule: string; stats: CacheStats }[] {
    const out = new Map<string, CacheStats>();
    for (const [rule, s] of this.retired) out.set(rule, { ...s });
    for (const [k, c] of this.caches) {
      const rule = k.slice(0, k.indexOf('\u0001'));
      const s = c.stats();
      const cur = out.get(rule);
      if (!cur) out.set(rule, s);
      else for (const f of ['hits', 'misses', 'stale', 'revalidated', 'passes', 'coalesced', 'stores', 'tooLarge', 'purged', 'backgroundErrors'] as const) cur[f] += s[f];
    }
    return [...out].map(([rule, stats]) => ({ rule, stats }));
  }
}
