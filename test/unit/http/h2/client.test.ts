/**
 * meshlet's own HTTP/2 client (src/http/h2/client.ts, client-stream.ts) against node:http2's
 * server (nghttp2), h2c and TLS with ALPN: requests with and without bodies, bodies of several
 * MiB both ways with slow readers on either side (flow control), trailers, 1xx heads, server
 * resets, GOAWAY mid-flight (graceful and with an error code), the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS, PING, SETTINGS changed mid-connection, client resets,
 * close/destroy, connection failures and node's refusals on request().
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import t, { type Test } from 'tap';
import { connect, H2ClientSession } from '../../../../src/http/h2/client';
import { connected, outcome, sessionClosed } from './client-lib';
import { until } from './lib';

const dir = mkdtempSync(path.join(tmpdir(), 'h2client-'));
const keyFile = path.join(dir, 'key.pem');
const certFile = path.join(dir, 'cert.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=h2.test', '-addext', 'subjectAltName=DNS:h2.test', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' });
const key = readFileSync(keyFile);
const cert = readFileSync(certFile);
rmSync(dir, { recursive: true, force: true });

type Handler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

interface Srv {
  server: http2.Http2Server;
  port: number;
  sessions: Set<http2.ServerHttp2Session>;
}

async function h2cServer(t: Test, handler: Handler, settings: http2.Settings = {}): Promise<Srv> {
  const server = http2.createServer({ settings });
  return listen(t, server, handler);
}

async function listen(t: Test, server: http2.Http2Server | http2.Http2SecureServer, handler: Handler): Promise<Srv> {
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
    s.on('error', () => undefined);
  });
  server.on('stream', (s: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders) => {
    s.on('error', () => undefined);
    handler(s, h);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  );
  return { server: server as http2.Http2Server, port, sessions };
}

function client(t: Test, port: number, opts: Parameters<typeof connect>[1] = {}): H2ClientSession {
  const c = connect(`http://127.0.0.1:${port}`, { settings: { enablePush: false, initialWindowSize: 1024 * 1024 }, ...opts });
  c.on('error', () => undefined);
  t.teardown(() => c.destroy());
  return c;
}

const GET = { ':method': 'GET', ':path': '/', ':scheme': 'http', ':authority': 'h2.test' };
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('GET: the head as node builds it, the body, a clean close', async (t) => {
  const srv = await h2cServer(t, (s, h) => {
    s.respond({ ':status': 200, 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'], 'x-seen': `${h[':method']} ${h[':path']} ${h[':authority']} ${h['x-a']}` });
    s.end('hello');
  });
  const c = client(t, srv.port);
  const events: string[] = [];
  c.on('connect', () => events.push('connect'));
  c.on('remoteSettings', () => events.push('remoteSettings'));
  const s = c.request({ ...GET, ':path': '/p?q=1', 'x-a': ['1', '2'] }, { endStream: true });
  t.equal(s.pending, true, 'pending before the connection is up');
  const o = await outcome(s);
  t.equal(o.status, 200);
  t.equal(typeof o.headers![':status'], 'number');
  t.same(o.headers!['set-cookie'], ['a=1', 'b=2']);
  t.equal(o.headers!['x-seen'], 'GET /p?q=1 h2.test 1, 2');
  t.equal(o.body.toString(), 'hello');
  t.equal(o.rstCode, 0);
  t.equal(o.error, undefined);
  t.equal(o.ended, true);
  t.equal(o.aborted, false);
  t.equal(s.closed, true);
  t.same(events.slice(0, 2), ['connect', 'remoteSettings']);
  t.equal(c.openStreams, 0);
  t.equal(c.alpnProtocol, 'h2c');
  t.equal(c.encrypted, false);
  t.ok(s.id === 1);
});

t.test('response fields named like inherited properties (constructor, __proto__) are own fields of a null-prototype object, in heads and trailers', async (t) => {
  const srv = await h2cServer(t, (s) => {
    s.respond({ ':status': 200, constructor: 'c', ['__proto__' as string]: 'p', 'x-b': ['1', '2'] } as http2.OutgoingHttpHeaders, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ constructor: 'tc', ['__proto__' as string]: 'tp' } as http2.OutgoingHttpHeaders));
    s.end('x');
  });
  const c = client(t, srv.port);
  const o = await outcome(c.request(GET, { endStream: true }));
  t.equal(o.status, 200);
  t.equal(Object.getPrototypeOf(o.headers!), null, 'a null-prototype object, as node');
  t.equal(o.headers!.constructor, 'c');
  t.equal(Object.getOwnPropertyDescriptor(o.headers!, '__proto__')?.value, 'p');
  t.equal(o.headers!['x-b'], '1, 2');
  t.equal(Object.getPrototypeOf(o.trailers!), null);
  t.equal(o.trailers!.constructor, 'tc');
  t.equal(Object.getOwnPropertyDescriptor(o.trailers!, '__proto__')?.value, 'tp');
  t.equal(o.body.toString(), 'x');
});

t.test('defaults: method, authority, scheme and path filled in as node does', async (t) => {
  const srv = await h2cServer(t, (s, h) => {
    s.respond({ ':status': 200 });
    s.end(`${h[':method']} ${h[':scheme']} ${h[':authority']} ${h[':path']}`);
  });
  const c = client(t, srv.port);
  const o = await outcome(c.request({}, { endStream: true }));
  t.equal(o.body.toString(), `GET http 127.0.0.1:${srv.port} /`);
});

t.test('large bodies both ways, slow readers on both sides (flow control)', async (t) => {
  const up = randomBytes(3 * 1024 * 1024 + 17);
  const down = randomBytes(5 * 1024 * 1024 + 3);
  const srv = await h2cServer(
    t,
    (s) => {
      const chunks: Buffer[] = [];
      const pump = (): void => {
        let c: Buffer | null;
        while ((c = s.read() as Buffer | null) !== null) {
          chunks.push(c);
          setTimeout(pump, 1);
          return;
        }
        s.once('readable', pump);
      };
      pump();
      s.on('end', () => {
        s.respond({ ':status': 200, 'x-up': sha(Buffer.concat(chunks)) });
        s.end(down);
      });
    },
    { initialWindowSize: 65_535 },
  );
  const c = client(t, srv.port);
  const s = c.request({ ...GET, ':method': 'POST' });
  let drains = 0;
  s.on('drain', () => drains++);
  const done = outcome(s, 1);
  for (let off = 0; off < up.length; off += 100_000) {
    if (!s.write(up.subarray(off, off + 100_000))) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  const o = await done;
  t.equal(o.status, 200);
  t.equal(o.headers!['x-up'], sha(up), 'request body intact');
  t.equal(sha(o.body), sha(down), 'response body intact');
  t.ok(drains > 0, 'writes met backpressure');
});

t.test('many concurrent streams with bodies on one session', async (t) => {
  const srv = await h2cServer(t, (s) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      s.respond({ ':status': 200 });
      s.end(Buffer.concat(chunks));
    });
  });
  const c = client(t, srv.port);
  const bodies = Array.from({ length: 50 }, (_, i) => randomBytes(1000 + i * 3000));
  const outs = await Promise.all(
    bodies.map((b) => {
      const s = c.request({ ...GET, ':method': 'POST' });
      s.end(b);
      return outcome(s);
    }),
  );
  for (let i = 0; i < bodies.length; i++) t.equal(sha(outs[i]!.body), sha(bodies[i]!));
  t.equal(c.openStreams, 0);
});

t.test('trailers and 1xx heads', async (t) => {
  const srv = await h2cServer(t, (s) => {
    s.additionalHeaders({ ':status': 103, link: '</a>; rel=preload' });
    s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' }));
    s.end(Buffer.from([0, 0, 0, 0, 1, 7]));
  });
  const c = client(t, srv.port);
  const o = await outcome(c.request(GET, { endStream: true }));
  t.equal(o.info.length, 1);
  t.equal(o.info[0]![':status'], 103);
  t.equal(o.status, 200);
  t.same(o.body, Buffer.from([0, 0, 0, 0, 1, 7]));
  t.same({ ...o.trailers }, { 'grpc-status': '0', 'grpc-message': 'ok' });
  t.equal(o.rstCode, 0);
});

t.test('a HEAD response with content-length and no body; 204', async (t) => {
  const srv = await h2cServer(t, (s, h) => {
    if (h[':path'] === '/204') s.respond({ ':status': 204 }, { endStream: true });
    else s.respond({ ':status': 200, 'content-length': '10' }, { endStream: true });
  });
  const c = client(t, srv.port);
  const o = await outcome(c.request({ ...GET, ':method': 'HEAD' }, { endStream: true }));
  t.equal(o.status, 200);
  t.equal(o.error, undefined);
  const o2 = await outcome(c.request({ ...GET, ':path': '/204' }, { endStream: true }));
  t.equal(o2.status, 204);
  t.equal(o2.error, undefined);
});

t.test('server resets: REFUSED_STREAM is an error with rstCode 7, CANCEL closes without one', async (t) => {
  const srv = await h2cServer(t, (s, h) => {
    if (h[':path'] === '/refuse') s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    else s.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  });
  const c = client(t, srv.port);
  const a = await outcome(c.request({ ...GET, ':path': '/refuse' }, { endStream: true }));
  t.equal(a.error?.code, 'ERR_HTTP2_STREAM_ERROR');
  t.match(a.error?.message, /NGHTTP2_REFUSED_STREAM/);
  t.equal(a.rstCode, 7);
  const p = c.request({ ...GET, ':method': 'POST', ':path': '/internal' });
  const d = await outcome(p);
  t.equal(d.rstCode, 2);
  t.equal(d.aborted, true, "'aborted': the request was still being written");
  t.equal(d.error?.code, 'ERR_HTTP2_STREAM_ERROR');
});

t.test('client reset: close(CANCEL) reaches the server, no error here', async (t) => {
  let serverCode = -1;
  const srv = await h2cServer(t, (s) => {
    s.on('close', () => (serverCode = s.rstCode));
    s.respond({ ':status': 200 });
    s.write('x');
  });
  const c = client(t, srv.port);
  const s = c.request({ ...GET, ':method': 'POST' });
  s.once('response', () => s.close(http2.constants.NGHTTP2_CANCEL));
  const o = await outcome(s);
  t.equal(o.rstCode, 8);
  t.equal(o.error, undefined);
  await until(() => serverCode !== -1);
  t.equal(serverCode, 8);
  t.throws(() => s.close(-1), { code: 'ERR_OUT_OF_RANGE' });
  // close() of a pending stream: as node, it opens and is reset at once (the server sees it).
  serverCode = -1;
  const c2 = client(t, srv.port);
  const p = c2.request({ ...GET, ':method': 'POST' });
  p.close(http2.constants.NGHTTP2_CANCEL);
  t.equal(p.closed, true);
  const po = await outcome(p);
  t.equal(po.rstCode, 8);
  t.equal(po.error, undefined);
  t.equal(c2.pendingStreams, 0);
  await until(() => serverCode !== -1);
  t.equal(serverCode, 8);
});

t.test('GOAWAY mid-flight: streams above the last id are refused (retryable), the others finish', async (t) => {
  const held: http2.ServerHttp2Stream[] = [];
  const srv = await h2cServer(t, (s) => {
    held.push(s);
    if (held.length === 3) {
      s.session!.goaway(http2.constants.NGHTTP2_NO_ERROR, 1);
      setTimeout(() => {
        held[0]!.respond({ ':status': 200 });
        held[0]!.end('first');
      }, 20);
    }
  });
  const c = client(t, srv.port);
  let goaway: unknown[] = [];
  c.on('goaway', (...a: unknown[]) => {
    goaway = a;
    t.equal(c.closed, true);
    t.throws(() => c.request(GET), { code: 'ERR_HTTP2_GOAWAY_SESSION' });
  });
  const outs = [1, 2, 3].map(() => outcome(c.request(GET, { endStream: true })));
  const [a, b, d] = await Promise.all(outs);
  t.equal(a!.status, 200);
  t.equal(a!.body.toString(), 'first');
  for (const o of [b!, d!]) {
    t.equal(o.rstCode, 7);
    t.equal(o.error?.code, 'ERR_HTTP2_STREAM_ERROR');
  }
  t.equal(goaway[0], 0);
  t.equal(goaway[1], 1);
  await sessionClosed(c);
  t.equal(c.destroyed, true);
  t.throws(() => c.request(GET), { code: 'ERR_HTTP2_INVALID_SESSION' });
  t.throws(() => c.setLocalWindowSize(1 << 20), { code: 'ERR_HTTP2_INVALID_SESSION' });
});

t.test('GOAWAY with an error code destroys the session: ERR_HTTP2_SESSION_ERROR', async (t) => {
  const srv = await h2cServer(t, (s) => {
    s.respond({ ':status': 200 });
    s.write('x', () => s.session!.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 1));
  });
  const c = connect(`http://127.0.0.1:${srv.port}`);
  const errs: Error[] = [];
  c.on('error', (e: Error) => errs.push(e));
  const o = await outcome(c.request(GET, { endStream: true }));
  await sessionClosed(c);
  t.equal(o.error?.code, 'ERR_HTTP2_SESSION_ERROR');
  t.equal(o.rstCode, 11);
  t.equal((errs[0] as Error & { code: string }).code, 'ERR_HTTP2_SESSION_ERROR');
});

t.test("the server's SETTINGS_MAX_CONCURRENT_STREAMS: requests beyond it wait, then go", async (t) => {
  let open = 0;
  let most = 0;
  const srv = await h2cServer(
    t,
    (s) => {
      open++;
      most = Math.max(most, open);
      s.on('close', () => open--);
      setTimeout(() => {
        s.respond({ ':status': 200 });
        s.end('ok');
      }, 10);
    },
    { maxConcurrentStreams: 2 },
  );
  const c = client(t, srv.port);
  await connected(c);
  await until(() => c.remoteSettings.maxConcurrentStreams === 2);
  const ss = Array.from({ length: 7 }, () => c.request(GET, { endStream: true }));
  t.ok(c.pendingStreams >= 5, 'held back');
  const outs = await Promise.all(ss.map((s) => outcome(s)));
  for (const o of outs) t.equal(o.body.toString(), 'ok');
  t.equal(most, 2);
});

t.test('PING answered; SETTINGS changed mid-connection (a smaller window) applied to uploads', async (t) => {
  const body = randomBytes(300_000);
  let session: http2.ServerHttp2Session | undefined;
  const srv = await h2cServer(t, (s) => {
    session = s.session as http2.ServerHttp2Session;
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      s.respond({ ':status': 200 });
      s.end(sha(Buffer.concat(chunks)));
    });
  });
  const c = client(t, srv.port);
  const first = await outcome(c.request(GET, { endStream: true }).end());
  t.equal(first.status, 200);
  const rtt = await new Promise<number>((r, j) => session!.ping((err, ms) => (err ? j(err) : r(ms))));
  t.ok(rtt >= 0, 'PING acknowledged');
  session!.settings({ initialWindowSize: 1000, maxFrameSize: 16_384 });
  await until(() => c.remoteSettings.initialWindowSize === 1000);
  const s = c.request({ ...GET, ':method': 'POST' });
  s.end(body);
  const o = await outcome(s);
  t.equal(o.body.toString(), sha(body));
});

t.test('graceful close: in-flight requests finish, then the session closes; destroy() ends streams', async (t) => {
  const srv = await h2cServer(t, (s, h) => {
    if (h[':path'] === '/never') return;
    setTimeout(() => {
      s.respond({ ':status': 200 });
      s.end('done');
    }, 30);
  });
  const c = client(t, srv.port);
  const s = c.request(GET, { endStream: true });
  const done = outcome(s);
  c.close();
  t.equal(c.closed, true);
  t.throws(() => c.request(GET), { code: 'ERR_HTTP2_GOAWAY_SESSION' });
  const o = await done;
  t.equal(o.body.toString(), 'done', 'a request made before close() (still pending) was sent');
  await sessionClosed(c);
  const c2 = client(t, srv.port);
  await connected(c2);
  const n = c2.request({ ...GET, ':path': '/never' }, { endStream: true });
  await until(() => srv.sessions.size > 0);
  const no = outcome(n);
  await new Promise((r) => setTimeout(r, 20));
  c2.destroy();
  const r = await no;
  t.equal(r.error, undefined, 'destroy() without an error: the stream closes without one');
  t.equal(r.ended, false);
  c2.destroy();
});

t.test('the server goes away (socket closed): streams close with CANCEL', async (t) => {
  const sockets: net.Socket[] = [];
  const srv = await h2cServer(t, (s) => {
    s.respond({ ':status': 200 });
    s.write('x', () => sockets[0]!.destroy());
  });
  srv.server.on('connection', (sock: net.Socket) => sockets.push(sock));
  const c = client(t, srv.port);
  const o = await outcome(c.request(GET, { endStream: true }));
  t.equal(o.rstCode, 8);
  t.equal(o.error, undefined);
  await sessionClosed(c);
});

t.test('connection refused: pending streams fail with ERR_HTTP2_STREAM_CANCEL caused by it', async (t) => {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const c = connect(`http://127.0.0.1:${port}`);
  const errs: (Error & { code?: string })[] = [];
  c.on('error', (e: Error) => errs.push(e));
  const o = await outcome(c.request(GET, { endStream: true }));
  await sessionClosed(c);
  t.equal(o.error?.code, 'ERR_HTTP2_STREAM_CANCEL');
  t.equal((o.error?.cause as { code?: string }).code, 'ECONNREFUSED');
  t.equal(errs[0]?.code, 'ECONNREFUSED');
  t.equal(o.rstCode, 2);
});

t.test('a socket that closes before it connects; a socket already connected', async (t) => {
  const srv = await h2cServer(t, (s) => {
    s.respond({ ':status': 200 });
    s.end('ok');
  });
  const sock = net.connect(srv.port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  const c = connect('http://h2.test', { createConnection: () => sock });
  c.on('error', () => undefined);
  const o = await outcome(c.request({ ':path': '/' }, { endStream: true }));
  t.equal(o.body.toString(), 'ok');
  c.close();
  await sessionClosed(c);
  const dead = net.connect(srv.port, '127.0.0.1');
  dead.destroy();
  const c2 = connect('http://h2.test', { createConnection: () => dead });
  const errs: (Error & { code?: string })[] = [];
  c2.on('error', (e: Error) => errs.push(e));
  const o2 = await outcome(c2.request(GET, { endStream: true }));
  await sessionClosed(c2);
  t.equal(o2.error?.code, 'ERR_HTTP2_STREAM_CANCEL');
  t.equal(errs[0]?.code, 'ERR_SOCKET_CLOSED');
});

t.test("request(): node's refusals", async (t) => {
  const srv = await h2cServer(t, () => undefined);
  const c = client(t, srv.port);
  t.throws(() => c.request({ ...GET, connection: 'close' }), { code: 'ERR_HTTP2_INVALID_CONNECTION_HEADERS' });
  t.throws(() => c.request({ ...GET, te: 'gzip' }), { code: 'ERR_HTTP2_INVALID_CONNECTION_HEADERS' });
  t.throws(() => c.request({ ...GET, ':status': '200' }), { code: 'ERR_HTTP2_INVALID_PSEUDOHEADER' });
  t.throws(() => c.request({ ...GET, ':path': ['/a', '/b'] as unknown as string }), { code: 'ERR_HTTP2_HEADER_SINGLE_VALUE' });
  t.throws(() => c.request({ ...GET, 'content-type': ['a', 'b'] }), { code: 'ERR_HTTP2_HEADER_SINGLE_VALUE' });
  t.throws(() => c.request({ ':method': 'CONNECT' }), { code: 'ERR_HTTP2_CONNECT_AUTHORITY' });
  t.throws(() => c.request({ ':method': 'CONNECT', ':authority': 'a:1', ':path': '/' }), { code: 'ERR_HTTP2_CONNECT_PATH' });
  const cs = c.request({ ':method': 'CONNECT', ':authority': 'a:1' });
  const co = outcome(cs);
  cs.close(8);
  t.equal((await co).rstCode, 8);
  t.throws(() => c.setLocalWindowSize(-1), { code: 'ERR_OUT_OF_RANGE' });
});

t.test('TLS with ALPN h2; a TLS server without h2 is refused', async (t) => {
  const secure = http2.createSecureServer({ key, cert });
  const srv = await listen(t, secure as unknown as http2.Http2Server, (s) => {
    s.respond({ ':status': 200 });
    s.end('secure');
  });
  const c = connect(`https://127.0.0.1:${srv.port}`, {
    createConnection: () => tls.connect({ host: '127.0.0.1', port: srv.port, ca: cert, servername: 'h2.test', ALPNProtocols: ['h2'] }),
  });
  c.on('error', () => undefined);
  t.teardown(() => c.destroy());
  const s = c.request({ ':path': '/' }, { endStream: true });
  const o = await outcome(s);
  t.equal(o.body.toString(), 'secure');
  t.equal(c.encrypted, true);
  t.equal(c.alpnProtocol, 'h2');
  c.setLocalWindowSize(8 * 1024 * 1024);

  const h1 = tls.createServer({ key, cert, ALPNProtocols: ['http/1.1'] }, (sock) => sock.on('error', () => undefined));
  await new Promise<void>((r) => h1.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => h1.close(() => r())));
  const p = (h1.address() as net.AddressInfo).port;
  const c2 = connect(`https://127.0.0.1:${p}`, { createConnection: () => tls.connect({ host: '127.0.0.1', port: p, ca: cert, servername: 'h2.test', ALPNProtocols: ['h2', 'http/1.1'] }) });
  const errs: (Error & { code?: string })[] = [];
  c2.on('error', (e: Error) => errs.push(e));
  const o2 = await outcome(c2.request(GET, { endStream: true }));
  await sessionClosed(c2);
  t.equal(o2.error?.code, 'ERR_HTTP2_STREAM_CANCEL');
  t.equal(errs[0]?.code, 'ERR_HTTP2_ERROR');
});

t.test('connect() without createConnection: net and tls on their own', async (t) => {
  const srv = await h2cServer(t, (s) => {
    s.respond({ ':status': 200 });
    s.end('plain');
  });
  const got: unknown[] = [];
  const c = connect(new URL(`http://127.0.0.1:${srv.port}`), {}, (s, sock) => got.push(s, sock));
  c.on('error', () => undefined);
  t.teardown(() => c.destroy());
  const o = await outcome(c.request(GET, { endStream: true }));
  t.equal(o.body.toString(), 'plain');
  t.equal(got[0], c);
  const c2 = connect(`https://localhost:1`);
  const e: Error[] = [];
  c2.on('error', (x: Error) => e.push(x));
  await sessionClosed(c2);
  t.equal(e.length, 1);
});
