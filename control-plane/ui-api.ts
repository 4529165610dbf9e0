/**
 * The dashboard: its read-only API and its static files, on the control plane's API port.
 *
 *   GET /ui/                   the page (index.html; assets under /ui/assets/, content-hashed)
 *   GET /v1/graph              services, endpoints, caller -> callee edges of the last minute
 *   GET /v1/history/{service}  15 minutes of golden metrics per route and per caller, responses
 *                              by code and flag, breakers, ejections, rate-limit decisions
 *   GET /v1/rollout            every resource (version, YAML) and each sidecar's ACK/NACK/pending
 *   GET /v1/tap?service=S[&route=R][&rate=N][&headers=a,b]
 *                              live requests (NDJSON), fanned in from the sidecars' admin /tap
 *
 * Everything comes from what the control plane already has (store, registry, the snapshot in
 * force) and from the bounded history (history.ts) it samples from the sidecars' `/stats`; the
 * tap is opened on the sidecars only while a caller is connected. docs/dashboard.md documents
 * each answer.
 */
import { redactResource } from '../src/policy/redact';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { WindowMerge } from '../src/observability/metrics';
import type { SidecarWindow } from '../src/observability/mesh-stats';
import { MAX_RATE, TapError, tapOptions } from '../src/observability/tap';
import { sumResponses, type MeshHistory, type SeriesPoint, type StatsReport } from './history';
import type { PushServer } from './push-server';
import type { Registry, SidecarStatus } from './registry';
import { SidecarAdminClient } from './sidecar-admin';
import type { Store, WireResource } from './store';

export interface UiDeps {
  store: Store;
  registry: Registry;
  push: PushServer;
  history: MeshHistory;
  /** Prometheus's base URL, for links to the same queries there (`--prometheus-url`). */
  prometheusUrl?: string;
  /** Where the built page is (default: dist/ui next to this file's build). */
  uiDir?: string;
  /** Reaches the sidecars' admin paths (plaintext, or mTLS to a status port). */
  admin?: SidecarAdminClient;
}

/** The node name of callers that have no sidecar (requests arriving without `x-meshlet-source`). */
export const OUTSIDE = 'unknown';
/** Concurrent `/v1/tap` streams the control plane serves. */
export const MAX_TAPS = 8;
const TAP_STATUS_MS = 2000;

type Json = { status: number; body: unknown };

export class UiApi {
  private readonly files: Map<string, { body: Buffer; type: string; cache: string; etag: string }>;
  private taps = 0;

  private readonly admin: SidecarAdminClient;

  constructor(private readonly deps: UiDeps) {
    this.admin = deps.admin ?? new SidecarAdminClient(undefined);
    this.files = loadFiles(deps.uiDir ?? findUiDir());
  }

