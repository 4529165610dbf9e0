/**
 * For the HTTP/JSON transcoder: gRPC status names, the google.rpc.Code -> HTTP status table
 * (errors a JSON client sees) and grpc-message encoding.
 */

import { Status } from '../status';

/** The gRPC status codes (one table: src/grpc/status.ts). */
export const GrpcStatus = Status;
export type GrpcStatusCode = (typeof GrpcStatus)[keyof typeof GrpcStatus];

const NAMES: readonly string[] = Object.keys(GrpcStatus);

/** `NOT_FOUND` for 5; `UNKNOWN` for codes outside the table. */
export function grpcStatusName(code: number): string {
  return Number.isInteger(code) && code >= 0 && code < NAMES.length ? (NAMES[code] as string) : 'UNKNOWN';
}

/** The HTTP status for a gRPC status, as google/rpc/code.proto documents it (and Envoy's transcoder maps). */
const TO_HTTP: readonly number[] = [
  200, // OK
  499, // CANCELLED (client closed request)
  500, // UNKNOWN
  400, // INVALID_ARGUMENT
  504, // DEADLINE_EXCEEDED
  404, // NOT_FOUND
  409, // ALREADY_EXISTS
  403, // PERMISSION_DENIED
  429, // RESOURCE_EXHAUSTED
  400, // FAILED_PRECONDITION
  409, // ABORTED
  400, // OUT_OF_RANGE
  501, // UNIMPLEMENTED
  500, // INTERNAL
  503, // UNAVAILABLE
  500, // DATA_LOSS
  401, // UNAUTHENTICATED
];

export function grpcToHttpStatus(code: number): number {
  return Number.isInteger(code) && code >= 0 && code < TO_HTTP.length ? (TO_HTTP[code] as number) : 500;
}

/**
 * The gRPC status for an HTTP status of a response that carried no grpc-status (the gRPC spec's
 * "HTTP to gRPC status code mapping").
 */
export function httpToGrpcStatus(http: number): GrpcStatusCode {
  switch (http) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/** grpc-message is percent-encoded (spec: "Percent-Encoded"); decode it leniently. */
export function decodeGrpcMessage(v: string | undefined): string {
  if (!v) return '';
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

export function encodeGrpcMessage(s: string): string {
  return s.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c));
}

