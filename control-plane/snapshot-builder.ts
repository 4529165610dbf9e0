/**
 * Builds the snapshot every sidecar receives: all stored resources (wire form, as the store
 * holds them, metadata included) plus every registered endpoint.
 *
 * The version is a pure content hash, the first 12 hex digits of the SHA-256 of the canonical
 * JSON (keys sorted) of `{ resources, endpoints }`. The same mesh therefore always has the same
 * version, across control-plane restarts too (the store and the endpoint registry are both
 * persisted), and a sidecar reconnecting to a restarted control plane is not asked to reapply
 * anything. The store revision is left out of the version on purpose: it can advance without any
 * content change (an aborted write), which would break that. It is reported next to the version
 * instead (`revision`, in /v1/status and here).
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
  /** Pre-serialised once for every stream that gets this snapshot. */
  readonly resourcesJson: string;
  readonly endpointsJson: string;
  /** ms since the epoch (wall clock). */
  readonly builtAt: number;
}

function snapshotVersion(resources: readonly unknown[], endpoints: readonly Endpoint[]): string {
  return createHash('sha256').update(canonicalJson({ resources, endpoints })).digest('hex').slice(0, 12);
}

export class SnapshotBuilder {
  private cached: BuiltSnapshot | undefined;

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
    return {
      version: snapshotVersion(resources, endpoints),
      revision: this.store.revision,
      resources,
      endpoints,
      resourcesJson: JSON.stringify(resources),
      endpointsJson: JSON.stringify(endpoints),
      builtAt: this.now(),
    };
  }
}