  /**
   * Answers the dashboard's paths; returns false for every other path (the REST API's).
   * `done(status)` is called with the status of each answer (the API's request counter).
   */
  handle(req: http.IncomingMessage, res: http.ServerResponse, done: (status: number) => void): boolean {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const p = url.pathname;
    const isUi = p === '/ui' || p.startsWith('/ui/');
    const seg = p.split('/');
    const isApi = seg[1] === 'v1' && (p === '/v1/graph' || p === '/v1/rollout' || p === '/v1/tap' || (seg[2] === 'history' && seg.length === 4));
    if (!isUi && !isApi) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/json' }).end(JSON.stringify({ code: 'method_not_allowed', message: `${req.method} is not allowed on ${p}; the dashboard is read-only` }) + '\n');
      done(405);
      return true;
    }
    if (isUi) {
      done(this.serveFile(req, res, p));
      return true;
    }
    if (p === '/v1/tap') {
      done(this.tap(req, res, url));
      return true;
    }
    void (async () => {
      let out: Json;
      try {
        if (p === '/v1/graph') out = await this.graph();
        else if (p === '/v1/rollout') out = this.rollout();
        else out = await this.serviceHistory(decodeURIComponent(seg[3] as string));
      } catch (err) {
        out = { status: 500, body: { code: 'internal', message: (err as Error).message } };
      }
      if (!res.destroyed) res.writeHead(out.status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(out.body) + '\n');
      done(out.status);
    })();
    return true;
  }

  // --------------------------------------------------------------------------------- static

  private serveFile(req: http.IncomingMessage, res: http.ServerResponse, p: string): number {
    if (p === '/ui') {
      res.writeHead(308, { location: '/ui/' }).end();
      return 308;
    }
    let rel = p.slice('/ui/'.length);
    // A page path (#-less client routes are not used, but a reload of /ui/anything gets the page).
    if (rel === '' || !rel.startsWith('assets/')) rel = 'index.html';
    const f = this.files.get(rel);
    if (!f) {
      const missing = this.files.size === 0;
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end(missing ? 'the dashboard is not built: run `npm run build`\n' : `not found: ${p}\n`);
      return 404;
    }
    const headers: http.OutgoingHttpHeaders = {
      'content-type': f.type,
      'cache-control': f.cache,
      etag: f.etag,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    };
    if (rel === 'index.html') {
      headers['content-security-policy'] = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";
      headers['x-frame-options'] = 'DENY';
    }
    if (req.headers['if-none-match'] === f.etag) {
      res.writeHead(304, headers).end();
      return 304;
    }
    headers['content-length'] = f.body.length;
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : f.body);
    return 200;
  }

  // ---------------------------------------------------------------------------------- graph

  private async latest() {
    if (!this.deps.history.latest()) await this.deps.history.sample();
    return this.deps.history.latest();
  }

  private async graph(): Promise<Json> {
    const snap = this.deps.push.snapshot();
    const sample = await this.latest();
    const sidecars = this.deps.push.sidecars();
    const ejected = ejectedEndpoints(sample?.reports ?? []);
    type Node = {
      name: string;
      kind: 'mesh' | 'gateway' | 'outside-mesh' | 'clients' | 'policy-only';
      endpoints: GraphEndpoint[];
      policy: { current: number; total: number };
      inbound: Stats | null;
    };
    const nodes = new Map<string, Node>();
    const node = (name: string, kind: Node['kind']): Node => {
      let n = nodes.get(name);
      if (!n) nodes.set(name, (n = { name, kind, endpoints: [], policy: { current: 0, total: 0 }, inbound: null }));
      return n;
    };
    for (const s of sidecars) {
      // An edge gateway registers like a sidecar but is never an endpoint of the mesh.
      const kind = s.kind === 'gateway' ? 'gateway' : 'mesh';
      const n = node(s.service, kind);
      n.kind = kind;
      const state = sidecarState(s, s.expectedVersion, ejected);
      n.endpoints.push({ id: s.id, address: `${hostPort(s.address, s.port)}`, state, version: s.ackedVersion ?? null, sidecar: true, labels: s.labels });
      if (s.connected) {
        n.policy.total++;
        if (s.ackedVersion === s.expectedVersion) n.policy.current++;
      }
    }
    // Endpoints not registered by a sidecar (Kubernetes EndpointSlices without one) and `Service`
    // resources (static endpoints, outside the mesh); then services only policies name.
    for (const e of snap.endpoints)
      if (!e.meshed) {
        const n = node(e.service, 'outside-mesh');
        const address = hostPort(e.address, e.port);
        n.endpoints.push({ id: null, address, state: ejected.has(address) ? 'ejected' : 'static', version: null, sidecar: false, labels: e.labels });
      }
    for (const r of this.deps.store.list('Service')) {
      const eps = ((r as unknown as { spec?: { endpoints?: { address: string; port: number; labels?: Record<string, string> }[] } }).spec?.endpoints ?? []).filter(
        (e) => typeof e?.address === 'string' && typeof e.port === 'number',
      );
      const known = nodes.get(r.metadata.name)?.kind;
      if (known === 'mesh' || known === 'gateway') continue;
      const n = node(r.metadata.name, 'outside-mesh');
      for (const e of eps) {
        const address = hostPort(e.address, e.port);
        if (!n.endpoints.some((x) => x.address === address))
          n.endpoints.push({ id: null, address, state: ejected.has(address) ? 'ejected' : 'static', version: null, sidecar: false, labels: e.labels ?? {} });
      }
    }
    for (const r of this.deps.store.all()) for (const s of servicesNamed(r)) if (!nodes.has(s)) node(s, r.kind === 'Service' ? 'outside-mesh' : 'policy-only');

    const inbound = new Map<string, WindowMerge>();
    const edges = new Map<string, { source: string; destination: string; m: WindowMerge }>();
    const edge = (source: string, destination: string, w: SidecarWindow): void => {
      const k = `${source}\u0001${destination}`;
      let e = edges.get(k);
      if (!e) edges.set(k, (e = { source, destination, m: new WindowMerge() }));
      e.m.add(w);
    };
    for (const r of sample?.reports ?? [])
      for (const w of r.routes) {
        if (w.direction === 'inbound') {
          let m = inbound.get(r.service);
          if (!m) inbound.set(r.service, (m = new WindowMerge()));
          m.add(w);
          // Callers with a sidecar are counted where they send (outbound); the others only here.
          if (w.source === OUTSIDE) edge(OUTSIDE, r.service, w);
        } else if (w.destination !== OUTSIDE) edge(r.service, w.destination, w);
      }
    for (const [name, m] of inbound) node(name, 'mesh').inbound = stats(m);
    for (const e of edges.values()) {
      if (!nodes.has(e.source)) node(e.source, e.source === OUTSIDE ? 'clients' : 'policy-only');
      if (!nodes.has(e.destination)) node(e.destination, 'policy-only');
    }
    const list = [...nodes.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const n of list) n.endpoints.sort((a, b) => a.address.localeCompare(b.address));
    return {
      status: 200,
      body: {
        at: sample ? new Date(sample.at).toISOString() : null,
        windowSeconds: 60,
        version: snap.version,
        nodes: list,
        edges: [...edges.values()].map((e) => ({ source: e.source, destination: e.destination, ...stats(e.m) })).sort((a, b) => (a.source + a.destination).localeCompare(b.source + b.destination)),
        unreachable: sample?.unreachable ?? [],
      },
    };
  }

  // -------------------------------------------------------------------------------- history

  private async serviceHistory(service: string): Promise<Json> {
    await this.latest();
    const h = this.deps.history;
    const sample = h.latest();
    const known =
      this.deps.registry.sidecars().some((s) => s.service === service) ||
      this.deps.store.all().some((r) => servicesNamed(r).includes(service)) ||
      h.points(`service/${service}`).length > 0 ||
      h.keys(`route/${service}/`).length > 0;
    if (!known) return { status: 404, body: { code: 'not_found', message: `no service ${JSON.stringify(service)} in the mesh, its policies or its history` } };
    const strip = (points: readonly SeriesPoint[]) => points.map(({ responses: _r, ...p }) => p);
    const series = (prefix: string, name: string) =>
      h.keys(prefix).map((k) => {
        const pts = h.points(k);
        return { [name]: k.slice(prefix.length), points: strip(pts), responses: sumResponses(pts) };
      });
    const inbound = h.points(`service/${service}`);
    const reports = sample?.reports ?? [];
    const own = reports.filter((r) => r.service === service);
    const routes = series(`route/${service}/`, 'route');
    const routeNames = new Set(routes.map((r) => r.route as string));
    const ejected: { endpoint: string; seenBy: string }[] = [];
    for (const r of reports) for (const e of r.resilience?.ejected ?? []) if (e.service === service) for (const ep of e.endpoints) ejected.push({ endpoint: ep, seenBy: r.id });
    const breakers = reports.flatMap((r) => (r.resilience?.breakers ?? []).filter((b) => b.route.startsWith(`${service}/`) || routeNames.has(b.route)).map((b) => ({ ...b, sidecar: r.id })));
    const rateLimits = own.flatMap((r) => (r.resilience?.rateLimits ?? []).map((l) => ({ ...l, sidecar: r.id })));
    return {
      status: 200,
      body: {
        service,
        at: sample ? new Date(sample.at).toISOString() : null,
        intervalMs: h.intervalMs,
        retentionMs: h.retentionMs,
        windowSeconds: 60,
        inbound: { points: strip(inbound), responses: sumResponses(inbound) },
        routes,
        callers: series(`caller/${service}/`, 'caller'),
        resilience: { breakers, ejected, rateLimits },
        sidecars: this.deps.push
          .sidecars()
          .filter((s) => s.service === service)
          .map((s) => ({ id: s.id, connected: s.connected, ackedVersion: s.ackedVersion ?? null, expectedVersion: s.expectedVersion, address: hostPort(s.address, s.port) })),
        prometheus: this.deps.prometheusUrl ? prometheusLinks(this.deps.prometheusUrl, service) : null,
      },
    };
  }

  // -------------------------------------------------------------------------------- rollout

  private rollout(): Json {
    const snap = this.deps.push.snapshot();
    const resources = this.deps.store
      .all()
      .map((r) => ({ kind: r.kind, name: r.metadata.name, resourceVersion: r.metadata.resourceVersion ?? null, yaml: stringify(redactResource(r)) }))
      .sort((a, b) => (a.kind + '/' + a.name).localeCompare(b.kind + '/' + b.name));
    // Each sidecar against the version of its own view: a scoped sidecar runs its scope's version.
    const sidecars = this.deps.push.sidecars().map((s) => {
      const nacked = s.nackVersion !== undefined && s.nackVersion === s.expectedVersion;
      const state = !s.connected ? 'disconnected' : s.ackedVersion === s.expectedVersion ? 'acked' : nacked ? 'nacked' : 'pending';
      return {
        id: s.id,
        service: s.service,
        connected: s.connected,
        state,
        expectedVersion: s.expectedVersion,
        ackedVersion: s.ackedVersion ?? null,
        ackedAt: s.ackedAt ?? null,
        nackVersion: s.nackVersion ?? null,
        nackedAt: s.nackedAt ?? null,
        errors: s.nackReason ? nackErrors(s.nackReason) : [],
      };
    });
    const count = (st: string) => sidecars.filter((s) => s.state === st).length;
    return {
      status: 200,
      body: {
        version: snap.version,
        revision: snap.revision,
        convergence: this.deps.push.lastConvergence() ?? null,
        summary: { acked: count('acked'), nacked: count('nacked'), pending: count('pending'), disconnected: count('disconnected') },
        resources,
        sidecars,
      },
    };
  }

  // ------------------------------------------------------------------------------------ tap

  private tap(req: http.IncomingMessage, res: http.ServerResponse, url: URL): number {
    const q = url.searchParams;
    const fail = (status: number, code: string, message: string): number => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ code, message }) + '\n');
      return status;
    };
    const service = q.get('service');
    if (!service) return fail(400, 'invalid', 'service is required: /v1/tap?service=NAME[&route=R][&rate=N][&headers=a,b]');
    const route = q.get('route') ?? undefined;
    let opts: ReturnType<typeof tapOptions>;
    try {
      opts = tapOptions(q.get('rate'), q.get('headers'));
    } catch (err) {
      if (err instanceof TapError) return fail(400, 'invalid', err.message);
      throw err;
    }
    if (this.taps >= MAX_TAPS) return fail(503, 'unavailable', `the control plane already serves ${MAX_TAPS} taps; try again later`);
    this.taps++;
    const rate = opts.rate ?? 20;
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    // One bucket for the whole stream: each sidecar may send `rate` a second, the caller gets `rate` in all.
    let tokens = rate;
    let last = performance.now();
    let dropped = 0;
    interface Upstream {
      gone: boolean;
      res?: http.IncomingMessage;
      destroy(): void;
    }
    const upstreams = new Map<string, Upstream>();
    let closed = false;
    const write = (o: unknown): void => {
      if (!closed && !res.destroyed && !res.writableNeedDrain) res.write(JSON.stringify(o) + '\n');
    };
    const connect = (s: SidecarStatus): void => {
      const params = new URLSearchParams();
      if (s.service === service) params.set('direction', 'inbound');
      else {
        params.set('direction', 'outbound');
        params.set('destination', service);
      }
      if (route) params.set('route', route);
      params.set('rate', String(Math.min(MAX_RATE, rate)));
      if (opts.headers?.length) params.set('headers', opts.headers.join(','));
      // Plaintext to a loopback admin port, mTLS to a status port (sidecar-admin.ts).
      const up: Upstream = { gone: false, destroy: () => ((up.gone = true), up.res?.destroy()) };
      upstreams.set(s.id, up);
      this.admin.request(s, { path: `/tap?${params}`, timeoutMs: 0 }).then(
        (r) => {
          if (up.gone) return void r.destroy();
          up.res = r;
          if (r.statusCode !== 200) {
            r.resume();
            upstreams.delete(s.id);
            return;
          }
          let buf = '';
          r.setEncoding('utf8');
          r.on('data', (chunk: string) => {
            buf += chunk;
            let i: number;
            while ((i = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, i);
              buf = buf.slice(i + 1);
              let e: { type?: string; dropped?: number };
              try {
                e = JSON.parse(line);
              } catch {
                continue;
              }
              if (e.type === 'status') {
                dropped += e.dropped ?? 0;
                continue;
              }
              const now = performance.now();
              tokens = Math.min(rate, tokens + ((now - last) * rate) / 1000);
              last = now;
              if (tokens < 1 || res.writableNeedDrain) {
                dropped++;
                continue;
              }
              tokens -= 1;
              write({ ...e, sidecar: s.id });
            }
          });
          r.on('close', () => upstreams.delete(s.id));
        },
        () => upstreams.delete(s.id),
      );
    };
    const refresh = (): void => {
      for (const s of this.deps.registry.sidecars()) if (s.connected && s.adminPort && !upstreams.has(s.id)) connect(s);
    };
    refresh();
    write({ type: 'status', service, route: route ?? null, sidecars: upstreams.size, dropped: 0 });
    const timer = setInterval(() => {
      refresh();
      write({ type: 'status', service, route: route ?? null, sidecars: upstreams.size, dropped });
      dropped = 0;
    }, TAP_STATUS_MS);
    const stop = (): void => {
      if (closed) return;
      closed = true;
      this.taps--;
      clearInterval(timer);
      for (const u of upstreams.values()) u.destroy();
      upstreams.clear();
    };
    req.on('close', stop);
    res.on('close', stop);
    return 200;
  }
}

