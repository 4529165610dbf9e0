/**
 * The HTTP/1.1 heads as they go on the wire, byte for byte: the server's response head
 * (`H1Response.writeHead`) and the upstream client's request head (`H1Pool`), both built from a
 * scratch array shared by every message (src/http/h1-server.ts, h1-client.ts). A large head, then
 * a small one on the same connection, must not carry anything of the first; repeated headers,
 * numbers, `connection: close`, HTTP/1.0, chunked and bodied requests keep their exact form. And a
 * response body streamed by the upstream client arrives whole and in order, each chunk its own
 * bytes (the client no longer copies the parser's chunks where they are copies already).
 */
import * as net from 'node:net';
import type { Readable } from 'node:stream';
import { PassThrough } from 'node:stream';
import t, { type Test } from 'tap';
import { H1Pool } from '../../../src/http/h1-client';
import { startH1Server } from './lib/h1-server';
import type { Headers } from '../../../src/http/upstream-types';

/** Sends `text` on one connection and resolves with everything read until `done(got)` or close. */
function exchange(port: number, text: string, done: (got: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const c = net.connect(port, '127.0.0.1', () => c.write(text));
    c.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (done(got)) {
        c.destroy();
        resolve(got);
      }
    });
    c.on('close', () => resolve(got));
    c.on('error', reject);
  });
}

const count = (s: string, re: RegExp): number => s.split(re).length - 1;

t.test('response heads: exact bytes, a large head then a small one on one connection', async (t) => {
  const big: Record<string, string> = { 'content-length': '1' };
  for (let i = 0; i < 100; i++) big[`x-big-${i}`] = `value-${i}`;
  const port = await startH1Server(t, (req, res) => {
    if (req.url === '/big') res.writeHead(200, big).end('b');
    else if (req.url === '/small') res.writeHead(201, { 'content-length': 2, 'set-cookie': ['a=1', 'b=2'], 'x-n': 7, 'x-skip': undefined }).end('ok');
    else if (req.url === '/chunked') {
      res.writeHead(200, { 'x-c': 'c' });
      res.write('ab');
      res.end('cd');
    } else res.writeHead(204, { Connection: 'close', 'x-last': 'z' }).end();
  });
  const reqs = ['/big', '/small', '/chunked', '/close'].map((p) => `GET ${p} HTTP/1.1\r\nhost: x\r\n\r\n`).join('');
  const got = await exchange(port, reqs, () => false);
  const bigHead = `HTTP/1.1 200 OK\r\ncontent-length: 1\r\n${Object.keys(big)
    .slice(1)
    .map((k) => `${k}: ${big[k]}\r\n`)
    .join('')}\r\nb`;
  const expected =
    bigHead +
    'HTTP/1.1 201 Created\r\ncontent-length: 2\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nx-n: 7\r\n\r\nok' +
    'HTTP/1.1 200 OK\r\nx-c: c\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n' +
    'HTTP/1.1 204 No Content\r\nx-last: z\r\nconnection: close\r\n\r\n';
  t.equal(got, expected, 'four responses, each head exactly its own');
  t.equal(count(got, /x-big-0:/), 1, 'the large head once, not repeated in a later one');
});

t.test('response heads for HTTP/1.0: keep-alive asked, and a body without a length closes', async (t) => {
  const port = await startH1Server(t, (req, res) => {
    if (req.url === '/len') res.writeHead(200, { 'content-length': '1' }).end('x');
    else res.writeHead(200, { 'x-a': 'a' }).end('y');
  });
  const got = await exchange(port, 'GET /len HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /nolen HTTP/1.0\r\nconnection: keep-alive\r\n\r\n', () => false);
  t.equal(got, 'HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\nxHTTP/1.1 200 OK\r\nx-a: a\r\nconnection: close\r\n\r\ny');
});

