/**
 * gRPC status codes (grpc/doc/statuscodes.md), the mapping from the mesh's own errors to them, the
 * HTTP -> gRPC mapping of grpc/doc/http-grpc-status-mapping.md, and trailers-only responses.
 */
import type { Flag, MeshErrorCode } from '../core/errors';

export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

/** Every mesh error as the gRPC status a gRPC client gets instead of an HTTP error page. */
export const MESH_ERROR_STATUS: Readonly<Record<MeshErrorCode, StatusCode>> = {
  // The server (here: the mesh) does not serve this method at all.
  MESH_NO_ROUTE: Status.UNIMPLEMENTED,
  MESH_NO_HEALTHY_UPSTREAM: Status.UNAVAILABLE,
  MESH_UPSTREAM_CONNECT_FAILURE: Status.UNAVAILABLE,
  MESH_UPSTREAM_RESET: Status.UNAVAILABLE,
  MESH_UPSTREAM_OVERFLOW: Status.UNAVAILABLE,
  MESH_UPSTREAM_TIMEOUT: Status.DEADLINE_EXCEEDED,
  MESH_RETRIES_EXHAUSTED: Status.UNAVAILABLE,
  MESH_RATE_LIMITED: Status.RESOURCE_EXHAUSTED,
  MESH_BREAKER_OPEN: Status.UNAVAILABLE,
  MESH_BAD_REQUEST: Status.INTERNAL,
};

/** The same mapping keyed by response flag (what the proxy's local-reply path has at hand). */
export const FLAG_STATUS: Readonly<Record<Flag, StatusCode>> = {
  NR: Status.UNIMPLEMENTED,
  UH: Status.UNAVAILABLE,
  UF: Status.UNAVAILABLE,
  UR: Status.UNAVAILABLE,
  UO: Status.UNAVAILABLE,
  UT: Status.DEADLINE_EXCEEDED,
  URX: Status.UNAVAILABLE,
  RL: Status.RESOURCE_EXHAUSTED,
  DPE: Status.INTERNAL,
  // A gRPC client does not follow redirects.
  RD: Status.UNIMPLEMENTED,
  CO: Status.UNAVAILABLE,
  RBX: Status.UNAVAILABLE,
  RBL: Status.UNAVAILABLE,
  // An injected abort with an HTTP status: what that status means to gRPC is decided by the
  // caller from the HTTP status; UNAVAILABLE is the default chaos answer.
  FI: Status.UNAVAILABLE,
  DI: Status.UNAVAILABLE,
  DC: Status.CANCELLED,
  RBAC: Status.PERMISSION_DENIED,
};

/** HTTP status of a non-gRPC response -> gRPC status (http-grpc-status-mapping.md). */
export function statusFromHttp(http: number): StatusCode {
  switch (http) {
    case 400:
      return Status.INTERNAL;
    case 401:
      return Status.UNAUTHENTICATED;
    case 403:
      return Status.PERMISSION_DENIED;
    case 404:
      return Status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Status.UNAVAILABLE;
    default:
      return Status.UNKNOWN;
  }
}

/** HTTP/2 RST_STREAM error code -> gRPC status, as gRPC clients map them (PROTOCOL-HTTP2.md). */
export function statusFromRstCode(code: number): StatusCode {
  switch (code) {
    case 0x8: // CANCEL
      return Status.CANCELLED;
    case 0x7: // REFUSED_STREAM
      return Status.UNAVAILABLE;
    case 0xb: // ENHANCE_YOUR_CALM
      return Status.RESOURCE_EXHAUSTED;
    case 0xc: // INADEQUATE_SECURITY
      return Status.PERMISSION_DENIED;
    default:
      return Status.INTERNAL;
  }
}

/** grpc-message is percent-encoded: bytes outside 0x20-0x7e, and '%' itself (PROTOCOL-HTTP2.md). */
export function encodeGrpcMessage(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  let out = '';
  for (const b of bytes) {
    if (b >= 0x20 && b <= 0x7e && b !== 0x25) out += String.fromCharCode(b);
    else out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function decodeGrpcMessage(v: string): string {
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/**
 * The header block of a Trailers-Only response (status, content-type, grpc-status, grpc-message):
 * sent as one HEADERS frame with END_STREAM.
 */
export function trailersOnlyHeaders(code: StatusCode, message: string, contentType = 'application/grpc'): Record<string, string | number> {
  return { ':status': 200, 'content-type': contentType, 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(message) };
}

/** Whether a content-type is gRPC (application/grpc, application/grpc+proto, ...), not gRPC-Web. */
export function isGrpcContentType(ct: string | undefined): boolean {
  return ct !== undefined && ct.startsWith('application/grpc') && (ct.length === 16 || ct.charCodeAt(16) === 43 /* + */ || ct.charCodeAt(16) === 59 /* ; */);
}

/** Whether a content-type is gRPC-Web (application/grpc-web, +proto, -text, -text+proto). */
export function isGrpcWebContentType(ct: string | undefined): boolean {
  return ct !== undefined && ct.startsWith('application/grpc-web');
}
