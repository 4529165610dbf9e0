/**
 * HTTP/1.1 over a TLS listener (the gateway's HTTPS listeners; the sidecar's mTLS port serves the
 * same HTTP/1.1 server after its handshake): what a client sees on one TLS connection, over real
 * TLS: keep-alive, pipelining, a request body read slowly (backpressure), malformed input, the
 * header deadline (also for half a head behind a complete request in the same read), the idle
 * keep-alive close, and an upgrade whose first bytes arrive with its head. On the gateway's
 * listeners the first read goes through protocol detection, so most cases start with a warm-up
 * request to test the reads after it.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import pino from 'pino';
import t, { type Test } from 'tap';
import type { H1Request, H1Response } from '../../../src/http/h1-server';
import { startListener, type DownstreamRequest, type DownstreamResponse, type Listener } from '../../../src/http/listener';
import { hashBodySlowly } from './lib/slow-body';

const dir = mkdtempSync(path.join(tmpdir(), 'h1-tls-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const certFile = path.join(dir, 'c.crt');
const keyFile = path.join(dir, 'c.key');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=h1.test', '-addext', 'subjectAltName=DNS:h1.test', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' });
const cert = readFileSync(certFile);
const key = readFileSync(keyFile);

type Handler = (req: H1Request, res: H1Response) => void;

async function listen(t: Test, handler: Handler, opts: { headersTimeoutMs?: number; keepAliveTimeoutMs?: number } = {}): Promise<{ port: number; refused: string[] }> {
  const refused: string[] = [];
  const l: Listener = await startListener('127.0.0.1', 0, {
    name: 'h1-tls',
    logger: pino({ level: 'silent' }),
    handler: (req: DownstreamRequest, res: DownstreamResponse) => handler(req as H1Request, res as H1Response),
    tls: { cert, key, ALPNProtocols: ['http/1.1'] },
    onRefused: (r) => refused.push(r),
    ...opts,
  });
  t.teardown(async () => {
    // close() polls on an unref'd timer: keep the test process alive until it is done.
    const alive = setInterval(() => undefined, 50);
    await l.close(100);
    clearInterval(alive);
  });
  return { port: l.address().port, refused };
}

/** A TLS connection that collects what it reads; `until(re)` waits for the text so far to match. */
function connect(t: Test, port: number): Promise<{ socket: tls.TLSSocket; text(): string; until(re: RegExp, ms?: number): Promise<string>; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    let got = '';
    const waiters: (() => void)[] = [];
    const socket = tls.connect({ host: '127.0.0.1', port, ca: cert, servername: 'h1.test', ALPNProtocols: ['http/1.1'] }, () =>
      resolve({
        socket,
        text: () => got,
        until: (re, ms = 5000) =>
          new Promise((ok, fail) => {
            const timer = setTimeout(() => fail(new Error(`timed out waiting for ${re}; got ${JSON.stringify(got)}`)), ms);
            const check = (): void => {
              if (re.test(got)) {
                clearTimeout(timer);
                ok(got);
              } else waiters.push(check);
            };
            check();
          }),
        closed,
      }),
    );
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      for (const w of waiters.splice(0)) w();
    });
    socket.on('error', reject);
    t.teardown(() => socket.destroy());
  });
}

/** One request answered: what follows on the connection comes through the parser's own reads. */
async function warm(c: { socket: tls.TLSSocket; until(re: RegExp): Promise<string> }): Promise<void> {
  c.socket.write('GET /warm HTTP/1.1\r\nhost: h1.test\r\n\r\n');
  await c.until(/GET \/warm\n$/);
}

const ok = (req: H1Request, res: H1Response): void => {
  const body = `${req.method} ${req.url}\n`;
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) }).end(body);
};

t.test('keep-alive: three requests one after the other on one TLS connection', async (t) => {
  const { port } = await listen(t, ok);
  const c = await connect(t, port);
  for (const n of [1, 2, 3]) {
    c.socket.write(`GET /r${n} HTTP/1.1\r\nhost: h1.test\r\n\r\n`);
    await c.until(new RegExp(`GET /r${n}\\n$`));
  }
  t.equal(c.text().match(/HTTP\/1\.1 200 OK/g)?.length, 3, 'three responses');
});

t.test('pipelined requests in one TLS record are answered in order', async (t) => {
  let n = 0;
  // The first answer comes late: the second request must wait behind it.
  const { port } = await listen(t, (req, res) => {
    if (n++ === 0) setTimeout(() => ok(req, res), 100);
    else ok(req, res);
  });
  const c = await connect(t, port);
  n = -1; // the warm-up is not delayed
  await warm(c);
  n = 0;
  c.socket.write('GET /first HTTP/1.1\r\nhost: h1.test\r\n\r\nGET /second HTTP/1.1\r\nhost: h1.test\r\n\r\nGET /third HTTP/1.1\r\nhost: h1.test\r\n\r\n');
  const text = await c.until(/GET \/third\n$/);
  t.match(text, /GET \/first\n[\s\S]*GET \/second\n[\s\S]*GET \/third\n$/, 'first, second, third');
});