t.test('a small body that completes its declared length goes out with the head at once, whole', async (t) => {
  // end() comes 300 ms later (or never): the client must have the whole response before it.
  const ended: string[] = [];
  const port = await startH1Server(t, (req, res) => {
    const later = (): void => void setTimeout(() => (ended.push(req.url ?? ''), res.end()), 300);
    if (req.url === '/one') {
      res.writeHead(200, { 'content-length': '5' });
      res.write(Buffer.from('hello'));
    } else if (req.url === '/pieces') {
      res.writeHead(200, { 'content-length': 6 });
      res.write('ab');
      res.write(Buffer.from('cd'));
      res.write('ef');
    } else if (req.url === '/over') {
      // More than declared in one write: sent as given, at once (the client reads what the length says).
      res.writeHead(200, { 'content-length': '2' });
      res.write('xyz');
    } else {
      res.writeHead(200, { 'content-length': '4' });
      res.write('wx');
      setTimeout(() => res.write('yz'), 50);
    }
    later();
  });
  const cases: Array<[string, string]> = [
    ['/one', 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello'],
    ['/pieces', 'HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabcdef'],
    ['/over', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nxyz'],
    // The first piece goes out at the end of its tick (the microtask), the second when written.
    ['/split', 'HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nwxyz'],
  ];
  for (const [path, want] of cases) {
    const got = await exchange(port, `GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`, (g) => g.length >= want.length);
    t.equal(got, want, `${path}: the whole response`);
    t.notOk(ended.includes(path), `${path}: before end() was called`);
  }
});

/** A raw upstream that records each request head (and body) and answers each with `reply`. */
async function recordingUpstream(t: Test, reply: (n: number) => string): Promise<{ port: number; seen: string[] }> {
  const seen: string[] = [];
  const server = net.createServer((s) => {
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end + 4);
        let bodyLen = 0;
        const m = /\r\ncontent-length: (\d+)\r\n/.exec(head);
        if (m) bodyLen = Number(m[1]);
        else if (/\r\ntransfer-encoding: chunked\r\n/.test(head)) {
          const last = buf.indexOf('0\r\n\r\n', end + 4);
          if (last < 0) return;
          bodyLen = last + 5 - (end + 4);
        }
        if (buf.length < end + 4 + bodyLen) return;
        seen.push(buf.slice(0, end + 4 + bodyLen));
        buf = buf.slice(end + 4 + bodyLen);
        s.write(reply(seen.length));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, seen };
}

function request(pool: H1Pool, method: string, path: string, headers: string[], body: Readable | null): Promise<{ status: number; headers: Headers; chunks: Buffer[] }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let status = 0;
    let hdrs: Headers = {};
    pool.request(
      { method, path, authority: 'up.example:80', headers, body },
      {
        onResponse(s, h) {
          status = s;
          hdrs = h;
        },
        onData(c) {
          chunks.push(c);
          return true;
        },
        onEnd: () => resolve({ status, headers: hdrs, chunks }),
        onError: reject,
      },
    );
  });
}

