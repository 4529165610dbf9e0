/**
 * Private keys never leave the control plane through its API, `meshlet get`/`describe`, a
 * `/config_dump` or the snapshot view: every resource shown to a person goes through
 * `redactResource`, which replaces a TLSCertificate's `spec.privateKey` with `(redacted)` (the
 * certificate itself, being public, is kept). Only the store and a gateway's push stream carry the
 * key.
 */

/** What is shown instead of a private key. */
export const REDACTED = '(redacted)';

/** The resource with its private key replaced by REDACTED; any other resource unchanged (the same object). */
export function redactResource<T>(r: T): T {
  const o = r as { kind?: unknown; spec?: unknown } | null;
  if (!o || typeof o !== 'object' || o.kind !== 'TLSCertificate' || !o.spec || typeof o.spec !== 'object') return r;
  const spec = o.spec as Record<string, unknown>;
  if (spec.privateKey === undefined || spec.privateKey === REDACTED) return r;
  return { ...o, spec: { ...spec, privateKey: REDACTED } } as T;
}

/** `redactResource` over a list. */
export function redactResources<T>(rs: readonly T[]): T[] {
  return rs.map(redactResource);
}
