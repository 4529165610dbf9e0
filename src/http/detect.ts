/**
 * Protocol detection by the connection preface: one TCP port serves HTTP/1.1 and h2c with prior
 * knowledge (RFC 9113 §3.3). The first bytes decide; nothing else is inspected.
 */
import type { Socket } from 'node:net';

/** The HTTP/2 client connection preface (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export type Detected = 'http1' | 'http2';

/**
 * `http2` once the whole preface is there, `http1` as soon as a byte differs from it, and
 * `more` while what has arrived is still a prefix of the preface.
 */
export function detectPreface(buf: Buffer): Detected | 'more' {
  const n = Math.min(buf.length, H2_PREFACE.length);
  for (let i = 0; i < n; i++) if (buf[i] !== H2_PREFACE[i]) return 'http1';
  return n === H2_PREFACE.length ? 'http2' : 'more';
}

export type SniffResult =
  | { kind: Detected; head: Buffer }
  | { kind: 'timeout'; head: Buffer }
  | { kind: 'closed' };

/**
 * Reads the first bytes of a socket until the protocol is known, then calls `done` exactly once
 * with the bytes read so far (the caller hands them back to whichever server takes the socket).
 * The socket is left flowing with no `data` listener of ours attached.
 */
export function sniffProtocol(socket: Socket, timeoutMs: number, done: (r: SniffResult) => void): void {
  let head: Buffer | undefined;
  let settled = false;
  const finish = (r: SniffResult): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    socket.removeListener('data', onData);
    socket.removeListener('close', onClose);
    socket.removeListener('error', onError);
    done(r);
  };
  const onData = (chunk: Buffer): void => {
    head = head ? Buffer.concat([head, chunk]) : chunk;
    const kind = detectPreface(head);
    if (kind !== 'more') finish({ kind, head });
  };
  const onClose = (): void => finish({ kind: 'closed' });
  const onError = (): void => finish({ kind: 'closed' });
  const timer = setTimeout(() => finish({ kind: 'timeout', head: head ?? Buffer.alloc(0) }), timeoutMs);
  timer.unref();
  socket.on('data', onData);
  socket.on('close', onClose);
  socket.on('error', onError);
}
