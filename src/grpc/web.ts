/**
 * gRPC-Web (PROTOCOL-WEB.md) -> gRPC: the browser side of a call, over HTTP/1.1 or HTTP/2.
 *
 * - request: `application/grpc-web[+proto]` becomes `application/grpc[+proto]`; the `-text`
 *   variants are base64, decoded as they stream in (4 characters at a time);
 * - response: messages pass through; the trailers travel as the body's last frame (flag 0x80,
 *   `name: value\r\n` lines), base64 for `-text` (one continuous base64 stream: only whole 3-byte
 *   groups are encoded until the end);
 * - CORS: a preflight (OPTIONS with Origin and Access-Control-Request-Method) from an origin the
 *   Route's `grpc.allowOrigins` lists is answered by the sidecar; answers to allowed origins carry
 *   Access-Control-Allow-Origin and expose the grpc-* headers.
 */
import { followResponse, type H2Response, type ResponseFollower } from '../http/h2-server';
import { FLAG_HEADER } from '../core/errors';
import { withoutOmitted } from '../http/headers';
import type { DownstreamResponse } from '../http/listener';
import type { GrpcRouteOptions } from '../policy';
import { encodeTrailerFrame } from './framing';
import type { GrpcDownstream } from './downstream';
import { encodeGrpcMessage, type StatusCode } from './status';

const EXPOSE = 'grpc-status, grpc-message, grpc-status-details-bin, x-meshlet-flags';
const ALLOW_HEADERS = 'content-type, x-grpc-web, x-user-agent, grpc-timeout, authorization';

/** Streaming base64 decoder: decodes whole 4-character groups, keeps the rest for the next chunk. */
export class Base64Decoder {
  private rest = '';
  push(chunk: Buffer): Buffer {
    const s = this.rest + chunk.toString('latin1').replace(/\s+/g, '');
    const n = s.length - (s.length % 4);
    this.rest = s.slice(n);
    return n === 0 ? Buffer.alloc(0) : decodeGroups(s.slice(0, n));
  }
  /** The end of the body: whatever is left must be a whole group. */
  end(): Buffer | Error {
    if (this.rest.length === 0) return Buffer.alloc(0);
    return new Error(`invalid base64 in the application/grpc-web-text body: ${this.rest.length} trailing characters`);
  }
}

/** Base64 with padding allowed between groups (each message may be encoded on its own). */
function decodeGroups(s: string): Buffer {
  if (!s.includes('=')) return Buffer.from(s, 'base64');
  const parts: Buffer[] = [];
  let from = 0;
  for (let i = 0; i < s.length; i += 4) {
    if (s.charCodeAt(i + 3) === 61 /* = */) {
      parts.push(Buffer.from(s.slice(from, i + 4), 'base64'));
      from = i + 4;
    }
  }
  if (from < s.length) parts.push(Buffer.from(s.slice(from), 'base64'));
  return Buffer.concat(parts);
}

/** Streaming base64 encoder without padding until `end()`. */
class Base64Encoder {
  private rest: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): string {
    const b = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    const n = b.length - (b.length % 3);
    this.rest = Buffer.from(b.subarray(n));
    return b.subarray(0, n).toString('base64');
  }
  end(): string {
    const s = this.rest.toString('base64');
    this.rest = Buffer.alloc(0);
    return s;
  }
}

/** Request headers for the upstream gRPC call (flat list in, flat list out) and the body decoder. */
export function webRequestHeaders(flat: string[]): { headers: string[]; decoder?: Base64Decoder } {
  const out: string[] = [];
  let decoder: Base64Decoder | undefined;
  let te = false;
  for (let i = 0; i < flat.length; i += 2) {
    const n = flat[i] as string;
    const v = flat[i + 1] as string;
    if (n === 'content-type') {
      const text = v.startsWith('application/grpc-web-text');
      if (text) decoder = new Base64Decoder();
      const suffix = v.slice(text ? 'application/grpc-web-text'.length : 'application/grpc-web'.length);
      out.push(n, `application/grpc${suffix.startsWith('+') ? suffix : ''}`);
      continue;
    }
    if (n === 'content-length' || n === 'x-grpc-web') continue;
    if (n === 'te') te = true;
    out.push(n, v);
  }
  if (!te) out.push('te', 'trailers');
  return { headers: out, decoder };
}

function header(req: { header(name: string): string | undefined }, name: string): string | undefined {
  return req.header(name);
}

/** The Origin of a request when the route allows it, else undefined. */
export function allowedOrigin(req: { header(name: string): string | undefined }, opts: GrpcRouteOptions | undefined): string | undefined {
  const origin = header(req, 'origin');
  const list = opts?.allowOrigins;
  if (!origin || !list) return undefined;
  return list.includes('*') || list.includes(origin.toLowerCase()) ? origin : undefined;
}

