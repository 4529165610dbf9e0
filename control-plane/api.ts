/**
 * The control plane's REST API (node:http, JSON in and out).
 *
 *   GET    /v1/{kind}                 list (`kind`: any name `kindFromName` accepts)
 *   POST   /v1/{kind}                 create (409 if it exists)
 *   GET    /v1/{kind}/{name}          read
 *   PUT    /v1/{kind}/{name}          create or update; a body `metadata.resourceVersion` must match
 *   DELETE /v1/{kind}/{name}          delete (`?resourceVersion=` to make it conditional)
 *   POST   /v1/apply                  `{ items: [...] }`: create-or-update all, in one commit (`?dryRun=true`: check only)
 *   GET    /v1/status                 snapshot version, store revision, convergence, sidecars
 *   GET    /v1/snapshot               the snapshot sidecars are being pushed
 *   GET    /v1/stats                  per service and route: success rate, req/s, p50/p99 (from sidecars)
 *   GET    /v1/schema                 the kinds, each with the URL of its JSON Schema
 *   GET    /v1/schema/{kind}          the JSON Schema of a kind (as in deploy/schema/)
 *   GET    /v1/sd/prometheus          Prometheus HTTP SD targets: this control plane and every sidecar
 *   GET    /v1/version, /v1/sidecars/{id}/config_dump, /v1/explain   for the CLI (cli-api.ts)
 *   GET    /v1/ca, POST /v1/ca/rotate  the CA and its trust bundle; a root rotation (admin)
 *   POST   /v1/cache/purge            `{service?, key | prefix}`: every sidecar's response caches (cli-api.ts)
 *   GET    /metrics  GET /healthz
 *   GET    /ui/, /v1/graph, /v1/history/{service}, /v1/rollout, /v1/tap   the dashboard (ui-api.ts)
 *
 * A write is checked in two steps: the resource on its own (`parseResource`, field-path errors),
 * then, inside the store's commit (under its lock, against the state it will change), the
 * references across the whole resulting set (`validateReferences`). Either failing is a 400 with
 * every error and its path; nothing is written. Every failure is an `ApiError` with a stable code,
 * turned into a response in one place (`sendError`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import pino, { type Logger } from 'pino';
import type { FieldError } from '../src/core/result';
import { describeRaw, kindFromName, parseEach, parseResource, resourceKey, toWire, validateReferences } from '../src/policy/parse';
import { redactResource, redactResources } from '../src/policy/redact';
import { checkValidity, describeLeaf } from '../src/security/tls-material';
import { jsonSchema } from '../src/policy/json-schema';
import { API_VERSION, KINDS, type Kind, type Resource } from '../src/policy/types';
import { collectMeshStats } from '../src/observability/mesh-stats';
import { CONTENT_TYPES, negotiate } from '../src/observability/metrics';
import { ApiAuthError, requiredRole, sendAuthError, type ApiAuthenticator } from './api-auth';
import type { MeshCa } from './ca';
import { caPinOf } from '../src/security/ca-pin';
import { cliRoutes } from './cli-api';
import type { SidecarAdminClient } from './sidecar-admin';
import type { MeshHistory } from './history';
import { API_ROLES, type ApiRole, type TokenStore } from './tokens';
import { SecurityError } from '../src/security/errors';
import { parseTtl } from '../src/security/duration';
import type { ControlPlaneMetrics } from './metrics';
import { MAX_MESSAGE_BYTES } from '../src/proto';
import type { PushServer } from './push-server';
import type { Registry } from './registry';
import type { UiApi } from './ui-api';
import { contentOf, StoreError, type Store, type StoreOp, type StoreView, type WireResource } from './store';

/** Request bodies above this are refused with 413. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

type ApiErrorCode =
  | 'invalid_json'
  | 'invalid'
  | 'too_large'
  | 'unknown_kind'
  | 'not_found'
  | 'conflict'
  | 'method_not_allowed'
  | 'forbidden'
  | 'bad_request'
  | 'unavailable'
  | 'outcome_unknown'
  | 'internal';

const STATUS: Record<ApiErrorCode, number> = {
  invalid_json: 400,
  invalid: 400,
  bad_request: 400,
  too_large: 413,
  unknown_kind: 404,
  not_found: 404,
  conflict: 409,
  forbidden: 403,
  method_not_allowed: 405,
  /** A store write failed part-way: it may or may not have applied (the client re-reads, then decides). */
  outcome_unknown: 503,
  internal: 500,
  unavailable: 503,
};