// ---------------------------------------------------------------------------------- helpers

interface Stats {
  requests: number;
  rps: number;
  successRate: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
}

interface GraphEndpoint {
  id: string | null;
  address: string;
  /** ready: ACKed the version in force for it (its view's); pending: not yet; not-ready: NACKed it; disconnected: its push stream is gone (grace period); ejected: a caller's outlier detection took it out; static: outside the mesh. */
  state: 'ready' | 'pending' | 'not-ready' | 'disconnected' | 'ejected' | 'static';
  version: string | null;
  sidecar: boolean;
  labels: Readonly<Record<string, string>>;
}

const r3 = (v: number | null): number | null => (v === null ? null : Math.round(v * 1000) / 1000);

function stats(m: WindowMerge): Stats {
  return { requests: m.count, rps: Math.round(m.rps * 100) / 100, successRate: r3(m.successRate()), p50Ms: r3(m.quantileMs(0.5)), p99Ms: r3(m.quantileMs(0.99)) };
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function ejectedEndpoints(reports: readonly StatsReport[]): Set<string> {
  const out = new Set<string>();
  for (const r of reports) for (const e of r.resilience?.ejected ?? []) for (const ep of e.endpoints) out.add(ep);
  return out;
}

function sidecarState(s: SidecarStatus, version: string, ejected: ReadonlySet<string>): GraphEndpoint['state'] {
  if (!s.connected) return 'disconnected';
  if (ejected.has(hostPort(s.address, s.port))) return 'ejected';
  if (s.ackedVersion === version) return 'ready';
  if (s.nackVersion === version) return 'not-ready';
  return 'pending';
}

/** The services a resource names (its own, its backends'). */
function servicesNamed(r: WireResource): string[] {
  const spec = (r as unknown as { spec?: Record<string, unknown> }).spec ?? {};
  if (r.kind === 'Service') return [r.metadata.name];
  if (r.kind === 'Route') {
    const out = new Set<string>();
    for (const rule of (spec.rules as { backends?: { service?: string }[]; mirror?: { service?: string } }[] | undefined) ?? []) {
      for (const b of rule.backends ?? []) if (typeof b.service === 'string') out.add(b.service);
    }
    return [...out];
  }
  return typeof spec.service === 'string' ? [spec.service] : [];
}

/** A NACK reason (`formatErrors`: one `path: message` a line) as field-path errors. */
export function nackErrors(reason: string): { path: string; message: string }[] {
  return reason
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const m = /^([^\s:]+(?::[^\s:]+)*?): (.*)$/.exec(l);
      return m ? { path: m[1] as string, message: m[2] as string } : { path: '', message: l };
    });
}

