/**
 * What the edge layers (ip-filter, jwt, api-key, cache, aggregate) share: an `EdgeError` turned
 * into the mesh's local reply (its status, flag, headers such as `WWW-Authenticate`, and the JSON
 * body `{ error, message }`), edits of the flat forwarded header list, and a sink that buffers a
 * response (the cache and the aggregation need whole bodies).
 */
import { LocalReply } from '../core/layer';
import type { EdgeError } from '../edge/errors';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';

export function edgeReply(e: EdgeError): LocalReply {
  return new LocalReply(e.status, e.flag, e.message, {
    headers: { 'content-type': 'application/json', ...e.headers },
    body: JSON.stringify({ error: e.code, message: e.message }),
  });
}

/** A flat `[name, value, ...]` list as a record (repeated names as arrays), optionally only some names. */
export function flatRecord(flat: readonly string[], only?: ReadonlySet<string>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < flat.length; i += 2) {
    const n = flat[i] as string;
    if (only && !only.has(n)) continue;
    const v = flat[i + 1] as string;
    const cur = out[n];
    if (cur === undefined) out[n] = v;
    else if (Array.isArray(cur)) cur.push(v);
    else out[n] = [cur, v];
  }
  return out;
}

/** A record back to a flat list (lower-case names; no `host`: the authority travels apart). */
export function toFlat(h: Readonly<Record<string, string | string[] | undefined>>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(h)) {
    const n = k.toLowerCase();
    if (v === undefined || n === 'host') continue;
    if (Array.isArray(v)) for (const x of v) out.push(n, x);
    else out.push(n, v);
  }
  return out;
}

/** Removes `remove` and then appends `set` (in place). */
export function editHeaders(flat: string[], remove: readonly string[], set: readonly (readonly [string, string])[]): string[] {
  if (remove.length) {
    let w = 0;
    for (let i = 0; i < flat.length; i += 2) {
      const n = flat[i] as string;
      if (remove.includes(n)) continue;
      if (w !== i) {
        flat[w] = n;
        flat[w + 1] = flat[i + 1] as string;
      }
      w += 2;
    }
    flat.length = w;
  }
  for (const [k, v] of set) flat.push(k, v);
  return flat;
}

export interface BufferedResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** The body grew past the limit; `sink` can still hand the response over as a stream (`attach`). */
export class BodyTooLarge extends Error {
  constructor(readonly sink: BufferSink) {
    super('response body larger than the buffer limit');
    this.name = 'BodyTooLarge';
  }
}

/**
 * Collects one response whole, up to `maxBytes`. Past it: `stop` resolves with what came so far
 * (one byte over the limit, so the caller sees it is too large) and aborts the call; `stream`
 * rejects with `BodyTooLarge`, whose owner may `attach` a sink to receive the response as it
 * streams (what came so far first).
 */
export class BufferSink implements ResponseSink {
  status = 0;
  headers: Headers = {};
  private chunks: Buffer[] = [];
  private bytes = 0;
  private settled = false;
  private target: ResponseSink | undefined;
  private ended: { trailers: Headers | undefined } | undefined;
  private failed: Error | undefined;
  call: UpstreamCall | undefined;

  constructor(
    private readonly resolve: (r: BufferedResponse) => void,
    private readonly reject: (e: Error) => void,
    private readonly maxBytes: number,
    private readonly overflow: 'stop' | 'stream',
  ) {}

  onResponse(status: number, headers: Headers): void {
    this.status = status;
    this.headers = headers;
    this.target?.onResponse(status, headers);
  }
  onData(chunk: Buffer): boolean {
    if (this.target) return this.target.onData(chunk);
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes && !this.settled) {
      this.settled = true;
      if (this.overflow === 'stop') {
        this.resolve({ status: this.status, headers: this.headers, body: Buffer.concat(this.chunks).subarray(0, this.maxBytes + 1) });
        this.chunks = [];
        this.call?.abort(new Error('response body too large'));
      } else this.reject(new BodyTooLarge(this));
    }
    return true;
  }
  onEnd(trailers: Headers | undefined): void {
    if (this.target) return this.target.onEnd(trailers);
    this.ended = { trailers };
    if (this.settled) return;
    this.settled = true;
    this.resolve({ status: this.status, headers: this.headers, body: this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks) });
  }
  onError(err: Error, started: boolean): void {
    if (this.target) return this.target.onError(err, started);
    this.failed = err;
    if (this.settled) return;
    this.settled = true;
    this.reject(err);
  }

  /** After `BodyTooLarge`: the response from here on goes to `sink` (what came so far first). */
  attach(sink: ResponseSink): void {
    this.target = sink;
    sink.onResponse(this.status, this.headers);
    for (const c of this.chunks) sink.onData(c);
    this.chunks = [];
    if (this.ended) sink.onEnd(this.ended.trailers);
    else if (this.failed) sink.onError(this.failed, true);
  }
}

/** Response headers without undefined values (the shape a sink takes). */
export function cleanHeaders(h: Readonly<Record<string, string | string[] | undefined>>): Headers {
  const out: Headers = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k] = v;
  return out;
}
