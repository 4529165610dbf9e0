/**
 * PeerAuthentication: whether a sidecar's inbound port takes plaintext, mTLS, or both.
 *
 *   STRICT      mTLS only: a plaintext connection is refused (closed before any request).
 *   PERMISSIVE  both, told apart by the first byte (a TLS record starts with 0x16): for
 *               migration, and for services with callers outside the mesh.
 *   DISABLE     plaintext only (TLS bytes are refused).
 *
 * Resolved per callee service once per snapshot (src/snapshot/compile.ts, from the
 * PeerAuthentication kind of src/policy/schema.ts): the service's own policy, else the mesh-wide
 * one (no `service`), else the mesh default (`PERMISSIVE`; see docs/security.md). Outbound,
 * callers dial mTLS to every endpoint with an identity unless its service is DISABLE.
 */
import type { PeerAuthMode } from '../policy/compiled';

export type { PeerAuthMode } from '../policy/compiled';

export interface PeerAuthenticationPolicy {
  name: string;
  spec: { service?: string; mode: PeerAuthMode };
}

export const DEFAULT_PEER_AUTH_MODE: PeerAuthMode = 'PERMISSIVE';

/** The first byte of a TLS record carrying a handshake (a ClientHello). */
export const TLS_HANDSHAKE_BYTE = 0x16;

export class PeerAuthentication {
  private readonly byService = new Map<string, PeerAuthenticationPolicy>();
  private readonly meshWide?: PeerAuthenticationPolicy;
  private readonly fallback: PeerAuthMode;

  constructor(policies: readonly PeerAuthenticationPolicy[], fallback: PeerAuthMode = DEFAULT_PEER_AUTH_MODE) {
    for (const p of policies) {
      if (p.spec.service === undefined) this.meshWide = p;
      else this.byService.set(p.spec.service, p);
    }
    this.fallback = fallback;
  }

  mode(service: string): { mode: PeerAuthMode; policy?: string } {
    const p = this.byService.get(service) ?? this.meshWide;
    return p ? { mode: p.spec.mode, policy: p.name } : { mode: this.fallback };
  }

  /** Whether a new connection to `service` may go on, from its first byte. */
  admit(service: string, firstByte: number): { ok: true; tls: boolean } | { ok: false; reason: string } {
    const { mode, policy } = this.mode(service);
    const tls = firstByte === TLS_HANDSHAKE_BYTE;
    const by = policy ? `PeerAuthentication ${policy}` : 'the mesh default';
    if (mode === 'STRICT' && !tls) return { ok: false, reason: `plaintext refused: ${service} is STRICT (${by}); callers need mTLS` };
    if (mode === 'DISABLE' && tls) return { ok: false, reason: `TLS refused: ${service} has mTLS DISABLEd (${by})` };
    return { ok: true, tls };
  }
}
