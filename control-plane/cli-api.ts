/**
 * The REST API's routes for the CLI's views of the running mesh (hooked into api.ts's router):
 *
 *   GET /v1/version                        this control plane's version (and data dir), and every connected sidecar's
 *   GET /v1/sidecars/{id}/config_dump      what one sidecar runs (its admin port's /config_dump), for `meshlet proxy-config`
 *   GET /v1/explain?from=SVC|sidecar=ID&method=&url=&header=k:v   a sidecar's /explain, for `meshlet explain`
 *   GET /v1/ejections                      endpoints the sidecars' outlier detection ejected (sampled), for `meshlet check`
 *   GET /v1/certificates                   the certificates the gateways' HTTPS listeners serve (sampled), for `meshlet check`
 *   GET /v1/decisions?id=REQUEST_ID[&from=SVC|&sidecar=ID]     what the sidecars did with a real request
 *                                          (their /decisions), for `meshlet explain --last`
 *   POST /v1/cache/purge {service?, key | prefix}   every connected sidecar's (of `service`) response caches, for `meshlet cache purge`
 *
 * The control plane reaches each sidecar's admin port at the address its push connection came
 * from (as `meshlet stat` does; never the address a sidecar declares for itself, so a sidecar
 * cannot point the control plane at another host), so users need no port-forward.
 * A cache purge goes to the admin ports, not down the push streams, so that it reaches every
 * sidecar whichever control-plane replica took the request (with the etcd store each replica sees
 * every registered sidecar).
 */
import type { IncomingMessage } from 'node:http';
import { VERSION } from '../src/core/version';
import { orderHops, type HopRecord } from '../src/observability/decisions';
import { redactResources } from '../src/policy/redact';
import type { MeshHistory } from './history';
import type { Registry, SidecarStatus } from './registry';
import { SidecarAdminClient } from './sidecar-admin';

type Reply = { status: number; body: unknown };
type Handler = (req: IncomingMessage, url: URL) => Promise<Reply> | Reply;
export type CliRoutes = Partial<Record<'GET' | 'POST' | 'PUT' | 'DELETE', Handler>>;

export interface CliApiDeps {
  registry: Registry;
  dataDir?: string;
  /** The sidecars' sampled stats (history.ts): ejections over time, for `meshlet check`. */
  history?: MeshHistory;
  /** Reaches the sidecars' admin paths (plaintext to an admin port, mTLS to a status port). */
  admin?: SidecarAdminClient;
}

/** Without a CA (--no-identity): plaintext only. */
const PLAIN_ADMIN = new SidecarAdminClient(undefined);

/** The routes for `/v1/<segments>`, or undefined when the path is not one of these. */
export function cliRoutes(deps: CliApiDeps, segments: string[]): CliRoutes | undefined {
  const [a, b, c, ...rest] = segments;
  if (rest.length > 0) return undefined;
  if (a === 'version' && b === undefined) return { GET: () => version(deps) };
  if (a === 'sidecars' && b && c === 'config_dump') return { GET: async () => redactDump(await fromSidecar(deps, b, '/config_dump')) };
  if (a === 'explain' && b === undefined) return { GET: (_r, u) => explain(deps, u) };
  if (a === 'decisions' && b === undefined) return { GET: (_r, u) => decisions(deps, u) };
  if (a === 'ejections' && b === undefined) return { GET: () => ejections(deps) };
  if (a === 'certificates' && b === undefined) return { GET: () => certificates(deps) };
  if (a === 'cache' && b === 'purge' && c === undefined) return { POST: (r) => purgeCaches(deps, r) };
  return undefined;
}

function version(deps: CliApiDeps): Reply {
  return {
    status: 200,
    body: {
      controlPlane: { version: VERSION, node: process.version, ...(deps.dataDir ? { dataDir: deps.dataDir } : {}) },
      sidecars: deps.registry
        .sidecars()
        .filter((s) => s.connected)
        .map((s) => ({ id: s.id, service: s.service, version: s.buildVersion || null })),
    },
  };
}

/** A config dump's resources with private keys redacted (gateways redact their own; this holds for any). */
function redactDump(r: Reply): Reply {
  const body = r.body as { resources?: unknown } | null;
  if (r.status !== 200 || !body || typeof body !== 'object' || !Array.isArray(body.resources)) return r;
  return { ...r, body: { ...body, resources: redactResources(body.resources) } };
}

function notFound(message: string): Reply {
  return { status: 404, body: { code: 'not_found', message } };
}

