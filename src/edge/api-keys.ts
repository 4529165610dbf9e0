/**
 * API-key authentication (Kong's key-auth behaviour): consumers with one or more keys; the key is
 * read from a header or a query parameter; the consumer's name is forwarded to the service in a
 * header and returned as a rate-limit descriptor (`consumer`), so limits can be per client.
 *
 * Keys are stored hashed (`sha256:<hex>`, made by `hashApiKey` or `meshlet apikey create`), each
 * with an optional expiry (`{hash, expiresAt}`: refused from then on, 401 EDGE_API_KEY_EXPIRED): the policy,
 * the store and config dumps never hold a usable key. A fast hash (not a password KDF) is right
 * here because keys are long random strings, not guessable passwords, and it runs on every
 * request. The lookup is a Map get by the hash of the presented key, so the comparison does not
 * depend on how much of a real key an attacker guessed.
 *
 * The key is removed from what is forwarded (`hideCredentials`, default on), and a client-sent
 * consumer header is always removed, so a client cannot claim to be another consumer.
 * Missing or unknown keys: 401 (EDGE_API_KEY_MISSING / EDGE_API_KEY_INVALID) with
 * `WWW-Authenticate: ApiKey` (RFC 9110 11.6.1 requires a challenge with 401).
 *
 * Entry point: `compileApiKeys(raw, path)` once per snapshot -> `ApiKeyPolicy.authenticate(...)`.
 */
import { createHash } from 'node:crypto';
import { fail, ok, type Result } from '../core/result';
import { EdgeError } from './errors';
import { Checker, HEADER_NAME, firstHeader, join, type Headers } from './validate';

export function hashApiKey(key: string): string {
  return `sha256:${createHash('sha256').update(key, 'utf8').digest('hex')}`;
}

/** A key as stored: its hash, and when it stops being accepted (RFC 3339; absent: never). */
export interface StoredApiKey {
  /** `sha256:<64 hex>` */
  hash: string;
  expiresAt?: string;
}

export interface ApiKeyConsumer {
  name: string;
  keys: { hash: string; /** ms since the epoch; absent: never expires. */ expiresAtMs?: number }[];
}

export type ApiKeySource = { header: string } | { query: string };

export interface ApiKeyConfig {
  /** The rule's consumers, with those of its `consumerRefs` (ApiConsumer resources) added by `withConsumers`. */
  consumers: ApiKeyConsumer[];
  /** ApiConsumers named by the rule (their keys are merged into `consumers` when the snapshot compiles). */
  consumerRefs: string[];
  /** Where to look, in order (default: the `x-api-key` header). */
  from: ApiKeySource[];
  /** Header the consumer name is forwarded in. */
  consumerHeader: string;
  /** Remove the key from the forwarded request (default true). */
  hideCredentials: boolean;
  /** false: requests without a key pass anonymously; a key that is present must be valid. */
  required: boolean;
}

const HASH = /^sha256:[0-9a-f]{64}$/;