t.test('a 4 MiB request body read slowly arrives whole (backpressure on the TLS socket)', async (t) => {
  const size = 4 * 1024 * 1024;
  const { port } = await listen(t, hashBodySlowly(20, ok));
  const payload = Buffer.alloc(size);
  for (let i = 0; i < size; i++) payload[i] = (i * 7) & 0xff;
  const c = await connect(t, port);
  await warm(c);
  c.socket.write(`POST /upload HTTP/1.1\r\nhost: h1.test\r\ncontent-length: ${size}\r\n\r\n`);
  c.socket.write(payload);
  const text = await c.until(/\r\n\r\n\d+ [0-9a-f]{64}$/, 30_000);
  t.match(text, `\r\n\r\n${size} ${createHash('sha256').update(payload).digest('hex')}`, 'every byte, in order');
  // The connection is still good for the next request.
  c.socket.write('GET /after HTTP/1.1\r\nhost: h1.test\r\n\r\n');
  await c.until(/GET \/after\n$/);
});

t.test('a chunked body and a request right behind it in the same write', async (t) => {
  const { port } = await listen(t, (req, res) => {
    let got = '';
    if (!req.body) {
      ok(req, res);
      return;
    }
    req.body.on('data', (d: Buffer) => (got += d.toString()));
    req.body.on('end', () => res.writeHead(200, { 'content-length': String(got.length) }).end(got));
  });
  const c = await connect(t, port);
  await warm(c);
  c.socket.write('POST /c HTTP/1.1\r\nhost: h1.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /next HTTP/1.1\r\nhost: h1.test\r\n\r\n');
  const text = await c.until(/GET \/next\n$/);
  t.match(text, /\r\n\r\nhello world[\s\S]*GET \/next\n$/, 'the body, then the next answer');
});

t.test('request smuggling over TLS: 400 with the reason, the connection closed', async (t) => {
  const { port, refused } = await listen(t, ok);
  const c = await connect(t, port);
  await warm(c);
  c.socket.write('POST / HTTP/1.1\r\nhost: h1.test\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!');
  await c.closed;
  t.match(c.text(), /GET \/warm\nHTTP\/1\.1 400 Bad Request\r\n[\s\S]*x-meshlet-flags: DPE\r\n[\s\S]*request smuggling/, '400 DPE');
  t.match(refused, [/request smuggling/], 'reported');
});

t.test('a head not finished within the deadline: 408 over TLS', async (t) => {
  const { port } = await listen(t, ok, { headersTimeoutMs: 300 });
  const c = await connect(t, port);
  await warm(c);
  // One good request and half a head in one read: the clock starts with the half.
  c.socket.write('GET /one HTTP/1.1\r\nhost: h1.test\r\n\r\nGET /two HTTP/1.1\r\nhost: h1');
  await c.closed;
  t.match(c.text(), /GET \/one\n[\s\S]*HTTP\/1\.1 408 Request Timeout/, 'the first answered, the half head timed out');
  const d = await connect(t, port);
  await warm(d);
  d.socket.write('GET /three HTTP/1.1\r\nhost');
  await d.closed;
  t.match(d.text(), /GET \/warm\n[\s\S]*HTTP\/1\.1 408 Request Timeout/, 'a half head alone timed out too');
  // The same in the connection's first read (protocol detection hands it over).
  const e = await connect(t, port);
  e.socket.write('GET /four HTTP/1.1\r\nhost: h1.test\r\n\r\nGET /five HTTP/1.1\r\nhost: h1');
  await e.closed;
  t.match(e.text(), /GET \/four\n[\s\S]*HTTP\/1\.1 408 Request Timeout/, 'in the first read too');
});

t.test('an idle keep-alive TLS connection is closed after the idle timeout, a busy one is not', async (t) => {
  const { port } = await listen(
    t,
    (req, res) => {
      if (req.url === '/slow') setTimeout(() => ok(req, res), 700);
      else ok(req, res);
    },
    { keepAliveTimeoutMs: 300 },
  );
  const c = await connect(t, port);
  c.socket.write('GET /slow HTTP/1.1\r\nhost: h1.test\r\n\r\n');
  await c.until(/GET \/slow\n$/, 5000);
  const t0 = Date.now();
  await c.closed;
  const idle = Date.now() - t0;
  t.ok(idle >= 250 && idle < 3000, `closed ${idle} ms after its last answer`);
});

t.test('an upgrade: the bytes that came with its head are handed over with the socket', async (t) => {
  const { port } = await listen(t, (req, res) => {
    const up = req.upgrade;
    if (!up) {
      ok(req, res);
      return;
    }
    // The head's trailing bytes are known once the read is parsed: take the socket after that.
    setImmediate(() => {
      const s = up.socket;
      s.write('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n');
      s.write(`[head:${up.head.toString()}]`);
      s.on('data', (d: Buffer) => s.write(`[${d.toString()}]`));
      s.resume();
    });
  });
  const c = await connect(t, port);
  await warm(c);
  c.socket.write('GET /ws HTTP/1.1\r\nhost: h1.test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nearly-bytes');
  await c.until(/\[head:early-bytes\]$/);
  c.socket.write('later');
  const text = await c.until(/\[later\]$/);
  t.match(text, /GET \/warm\nHTTP\/1\.1 101 Switching Protocols\r\n[\s\S]*\[head:early-bytes\]\[later\]$/, 'the head bytes, then the tunnel');
});
