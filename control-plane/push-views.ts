/**
 * What each sidecar is pushed, and the encoded messages that carry it (docs/scale.md).
 *
 * - **Scope.** A sidecar of service X whose `Service` X sets `spec.dependencies` (and not `*`)
 *   gets a scoped view: the Routes whose hosts match one of its dependencies (a `*` or
 *   wildcard host that would match counts), the services those dependencies and Routes name
 *   (backends, mirrors) plus X itself, and of those services only: their DestinationPolicy,
 *   RateLimitPolicy, GrpcTranscoding, Service and endpoints. Kinds this file does not know are
 *   always included (a new kind is never silently withheld). Without dependencies: the whole mesh.
 * - **One view per scope per snapshot, versioned by its own content.** Views are built once per
 *   (snapshot, scope), so every sidecar of a service shares one. The whole-mesh view carries the
 *   mesh version (the snapshot's content hash); a scoped view carries the hash of what it holds, so
 *   a change outside a scope leaves that scope's version as it was, and its sidecars are sent
 *   nothing. `meshlet status` compares each sidecar with the version of its own view
 *   (`expectedVersion`). Both hashes are of canonical JSON: every replica computes the same.
 * - **Key material only where it is used.** TLSCertificates (a certificate and its private key)
 *   are in no view but the view of a gateway whose Gateway references them, and only for a stream
 *   the push server entitles to them (`scopeOf(..., withSecrets)`: a TLS push port, a credential
 *   proving the gateway's name). That gateway's view is its ordinary view plus those resources,
 *   versioned by its content; sidecars and other gateways are sent nothing when one changes (the
 *   snapshot version leaves them out, snapshot-builder.ts).
 * - **Encoded once.** A complete snapshot of a view, and the delta from one view to another, are
 *   encoded (protobuf) once and the same bytes written to every stream that needs them; the nonce
 *   is per message, not per stream (an answer is still matched against its own stream's nonce).
 * - **Resources are serialised once** per stored object (the store replaces, never mutates, them).
 */
import { createHash } from 'node:crypto';
import type { Endpoint } from '../src/policy/types';
import { canonicalJson } from './fsutil';
import { canonicalResource, type BuiltSnapshot } from './snapshot-builder';
import { encodeSnapshotMessage, type SnapshotMessage } from '../src/proto';
import type { WireResource } from './store';

/** The scope of sidecars whose service declares no dependencies: the whole mesh. */
export const WHOLE_MESH = '*';
/** The kind that holds private keys: pushed only to the gateways that use it. */
const SECRET_KIND = 'TLSCertificate';
/** A gateway's scope with its TLSCertificates: this prefix, then the Gateway's name. */
const GATEWAY_SCOPE = 'gateway:';

/** What one scope of sidecars is pushed at one mesh version. */
export interface View {
  /** The whole mesh: the snapshot's version; a scoped view: the content hash of what it holds. */
  readonly version: string;
  /** WHOLE_MESH or a service name. */
  readonly scope: string;
  /** `Kind/name` -> the resource's JSON. */
  readonly resources: ReadonlyMap<string, string>;
  /** Service -> the JSON array of its endpoints (services without endpoints are absent). */
  readonly endpoints: ReadonlyMap<string, string>;
}

/** A message encoded once, written to every stream that needs it. */
export interface Encoded {
  readonly bytes: Buffer;
  readonly nonce: string;
  readonly type: 'full' | 'delta';
  /** Resources and endpoint sets it carries (a delta: only the changed ones). */
  readonly resources: number;
  readonly services: number;
}

interface IndexedResource {
  readonly key: string;
  readonly json: string;
  readonly kind: string;
  readonly name: string;
  /** `spec.service` of service-scoped kinds. */
  readonly service?: string;
  /** Routes: hosts, and the services their rules send to. */
  readonly hosts?: readonly string[];
  readonly targets?: readonly string[];
}

interface MeshIndex {
  readonly resources: readonly IndexedResource[];
  /** Routes by the service each plain host names; and those with `*` or `*.` hosts (matched one by one). */
  readonly routesByService: ReadonlyMap<string, readonly IndexedResource[]>;
  readonly wildRoutes: readonly IndexedResource[];
  /** DestinationPolicy, RateLimitPolicy, GrpcTranscoding, Service by the service they are about. */
  readonly byService: ReadonlyMap<string, readonly IndexedResource[]>;
  /** Kinds the scoping does not know: sent to everyone. */
  readonly others: readonly IndexedResource[];
  /** Every resource but the TLSCertificates: the whole mesh's view. */
  readonly shared: readonly IndexedResource[];
  /** TLSCertificates by name. */
  readonly secrets: ReadonlyMap<string, IndexedResource>;
  /** Gateway name -> the TLSCertificates its listeners name (in listener order, once each). */
  readonly gatewaySecrets: ReadonlyMap<string, readonly string[]>;
  /** Store order, to list a view's resources in it. */
  readonly order: ReadonlyMap<IndexedResource, number>;
  readonly endpointsJson: ReadonlyMap<string, string>;
  /** Service name -> its declared dependencies (only services that set them). */
  readonly dependencies: ReadonlyMap<string, readonly string[]>;
}

