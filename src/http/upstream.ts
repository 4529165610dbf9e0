/**
 * Upstream connection pools: one undici `Pool` (HTTP/1.1, keep-alive) or one multiplexed
 * node:http2 session (h2c, prior knowledge) per endpoint. A request is sent with `send()` and
 * answered through a small callback interface, so the caller streams the response without an
 * intermediate Readable, pauses the upstream when downstream pushes back, and aborts it when the
 * client goes away.
 *
 * Pools of endpoints that left every snapshot are closed gracefully by `retain()`.
 */
import * as http2 from 'node:http2';
import type { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';

export type UpstreamProtocol = 'http1' | 'http2';

export type Headers = Record<string, string | string[]>;

export interface UpstreamTarget {
  /** `address:port`, also the pool's key. */
  key: string;
  address: string;
  port: number;
  protocol: UpstreamProtocol;
}

export interface UpstreamRequest {
  method: string;
  /** Path with query. */
  path: string;
  /** The authority to send (Host for HTTP/1.1, :authority for HTTP/2). */
  authority: string;
  /** Flat `[name, value, ...]`, lower-case names, hop-by-hop already removed, no `host`. */
  headers: string[];
  /** The request body, or null when the request has none. */
  body: Readable | null;
}

/** Response callbacks. Exactly one of `onEnd` / `onError` is called, once. */
export interface ResponseSink {
  onResponse(status: number, headers: Headers): void;
  /** Return false to pause the upstream until `UpstreamCall.resume()`. */
  onData(chunk: Buffer): boolean;
  onEnd(trailers: Headers | undefined): void;
  /** `started`: whether `onResponse` was called before the failure. `connect`: the connection never came up. */
  onError(err: Error, started: boolean): void;
}

export interface UpstreamCall {
  abort(reason?: Error): void;
  resume(): void;
}

export interface UpstreamPoolOptions {
  /** Idle keep-alive time for HTTP/1.1 connections (default 60 s). */
  keepAliveMs?: number;
  connectTimeoutMs?: number;
  /** How long a retired pool may finish its in-flight requests (default 30 s). */
  drainMs?: number;
}

/** Marks an error that happened before any connection to the upstream was up. */
export class UpstreamConnectError extends Error {
  readonly code: string;
  constructor(cause: Error & { code?: string }) {
    super(`connect failed: ${cause.message}`, { cause });
    this.name = 'UpstreamConnectError';
    this.code = cause.code ?? 'ECONNREFUSED';
  }
}

export class UpstreamPools {
  private readonly h1 = new Map<string, Pool>();
  private readonly h2 = new Map<string, H2Connection>();
  private readonly opts: Required<UpstreamPoolOptions>;
  private closed = false;

  constructor(opts: UpstreamPoolOptions = {}) {
    this.opts = { keepAliveMs: 60_000, connectTimeoutMs: 10_000, drainMs: 30_000, ...opts };
  }

  send(target: UpstreamTarget, req: UpstreamRequest, sink: ResponseSink): UpstreamCall {
    if (target.protocol === 'http2') return this.h2For(target).request(req, sink);
    return sendH1(this.h1For(target), req, sink);
  }

  /** Open connections per protocol, for metrics. */
  counts(): { http1Pools: number; http2Sessions: number } {
    return { http1Pools: this.h1.size, http2Sessions: this.h2.size };
  }

  /** Retires the pools of endpoints not in `keep` (keys): they finish in-flight work, then close. */
  retain(keep: ReadonlySet<string>): void {
    for (const [k, p] of this.h1) {
      if (keep.has(k)) continue;
      this.h1.delete(k);
      const t = setTimeout(() => void p.destroy().catch(() => undefined), this.opts.drainMs);
      t.unref();
      void p.close().finally(() => clearTimeout(t)).catch(() => undefined);
    }
    for (const [k, c] of this.h2) {
      if (keep.has(k)) continue;
      this.h2.delete(k);
      c.retire(this.opts.drainMs);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const pools = [...this.h1.values()];
    this.h1.clear();
    for (const c of this.h2.values()) c.destroy();
    this.h2.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }

  private h1For(t: UpstreamTarget): Pool {
    let p = this.h1.get(t.key);
    if (!p) {
      const host = t.address.includes(':') ? `[${t.address}]` : t.address;
      p = new Pool(`http://${host}:${t.port}`, {
        pipelining: 1,
        keepAliveTimeout: this.opts.keepAliveMs,
        keepAliveMaxTimeout: this.opts.keepAliveMs,
        connectTimeout: this.opts.connectTimeoutMs,
        // Route and per-try timeouts are the resilience layer's; the pool itself never times out.
        headersTimeout: 0,
        bodyTimeout: 0,
        // Headers are checked and limited by our listener before they get here.
        maxHeaderSize: 256 * 1024,
      });
      if (!this.closed) this.h1.set(t.key, p);
    }
    return p;
  }

  private h2For(t: UpstreamTarget): H2Connection {
    let c = this.h2.get(t.key);
    if (!c || c.unusable()) {
      c = new H2Connection(t, this.opts.connectTimeoutMs, () => {
        if (this.h2.get(t.key) === c) this.h2.delete(t.key);
      });
      if (!this.closed) this.h2.set(t.key, c);
    }
    return c;
  }
}

// ------------------------------------------------------------------------------------ HTTP/1.1

function sendH1(pool: Pool, req: UpstreamRequest, sink: ResponseSink): UpstreamCall {
  let controller: Dispatcher.DispatchController | undefined;
  let aborted: Error | undefined;
  let started = false;
  let done = false;
  const headers = req.headers;
  headers.push('host', req.authority);
  const handler: Dispatcher.DispatchHandler = {
    onRequestStart(c) {
      controller = c;
      if (aborted) c.abort(aborted);
    },
    onResponseStart(c, statusCode, h) {
      if (statusCode < 200) return;
      started = true;
      sink.onResponse(statusCode, h as Headers);
      if (aborted) c.abort(aborted);
    },
    onResponseData(c, chunk) {
      if (!sink.onData(chunk)) c.pause();
    },
    onResponseEnd(_c, trailers) {
      if (done) return;
      done = true;
      const has = trailers && Object.keys(trailers).length > 0;
      sink.onEnd(has ? (trailers as Headers) : undefined);
    },
    onResponseError(_c, err) {
      if (done) return;
      done = true;
      const code = (err as { code?: string }).code;
      sink.onError(!started && code !== undefined && CONNECT_CODES.has(code) ? new UpstreamConnectError(err) : err, started);
    },
  };
  pool.dispatch(
    {
      path: req.path,
      method: req.method as Dispatcher.HttpMethod,
      headers,
      body: req.body,
      // A request with a body is never sent twice on a stale connection.
      idempotent: req.body === null,
    },
    handler,
  );
  return {
    abort(reason) {
      if (aborted) return;
      aborted = reason ?? new Error('client aborted');
      done = true;
      controller?.abort(aborted);
    },
    resume() {
      controller?.resume();
    },
  };
}

const CONNECT_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT', 'EADDRNOTAVAIL']);

// -------------------------------------------------------------------------------------- HTTP/2

class H2Connection {
  private readonly session: http2.ClientHttp2Session;
  private connected = false;
  private dead = false;
  private retired = false;

  constructor(t: UpstreamTarget, connectTimeoutMs: number, onGone: () => void) {
    const host = t.address.includes(':') ? `[${t.address}]` : t.address;
    this.session = http2.connect(`http://${host}:${t.port}`, {
      settings: { enablePush: false, initialWindowSize: 1024 * 1024 },
      maxSessionMemory: 64,
    });
    const gone = (): void => {
      this.dead = true;
      onGone();
    };
    const timer = setTimeout(() => {
      if (!this.connected) this.session.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' }));
    }, connectTimeoutMs);
    timer.unref();
    this.session.once('connect', () => {
      this.connected = true;
      clearTimeout(timer);
      // Many sidecars multiplex here; give the connection a larger window than 64 KiB too.
      try {
        this.session.setLocalWindowSize(8 * 1024 * 1024);
      } catch {
        // closed meanwhile
      }
    });
    this.session.on('error', gone);
    this.session.on('goaway', gone);
    this.session.on('close', () => {
      clearTimeout(timer);
      gone();
    });
  }

  unusable(): boolean {
    return this.dead || this.session.closed || this.session.destroyed;
  }

  request(req: UpstreamRequest, sink: ResponseSink): UpstreamCall {
    const h: http2.OutgoingHttpHeaders = {
      ':method': req.method,
      ':path': req.path,
      ':authority': req.authority,
      ':scheme': 'http',
    };
    const raw = req.headers;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i] as string;
      const value = raw[i + 1] as string;
      const prev = h[name];
      if (prev === undefined) h[name] = value;
      else if (Array.isArray(prev)) prev.push(value);
      else h[name] = [String(prev), value];
    }
    let started = false;
    let done = false;
    let trailers: Headers | undefined;
    const fail = (err: Error): void => {
      if (done) return;
      done = true;
      const connect = !this.connected && !started;
      sink.onError(connect ? new UpstreamConnectError(err as Error & { code?: string }) : err, started);
    };
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.session.request(h, { endStream: req.body === null });
    } catch (err) {
      fail(err as Error);
      return { abort() {}, resume() {} };
    }
    stream.on('response', (headers) => {
      const status = Number(headers[':status']);
      if (status < 200) return;
      started = true;
      sink.onResponse(status, headers as Headers);
    });
    stream.on('data', (chunk: Buffer) => {
      if (!sink.onData(chunk)) stream.pause();
    });
    stream.on('trailers', (t) => {
      trailers = t as Headers;
    });
    stream.on('end', () => {
      if (done) return;
      if (!started) {
        fail(new Error('upstream stream ended without a response'));
        return;
      }
      done = true;
      sink.onEnd(trailers);
    });
    stream.on('error', (err) => fail(err));
    stream.on('close', () => {
      if (!done) {
        const code = stream.rstCode;
        fail(Object.assign(new Error(`upstream stream closed (${code ?? 'no code'})`), { code: 'ECONNRESET' }));
      }
    });
    if (req.body) {
      req.body.pipe(stream);
      req.body.on('error', () => stream.close(http2.constants.NGHTTP2_CANCEL));
    }
    return {
      abort() {
        if (done) return;
        done = true;
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      },
      resume() {
        stream.resume();
      },
    };
  }

  retire(drainMs: number): void {
    if (this.retired) return;
    this.retired = true;
    this.session.close();
    const t = setTimeout(() => this.session.destroy(), drainMs);
    t.unref();
  }

  destroy(): void {
    this.session.destroy();
  }
}