export function parseApiKeyConfig(raw: unknown, path = 'apiKeys'): Result<ApiKeyConfig> {
  const c = new Checker();
  const o = c.obj(raw, path);
  if (!o) return fail(c.errors);
  c.known(o, path, ['consumers', 'consumerRefs', 'from', 'consumerHeader', 'hideCredentials', 'required']);
  const consumerRefs = o.consumerRefs === undefined ? [] : c.strList(o.consumerRefs, join(path, 'consumerRefs'));
  consumerRefs.forEach((n, i) => {
    if (consumerRefs.indexOf(n) < i) c.err(`${join(path, 'consumerRefs')}[${i}]`, `duplicate ApiConsumer ${JSON.stringify(n)}`);
  });
  const seenHash = new Map<string, string>();
  const seenName = new Set<string>();
  const consumers: ApiKeyConsumer[] = [];
  if ((o.consumers === undefined || (Array.isArray(o.consumers) && o.consumers.length === 0)) && consumerRefs.length === 0)
    c.err(path, 'set consumers (written here) or consumerRefs (ApiConsumer resources), or both');
  c.list(o.consumers ?? [], join(path, 'consumers')).forEach((rc, i) => {
    const p = `${join(path, 'consumers')}[${i}]`;
    const co = c.obj(rc, p);
    if (!co) return;
    c.known(co, p, ['name', 'keys']);
    const name = c.str(co.name, join(p, 'name'));
    if (name !== undefined && !/^[A-Za-z0-9._@-]+$/.test(name)) c.err(join(p, 'name'), 'must be letters, digits, . _ @ or -');
    if (name !== undefined && seenName.has(name)) c.err(join(p, 'name'), `duplicate consumer ${JSON.stringify(name)}`);
    if (name !== undefined) seenName.add(name);
    // A key is its hash (as users write it) or {hash, expiresAt} (as users may write it, and as the
    // policy holds every key once parsed).
    const keys: ApiKeyConsumer['keys'] = [];
    c.list(co.keys, join(p, 'keys'), { min: 1 }).forEach((rk, ki) => {
      const kp = `${join(p, 'keys')}[${ki}]`;
      let k: unknown = rk;
      let expiresAtMs: number | undefined;
      if (rk !== null && typeof rk === 'object' && !Array.isArray(rk)) {
        const ko = rk as Record<string, unknown>;
        c.known(ko, kp, ['hash', 'expiresAt']);
        k = ko.hash;
        if (ko.expiresAt !== undefined) {
          expiresAtMs = typeof ko.expiresAt === 'string' ? Date.parse(ko.expiresAt) : NaN;
          if (Number.isNaN(expiresAtMs)) c.err(join(kp, 'expiresAt'), 'must be an RFC 3339 time such as 2027-01-31T00:00:00Z');
        }
      }
      if (typeof k !== 'string' || !HASH.test(k)) c.err(typeof rk === 'string' ? kp : join(kp, 'hash'), 'must be a hash, sha256:<64 hex digits> (never the key itself; see hashApiKey)');
      else if (seenHash.has(k)) c.err(kp, `the same key is already given to ${seenHash.get(k)}`);
      else {
        seenHash.set(k, name ?? '?');
        keys.push(expiresAtMs === undefined || Number.isNaN(expiresAtMs) ? { hash: k } : { hash: k, expiresAtMs });
      }
    });
    if (name !== undefined) consumers.push({ name, keys });
  });
  const from: ApiKeySource[] = [];
  if (o.from === undefined) from.push({ header: 'x-api-key' });
  else
    c.list(o.from, join(path, 'from'), { min: 1, max: 4 }).forEach((rf, i) => {
      const p = `${join(path, 'from')}[${i}]`;
      const fo = c.obj(rf, p);
      if (!fo) return;
      c.known(fo, p, ['header', 'query']);
      if ((fo.header === undefined) === (fo.query === undefined)) c.err(p, 'needs exactly one of header or query');
      else if (fo.header !== undefined) {
        const h = c.str(fo.header, join(p, 'header'));
        if (h !== undefined && !HEADER_NAME.test(h)) c.err(join(p, 'header'), 'must be a header name');
        if (h !== undefined) from.push({ header: h.toLowerCase() });
      } else {
        const q = c.str(fo.query, join(p, 'query'));
        if (q !== undefined) from.push({ query: q });
      }
    });
  const consumerHeader = (c.str(o.consumerHeader, join(path, 'consumerHeader'), { optional: true }) ?? 'x-meshlet-consumer').toLowerCase();
  if (!HEADER_NAME.test(consumerHeader)) c.err(join(path, 'consumerHeader'), 'must be a header name');
  const cfg: ApiKeyConfig = {
    consumers,
    consumerRefs,
    from,
    consumerHeader,
    hideCredentials: c.bool(o.hideCredentials, join(path, 'hideCredentials'), true),
    required: c.bool(o.required, join(path, 'required'), true),
  };
  return c.errors.length ? fail(c.errors) : ok(cfg);
}

/**
 * The rule's `apiKeys` with the consumers its `consumerRefs` name added (their keys as stored now);
 * a name with no ApiConsumer adds nobody. Done once per snapshot (compile.ts).
 */