t.test('request heads: exact bytes, a large head then a small one on one connection', async (t) => {
  const { port, seen } = await recordingUpstream(t, () => 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
  const pool = new H1Pool('127.0.0.1', port, { keepAliveMs: 60_000, connectTimeoutMs: 5_000 });
  t.teardown(() => pool.destroy());
  const big: string[] = [];
  for (let i = 0; i < 100; i++) big.push(`x-big-${i}`, `value-${i}`);
  await request(pool, 'GET', '/big?q=1', big, null);
  await request(pool, 'DELETE', '/small', ['x-a', 'a', 'x-a', 'b'], null);
  const fixed = new PassThrough();
  fixed.end('hello');
  await request(pool, 'PUT', '/len', ['content-length', '5'], fixed);
  const streamed = new PassThrough();
  const p = request(pool, 'POST', '/chunked', ['x-b', 'b'], streamed);
  streamed.write('ab');
  streamed.end('cde');
  await p;
  t.equal(seen.length, 4, 'four requests, one connection reused');
  t.equal(seen[0], `GET /big?q=1 HTTP/1.1\r\nhost: up.example:80\r\n${Array.from({ length: 100 }, (_, i) => `x-big-${i}: value-${i}\r\n`).join('')}\r\n`);
  t.equal(seen[1], 'DELETE /small HTTP/1.1\r\nhost: up.example:80\r\nx-a: a\r\nx-a: b\r\n\r\n', 'nothing of the large head');
  t.equal(seen[2], 'PUT /len HTTP/1.1\r\nhost: up.example:80\r\ncontent-length: 5\r\n\r\nhello');
  t.equal(seen[3], 'POST /chunked HTTP/1.1\r\nhost: up.example:80\r\nx-b: b\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n');
});

t.test('heads with more distinct field names than the name cache keeps, and names longer than it keeps: exact both ways', async (t) => {
  // Each field's line start (`\r\n`, the name, `: `) is cached by name, up to 512 names of up to
  // 64 characters (src/http/headers.ts lineStart); past either bound it is made per head.
  const names = Array.from({ length: 700 }, (_, i) => (i % 50 === 0 ? `x-long-${'n'.repeat(70)}-${i}` : `x-many-${i}`));
  const fields: Record<string, string> = { 'content-length': '2' };
  for (const n of names) fields[n] = `v${n.length}`;
  const port = await startH1Server(t, (_req, res) => res.writeHead(200, fields).end('ok'));
  const one = `HTTP/1.1 200 OK\r\n${Object.keys(fields)
    .map((k) => `${k}: ${fields[k]}\r\n`)
    .join('')}\r\nok`;
  const got = await exchange(port, 'GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n', (g) => g.length >= 2 * one.length);
  t.equal(got, one + one, 'the same head twice: cached and uncached line starts alike');

  const { port: up, seen } = await recordingUpstream(t, () => 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
  const pool = new H1Pool('127.0.0.1', up, { keepAliveMs: 60_000, connectTimeoutMs: 5_000 });
  t.teardown(() => pool.destroy());
  const raw = names.flatMap((n) => [n.toUpperCase(), 'v']);
  await request(pool, 'GET', '/1', raw, null);
  await request(pool, 'GET', '/2', raw, null);
  const expected = (path: string): string => `GET ${path} HTTP/1.1\r\nhost: up.example:80\r\n${names.map((n) => `${n.toUpperCase()}: v\r\n`).join('')}\r\n`;
  t.same(seen, [expected('/1'), expected('/2')], 'request heads keep each name as given');
});

t.test('a response body in many reads: every chunk its own bytes, whole and in order', async (t) => {
  // 256 chunks of 1 KiB, each filled with its own byte, written as separate chunked-encoding
  // chunks in several socket writes: the client's reads land in one shared buffer, overwritten by
  // the next read, so a chunk handed on as a view of it would change under the receiver.
  const N = 256;
  const chunks: string[] = [];
  for (let i = 0; i < N; i++) chunks.push(`400\r\n${String.fromCharCode(65 + (i % 26)).repeat(1024)}\r\n`);
  const body = chunks.join('') + '0\r\n\r\n';
  const server = net.createServer((s) => {
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n');
      let at = 0;
      const next = (): void => {
        if (at >= body.length) return;
        s.write(body.slice(at, at + 7000));
        at += 7000;
        setImmediate(next);
      };
      next();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  const pool = new H1Pool('127.0.0.1', (server.address() as net.AddressInfo).port, { keepAliveMs: 60_000, connectTimeoutMs: 5_000 });
  t.teardown(() => pool.destroy());
  const r = await request(pool, 'GET', '/', [], null);
  const all = Buffer.concat(r.chunks).toString('latin1');
  t.equal(all.length, N * 1024);
  let ok = true;
  for (let i = 0; i < N; i++) if (all.slice(i * 1024, (i + 1) * 1024) !== String.fromCharCode(65 + (i % 26)).repeat(1024)) ok = false;
  t.ok(ok, 'every KiB holds its own letter, after all reads are done');
});
