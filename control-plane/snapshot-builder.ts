/**
 * Builds the snapshot of the whole mesh: all stored resources (wire form, as the store holds
 * them, metadata included) plus every registered endpoint. What each sidecar is sent (its view,
 * serialised once per view) is push-views.ts's.
 *
 * The version is a pure content hash, the first 12 hex digits of the SHA-256 of the canonical
 * JSON (keys sorted) of `{ resources, endpoints }`. The same mesh therefore always has the same
 * version, across control-plane restarts too (the store and the endpoint registry are both
 * persisted), and a sidecar reconnecting to a restarted control plane is not asked to reapply
 * anything. The store revision is left out of the version on purpose: it can advance without any
 * content change (an aborted write), which would break that. It is reported next to the version
 * instead (`revision`, in /v1/status and here).
 *
 * TLSCertificates (private keys) are left out of the version: only the gateways that use one are
 * pushed it, in a view of their own versioned by its content (push-views.ts), so changing one
 * moves no sidecar's version.
 *
 * Cost per change: each stored resource's canonical JSON is made once per stored object (the
 * store replaces, never mutates, them), and each endpoint's by a serialiser that knows its fields;
 * the same strings give the version and the per-service endpoint lists push-views.ts sends, so a
 * change costs one pass over the endpoints, not several over the whole mesh.
 */
import { createHash, type Hash } from 'node:crypto';
import type { Endpoint } from '../src/policy/types';
import { canonicalJson } from './fsutil';
import type { StoreView, WireResource } from './store';

export interface BuiltSnapshot {
  readonly version: string;
  /** The store revision the resources were read at. */
  readonly revision: number;
  readonly resources: readonly WireResource[];
  readonly endpoints: readonly Endpoint[];
  /** Service -> the canonical JSON array of its endpoints, services in name order (absent: made by the reader). */
  readonly endpointsByService?: ReadonlyMap<string, string>;
  /** ms since the epoch (wall clock). */
  readonly builtAt: number;
}

/** Canonical JSON of each stored resource object, made once. */
const resourceJson = new WeakMap<object, string>();

/** `canonicalJson(r)`, cached per object: stored resources are replaced, never mutated. */
export function canonicalResource(r: object): string {
  let j = resourceJson.get(r);
  if (j === undefined) resourceJson.set(r, (j = canonicalJson(r)));
  return j;
}

const ENDPOINT_KEYS = new Set(['address', 'id', 'identity', 'labels', 'meshed', 'port', 'service', 'weight']);

/** `canonicalJson(e)` for an Endpoint, without the generic key sort (the hot part of a change in a large mesh). */
export function endpointJson(e: Endpoint): string {
  for (const k in e) if (!ENDPOINT_KEYS.has(k)) return canonicalJson(e);
  if (typeof e.address !== 'string' || typeof e.service !== 'string' || typeof e.port !== 'number' || typeof e.weight !== 'number' || typeof e.meshed !== 'boolean' || e.labels === null || typeof e.labels !== 'object')
    return canonicalJson(e);
  let s = `{"address":${JSON.stringify(e.address)}`;
  if (e.id !== undefined) s += `,"id":${JSON.stringify(e.id)}`;
  if (e.identity !== undefined) s += `,"identity":${JSON.stringify(e.identity)}`;
  s += `,"labels":${Object.keys(e.labels).length === 0 ? '{}' : canonicalJson(e.labels)}`;
  return `${s},"meshed":${e.meshed},"port":${JSON.stringify(e.port)},"service":${JSON.stringify(e.service)},"weight":${JSON.stringify(e.weight)}}`;
}

interface EndpointParts {
  /** What they were made from: the registry's array, or its map by service. */
  readonly source: object;
  readonly byService: ReadonlyMap<string, string>;
  /** The hash of the version's JSON up to the resources (`{"endpoints":[...],"resources":[`), to be copied. */
  readonly head: Hash;
}

