/**
 * The client side of a gRPC call: native gRPC on an HTTP/2 stream (here) or gRPC-Web (web.ts).
 * The gRPC front adapter (src/stack/respond-grpc.ts) writes through it: response headers,
 * messages, trailers, and a status as trailers-only when nothing was sent yet.
 */
import type * as http2 from 'node:http2';
import { FLAG_HEADER } from '../core/errors';
import { followResponse, type H2Response, type ResponseFollower } from '../http/h2-server';
import type { DownstreamRequest } from '../http/listener';
import { isGrpcContentType, isGrpcWebContentType, trailersOnlyHeaders, type StatusCode } from './status';

/** What kind of gRPC a request is: 'grpc', 'web', or undefined for anything else. */
export function grpcKind(req: DownstreamRequest, protocol: 'http1' | 'http2'): 'grpc' | 'web' | undefined {
  const ct = protocol === 'http2' ? req.headers['content-type'] : rawContentType(req.rawHeaders);
  if (typeof ct !== 'string') return undefined;
  if (isGrpcWebContentType(ct)) return 'web';
  if (protocol === 'http2' && isGrpcContentType(ct)) return 'grpc';
  return undefined;
}

/** Content-Type from raw HTTP/1.1 headers, without building the header object (hot path). */
function rawContentType(raw: readonly string[]): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as string;
    if (n.length === 12 && n.toLowerCase() === 'content-type') return raw[i + 1];
  }
  return undefined;
}

/** The client side of a gRPC call, native (h2 stream) or gRPC-Web (web.ts). */
export interface GrpcDownstream {
  readonly headersSent: boolean;
  readonly closed: boolean;
  /** Response headers of a call that will send messages. */
  headers(status: number, headers: Record<string, string | string[]>): void;
  /** False: wait for 'drain'. */
  write(chunk: Buffer): boolean;
  /** Ends the response with these trailers (after `headers`). */
  end(trailers: Record<string, string | string[]> | undefined): void;
  /** Ends with a status: trailers-only when nothing was sent yet, else as trailers. */
  fail(code: StatusCode, message: string, flag?: string, extra?: Record<string, string | string[]>): void;
  /** Resets the call with an HTTP/2 error code. */
  reset(rstCode: number): void;
  /** `f` hears 'drain' and the client going away. */
  follow(f: ResponseFollower): void;
}

export class NativeDownstream implements GrpcDownstream {
  private readonly stream: http2.ServerHttp2Stream;
  constructor(private readonly res: H2Response) {
    this.stream = res.stream;
  }
  get headersSent(): boolean {
    return this.stream.headersSent;
  }
  get closed(): boolean {
    return this.stream.closed || this.stream.destroyed;
  }
  headers(status: number, headers: Record<string, string | string[]>): void {
    if (this.closed) return;
    // A gRPC response ends with its status in trailers: asked for here, the stream's
    // 'wantTrailers' handler (h2-server.ts) sends what addTrailers() collected.
    headers[':status'] = String(status);
    this.res.respond(headers, true);
  }
  write(chunk: Buffer): boolean {
    if (this.closed) return true;
    return this.stream.write(chunk);
  }
  end(trailers: Record<string, string | string[]> | undefined): void {
    if (this.closed) return;
    if (trailers) {
      try {
        this.res.addTrailers(trailers);
      } catch {
        // an invalid trailer name from upstream: dropped
      }
    }
    this.stream.end();
  }
  fail(code: StatusCode, message: string, flag?: string, extra?: Record<string, string | string[]>): void {
    if (this.closed) return;
    const h = trailersOnlyHeaders(code, message);
    if (!this.stream.headersSent) {
      this.res.respond({ ...extra, ...h, ...(flag ? { [FLAG_HEADER]: flag } : {}) }, false, true);
      return;
    }
    const { ':status': _s, 'content-type': _c, ...trailers } = h;
    this.end({ ...extra, ...(trailers as Record<string, string>), ...(flag ? { [FLAG_HEADER]: flag } : {}) });
  }
  reset(rstCode: number): void {
    if (!this.stream.closed) this.stream.close(rstCode);
  }
  follow(f: ResponseFollower): void {
    followResponse(this.res, f);
  }
}

