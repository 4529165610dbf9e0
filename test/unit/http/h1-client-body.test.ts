/**
 * Response bodies framed by Content-Length, which the upstream client reads itself after the
 * parser stops at the head (src/http/h1-client.ts, `takeBody`): against a raw TCP upstream that
 * writes each response in pieces of random size (the head split anywhere, head and body in one
 * write, bodies over many reads), every byte arrives once and in order, each chunk keeping its own
 * bytes after later reads reuse the client's shared read buffer; the bodies the parser still
 * frames (chunked, HEAD, 204, 304, length 0) are unchanged and share the keep-alive connection;
 * a connection that ends inside a body fails the response; a paused body resumes.
 */
import * as net from 'node:net';
import t, { type Test } from 'tap';
import { H1Pool } from '../../../src/http/h1-client';
import type { Headers, UpstreamCall } from '../../../src/http/upstream-types';

/** A seeded generator (tests repeat exactly). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/**
 * An upstream that answers the n-th request (one per connection at a time) with `reply(n, req)`,
 * written in random pieces with a tick between them; `connections` counts accepted sockets.
 */
async function upstream(t: Test, reply: (n: number, head: string) => Buffer | null, seed = 1): Promise<{ port: number; connections: () => number }> {
  const rand = rng(seed);
  let n = 0;
  let conns = 0;
  const server = net.createServer((s) => {
    conns++;
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const out = reply(n++, head);
        if (out === null) {
          s.destroy();
          return;
        }
        const pieces: Buffer[] = [];
        for (let at = 0; at < out.length; ) {
          const len = rand() < 0.3 ? out.length - at : 1 + Math.floor(rand() * Math.min(9000, out.length - at));
          pieces.push(out.subarray(at, at + len));
          at += len;
        }
        const next = (): void => {
          const p = pieces.shift();
          if (!p || s.destroyed) return;
          s.write(p);
          setImmediate(next);
        };
        next();
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, connections: () => conns };
}

interface Got {
  status: number;
  headers: Headers;
  chunks: Buffer[];
  body: () => Buffer;
}

function request(pool: H1Pool, method: string, path: string, opts: { pauseFirst?: boolean } = {}): Promise<Got> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let status = 0;
    let hdrs: Headers = {};
    let paused = false;
    // eslint-disable-next-line prefer-const
    let call: UpstreamCall;
    call = pool.request(
      { method, path, authority: 'up.example', headers: [], body: null },
      {
        onResponse(s, h) {
          status = s;
          hdrs = h;
        },
        onData(c) {
          chunks.push(c);
          if (opts.pauseFirst && !paused) {
            paused = true;
            setTimeout(() => call.resume(), 20);
            return false;
          }
          return true;
        },
        onEnd: () => resolve({ status, headers: hdrs, chunks, body: () => Buffer.concat(chunks) }),
        onError: (err, started) => reject(Object.assign(err, { started })),
      },
    );
  });
}

/** `len` bytes, each a function of its position and `salt` (so a misplaced byte shows). */
function pattern(len: number, salt: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = 33 + ((i * 7 + salt) % 90);
  return b;
}

const head = (status: string, headers: string): Buffer => Buffer.from(`HTTP/1.1 ${status}\r\n${headers}\r\n`, 'latin1');

t.test('Content-Length bodies in random pieces arrive whole, in order, each chunk its own bytes', async (t) => {
  const sizes = [1, 20, 4095, 4096, 5000, 65_536, 65_537, 300_000];
  for (const seed of [1, 2, 3]) {
    const { port, connections } = await upstream(t, (n) => Buffer.concat([head('200 OK', `content-length: ${sizes[n % sizes.length]}\r\nx-n: ${n}\r\n`), pattern(sizes[n % sizes.length] as number, n)]), seed);
    const pool = new H1Pool('127.0.0.1', port, { keepAliveMs: 60_000, connectTimeoutMs: 5_000 });
    t.teardown(() => pool.destroy());
    const got: Got[] = [];
    for (let i = 0; i < sizes.length; i++) got.push(await request(pool, 'GET', `/${i}`));
    // Compared only now, after every later read went through the shared buffer.
    for (let i = 0; i < sizes.length; i++) {
      const g = got[i] as Got;
      t.equal(g.status, 200);
      t.equal(g.headers['x-n'], String(i));
      t.ok(g.body().equals(pattern(sizes[i] as number, i)), `seed ${seed}: body ${i} (${sizes[i]} bytes) exact`);
    }
    t.equal(connections(), 1, 'one keep-alive connection for all of them');
  }
});

