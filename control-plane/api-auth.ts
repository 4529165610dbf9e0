/**
 * Who may use the control plane's REST API (docs/security.md, "The API").
 *
 * Every request but the open ones (GET /healthz, and the dashboard's static page under /ui/, which
 * holds no data) must carry `Authorization: Bearer TOKEN`:
 *   - an API token (`mla_ID.SECRET`, `meshlet token create --role ROLE`), stored hashed in the
 *     token store, revocable, with an expiry; or
 *   - on Kubernetes, a ServiceAccount token, verified with TokenReview and mapped to a role by
 *     `--api-sa-role NAMESPACE/SERVICEACCOUNT=ROLE` (`NAMESPACE/*` for every account of a namespace).
 *
 * Roles, each including the ones below it:
 *   view   GET/HEAD of everything but the admin paths: resources, status, stats, schema, the
 *          dashboard's data, tap, explain, config_dump, /metrics, Prometheus SD
 *   edit   POST/PUT/DELETE of resources and /v1/apply
 *   admin  /v1/tokens (API and join tokens), /v1/ca, and TLSCertificates (read and write: they hold
 *          private keys, never returned but still secrets; /v1/apply with one needs admin too)
 *
 * The decision is made before routing and is deny-by-default: a path nobody listed still needs a
 * credential (a new endpoint is never open by accident), its role from its method.
 * No credential, or one that does not verify: 401 with `WWW-Authenticate: Bearer`; a valid
 * credential with too small a role: 403 naming the role needed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { SecurityError } from '../src/security/errors';
import type { TokenReviewer } from './token-review';
import { API_PREFIX, API_ROLES, type ApiRole, type TokenStore } from './tokens';

export type { ApiRole };

const RANK: Record<ApiRole, number> = { view: 0, edit: 1, admin: 2 };

/** The URL names of the kinds that hold private keys (kindFromName's names of TLSCertificate). */
const SECRET_KINDS = new Set(['tlscertificate', 'tlscertificates', 'tlscert']);

/** One REST route: an example path (the tests call each), its method, and the role it needs (`open`: none). */
export interface ApiRoute {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  role: ApiRole | 'open';
}

/**
 * Every route the API port serves (api.ts, cli-api.ts, ui-api.ts). The tests walk this table:
 * each answers 401 without a credential (open ones excepted) and 403 to a role below its own.
 */
export const API_ROUTES: readonly ApiRoute[] = [
  { method: 'GET', path: '/healthz', role: 'open' },
  { method: 'GET', path: '/ui/', role: 'open' },
  { method: 'GET', path: '/metrics', role: 'view' },
  { method: 'GET', path: '/v1/status', role: 'view' },
  { method: 'GET', path: '/v1/snapshot', role: 'view' },
  { method: 'GET', path: '/v1/stats', role: 'view' },
  { method: 'GET', path: '/v1/schema', role: 'view' },
  { method: 'GET', path: '/v1/schema/route', role: 'view' },
  { method: 'GET', path: '/v1/sd/prometheus', role: 'view' },
  { method: 'GET', path: '/v1/version', role: 'view' },
  { method: 'GET', path: '/v1/sidecars/x/config_dump', role: 'view' },
  { method: 'GET', path: '/v1/explain?from=x', role: 'view' },
  { method: 'GET', path: '/v1/graph', role: 'view' },
  { method: 'GET', path: '/v1/history/x', role: 'view' },
  { method: 'GET', path: '/v1/rollout', role: 'view' },
  { method: 'GET', path: '/v1/tap?service=x', role: 'view' },
  { method: 'GET', path: '/v1/routes', role: 'view' },
  { method: 'GET', path: '/v1/routes/x', role: 'view' },
  { method: 'POST', path: '/v1/routes', role: 'edit' },
  { method: 'PUT', path: '/v1/routes/x', role: 'edit' },
  { method: 'DELETE', path: '/v1/routes/x', role: 'edit' },
  { method: 'POST', path: '/v1/apply', role: 'edit' },
  { method: 'GET', path: '/v1/tokens', role: 'admin' },
  { method: 'POST', path: '/v1/tokens', role: 'admin' },
  { method: 'DELETE', path: '/v1/tokens/x', role: 'admin' },
  { method: 'GET', path: '/v1/ca', role: 'admin' },
  { method: 'GET', path: '/v1/tlscertificates', role: 'admin' },
  { method: 'GET', path: '/v1/tlscertificates/x', role: 'admin' },
  { method: 'POST', path: '/v1/tlscertificates', role: 'admin' },
  { method: 'PUT', path: '/v1/tlscertificates/x', role: 'admin' },
  { method: 'DELETE', path: '/v1/tlscertificates/x', role: 'admin' },
  { method: 'POST', path: '/v1/ca/rotate', role: 'admin' },
];