async function fromSidecar(deps: CliApiDeps, id: string, path: string): Promise<Reply> {
  const s = deps.registry.sidecars().find((x) => x.id === id);
  if (!s) {
    const ids = deps.registry.sidecars().map((x) => x.id);
    return notFound(`no sidecar ${JSON.stringify(id)}${ids.length ? `; connected: ${ids.join(', ')}` : ''}`);
  }
  return ask(deps, s, path);
}

async function explain(deps: CliApiDeps, url: URL): Promise<Reply> {
  const q = url.searchParams;
  const from = q.get('from');
  const id = q.get('sidecar');
  const all = deps.registry.sidecars().filter((s) => s.connected);
  const s = id ? all.find((x) => x.id === id) : all.find((x) => x.service === from && x.adminPort);
  if (!s) {
    const services = [...new Set(all.map((x) => x.service))].sort();
    return notFound(id ? `no connected sidecar ${JSON.stringify(id)}` : `no connected sidecar of service ${JSON.stringify(from)}${services.length ? `; services with sidecars: ${services.join(', ')}` : ''}`);
  }
  const pass = new URLSearchParams(q);
  pass.delete('from');
  pass.delete('sidecar');
  const r = await ask(deps, s, `/explain?${pass}`);
  if (r.status === 200 && r.body && typeof r.body === 'object') return { status: 200, body: { sidecar: s.id, ...(r.body as object) } };
  return r;
}

/** Endpoints ejected now or within the history's retention, for `meshlet check`. */
function ejections(deps: CliApiDeps): Reply {
  const h = deps.history;
  if (!h || h.intervalMs <= 0) return { status: 200, body: { sampling: false, ejections: [] } };
  return { status: 200, body: { sampling: true, intervalMs: h.intervalMs, retentionMs: h.retentionMs, at: h.latest() ? new Date((h.latest() as { at: number }).at).toISOString() : null, ejections: h.ejections() } };
}

/**
 * The certificates every connected gateway serves (subject, names, notBefore/notAfter, file), from
 * the history's samples of their `/stats`: a gateway reads its certificates from files on its own
 * host, so this is the only place that sees them all. For `meshlet check` (MC0017/MC0018).
 */
function certificates(deps: CliApiDeps): Reply {
  const h = deps.history;
  if (!h || h.intervalMs <= 0) return { status: 200, body: { sampling: false, certificates: [] } };
  return { status: 200, body: { sampling: true, intervalMs: h.intervalMs, at: h.latest() ? new Date((h.latest() as { at: number }).at).toISOString() : null, certificates: h.certificates() } };
}

/** Sidecars asked at once for `explain --last`. */
const DECISIONS_PARALLEL = 16;

/**
 * `explain --last`: asks every connected sidecar (or those of `from`, or one `sidecar`) for the
 * request id in its ring of recent decisions, and merges what they recorded in the order the request travelled (orderHops): the
 * caller's outbound side, the callee's inbound side, and any further hop that propagated the id.
 */
async function decisions(deps: CliApiDeps, url: URL): Promise<Reply> {
  const q = url.searchParams;
  const reqId = q.get('id');
  if (!reqId) return { status: 400, body: { code: 'bad_request', message: 'id=REQUEST_ID is required' } };
  const from = q.get('from');
  const id = q.get('sidecar');
  const all = deps.registry.sidecars().filter((s) => s.connected && s.adminPort);
  const asked = id ? all.filter((x) => x.id === id) : from ? all.filter((x) => x.service === from) : all;
  if (asked.length === 0) {
    const services = [...new Set(all.map((x) => x.service))].sort();
    return notFound(id ? `no connected sidecar ${JSON.stringify(id)}` : from ? `no connected sidecar of service ${JSON.stringify(from)}${services.length ? `; services with sidecars: ${services.join(', ')}` : ''}` : 'no connected sidecars');
  }
  const found: HopRecord[] = [];
  const unreachable: { sidecar: string; message: string }[] = [];
  let kept = 0;
  const path = `/decisions?${new URLSearchParams({ id: reqId })}`;
  for (let i = 0; i < asked.length; i += DECISIONS_PARALLEL) {
    const batch = asked.slice(i, i + DECISIONS_PARALLEL);
    const replies = await Promise.all(batch.map((s) => ask(deps, s, path, 2000)));
    replies.forEach((r, k) => {
      const b = r.body as { decisions?: HopRecord[]; kept?: number; message?: string } | undefined;
      if (r.status === 200 && Array.isArray(b?.decisions)) {
        found.push(...b.decisions);
        kept = Math.max(kept, b.kept ?? 0);
      } else unreachable.push({ sidecar: (batch[k] as SidecarStatus).id, message: b?.message ?? `status ${r.status}` });
    });
  }
  return { status: 200, body: { requestId: reqId, asked: asked.length, kept, decisions: orderHops(found), ...(unreachable.length ? { unreachable } : {}) } };
}