export function withConsumers<T extends { consumers: readonly { name: string; keys: readonly StoredApiKey[] }[]; consumerRefs: readonly string[] }>(spec: T, apiConsumers: ReadonlyMap<string, readonly StoredApiKey[]>): T {
  if (spec.consumerRefs.length === 0) return spec;
  const added: { name: string; keys: readonly StoredApiKey[] }[] = [];
  for (const name of spec.consumerRefs) {
    const keys = apiConsumers.get(name);
    if (keys && keys.length > 0) added.push({ name, keys });
  }
  return { ...spec, consumers: [...spec.consumers, ...added] };
}

export function compileApiKeys(raw: unknown, path = 'apiKeys'): Result<ApiKeyPolicy> {
  const r = parseApiKeyConfig(raw, path);
  return r.ok ? ok(new ApiKeyPolicy(r.value)) : r;
}

export type ApiKeyOutcome =
  | {
      ok: true;
      /** undefined: anonymous (key optional and absent). */
      consumer: string | undefined;
      /** Rate-limit descriptor entries. */
      descriptor: Readonly<Record<string, string>>;
      removeHeaders: readonly string[];
      setHeaders: readonly (readonly [string, string])[];
      /** The path to forward (the key's query parameter removed when hidden), or undefined if unchanged. */
      path: string | undefined;
    }
  | { ok: false; error: EdgeError };

export class ApiKeyPolicy {
  /** hex digest -> the consumer, and when the key expires (ms since the epoch; Infinity: never). */
  private readonly byHash = new Map<string, { consumer: string; expiresAtMs: number }>();
  private readonly challenge: string;

  constructor(readonly config: ApiKeyConfig) {
    for (const c of config.consumers) for (const k of c.keys) this.byHash.set(k.hash.slice('sha256:'.length), { consumer: c.name, expiresAtMs: k.expiresAtMs ?? Infinity });
    const where = config.from.map((f) => ('header' in f ? `header="${f.header}"` : `query="${f.query}"`)).join(', ');
    this.challenge = `ApiKey realm="meshlet", ${where}`;
  }

  /** `now`: ms since the epoch (the layer's clock), for keys that expire. */
  authenticate(req: { path: string; headers: Headers }, now: number): ApiKeyOutcome {
    let key: string | undefined;
    let src: ApiKeySource | undefined;
    let params: URLSearchParams | undefined;
    const q = req.path.indexOf('?');
    for (const f of this.config.from) {
      if ('header' in f) key = firstHeader(req.headers, f.header);
      else if (q >= 0) key = (params ??= new URLSearchParams(req.path.slice(q + 1))).get(f.query) ?? undefined;
      if (key) {
        src = f;
        break;
      }
    }
    const remove = [this.config.consumerHeader];
    if (!key) {
      if (!this.config.required) return { ok: true, consumer: undefined, descriptor: {}, removeHeaders: remove, setHeaders: [], path: undefined };
      return { ok: false, error: new EdgeError('EDGE_API_KEY_MISSING', 'an API key is required', { 'www-authenticate': this.challenge }) };
    }
    const found = this.byHash.get(createHash('sha256').update(key, 'utf8').digest('hex'));
    if (found === undefined) return { ok: false, error: new EdgeError('EDGE_API_KEY_INVALID', 'the API key is not valid', { 'www-authenticate': this.challenge }) };
    if (now >= found.expiresAtMs) return { ok: false, error: new EdgeError('EDGE_API_KEY_EXPIRED', 'the API key has expired', { 'www-authenticate': this.challenge }) };
    const consumer = found.consumer;
    let path: string | undefined;
    if (this.config.hideCredentials && src) {
      if ('header' in src) remove.push(src.header);
      else {
        params!.delete(src.query);
        const rest = params!.toString();
        path = req.path.slice(0, q) + (rest ? `?${rest}` : '');
      }
    }
    return { ok: true, consumer, descriptor: { consumer }, removeHeaders: remove, setHeaders: [[this.config.consumerHeader, consumer]], path };
  }
}