const SERVICE_SCOPED = new Set(['DestinationPolicy', 'RateLimitPolicy', 'GrpcTranscoding']);

/** Per stored resource object: its key and JSON, made once. */
const indexed = new WeakMap<object, IndexedResource>();

function indexResource(r: WireResource): IndexedResource {
  let x = indexed.get(r);
  if (x) return x;
  const spec = (r.spec ?? {}) as { service?: unknown; hosts?: unknown; rules?: unknown; dependencies?: unknown };
  const name = r.metadata.name;
  // Canonical (keys sorted): a scoped view's version hashes it, and must be the same on every replica.
  const base = { key: `${r.kind}/${name}`, json: canonicalResource(r), kind: r.kind as string, name };
  if (r.kind === 'Route') {
    const targets = new Set<string>();
    for (const rule of Array.isArray(spec.rules) ? (spec.rules as { backends?: { service?: unknown }[]; mirror?: { service?: unknown } }[]) : []) {
      for (const b of rule.backends ?? []) if (typeof b.service === 'string') targets.add(b.service);
      if (typeof rule.mirror?.service === 'string') targets.add(rule.mirror.service);
    }
    x = { ...base, hosts: Array.isArray(spec.hosts) ? (spec.hosts as unknown[]).filter((h): h is string => typeof h === 'string').map((h) => h.toLowerCase()) : [], targets: [...targets] };
  } else if (SERVICE_SCOPED.has(r.kind)) {
    x = { ...base, ...(typeof spec.service === 'string' ? { service: spec.service } : {}) };
  } else x = base;
  indexed.set(r, x);
  return x;
}

/** `catalog.shop.svc.cluster.local:8080` -> `catalog`: the service a host names (as the route table resolves it). */
export function serviceOfHost(host: string): string {
  const h = host.replace(/:\d+$/, '').toLowerCase();
  const m = /^([a-z0-9-]+)\.[a-z0-9-]+(\.svc(\.cluster\.local)?)?$/.exec(h);
  return m ? (m[1] as string) : h;
}

/** Whether a Route host would take calls to a dependency (itself a host, a `*.` wildcard or a service name). */
export function hostMatches(routeHost: string, dep: string): boolean {
  if (routeHost === '*' || routeHost === dep) return true;
  if (dep.startsWith('*.')) return routeHost.endsWith(dep.slice(1));
  const d = dep.replace(/:\d+$/, '');
  if (routeHost.startsWith('*.')) return d.endsWith(routeHost.slice(1));
  return serviceOfHost(routeHost) === serviceOfHost(d);
}

export class PushViews {
  private readonly indexes = new WeakMap<BuiltSnapshot, MeshIndex>();
  private readonly views = new WeakMap<BuiltSnapshot, Map<string, View>>();
  private readonly fulls = new WeakMap<View, Encoded>();
  private readonly deltas = new WeakMap<View, WeakMap<View, Encoded>>();
  /** The latest view of each scope: a scope whose content did not change keeps it (no rehash, same version). */
  private readonly latest = new Map<string, View>();
  private readonly nonceOf: () => string;
  private readonly onEncode: () => void;
  /** Distinct messages encoded so far. */
  encodes = 0;

  constructor(opts: { nonce: () => string; onEncode?: () => void }) {
    this.nonceOf = opts.nonce;
    this.onEncode = opts.onEncode ?? (() => undefined);
  }

  /**
   * The scope of a sidecar of `service` in this snapshot. `withSecrets`: the stream is a gateway
   * entitled to key material; it gets the TLSCertificates its Gateway (named `service`) uses.
   */
  scopeOf(b: BuiltSnapshot, service: string, withSecrets = false): string {
    const ix = this.index(b);
    if (withSecrets && (ix.gatewaySecrets.get(service)?.length ?? 0) > 0) return GATEWAY_SCOPE + service;
    const deps = ix.dependencies.get(service);
    return deps && !deps.includes('*') ? service : WHOLE_MESH;
  }

  /** The TLSCertificates the Gateway `name` uses (none: no Gateway, or file certificates only). */
  secretsOf(b: BuiltSnapshot, name: string): readonly string[] {
    return this.index(b).gatewaySecrets.get(name) ?? [];
  }