/** GETs a path on a sidecar's admin port; failures become 502 with the reason. Redirects are not followed. */
async function ask(deps: CliApiDeps, s: SidecarStatus, path: string, timeoutMs = 3000): Promise<Reply> {
  if (!s.adminPort) return { status: 502, body: { code: 'unreachable', message: `sidecar ${s.id} registered no admin port` } };
  if (!s.peerAddress) return { status: 502, body: { code: 'unreachable', message: `sidecar ${s.id} has no push connection to be reached through` } };
  let res: IncomingMessage;
  try {
    res = await (deps.admin ?? PLAIN_ADMIN).request(s, { path, timeoutMs });
  } catch (err) {
    return { status: 502, body: { code: 'unreachable', message: (err as Error).message } };
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('error', (err) => resolve({ status: 502, body: { code: 'unreachable', message: `sidecar ${s.id}: ${err.message}` } }));
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = { code: 'sidecar_error', message: `sidecar ${s.id} answered ${res.statusCode}: ${text.trim().slice(0, 500)}` };
      }
      resolve({ status: res.statusCode === 200 ? 200 : res.statusCode === 400 ? 400 : 502, body });
    });
  });
}

/** Reads a small JSON request body; undefined when it is not JSON (or too large). */
function readBody(req: IncomingMessage, max = 64 * 1024): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > max) {
        resolve(undefined);
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => resolve(undefined));
  });
}

/**
 * `POST /v1/cache/purge` `{ "service"?: S, "key": K }` or `{ "service"?: S, "prefix": P }`: the
 * purge goes to every connected sidecar (of service S) at its admin port; the answer sums what
 * went and lists each sidecar's result (a sidecar that could not be reached is named, with why).
 */
async function purgeCaches(deps: CliApiDeps, req: IncomingMessage): Promise<Reply> {
  const text = await readBody(req);
  if (text === undefined) return { status: 400, body: { code: 'bad_request', message: 'the body must be a JSON object of at most 64 KiB' } };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { status: 400, body: { code: 'invalid_json', message: 'the body must be JSON: {"key": "GET host/path"} or {"prefix": "GET host/"}' } };
  }
  const o = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>) : {};
  const service = o.service;
  if (service !== undefined && (typeof service !== 'string' || service === '')) return { status: 400, body: { code: 'invalid', message: 'service must be a service name' } };
  const sel = 'key' in o ? { key: o.key } : { prefix: o.prefix };
  if (('key' in o) === ('prefix' in o) || ('key' in o ? typeof o.key !== 'string' || o.key === '' : typeof o.prefix !== 'string'))
    return { status: 400, body: { code: 'invalid', message: 'set exactly one of key (a non-empty string) or prefix (a string)' } };
  const targets = deps.registry.sidecars().filter((s) => s.connected && (service === undefined || s.service === service));
  const results = await Promise.all(
    targets.map(async (s) => {
      const r = await send(deps, s, 'POST', '/cache/purge', JSON.stringify(sel));
      const purged = (r.body as { purged?: unknown } | null)?.purged;
      return r.status === 200 && typeof purged === 'number' ? { id: s.id, service: s.service, purged } : { id: s.id, service: s.service, purged: undefined, error: (r.body as { message?: string } | null)?.message ?? `answered ${r.status}` };
    }),
  );
  const purged = results.reduce((n, r) => n + (r.purged ?? 0), 0);
  const failed = results.filter((r) => 'error' in r).length;
  return { status: failed > 0 && failed === results.length ? 502 : 200, body: { purged, sidecars: results } };
}

/** One request to a sidecar's admin port with a JSON body; failures become 502 with the reason. */
async function send(deps: CliApiDeps, s: SidecarStatus, method: string, path: string, body: string, timeoutMs = 3000): Promise<Reply> {
  if (!s.adminPort || !s.peerAddress) return { status: 502, body: { code: 'unreachable', message: `sidecar ${s.id} registered no admin port` } };
  let res: IncomingMessage;
  try {
    res = await (deps.admin ?? PLAIN_ADMIN).request(s, { method, path, body, timeoutMs, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } });
  } catch (err) {
    return { status: 502, body: { code: 'unreachable', message: (err as Error).message } };
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('error', (err) => resolve({ status: 502, body: { code: 'unreachable', message: `sidecar ${s.id}: ${err.message}` } }));
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve({ status: res.statusCode ?? 502, body: JSON.parse(text) });
      } catch {
        resolve({ status: 502, body: { code: 'sidecar_error', message: `sidecar ${s.id} answered ${res.statusCode}: ${text.trim().slice(0, 300)}` } });
      }
    });
  });
}
