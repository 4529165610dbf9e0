/**
 * Test helpers for meshlet's own HTTP/2 client (src/http/h2/client.ts): one request run to its
 * end with everything the stream reported (head, 1xx heads, body, trailers, rstCode, error).
 */
import type * as http2 from 'node:http2';
import type { H2ClientSession, H2ClientStream } from '../../../../src/http/h2/client';

export interface Outcome {
  status?: number;
  headers?: http2.IncomingHttpHeaders;
  info: http2.IncomingHttpHeaders[];
  body: Buffer;
  trailers?: http2.IncomingHttpHeaders;
  rstCode: number;
  error?: Error & { code?: string };
  aborted: boolean;
  ended: boolean;
}

/** Resolves at the stream's 'close' with what it saw; `readDelayMs` reads the body slowly (flow control). */
export function outcome(stream: H2ClientStream, readDelayMs = 0): Promise<Outcome> {
  return new Promise((resolve) => {
    const o: Outcome = { info: [], body: Buffer.alloc(0), rstCode: 0, aborted: false, ended: false };
    const chunks: Buffer[] = [];
    stream.on('headers', (h: http2.IncomingHttpHeaders) => o.info.push(h));
    stream.on('response', (h: http2.IncomingHttpHeaders) => {
      o.status = h[':status'] as unknown as number;
      o.headers = h;
    });
    stream.on('trailers', (h: http2.IncomingHttpHeaders) => (o.trailers = h));
    stream.on('aborted', () => (o.aborted = true));
    stream.on('error', (e: Error) => (o.error = e));
    stream.on('end', () => (o.ended = true));
    if (readDelayMs > 0) {
      const pump = (): void => {
        let c: Buffer | null;
        while ((c = stream.read(16 * 1024) as Buffer | null) !== null) {
          chunks.push(c);
          setTimeout(pump, readDelayMs);
          return;
        }
        stream.once('readable', pump);
      };
      pump();
    } else stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('close', () => {
      o.body = Buffer.concat(chunks);
      o.rstCode = stream.rstCode;
      resolve(o);
    });
  });
}

export function sessionClosed(s: H2ClientSession): Promise<void> {
  return new Promise((r) => (s.destroyed && s.listenerCount('close') === 0 ? r() : s.once('close', () => r())));
}

export function connected(s: H2ClientSession): Promise<void> {
  return new Promise((r, j) => {
    s.once('remoteSettings', () => r());
    s.once('error', j);
  });
}