class ApiError extends Error {
  readonly code: ApiErrorCode;
  readonly status: number;
  readonly errors?: FieldError[];
  /** For 405: the methods the path supports. */
  readonly allow?: string[];
  constructor(code: ApiErrorCode, message: string, opts: { errors?: FieldError[]; allow?: string[] } = {}) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = STATUS[code];
    this.errors = opts.errors;
    this.allow = opts.allow;
  }
}

export interface ApiDeps {
  store: Store;
  registry: Registry;
  push: PushServer;
  metrics: ControlPlaneMetrics;
  logger?: Logger;
  /** The control plane's data directory (`meshlet version`; `meshlet logs` finds the local mesh's logs there). */
  dataDir?: string;
  /** The dashboard's page and read-only endpoints (ui-api.ts). */
  ui?: UiApi;
  /** The sidecars' sampled stats (ejections over time, `GET /v1/ejections`). */
  history?: MeshHistory;
  /** Resources in a snapshot, in bytes of JSON (default: 3/4 of the push message limit, the rest left for endpoints). */
  maxSnapshotBytes?: number;
  /** Bearer-token authentication and roles (api-auth.ts); absent: every caller may do everything. */
  auth?: ApiAuthenticator;
  /** The token store (`/v1/tokens`, admin) and the CA (`/v1/ca`, admin), when security is on. */
  tokens?: TokenStore;
  ca?: MeshCa;
  /** Reaches the sidecars' admin paths (plaintext to an admin port, mTLS to a status port). */
  admin?: SidecarAdminClient;
  /** Now, ms since the epoch (default Date.now): a TLSCertificate written must be valid at this time. */
  now?: () => number;
}

/** The role of the caller of each request (set once its credential verified; absent: no API auth). */
const CALLER_ROLE = new WeakMap<IncomingMessage, ApiRole>();

/** Default snapshot budget: what a sidecar can receive in one push message, less room for endpoints. */
export const DEFAULT_MAX_SNAPSHOT_BYTES = Math.floor((MAX_MESSAGE_BYTES * 3) / 4);

type Reply = { status: number; body: unknown } | { status: number; text: string; contentType: string };
type Handler = (req: IncomingMessage, url: URL) => Promise<Reply> | Reply;
type Routes = Partial<Record<'GET' | 'POST' | 'PUT' | 'DELETE', Handler>>;

/** The request handler for `http.createServer`. It never throws and always answers. */
export function createApiHandler(deps: ApiDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const api = new Api(deps);
  const ui = deps.ui;
  const counted = (status: number): void => deps.metrics.apiRequest(status);
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    if (ui?.handle(req, res, counted)) return;
    void api.handle(req, res);
  };
  const auth = deps.auth;
  if (!auth) return serve;
  const logger = deps.logger ?? pino({ level: 'silent' });
  return (req, res) => {
    let pathname: string;
    try {
      pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    } catch {
      pathname = '/';
    }
    const role = requiredRole(req.method, pathname);
    if (role === 'open') return serve(req, res);
    auth.authorize(req, role).then(
      (principal) => {
        CALLER_ROLE.set(req, principal.role);
        serve(req, res);
      },
      (err: unknown) => {
        if (err instanceof ApiAuthError) {
          counted(err.status);
          if (err.status === 403) logger.info({ method: req.method, path: pathname, reason: err.message }, 'API request refused');
          sendAuthError(req, res, err);
          return;
        }
        logger.error({ err }, 'API authentication failed');
        counted(500);
        res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'internal', message: 'internal error while checking the credential' }) + '\n');
      },
    );
  };
}

class Api {
  private readonly store: Store;
  private readonly logger: Logger;
  /** Stored resources are frozen and replaced on change, so their parsed form can be cached by identity. */
  private readonly parsed = new WeakMap<WireResource, Resource | null>();
  /** JSON size of stored resources (frozen, replaced on change: cached by identity). */
  private readonly sizes = new WeakMap<WireResource, number>();