/**
 * A CORS preflight for a gRPC-Web call: the answer (204 with the CORS headers when the origin is
 * allowed, 403 when it is not), or undefined when the request is not a preflight.
 */
export function preflightAnswer(req: { method: string; header(name: string): string | undefined }, opts: GrpcRouteOptions | undefined): { status: 204 | 403; headers: Record<string, string> } | undefined {
  if (req.method !== 'OPTIONS' || !header(req, 'origin') || !header(req, 'access-control-request-method') || !opts?.allowOrigins) return undefined;
  const origin = allowedOrigin(req, opts);
  if (!origin) return { status: 403, headers: { 'content-type': 'text/plain', vary: 'origin' } };
  const asked = header(req, 'access-control-request-headers');
  return {
    status: 204,
    headers: {
      'access-control-allow-origin': origin,
      'access-control-allow-methods': 'POST, OPTIONS',
      'access-control-allow-headers': asked ?? ALLOW_HEADERS,
      'access-control-max-age': '86400',
      vary: 'origin',
      'content-length': '0',
    },
  };
}

/** The client side of a call that came as gRPC-Web. */
export class WebDownstream implements GrpcDownstream {
  private readonly text: boolean;
  private readonly contentType: string;
  private readonly encoder: Base64Encoder | undefined;
  private corsHeaders: Record<string, string> | undefined;
  constructor(
    private readonly req: { header(name: string): string | undefined },
    private readonly res: DownstreamResponse,
    /** The route's gRPC options (its CORS origins), read when the response starts. */
    private readonly opts: () => GrpcRouteOptions | undefined,
  ) {
    const ct = header(req, 'content-type') ?? 'application/grpc-web';
    this.text = ct.startsWith('application/grpc-web-text');
    this.contentType = this.text ? 'application/grpc-web-text+proto' : 'application/grpc-web+proto';
    this.encoder = this.text ? new Base64Encoder() : undefined;
  }
  private get cors(): Record<string, string> {
    if (this.corsHeaders) return this.corsHeaders;
    const origin = allowedOrigin(this.req, this.opts());
    return (this.corsHeaders = origin ? { 'access-control-allow-origin': origin, 'access-control-expose-headers': EXPOSE, vary: 'origin' } : {});
  }
  get headersSent(): boolean {
    return this.res.headersSent;
  }
  get closed(): boolean {
    return this.res.destroyed;
  }
  headers(status: number, headers: Record<string, string | string[]>): void {
    if (this.closed || this.res.headersSent) return;
    const { 'content-length': _l, 'content-type': ct, ...rest } = headers;
    const grpc = status === 200 && typeof ct === 'string' && ct.startsWith('application/grpc');
    this.res.writeHead(status, { ...rest, 'content-type': grpc ? this.contentType : ct, ...this.cors } as never);
  }
  write(chunk: Buffer): boolean {
    if (this.closed) return true;
    const w = this.res as { write(c: Buffer | string): boolean };
    if (!this.encoder) return w.write(chunk);
    const s = this.encoder.push(chunk);
    return s.length ? w.write(s) : true;
  }
  end(trailers: Record<string, string | string[]> | undefined): void {
    if (this.closed) return;
    // The trailers travel in the body: the names the response leaves out (the gateway's
    // x-meshlet-*) are left out here too, as its head writer does for the head.
    const omit = this.res.omit;
    if (trailers) this.write(encodeTrailerFrame(omit === undefined ? trailers : withoutOmitted(trailers, omit)));
    if (this.encoder) {
      const last = this.encoder.end();
      if (last) (this.res as { write(c: string): boolean }).write(last);
    }
    this.res.end();
  }
  fail(code: StatusCode, message: string, flag?: string, extra?: Record<string, string | string[]>): void {
    if (this.closed) return;
    const trailers: Record<string, string | string[]> = { ...extra, 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(message) };
    if (flag) trailers[FLAG_HEADER] = flag;
    if (!this.res.headersSent) {
      // Trailers-only: the status also goes in the headers, for clients that look there.
      this.res.writeHead(200, { 'content-type': this.contentType, ...trailers, ...this.cors } as never);
    }
    this.end(trailers);
  }
  reset(_rstCode: number): void {
    const stream = (this.res as H2Response).stream;
    if (stream) {
      if (!stream.closed) stream.close(_rstCode);
      return;
    }
    (this.res as { destroy(): void }).destroy();
  }
  follow(f: ResponseFollower): void {
    followResponse(this.res, f);
  }
}
