/**
 * Typed, coded errors of the edge modules (JWT, API keys, CORS, IP filter, aggregation, cache).
 * Each code has one row: the HTTP status the client gets and a response flag for
 * `x-meshlet-flags` (Envoy's names where Envoy has one: `UAEX` "unauthorized", `UT` upstream
 * timeout). The modules return these as values (`{ ok: false, error }`), never throw them on the
 * request path; the stack turns one into a response with `edgeErrorResponse`.
 */

export type EdgeErrorCode =
  // JWT (RFC 7519 / RFC 6750)
  | 'EDGE_JWT_MISSING'
  | 'EDGE_JWT_MALFORMED'
  | 'EDGE_JWT_EXPIRED'
  | 'EDGE_JWT_NOT_YET_VALID'
  | 'EDGE_JWT_BAD_SIGNATURE'
  | 'EDGE_JWT_ALG_NOT_ALLOWED'
  | 'EDGE_JWT_UNKNOWN_ISSUER'
  | 'EDGE_JWT_CLAIM_INVALID'
  | 'EDGE_JWT_UNKNOWN_KEY'
  | 'EDGE_JWT_JWKS_UNAVAILABLE'
  | 'EDGE_JWT_INSUFFICIENT_SCOPE'
  // API keys
  | 'EDGE_API_KEY_MISSING'
  | 'EDGE_API_KEY_INVALID'
  | 'EDGE_API_KEY_EXPIRED'
  // IP filter
  | 'EDGE_IP_DENIED'
  // CORS
  | 'EDGE_CORS_REJECTED'
  // aggregation
  | 'EDGE_AGG_TIMEOUT'
  | 'EDGE_AGG_UPSTREAM_STATUS'
  | 'EDGE_AGG_NOT_JSON'
  | 'EDGE_AGG_NOT_OBJECT'
  | 'EDGE_AGG_BODY_TOO_LARGE'
  | 'EDGE_AGG_CALL_FAILED'
  | 'EDGE_AGG_DEPENDENCY_FAILED'
  | 'EDGE_AGG_MISSING_VALUE'
  | 'EDGE_AGG_REQUIRED_FAILED'
  | 'EDGE_AGG_REQUIRED_TIMEOUT';

const TABLE: Record<EdgeErrorCode, { status: number; flag: string }> = {
  EDGE_JWT_MISSING: { status: 401, flag: 'UAEX' },
  EDGE_JWT_MALFORMED: { status: 401, flag: 'UAEX' },
  EDGE_JWT_EXPIRED: { status: 401, flag: 'UAEX' },
  EDGE_JWT_NOT_YET_VALID: { status: 401, flag: 'UAEX' },
  EDGE_JWT_BAD_SIGNATURE: { status: 401, flag: 'UAEX' },
  EDGE_JWT_ALG_NOT_ALLOWED: { status: 401, flag: 'UAEX' },
  EDGE_JWT_UNKNOWN_ISSUER: { status: 401, flag: 'UAEX' },
  EDGE_JWT_CLAIM_INVALID: { status: 401, flag: 'UAEX' },
  EDGE_JWT_UNKNOWN_KEY: { status: 401, flag: 'UAEX' },
  EDGE_JWT_JWKS_UNAVAILABLE: { status: 401, flag: 'UAEX' },
  EDGE_JWT_INSUFFICIENT_SCOPE: { status: 403, flag: 'UAEX' },
  EDGE_API_KEY_MISSING: { status: 401, flag: 'UAEX' },
  EDGE_API_KEY_INVALID: { status: 401, flag: 'UAEX' },
  EDGE_API_KEY_EXPIRED: { status: 401, flag: 'UAEX' },
  EDGE_IP_DENIED: { status: 403, flag: 'UAEX' },
  EDGE_CORS_REJECTED: { status: 403, flag: 'UAEX' },
  EDGE_AGG_TIMEOUT: { status: 504, flag: 'UT' },
  EDGE_AGG_UPSTREAM_STATUS: { status: 502, flag: 'UR' },
  EDGE_AGG_NOT_JSON: { status: 502, flag: 'UR' },
  EDGE_AGG_NOT_OBJECT: { status: 502, flag: 'UR' },
  EDGE_AGG_BODY_TOO_LARGE: { status: 502, flag: 'UR' },
  EDGE_AGG_CALL_FAILED: { status: 502, flag: 'UR' },
  EDGE_AGG_DEPENDENCY_FAILED: { status: 502, flag: 'UR' },
  EDGE_AGG_MISSING_VALUE: { status: 502, flag: 'UR' },
  EDGE_AGG_REQUIRED_FAILED: { status: 502, flag: 'UR' },
  EDGE_AGG_REQUIRED_TIMEOUT: { status: 504, flag: 'UT' },
};

export class EdgeError extends Error {
  readonly code: EdgeErrorCode;
  readonly status: number;
  readonly flag: string;
  /** Headers the response must carry (e.g. `www-authenticate`), lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  constructor(code: EdgeErrorCode, message: string, headers: Record<string, string> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EdgeError';
    this.code = code;
    this.status = TABLE[code].status;
    this.flag = TABLE[code].flag;
    this.headers = headers;
  }
}

/** The response the gateway writes for an edge error: status, headers, a JSON body. */
export function edgeErrorResponse(err: EdgeError): { status: number; headers: Record<string, string>; body: string } {
  return {
    status: err.status,
    headers: { 'content-type': 'application/json', 'x-meshlet-flags': err.flag, ...err.headers },
    body: JSON.stringify({ error: err.code, message: err.message }),
  };
}