  /** The view of `scope` at snapshot `b` (built once per snapshot and scope). */
  view(b: BuiltSnapshot, scope: string): View {
    let byScope = this.views.get(b);
    if (!byScope) this.views.set(b, (byScope = new Map()));
    let v = byScope.get(scope);
    if (!v) byScope.set(scope, (v = this.build(b, scope)));
    return v;
  }

  /** The complete snapshot of a view, encoded once. */
  full(v: View): Encoded {
    let e = this.fulls.get(v);
    if (e) return e;
    const eps: string[] = [];
    for (const j of v.endpoints.values()) if (j.length > 2) eps.push(j.slice(1, -1));
    const nonce = this.nonceOf();
    const msg: SnapshotMessage = { version: v.version, nonce, resourcesJson: `[${[...v.resources.values()].join(',')}]`, endpointsJson: `[${eps.join(',')}]` };
    e = { bytes: this.encode(msg), nonce, type: 'full', resources: v.resources.size, services: v.endpoints.size };
    this.fulls.set(v, e);
    return e;
  }

  /** What turns view `from` into view `to` (same scope), encoded once per pair. */
  delta(from: View, to: View): Encoded {
    let m = this.deltas.get(to);
    if (!m) this.deltas.set(to, (m = new WeakMap()));
    let e = m.get(from);
    if (e) return e;
    const resources: string[] = [];
    const removed: string[] = [];
    for (const [k, j] of to.resources) if (from.resources.get(k) !== j) resources.push(j);
    for (const k of from.resources.keys()) if (!to.resources.has(k)) removed.push(k);
    const eps: string[] = [];
    for (const [svc, j] of to.endpoints) if (from.endpoints.get(svc) !== j) eps.push(`${JSON.stringify(svc)}:${j}`);
    for (const svc of from.endpoints.keys()) if (!to.endpoints.has(svc)) eps.push(`${JSON.stringify(svc)}:[]`);
    const nonce = this.nonceOf();
    const msg: SnapshotMessage = {
      version: to.version,
      nonce,
      resourcesJson: '',
      endpointsJson: '',
      baseVersion: from.version,
      resources,
      removed,
      endpointsByServiceJson: eps.length > 0 ? `{${eps.join(',')}}` : '',
    };
    e = { bytes: this.encode(msg), nonce, type: 'delta', resources: resources.length + removed.length, services: eps.length };
    m.set(from, e);
    return e;
  }

  // ------------------------------------------------------------------------------ internals

  private encode(msg: SnapshotMessage): Buffer {
    this.encodes++;
    this.onEncode();
    return encodeSnapshotMessage(msg);
  }

  private index(b: BuiltSnapshot): MeshIndex {
    let x = this.indexes.get(b);
    if (x) return x;
    const dependencies = new Map<string, readonly string[]>();
    for (const r of b.resources) {
      if (r.kind !== 'Service') continue;
      const deps = (r.spec as { dependencies?: unknown } | undefined)?.dependencies;
      if (Array.isArray(deps)) dependencies.set(r.metadata.name, deps.filter((d): d is string => typeof d === 'string').map((d) => d.toLowerCase()));
    }
    let endpointsJson = b.endpointsByService;
    if (!endpointsJson) {
      const epsByService = new Map<string, Endpoint[]>();
      for (const e of b.endpoints) {
        let l = epsByService.get(e.service);
        if (!l) epsByService.set(e.service, (l = []));
        l.push(e);
      }
      const m = new Map<string, string>();
      for (const [svc, l] of [...epsByService.entries()].sort((a, c) => (a[0] < c[0] ? -1 : a[0] > c[0] ? 1 : 0))) m.set(svc, canonicalJson(l));
      endpointsJson = m;
    }
    const resources = b.resources.map(indexResource);
    const gatewaySecrets = new Map<string, string[]>();
    for (const r of b.resources) {
      if (r.kind !== 'Gateway') continue;
      const names: string[] = [];
      const listeners = (r.spec as { listeners?: { tls?: { certificates?: { secret?: unknown }[] } }[] } | undefined)?.listeners;
      for (const l of Array.isArray(listeners) ? listeners : [])
        for (const c of l.tls?.certificates ?? []) if (typeof c.secret === 'string' && !names.includes(c.secret)) names.push(c.secret);
      if (names.length > 0) gatewaySecrets.set(r.metadata.name, names);
    }
    const secrets = new Map<string, IndexedResource>();
    const shared: IndexedResource[] = [];
    const routesByService = new Map<string, IndexedResource[]>();
    const byService = new Map<string, IndexedResource[]>();
    const wildRoutes: IndexedResource[] = [];
    const others: IndexedResource[] = [];
    const push = (m: Map<string, IndexedResource[]>, k: string, r: IndexedResource) => {
      const l = m.get(k);
      if (l) l.push(r);
      else m.set(k, [r]);
    };
    for (const r of resources) {
      if (r.kind === SECRET_KIND) {
        secrets.set(r.name, r);
        continue;
      }
      shared.push(r);
      if (r.kind === 'Route') {
        let wild = false;
        for (const h of r.hosts ?? []) {
          if (h === '*' || h.startsWith('*.')) wild = true;
          else push(routesByService, serviceOfHost(h), r);
        }
        if (wild) wildRoutes.push(r);
      } else if (SERVICE_SCOPED.has(r.kind)) {
        if (r.service !== undefined) push(byService, r.service, r);
      } else if (r.kind === 'Service') push(byService, r.name, r);
      else others.push(r);
    }
    x = { resources, routesByService, wildRoutes, byService, others, shared, secrets, gatewaySecrets, order: new Map(resources.map((r, i) => [r, i])), endpointsJson, dependencies };
    for (const scope of this.latest.keys()) if (!dependencies.has(scope)) this.latest.delete(scope);
    this.indexes.set(b, x);
    return x;
  }