/** Links to the same golden metrics in Prometheus (graph view, last 15 minutes). */
function prometheusLinks(base: string, service: string): { label: string; query: string; url: string }[] {
  const s = JSON.stringify(service);
  const queries = [
    { label: 'req/s', query: `sum(rate(meshlet_requests_total{direction="inbound",destination=${s}}[1m]))` },
    {
      label: 'success rate',
      query: `sum(rate(meshlet_requests_total{direction="inbound",destination=${s},response_code_class!="5xx"}[1m])) / sum(rate(meshlet_requests_total{direction="inbound",destination=${s}}[1m]))`,
    },
    { label: 'p99 latency', query: `histogram_quantile(0.99, sum by (le) (rate(meshlet_request_duration_seconds_bucket{direction="inbound",destination=${s}}[1m])))` },
    { label: 'req/s by route', query: `sum by (route) (rate(meshlet_requests_total{direction="outbound",destination=${s}}[1m]))` },
  ];
  const root = base.replace(/\/+$/, '');
  return queries.map((q) => ({ ...q, url: `${root}/graph?g0.expr=${encodeURIComponent(q.query)}&g0.tab=0&g0.range_input=15m` }));
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.map': 'application/json',
  '.json': 'application/json',
};

function findUiDir(): string {
  // dist/control-plane/ui-api.js -> dist/ui; under the TypeScript loader (tests) control-plane/ -> dist/ui.
  const candidates = [path.join(__dirname, '..', 'ui'), path.join(__dirname, '..', 'dist', 'ui')];
  return candidates.find((d) => existsSync(path.join(d, 'index.html'))) ?? (candidates[0] as string);
}

/** Reads the built page once: it is a few hundred KB and never changes while the process runs. */
function loadFiles(dir: string): Map<string, { body: Buffer; type: string; cache: string; etag: string }> {
  const out = new Map<string, { body: Buffer; type: string; cache: string; etag: string }>();
  const walk = (d: string, rel: string): void => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(d, e.name), r);
      else {
        const body = readFileSync(path.join(d, e.name));
        const hashed = r.startsWith('assets/');
        out.set(r, {
          body,
          type: TYPES[path.extname(e.name)] ?? 'application/octet-stream',
          // Assets carry their content hash in the name: cache forever. The page itself: revalidate.
          cache: hashed ? 'public, max-age=31536000, immutable' : 'no-cache',
          etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
        });
      }
    }
  };
  walk(dir, '');
  return out;
}