  constructor(private readonly deps: ApiDeps) {
    this.store = deps.store;
    this.logger = deps.logger ?? pino({ level: 'silent' });
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let reply: Reply;
    try {
      reply = await this.route(req);
    } catch (err) {
      reply = this.errorReply(err, req);
      if (err instanceof ApiError && err.allow) res.setHeader('allow', err.allow.join(', '));
      if (err instanceof ApiError && err.code === 'too_large') res.setHeader('connection', 'close');
    }
    this.deps.metrics.apiRequest(reply.status);
    try {
      if ('text' in reply) {
        res.writeHead(reply.status, { 'content-type': reply.contentType });
        res.end(reply.text);
      } else {
        res.writeHead(reply.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(reply.body) + '\n');
      }
    } catch (err) {
      this.logger.warn({ err }, 'could not send an API response');
      res.destroy();
    }
  }

  private route(req: IncomingMessage): Promise<Reply> | Reply {
    let url: URL;
    let segments: string[];
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
      segments = url.pathname.split('/').slice(1).map(decodeURIComponent);
    } catch {
      throw new ApiError('bad_request', `malformed request path ${JSON.stringify(req.url)}`);
    }
    const [top, a, b, ...rest] = segments;
    // The CLI's views of the running mesh (version, a sidecar's config, explain): cli-api.ts.
    let routes: Routes | undefined = top === 'v1' ? cliRoutes(this.deps, segments.slice(1)) : undefined;
    if (routes) {
      // found in cli-api.ts
    } else if (top === 'healthz' && a === undefined) routes = { GET: () => ({ status: 200, text: 'ok\n', contentType: 'text/plain' }) };
    else if (top === 'metrics' && a === undefined) routes = { GET: (r) => this.metrics(r) };
    else if (top === 'v1' && a !== undefined && a !== '' && rest.length === 0) {
      if (a === 'status' && b === undefined) routes = { GET: () => this.status() };
      else if (a === 'stats' && b === undefined) routes = { GET: () => this.meshStats() };
      else if (a === 'sd' && b === 'prometheus') routes = { GET: (r) => this.prometheusTargets(r) };
      else if (a === 'snapshot' && b === undefined) routes = { GET: () => this.snapshot() };
      else if (a === 'apply' && b === undefined) routes = { POST: (r, u) => this.apply(r, u.searchParams.get('dryRun') === 'true') };
      else if (a === 'schema') routes = { GET: () => schemaReply(b) };
      else if (a === 'tokens') routes = this.tokenRoutes(b);
      else if (a === 'ca' && b === undefined) routes = { GET: () => this.caInfo() };
      else if (a === 'ca' && b === 'rotate') routes = { POST: (r) => this.caRotate(r) };
      else {
        const kind = kindFromName(a);
        if (!kind) throw new ApiError('unknown_kind', `unknown kind ${JSON.stringify(a)}; use one of ${KINDS.map((k) => k.toLowerCase()).join(', ')}`);
        if (b === undefined) {
          routes = { GET: () => this.list(kind), POST: (r) => this.create(r, kind) };
        } else if (b !== '') {
          routes = {
            GET: () => this.read(kind, b),
            PUT: (r) => this.put(r, kind, b),
            DELETE: (_r, u) => this.remove(kind, b, u.searchParams.get('resourceVersion') ?? undefined),
          };
        }
      }
    }
    if (!routes) throw new ApiError('not_found', `no such path: ${url.pathname}`);
    const method = req.method === 'HEAD' ? 'GET' : (req.method as keyof Routes);
    const handler = routes[method];
    if (!handler) {
      const allow = Object.keys(routes);
      throw new ApiError('method_not_allowed', `${req.method} is not allowed on ${url.pathname}; use ${allow.join(', ')}`, { allow });
    }
    return handler(req, url);
  }

  // ---------------------------------------------------------------------------- admin side

  /** `/v1/tokens` (list, create) and `/v1/tokens/{id}` (revoke): API and join tokens. */
  private tokenRoutes(id: string | undefined): Routes | undefined {
    const tokens = this.deps.tokens;
    const off = (): never => {
      throw new ApiError('unavailable', 'tokens are off on this control plane (started with --no-identity and --no-api-auth)');
    };
    if (id === undefined)
      return {
        GET: async () => ({ status: 200, body: { items: await (tokens ?? off()).list() } }),
        POST: async (r) => {
          const body = (await readJson(r)) as { role?: unknown; service?: unknown; ttl?: unknown; description?: unknown } | null;
          if (!body || typeof body !== 'object') throw new ApiError('invalid', 'the body must be {"role": "view|edit|admin"} or {"service": NAME}, with "ttl" and "description" optional');
          const str = (v: unknown, k: string): string | undefined => {
            if (v === undefined) return undefined;
            if (typeof v !== 'string') throw new ApiError('invalid', `${k} must be a string`, { errors: [{ path: k, message: 'must be a string' }] });
            return v;
          };
          const role = str(body.role, 'role');
          if (role !== undefined && !API_ROLES.includes(role as ApiRole))
            throw new ApiError('invalid', `role must be one of ${API_ROLES.join(', ')}`, { errors: [{ path: 'role', message: `must be one of ${API_ROLES.join(', ')}` }] });
          const ttlText = str(body.ttl, 'ttl');
          const ttlMs = ttlText === undefined ? undefined : parseTtl(ttlText);
          if (ttlText !== undefined && ttlMs === undefined) throw new ApiError('invalid', `ttl: expected a duration such as 30m, 1h or 7d, got ${JSON.stringify(ttlText)}`, { errors: [{ path: 'ttl', message: 'not a duration' }] });
          try {
            const t = await (tokens ?? off()).create({ role: role as ApiRole | undefined, service: str(body.service, 'service'), ttlMs, description: str(body.description, 'description') });
            this.logger.info({ id: t.info.id, kind: t.info.kind, role: t.info.role, service: t.info.service }, 'token created');
            return { status: 201, body: { token: t.token, ...t.info } };
          } catch (err) {
            if (err instanceof SecurityError) throw new ApiError('invalid', err.message);
            throw err;
          }
        },
      };
    if (id === '') return undefined;
    return {
      DELETE: async () => {
        if (!(await (tokens ?? off()).revoke(id))) throw new ApiError('not_found', `no token ${JSON.stringify(id)}`);
        this.logger.info({ id }, 'token revoked');
        return { status: 200, body: { id, revoked: true } };
      },
    };
  }

  /** `/v1/ca`: the trust domain and the roots in the trust bundle. */
  private caInfo(): { status: number; body: Record<string, unknown> } {
    const ca = this.deps.ca;
    if (!ca) throw new ApiError('unavailable', 'this control plane runs without a CA (--no-identity)');
    // caHash: what sidecars pin the push port with (`--ca-hash`; join tokens carry it).
    return { status: 200, body: { trustDomain: ca.trustDomain, caHash: caPinOf(ca.rootPem()), roots: ca.trustBundle().info(), bundlePem: ca.bundlePem() } };
  }

  /**
   * `POST /v1/ca/rotate` `{overlap?: "48h", caCertPem?, caKeyPem?}`: a new root signs from now on
   * (or an intermediate under the user root given), the old root stays trusted for `overlap`
   * (default twice the workload TTL). Kept where the CA is kept (the data dir or etcd): other
   * replicas load it within their poll, every sidecar gets the new bundle and renews.
   */
  private async caRotate(req: IncomingMessage): Promise<Reply> {
    const ca = this.deps.ca;
    if (!ca) throw new ApiError('unavailable', 'this control plane runs without a CA (--no-identity)');
    const raw = await readJson(req, { emptyOk: true });
    const body = (raw ?? {}) as { overlap?: unknown; caCertPem?: unknown; caKeyPem?: unknown };
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiError('invalid', 'the body must be {"overlap": DURATION, "caCertPem": PEM, "caKeyPem": PEM}, every field optional');
    for (const k of Object.keys(body))
      if (!['overlap', 'caCertPem', 'caKeyPem'].includes(k)) throw new ApiError('invalid', `unknown field ${JSON.stringify(k)}`, { errors: [{ path: k, message: 'unknown field (overlap, caCertPem, caKeyPem)' }] });
    for (const k of ['overlap', 'caCertPem', 'caKeyPem'] as const)
      if (body[k] !== undefined && typeof body[k] !== 'string') throw new ApiError('invalid', `${k} must be a string`, { errors: [{ path: k, message: 'must be a string' }] });
    const overlap = body.overlap as string | undefined;
    const overlapMs = overlap === undefined ? undefined : parseTtl(overlap);
    if (overlap !== undefined && overlapMs === undefined) throw new ApiError('invalid', `overlap: expected a duration such as 48h, got ${JSON.stringify(overlap)}`, { errors: [{ path: 'overlap', message: 'not a duration' }] });
    if ((body.caCertPem === undefined) !== (body.caKeyPem === undefined)) throw new ApiError('invalid', 'caCertPem and caKeyPem go together (the new user root and its key)');
    const userRoot = body.caCertPem !== undefined ? { certPem: body.caCertPem as string, keyPem: body.caKeyPem as string } : undefined;
    const before = caPinOf(ca.rootPem());
    // Another replica (or the CLI offline) may have changed the CA since this one last looked: load it, then rotate.
    await ca.reloadIfChanged();
    try {
      await ca.rotateRoot({ overlapMs, userRoot });
    } catch (err) {
      if (err instanceof SecurityError) throw new ApiError(/changed by another/.test(err.message) ? 'conflict' : 'invalid', err.message);
      throw err;
    }
    const info = this.caInfo().body;
    this.logger.info({ previousCaHash: before, caHash: info.caHash }, 'CA root rotated through the API');
    return { status: 200, body: { rotated: true, previousCaHash: before, ...info } };
  }

  // ------------------------------------------------------------------------------- read side

  private metrics(req: IncomingMessage): Reply {
    const format = negotiate(req.headers.accept);
    return { status: 200, text: this.deps.metrics.render(format), contentType: CONTENT_TYPES[format] };
  }

  /**
   * `meshlet stat` / `top`: every connected sidecar's sliding windows, merged. Fetched only from the
   * address each sidecar's push connection came from (never its self-declared one), without
   * following redirects (any non-200 is an error).
   */
  private async meshStats(): Promise<Reply> {
    const sidecars = this.deps.registry
      .sidecars()
      .filter((s) => s.connected)
      .map((s) => ({ ...s, address: s.peerAddress ?? '', adminPort: s.peerAddress ? s.adminPort : undefined }));
    return { status: 200, body: await collectMeshStats(sidecars) };
  }

  /**
   * Prometheus HTTP service discovery (`http_sd_configs`): the control plane itself, then every
   * connected sidecar's admin port, labelled with its service and id.
   */
  private prometheusTargets(req: IncomingMessage): Reply {
    const self = req.socket.localAddress && req.socket.localPort ? `${hostForUrl(req.socket.localAddress)}:${req.socket.localPort}` : undefined;
    const groups: { targets: string[]; labels: Record<string, string> }[] = [];
    if (self) groups.push({ targets: [self], labels: { job_role: 'control-plane', service: 'meshlet-control-plane' } });
    for (const s of this.deps.registry.sidecars())
      if (s.connected && s.adminPort && s.peerAddress) groups.push({ targets: [`${hostForUrl(s.peerAddress)}:${s.adminPort}`], labels: { job_role: 'sidecar', service: s.service, sidecar: s.id } });
    return { status: 200, body: groups };
  }

  private status(): Reply {
    const snap = this.deps.push.snapshot();
    return {
      status: 200,
      body: {
        version: snap.version,
        revision: snap.revision,
        convergence: this.deps.push.lastConvergence() ?? null,
        // Each with the version of its own view (`expectedVersion`): a scoped sidecar runs its scope's.
        sidecars: this.deps.push.sidecars(),
      },
    };
  }

  private snapshot(): Reply {
    const s = this.deps.push.snapshot();
    return { status: 200, body: { version: s.version, revision: s.revision, resources: redactResources(s.resources), endpoints: s.endpoints } };
  }

  // Private keys (TLSCertificate) are never returned: redacted in every answer (src/policy/redact.ts).
  private list(kind: Kind): Reply {
    return { status: 200, body: { apiVersion: API_VERSION, kind: 'List', items: redactResources(this.store.list(kind)) } };
  }

  private read(kind: Kind, name: string): Reply {
    const r = this.store.get(kind, name);
    if (!r) throw new ApiError('not_found', `${kind} ${JSON.stringify(name)} not found`);
    return { status: 200, body: redactResource(r) };
  }

  // ------------------------------------------------------------------------------ write side

  private async create(req: IncomingMessage, kind: Kind): Promise<Reply> {
    const res = this.parseOne(await readJson(req), kind);
    const result = await this.commitBounded((view) => {
      this.checkReferences(view, [res], [], `${resourceKey(res)} is invalid`);
      this.checkCertificates(view, [res], `${resourceKey(res)} is invalid`);
      return [{ op: 'create', resource: wire(res) }];
    });
    const r = result.results[0];
    this.logger.info({ kind, name: res.metadata.name, revision: result.revision }, 'resource created');
    return { status: 201, body: r && redactResource(r.resource) };
  }

  private async put(req: IncomingMessage, kind: Kind, name: string): Promise<Reply> {
    const res = this.parseOne(await readJson(req), kind, name);
    const result = await this.commitBounded((view) => {
      this.checkReferences(view, [res], [], `${resourceKey(res)} is invalid`);
      this.checkCertificates(view, [res], `${resourceKey(res)} is invalid`);
      return [{ op: 'put', resource: wire(res), expectedVersion: res.metadata.resourceVersion }];
    });
    const r = result.results[0];
    if (r && r.action !== 'unchanged') this.logger.info({ kind, name, action: r.action, revision: result.revision }, 'resource written');
    return { status: r?.action === 'created' ? 201 : 200, body: r && redactResource(r.resource) };
  }

  private async remove(kind: Kind, name: string, expectedVersion: string | undefined): Promise<Reply> {
    const result = await this.commitBounded((view) => {
      // Missing: let the store say not_found.
      if (view.get(kind, name)) this.checkReferences(view, [], [`${kind}/${name}`], `${kind}/${name} cannot be deleted: other resources refer to it`);
      return [{ op: 'delete', kind, name, expectedVersion }];
    });
    this.logger.info({ kind, name, revision: result.revision }, 'resource deleted');
    const gone = result.results[0]?.resource;
    return { status: 200, body: gone && redactResource(gone) };
  }

  /** `?dryRun=true`: every check against the stored state, under the store's lock; nothing is written. */
  private async apply(req: IncomingMessage, dryRun = false): Promise<Reply> {
    const body = await readJson(req);
    const items = (body as { items?: unknown } | null)?.items;
    if (body === null || typeof body !== 'object' || Array.isArray(body) || !Array.isArray(items))
      throw new ApiError('invalid', 'the body must be {"items": [...resources]}', { errors: [{ path: 'items', message: 'must be an array of resources' }] });
    if (items.length === 0) throw new ApiError('invalid', 'nothing to apply', { errors: [{ path: 'items', message: 'must contain at least one resource' }] });
    const each = parseEach(items);
    if (!each.ok) throw new ApiError('invalid', `${each.errors.length} error(s) in the items; nothing applied`, { errors: each.errors });
    const parsed = each.value;
    // TLSCertificates hold private keys: the admin role alone writes them (as /v1/tlscertificates).
    const role = CALLER_ROLE.get(req);
    const secret = parsed.find((r) => r.kind === 'TLSCertificate');
    if (this.deps.auth && secret && role !== 'admin')
      throw new ApiError('forbidden', `${resourceKey(secret)} holds a private key: applying a TLSCertificate needs the admin role; this credential has ${role ?? 'none'}`);
    let dryResults: { kind: Kind; name: string; action: string; resourceVersion?: string }[] = [];
    const result = await this.commitBounded((view) => {
      this.checkReferences(view, parsed, [], 'the items are inconsistent with each other or with stored resources; nothing applied');
      this.checkCertificates(view, parsed, 'a certificate is not valid now; nothing applied');
      if (dryRun) {
        dryResults = dryRunActions(view, parsed.map(wire));
        return [];
      }
      return parsed.map((r): StoreOp => ({ op: 'put', resource: wire(r), expectedVersion: r.metadata.resourceVersion }));
    });
    if (dryRun) return { status: 200, body: { revision: result.revision, dryRun: true, results: dryResults } };
    this.logger.info({ items: parsed.length, revision: result.revision }, 'applied');
    return {
      status: 200,
      body: {
        revision: result.revision,
        results: result.results.map((r) => ({ kind: r.kind, name: r.name, action: r.action, resourceVersion: r.resource.metadata.resourceVersion })),
      },
    };
  }

  /**
   * A store commit whose result must still fit in one push message: a snapshot a sidecar cannot
   * receive would cut every sidecar off from later fixes too, so it is refused here, naming the limit.
   */
  private commitBounded(plan: (view: StoreView) => StoreOp[]): ReturnType<Store['commit']> {
    const limit = this.deps.maxSnapshotBytes ?? DEFAULT_MAX_SNAPSHOT_BYTES;
    return this.store.commit((view) => {
      const ops = plan(view);
      const size = (r: WireResource): number => {
        let n = this.sizes.get(r);
        if (n === undefined) this.sizes.set(r, (n = Buffer.byteLength(JSON.stringify(r)) + 1));
        return n;
      };
      const touched = new Map<string, number>();
      for (const op of ops) {
        if (op.op === 'delete') touched.set(`${op.kind}/${op.name}`, 0);
        else touched.set(`${op.resource.kind}/${op.resource.metadata.name}`, Buffer.byteLength(JSON.stringify(op.resource)) + 100);
      }
      let total = 0;
      for (const r of view.all()) if (!touched.has(`${r.kind}/${r.metadata.name}`)) total += size(r);
      for (const n of touched.values()) total += n;
      if (total > limit)
        throw new ApiError('too_large', `the snapshot would be ${total} bytes of resources, over the limit of ${limit} bytes (what a sidecar can receive in one push message): nothing written`);
      return ops;
    });
  }

  /** Parses one resource for `/v1/{kind}[/{name}]`; the body's kind (and name) must match the URL's. */
  private parseOne(body: unknown, kind: Kind, name?: string): Resource {
    const o = body as { kind?: unknown; metadata?: { name?: unknown } } | null;
    if (o && typeof o === 'object' && o.kind !== undefined && o.kind !== kind)
      throw new ApiError('invalid', `the body's kind must match the URL`, { errors: [{ path: 'kind', message: `must be ${JSON.stringify(kind)} (from the URL), got ${JSON.stringify(o.kind)}` }] });
    const r = parseResource(body);
    if (!r.ok) {
      const what = describeRaw(body, 0);
      throw new ApiError('invalid', `${what.startsWith('document[') ? `the ${kind}` : what} is invalid`, { errors: r.errors });
    }
    if (name !== undefined && r.value.metadata.name !== name)
      throw new ApiError('invalid', `the body's metadata.name must match the URL`, {
        errors: [{ path: 'metadata.name', message: `must be ${JSON.stringify(name)} (from the URL), got ${JSON.stringify(r.value.metadata.name)}` }],
      });
    return r.value;
  }

  /**
   * Runs inside a commit plan: the references across the stored resources, with `upserts` written
   * and `deletes` (`Kind/name`) removed, must hold. Errors the stored set already had (a store
   * edited by hand) do not block a write, so they can be fixed one resource at a time.
   */
  private checkReferences(view: StoreView, upserts: readonly Resource[], deletes: readonly string[], message: string): void {
    const current = view.all().flatMap((w) => {
      const r = this.parseStored(w);
      return r ? [r] : [];
    });
    const replaced = new Set([...deletes, ...upserts.map(resourceKey)]);
    const after = [...current.filter((r) => !replaced.has(resourceKey(r))), ...upserts];
    const errors = validateReferences(after);
    if (errors.length === 0) return;
    const key = (e: FieldError) => `${e.path}\0${e.message}`;
    const known = new Set(validateReferences(current).map(key));
    const fresh = errors.filter((e) => !known.has(key(e)));
    if (fresh.length > 0) throw new ApiError('invalid', message, { errors: fresh });
  }

  /**
   * Runs inside a commit plan: a TLSCertificate written with a new certificate must be valid now
   * (not expired, not valid only later). One stored unchanged is not checked again: re-applying a
   * directory is not refused for a certificate `meshlet check` already reports (MC0017/MC0018).
   */
  private checkCertificates(view: StoreView, upserts: readonly Resource[], message: string): void {
    const now = (this.deps.now ?? Date.now)();
    const errors: FieldError[] = [];
    for (const r of upserts) {
      if (r.kind !== 'TLSCertificate') continue;
      const stored = view.get('TLSCertificate', r.metadata.name);
      if ((stored?.spec as { certificate?: unknown } | undefined)?.certificate === r.spec.certificate) continue;
      const leaf = describeLeaf(r.spec.certificate);
      const bad = leaf && checkValidity(leaf, now);
      if (bad) errors.push({ path: `${resourceKey(r)}: spec.${bad.field}`, message: bad.message, code: bad.code });
    }
    if (errors.length > 0) throw new ApiError('invalid', message, { errors });
  }

  private parseStored(w: WireResource): Resource | null {
    let r = this.parsed.get(w);
    if (r === undefined) {
      const p = parseResource(w);
      r = p.ok ? p.value : null;
      if (!p.ok) this.logger.warn({ resource: `${w.kind}/${w.metadata.name}`, errors: p.errors }, 'stored resource no longer parses; ignored for reference checks');
      this.parsed.set(w, r);
    }
    return r;
  }

  private errorReply(err: unknown, req: IncomingMessage): Reply {
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if (err instanceof StoreError) e = new ApiError(err.code, err.message);
    else {
      this.logger.error({ err, method: req.method, url: req.url }, 'API request failed');
      e = new ApiError('internal', 'internal error');
    }
    return { status: e.status, body: { code: e.code, message: e.message, ...(e.errors ? { errors: e.errors } : {}) } };
  }
}