  private build(b: BuiltSnapshot, scope: string): View {
    const ix = this.index(b);
    if (scope.startsWith(GATEWAY_SCOPE)) {
      // The gateway's ordinary view, plus the TLSCertificates its Gateway uses.
      const name = scope.slice(GATEWAY_SCOPE.length);
      const base = this.view(b, this.scopeOf(b, name));
      const resources = new Map(base.resources);
      for (const n of ix.gatewaySecrets.get(name) ?? []) {
        const r = ix.secrets.get(n);
        if (r) resources.set(r.key, r.json);
      }
      return { version: viewVersion(resources, base.endpoints), scope, resources, endpoints: base.endpoints };
    }
    const deps = scope === WHOLE_MESH ? undefined : ix.dependencies.get(scope);
    if (!deps || deps.includes('*')) {
      return { version: b.version, scope, resources: new Map(ix.shared.map((r) => [r.key, r.json])), endpoints: ix.endpointsJson };
    }
    const services = new Set<string>([scope]);
    const picked = new Set<IndexedResource>(ix.others);
    const route = (r: IndexedResource) => {
      if (picked.has(r)) return;
      picked.add(r);
      for (const t of r.targets ?? []) services.add(t);
    };
    for (const d of deps) {
      if (d.startsWith('*.')) {
        // A wildcard dependency: every Route with a host under it.
        for (const rs of ix.routesByService.values()) for (const r of rs) if (!picked.has(r) && r.hosts?.some((h) => hostMatches(h, d))) route(r);
      } else {
        services.add(serviceOfHost(d));
        for (const r of ix.routesByService.get(serviceOfHost(d)) ?? []) if (r.hosts?.some((h) => hostMatches(h, d))) route(r);
      }
      for (const r of ix.wildRoutes) if (r.hosts?.some((h) => hostMatches(h, d))) route(r);
    }
    for (const svc of services) for (const r of ix.byService.get(svc) ?? []) picked.add(r);
    const resources = new Map<string, string>();
    for (const r of [...picked].sort((p, q) => (ix.order.get(p) ?? 0) - (ix.order.get(q) ?? 0))) resources.set(r.key, r.json);
    const endpoints = new Map<string, string>();
    for (const svc of [...services].sort()) {
      const j = ix.endpointsJson.get(svc);
      if (j !== undefined) endpoints.set(svc, j);
    }
    const prev = this.latest.get(scope);
    if (prev && sameEntries(prev.resources, resources) && sameEntries(prev.endpoints, endpoints)) return prev;
    const v = { version: viewVersion(resources, endpoints), scope, resources, endpoints };
    this.latest.set(scope, v);
    return v;
  }
}

/** A scoped view's version: the first 12 hex digits of the SHA-256 of what it holds (canonical JSON, in a fixed order). */
function viewVersion(resources: ReadonlyMap<string, string>, endpoints: ReadonlyMap<string, string>): string {
  const h = createHash('sha256');
  for (const [k, j] of resources) h.update(k).update('\0').update(j).update('\n');
  h.update('\u0001');
  for (const [svc, j] of endpoints) h.update(svc).update('\0').update(j).update('\n');
  return h.digest('hex').slice(0, 12);
}

/** The same keys with the same values, in the same order. */
function sameEntries(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  const ia = a.entries();
  for (const [k, v] of b) {
    const [ka, va] = ia.next().value as [string, string];
    if (ka !== k || va !== v) return false;
  }
  return true;
}
