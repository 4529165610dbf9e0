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
import { createHash } from 'node:crypto';
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
  readonly endpoints: readonly Endpoint[];
  /** The canonical JSON of the endpoint array. */
  readonly json: string;
  readonly byService: ReadonlyMap<string, string>;
}

export class SnapshotBuilder {
  private cached: BuiltSnapshot | undefined;
  /** The serialised endpoints of the last build: kept while the registry returns the same array. */
  private parts: EndpointParts | undefined;

  constructor(
    private readonly store: StoreView,
    private readonly registry: { endpoints(): Endpoint[] },
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
    let parts = this.parts;
    if (!parts || parts.endpoints !== endpoints) this.parts = parts = serialiseEndpoints(endpoints);
    // canonicalJson({ resources, endpoints }), from the parts.
    const version = createHash('sha256')
      .update(`{"endpoints":${parts.json},"resources":[${resources.filter((r) => r.kind !== 'TLSCertificate').map(canonicalResource).join(',')}]}`)
      .digest('hex')
      .slice(0, 12);
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
  return { endpoints, json: `[${all.join(',')}]`, byService: sorted };
}