/** What the builder reads endpoints from (`Registry`, or the merge with Kubernetes' EndpointSlices). */
export interface EndpointSource {
  endpoints(): Endpoint[];
  /** Present: each service's array stays the same until its endpoints change, so its JSON is made once. */
  endpointsByService?(): ReadonlyMap<string, readonly Endpoint[]>;
}

/** The JSON array of one service's endpoints, per array (registries replace, never mutate, them). */
const serviceJson = new WeakMap<readonly Endpoint[], string>();

export class SnapshotBuilder {
  private cached: BuiltSnapshot | undefined;
  /** The serialised endpoints of the last build: kept while the registry returns the same array (or map). */
  private parts: EndpointParts | undefined;

  constructor(
    private readonly store: StoreView,
    private readonly registry: EndpointSource,
    private readonly now: () => number = Date.now,
  ) {}

  /** Marks the cached snapshot stale; the next `current()` rebuilds it. */
  invalidate(): void {
    this.cached = undefined;
  }

  /** The snapshot for the current store and registry (cached until `invalidate`). */
  current(): BuiltSnapshot {
    if (!this.cached) this.cached = this.build();
    return this.cached;
  }

  build(): BuiltSnapshot {
    const resources = this.store.all();
    const endpoints = this.registry.endpoints();
    const byService = this.registry.endpointsByService?.();
    let parts = this.parts;
    if (byService) {
      if (!parts || parts.source !== byService) this.parts = parts = serialiseServices(byService);
    } else if (!parts || parts.source !== endpoints) this.parts = parts = serialiseEndpoints(endpoints);
    // canonicalJson({ resources, endpoints }), from the parts: the endpoints' part is hashed once per endpoint set.
    // TLSCertificates are left out: a sidecar never receives one, so changing one must not move its version.
    const h = parts.head.copy();
    let first = true;
    for (const r of resources) {
      if (r.kind === 'TLSCertificate') continue;
      h.update(first ? canonicalResource(r as WireResource) : `,${canonicalResource(r as WireResource)}`);
      first = false;
    }
    const version = h.update(']}').digest('hex').slice(0, 12);
    return {
      version,
      endpointsByService: parts.byService,
      revision: this.store.revision,
      resources,
      endpoints,
      builtAt: this.now(),
    };
  }
}

function headOf(endpointsJson: string): Hash {
  return createHash('sha256').update(`{"endpoints":${endpointsJson},"resources":[`);
}

function serialiseEndpoints(endpoints: readonly Endpoint[]): EndpointParts {
  const all: string[] = [];
  const byService = new Map<string, string[]>();
  for (const e of endpoints) {
    const j = endpointJson(e);
    all.push(j);
    const l = byService.get(e.service);
    if (l) l.push(j);
    else byService.set(e.service, [j]);
  }
  const sorted = new Map<string, string>();
  for (const svc of [...byService.keys()].sort()) sorted.set(svc, `[${(byService.get(svc) as string[]).join(',')}]`);
  return { source: endpoints, head: headOf(`[${all.join(',')}]`), byService: sorted };
}

/** From the registry's arrays by service: only a service whose array is new is serialised. */
function serialiseServices(byService: ReadonlyMap<string, readonly Endpoint[]>): EndpointParts {
  const out = new Map<string, string>();
  const head = createHash('sha256').update('{"endpoints":[');
  let first = true;
  for (const [svc, l] of byService) {
    if (l.length === 0) continue;
    let j = serviceJson.get(l);
    if (j === undefined) serviceJson.set(l, (j = `[${l.map(endpointJson).join(',')}]`));
    out.set(svc, j);
    // The flat array's JSON, service after service (the registry sorts by service first).
    head.update(first ? j.slice(1, -1) : `,${j.slice(1, -1)}`);
    first = false;
  }
  head.update('],"resources":[');
  return { source: byService, head, byService: out };
}