t.test('bodies the parser frames share the connection with the ones read by count', async (t) => {
  const replies: [string, string, string, Buffer][] = [
    ['GET', '200 OK', 'content-length: 5\r\n', Buffer.from('hello')],
    ['GET', '200 OK', 'transfer-encoding: chunked\r\n', Buffer.from('3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n')],
    ['HEAD', '200 OK', 'content-length: 1000\r\n', Buffer.alloc(0)],
    ['GET', '204 No Content', 'content-length: 7\r\n', Buffer.alloc(0)],
    ['GET', '304 Not Modified', 'content-length: 9\r\n', Buffer.alloc(0)],
    ['GET', '200 OK', 'content-length: 0\r\n', Buffer.alloc(0)],
    ['GET', '100 Continue', '', Buffer.concat([head('200 OK', 'content-length: 3\r\n'), Buffer.from('xyz')])],
    ['GET', '404 Not Found', 'content-length: 4\r\n', Buffer.from('nope')],
  ];
  const { port, connections } = await upstream(t, (n) => {
    const [, status, hs, body] = replies[n] as [string, string, string, Buffer];
    return Buffer.concat([head(status, hs), body]);
  });
  const pool = new H1Pool('127.0.0.1', port, { keepAliveMs: 60_000, connectTimeoutMs: 5_000 });
  t.teardown(() => pool.destroy());
  const out: [number, string][] = [];
  for (const [method] of replies) {
    const g = await request(pool, method, '/');
    out.push([g.status, g.body().toString()]);
  }
  t.same(out, [
    [200, 'hello'],
    [200, 'abcde'],
    [200, ''],
    [204, ''],
    [304, ''],
    [200, ''],
    [200, 'xyz'],
    [404, 'nope'],
  ]);
  t.equal(connections(), 1);
});

t.test('a connection that ends inside a Content-Length body fails the response, never a clean short one', async (t) => {
  const server = net.createServer((s) => {
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n');
      s.end('only 17 bytes....');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  const pool = new H1Pool('127.0.0.1', (server.address() as net.AddressInfo).port, { keepAliveMs: 60_000, connectTimeoutMs: 5_000 });
  t.teardown(() => pool.destroy());
  const err = (await request(pool, 'GET', '/').then(
    () => undefined,
    (e: Error & { code?: string; started?: boolean }) => e,
  )) as (Error & { code?: string; started?: boolean }) | undefined;
  t.ok(err, 'an error, not an end');
  t.equal(err?.code, 'HPE_INVALID_EOF_STATE');
  t.equal(err?.started, true, 'after the response began');
});

t.test('bytes after a body do not break the next request, which gets a fresh connection', async (t) => {
  const { port, connections } = await upstream(t, (n) => (n === 0 ? Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokGARBAGE\r\n\r\n') : Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nyes')));
  const pool = new H1Pool('127.0.0.1', port, { keepAliveMs: 60_000, connectTimeoutMs: 5_000 });
  t.teardown(() => pool.destroy());
  t.equal((await request(pool, 'GET', '/')).body().toString(), 'ok');
  await new Promise((r) => setTimeout(r, 50));
  t.equal((await request(pool, 'GET', '/')).body().toString(), 'yes');
  t.equal(connections(), 2, 'the connection that sent garbage is not reused');
});

t.test('a body paused by its receiver resumes and arrives whole', async (t) => {
  const { port } = await upstream(t, () => Buffer.concat([head('200 OK', 'content-length: 200000\r\n'), pattern(200_000, 5)]));
  const pool = new H1Pool('127.0.0.1', port, { keepAliveMs: 60_000, connectTimeoutMs: 5_000 });
  t.teardown(() => pool.destroy());
  const g = await request(pool, 'GET', '/', { pauseFirst: true });
  t.ok(g.body().equals(pattern(200_000, 5)));
  t.ok(g.chunks.length > 1, `${g.chunks.length} chunks`);
});