/** What a put of each resource would do, without doing it (the store's own rules: conflict on a stale resourceVersion). */
function dryRunActions(view: StoreView, items: WireResource[]): { kind: Kind; name: string; action: string; resourceVersion?: string }[] {
  return items.map((w) => {
    const cur = view.get(w.kind, w.metadata.name);
    const expected = w.metadata.resourceVersion;
    if (expected !== undefined && cur?.metadata.resourceVersion !== expected)
      throw new StoreError('conflict', `${w.kind}/${w.metadata.name}: resourceVersion ${expected} is not the stored one (${cur?.metadata.resourceVersion ?? 'none'})`);
    const same = cur !== undefined && canonical(contentOf(cur)) === canonical(contentOf(w));
    return { kind: w.kind, name: w.metadata.name, action: cur === undefined ? 'created' : same ? 'unchanged' : 'updated', resourceVersion: cur?.metadata.resourceVersion };
  });
}

function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x,
  );
}

/** The normalised wire form to store (metadata kept; the store sets its own fields). */
function wire(r: Resource): WireResource {
  return toWire(r) as WireResource;
}

/** Reads the body (at most MAX_BODY_BYTES) and parses it as JSON. */
async function readJson(req: IncomingMessage, opts: { emptyOk?: boolean } = {}): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (declared > MAX_BODY_BYTES) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on('end', resolve);
    // The client went away mid-body (there is nobody left to answer, but the request is done).
    const cut = () => reject(new ApiError('bad_request', 'the request body was cut short'));
    req.on('error', cut);
    req.on('close', cut);
  });
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '' && opts.emptyOk) return undefined;
  if (text.trim() === '') throw new ApiError('invalid_json', 'the request body is empty; send a JSON document');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError('invalid_json', `the request body is not valid JSON: ${(err as Error).message}`);
  }
}

function tooLarge(): ApiError {
  return new ApiError('too_large', `the request body is larger than ${MAX_BODY_BYTES} bytes`);
}

function hostForUrl(h: string): string {
  const v = h.replace(/^::ffff:/, '');
  return v.includes(':') ? `[${v}]` : v;
}

/** `GET /v1/schema` (the kinds) and `GET /v1/schema/{kind}` (its JSON Schema). */
function schemaReply(name: string | undefined): Reply {
  if (name === undefined || name === '') return { status: 200, body: { apiVersion: API_VERSION, kinds: KINDS.map((k) => ({ kind: k, schema: `/v1/schema/${k.toLowerCase()}` })) } };
  const kind = kindFromName(name);
  if (!kind) throw new ApiError('unknown_kind', `unknown kind ${JSON.stringify(name)}; use one of ${KINDS.map((k) => k.toLowerCase()).join(', ')}`);
  return { status: 200, body: jsonSchema(kind) };
}