/** The role a request needs; `open` for the health check and the dashboard's static files. */
export function requiredRole(method: string | undefined, pathname: string): ApiRole | 'open' {
  const read = method === 'GET' || method === 'HEAD';
  if (read && (pathname === '/healthz' || pathname === '/ui' || pathname.startsWith('/ui/'))) return 'open';
  if (/^\/v1\/(tokens|ca)(\/|$)/.test(pathname)) return 'admin';
  // Decoded as the router decodes it (`/v1/tlscert%69ficates` is the same kind).
  const seg = /^\/v1\/([^/]+)(\/|$)/.exec(pathname)?.[1];
  let kind = seg;
  try {
    kind = seg === undefined ? undefined : decodeURIComponent(seg);
  } catch {
    // the router answers 400 for it
  }
  if (kind !== undefined && SECRET_KINDS.has(kind.toLowerCase())) return 'admin';
  return read ? 'view' : 'edit';
}

export interface ApiPrincipal {
  role: ApiRole;
  /** `token:ID` or `serviceaccount:NS/SA`: for logs. */
  subject: string;
}

export interface ApiAuthOptions {
  tokens: TokenStore;
  /** ServiceAccount tokens (Kubernetes), with the roles they map to. */
  tokenReviewer?: TokenReviewer;
  /** `NS/SA` or `NS/*` -> role. */
  serviceAccountRoles?: Record<string, ApiRole>;
  logger?: Logger;
}

export class ApiAuthError extends Error {
  constructor(
    readonly status: 401 | 403,
    readonly code: 'unauthenticated' | 'forbidden',
    message: string,
  ) {
    super(message);
  }
}

const NO_CREDENTIAL =
  'this control plane needs a bearer token (Authorization: Bearer TOKEN): the CLI sends $MESHLET_TOKEN or its context\'s token (`meshlet up` writes one); a control plane started on its own wrote an admin token to DATA_DIR/admin.token; make more with `meshlet token create --role view|edit|admin`';

export class ApiAuthenticator {
  constructor(private readonly opts: ApiAuthOptions) {}

  /** The caller, when allowed `role`; throws an ApiAuthError (401 or 403) otherwise. */
  async authorize(req: IncomingMessage, role: ApiRole): Promise<ApiPrincipal> {
    const h = req.headers.authorization;
    if (!h) throw new ApiAuthError(401, 'unauthenticated', NO_CREDENTIAL);
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
    if (!m) throw new ApiAuthError(401, 'unauthenticated', `the Authorization header must be "Bearer TOKEN"; ${NO_CREDENTIAL}`);
    const principal = await this.authenticate(m[1] as string);
    if (RANK[principal.role] < RANK[role])
      throw new ApiAuthError(403, 'forbidden', `${req.method} ${pathOf(req)} needs the ${role} role; this credential (${principal.subject}) has ${principal.role}`);
    return principal;
  }

  private async authenticate(token: string): Promise<ApiPrincipal> {
    if (token.startsWith(API_PREFIX) || !this.opts.tokenReviewer) {
      try {
        const t = await this.opts.tokens.verifyApi(token);
        return { role: t.role, subject: `token:${t.id}` };
      } catch (err) {
        if (err instanceof SecurityError) throw new ApiAuthError(401, 'unauthenticated', `${err.message}; ${err.code === 'CREDENTIAL_INVALID' ? 'check $MESHLET_TOKEN or the context\'s token' : 'ask an admin for a new token'}`);
        throw err;
      }
    }
    let sa;
    try {
      sa = await this.opts.tokenReviewer.review(token);
    } catch (err) {
      if (err instanceof SecurityError) throw new ApiAuthError(401, 'unauthenticated', err.message);
      throw err;
    }
    const roles = this.opts.serviceAccountRoles ?? {};
    const role = roles[`${sa.namespace}/${sa.serviceAccount}`] ?? roles[`${sa.namespace}/*`];
    const subject = `serviceaccount:${sa.namespace}/${sa.serviceAccount}`;
    if (!role) throw new ApiAuthError(403, 'forbidden', `${subject} has no role on this control plane; give it one with --api-sa-role ${sa.namespace}/${sa.serviceAccount}=view|edit|admin`);
    return { role, subject };
  }
}

function pathOf(req: IncomingMessage): string {
  const u = req.url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
}

/** Parses `NS/SA=ROLE` (SA may be `*`). */
export function parseServiceAccountRole(s: string): { key: string; role: ApiRole } | string {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)=(\w+)$/.exec(s);
  if (!m) return `expected NAMESPACE/SERVICEACCOUNT=ROLE (SERVICEACCOUNT may be *), got ${JSON.stringify(s)}`;
  const role = m[5] as ApiRole;
  if (!API_ROLES.includes(role)) return `the role must be one of ${API_ROLES.join(', ')}, got ${JSON.stringify(m[5])}`;
  return { key: `${m[1]}/${m[3]}`, role };
}

/** Sends an ApiAuthError as JSON (401 with `WWW-Authenticate: Bearer`). */
export function sendAuthError(req: IncomingMessage, res: ServerResponse, e: ApiAuthError): void {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  // The body of a refused request is never read: the connection cannot carry another request.
  if (req.headers['content-length'] || req.headers['transfer-encoding']) headers.connection = 'close';
  if (e.status === 401) headers['www-authenticate'] = 'Bearer realm="meshlet"';
  res.writeHead(e.status, headers).end(JSON.stringify({ code: e.code, message: e.message }) + '\n');
}
