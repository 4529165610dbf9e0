/**
 * Typed, coded errors, mapped to a response in one place (`proxyResponseFor`). Every response the
 * mesh makes itself carries the `x-meshlet-flags` header, like Envoy's %RESPONSE_FLAGS%, so users
 * can tell the mesh's 503 from the app's.
 */

export const FLAG_HEADER = 'x-meshlet-flags';

/** Response flags. Names follow Envoy's, so operators can read them without a glossary. */
export const Flags = {
  NoRoute: 'NR',
  NoHealthyUpstream: 'UH',
  UpstreamConnectFailure: 'UF',
  UpstreamReset: 'UR',
  UpstreamOverflow: 'UO',
  UpstreamTimeout: 'UT',
  RetriesExhausted: 'URX',
  RateLimited: 'RL',
  DownstreamProtocolError: 'DPE',
  Redirect: 'RD',
  /** The route's circuit breaker is open (or half-open with its trial calls taken). */
  BreakerOpen: 'CO',
  /** A retry was wanted but the retry budget had no room. */
  RetryBudgetExhausted: 'RBX',
  /** A retry was wanted but the request body was larger than the retry buffer. */
  RetryBodyTooLarge: 'RBL',
  /** An abort injected by a fault policy. */
  FaultAbort: 'FI',
  /** A delay injected by a fault policy. */
  FaultDelay: 'DI',
  /** The client went away before the response was complete. */
  DownstreamClosed: 'DC',
  /** Denied by an AuthorizationPolicy (Envoy: RBAC_ACCESS_DENIED, shown `RBAC`). */
  AccessDenied: 'RBAC',
} as const;
export type Flag = (typeof Flags)[keyof typeof Flags];

export type MeshErrorCode =
  | 'MESH_NO_ROUTE'
  | 'MESH_NO_HEALTHY_UPSTREAM'
  | 'MESH_UPSTREAM_CONNECT_FAILURE'
  | 'MESH_UPSTREAM_RESET'
  | 'MESH_UPSTREAM_OVERFLOW'
  | 'MESH_UPSTREAM_TIMEOUT'
  | 'MESH_RETRIES_EXHAUSTED'
  | 'MESH_RATE_LIMITED'
  | 'MESH_BREAKER_OPEN'
  | 'MESH_BAD_REQUEST';

const TABLE: Record<MeshErrorCode, { status: number; flag: Flag; text: string }> = {
  MESH_NO_ROUTE: { status: 404, flag: Flags.NoRoute, text: 'no route' },
  MESH_NO_HEALTHY_UPSTREAM: { status: 503, flag: Flags.NoHealthyUpstream, text: 'no healthy upstream' },
  MESH_UPSTREAM_CONNECT_FAILURE: { status: 503, flag: Flags.UpstreamConnectFailure, text: 'upstream connect failure' },
  MESH_UPSTREAM_RESET: { status: 502, flag: Flags.UpstreamReset, text: 'upstream reset' },
  MESH_UPSTREAM_OVERFLOW: { status: 503, flag: Flags.UpstreamOverflow, text: 'upstream overflow' },
  MESH_UPSTREAM_TIMEOUT: { status: 504, flag: Flags.UpstreamTimeout, text: 'upstream timeout' },
  MESH_RETRIES_EXHAUSTED: { status: 503, flag: Flags.RetriesExhausted, text: 'retries exhausted' },
  MESH_RATE_LIMITED: { status: 429, flag: Flags.RateLimited, text: 'rate limited' },
  MESH_BREAKER_OPEN: { status: 503, flag: Flags.BreakerOpen, text: 'circuit breaker open' },
  MESH_BAD_REQUEST: { status: 400, flag: Flags.DownstreamProtocolError, text: 'bad request' },
};

export class MeshError extends Error {
  readonly code: MeshErrorCode;
  readonly status: number;
  readonly flag: Flag;
  constructor(code: MeshErrorCode, detail?: string, options?: { cause?: unknown }) {
    const row = TABLE[code];
    super(detail ? `${row.text}: ${detail}` : row.text, options);
    this.name = 'MeshError';
    this.code = code;
    this.status = row.status;
    this.flag = row.flag;
  }
}

export function meshErrorInfo(code: MeshErrorCode): { status: number; flag: Flag; text: string } {
  return TABLE[code];
}

/** Upstream socket errors, by errno code, mapped to the mesh's error codes. */
export function classifyUpstreamError(err: unknown): MeshError {
  if (err instanceof MeshError) return err;
  if ((err as { code?: string } | undefined)?.code === 'MESH_UPSTREAM_OVERFLOW') return new MeshError('MESH_UPSTREAM_OVERFLOW', (err as Error).message, { cause: err });
  const code = (err as { code?: string } | undefined)?.code ?? '';
  const connect = new Set([
    'ECONNREFUSED',
    'EHOSTUNREACH',
    'ENETUNREACH',
    'ENOTFOUND',
    'EAI_AGAIN',
    'UND_ERR_CONNECT_TIMEOUT',
    'EADDRNOTAVAIL',
  ]);
  if (connect.has(code)) return new MeshError('MESH_UPSTREAM_CONNECT_FAILURE', code, { cause: err });
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'ETIMEDOUT')
    return new MeshError('MESH_UPSTREAM_TIMEOUT', code, { cause: err });
  return new MeshError('MESH_UPSTREAM_RESET', code || (err as Error)?.message, { cause: err });
}
