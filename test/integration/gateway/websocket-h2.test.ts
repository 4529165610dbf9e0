/**
 * WebSocket over HTTP/2 (RFC 8441 extended CONNECT) at the real `meshlet gateway` (h2c and TLS
 * with ALPN h2) and at a real sidecar's outbound listener, against a real `ws` server that speaks
 * WebSocket over HTTP/1.1 only: node's http2 client sees SETTINGS_ENABLE_CONNECT_PROTOCOL, opens
 * `CONNECT :protocol websocket`, gets 200, and speaks WebSocket frames on the stream (framed and
 * parsed by ws's own Sender and Receiver). Messages of a few hundred KB both ways; a close
 * handshake started by either side; a reset stream reaching the app as an abort, and a reset
 * upstream connection reaching the client as RST_STREAM CONNECT_ERROR; routes that refuse (401
 * API key, 403 IP filter, 404 no route) answer the stream with their status and the app never
 * sees them; a plain CONNECT is still refused (405).
 */
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import t, { type Test } from 'tap';
import { WebSocketServer } from 'ws';
import { route, service, startSidecar as startStaticSidecar } from '../sidecar/helpers';
import { closedPort, gatewayResource, HOST, makeCert, startGateway, tempDir } from './helpers';

// ws's frame codec: Sender.frame and Receiver are exported by ws, not declared by @types/ws.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const wsLib = require('ws') as {
  Sender: { frame(data: Buffer, o: { fin: boolean; opcode: number; mask: boolean; readOnly: boolean; rsv1: boolean }): Buffer[] };
  Receiver: new (o: { isServer: boolean; maxPayload: number }) => NodeJS.WritableStream & NodeJS.EventEmitter;
};

const API = 'meshlet.dev/v1';
const hash = (k: string) => `sha256:${createHash('sha256').update(k).digest('hex')}`;

interface App {
  port: number;
  /** The HTTP/1.1 upgrade requests the app got. */
  requests: http.IncomingMessage[];
  /** Each connection's close code as the app saw it. */
  closes: number[];
  sockets: net.Socket[];
  server: WebSocketServer;
}

async function wsApp(t: Test): Promise<App> {
  const server = new WebSocketServer({ host: HOST, port: 0, maxPayload: 8 * 1024 * 1024 });
  const app: App = { port: 0, requests: [], closes: [], sockets: [], server };
  // The app's 101 carries a header of the mesh's namespace (the gateway leaves it out) and one of its own.
  server.on('headers', (h) => h.push('X-Meshlet-Internal: secret', 'X-App: kept'));
  server.on('connection', (ws, req) => {
    app.requests.push(req);
    app.sockets.push(req.socket);
    ws.on('message', (data, isBinary) => {
      if (!isBinary && String(data) === 'close-please') return ws.close(1001, 'bye');
      ws.send(data, { binary: isBinary });
    });
    ws.on('close', (code) => app.closes.push(code));
    ws.on('error', () => undefined);
  });
  await once(server, 'listening');
  app.port = (server.address() as { port: number }).port;
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const c of server.clients) c.terminate();
        server.close(() => r());
      }),
  );
  return app;
}

/** A WebSocket on an extended CONNECT stream: frames masked as a client's, the answers parsed. */
interface H2Socket {
  status: number;
  headers: http2.IncomingHttpHeaders;
  stream: http2.ClientHttp2Stream;
  body: string;
  send(data: Buffer | string): void;
  close(code: number): void;
  /** The next message (or close frame) from the server. */
  next(): Promise<{ data: Buffer; binary: boolean } | { close: number }>;
}

async function connect(session: http2.ClientHttp2Session, path: string, authority: string, headers: Record<string, string> = {}): Promise<H2Socket> {
  const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': session.encrypted ? 'https' : 'http', ':path': path, ':authority': authority, 'sec-websocket-version': '13', ...headers }, { endStream: false });
  stream.on('error', () => undefined);
  const [h] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  const status = Number(h[':status']);
  const queue: ({ data: Buffer; binary: boolean } | { close: number })[] = [];
  const waiting: ((m: { data: Buffer; binary: boolean } | { close: number }) => void)[] = [];
  const push = (m: { data: Buffer; binary: boolean } | { close: number }): void => {
    const w = waiting.shift();
    if (w) w(m);
    else queue.push(m);
  };
  let body = '';
  if (status === 200) {
    const receiver = new wsLib.Receiver({ isServer: false, maxPayload: 8 * 1024 * 1024 });
    receiver.on('message', (data: Buffer, binary: boolean) => push({ data: Buffer.from(data), binary }));
    receiver.on('conclude', (code: number) => push({ close: code }));
    stream.pipe(receiver);
  } else {
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    await ended(stream);
  }
  const frame = (data: Buffer, opcode: number): void => {
    for (const b of wsLib.Sender.frame(data, { fin: true, opcode, mask: true, readOnly: true, rsv1: false })) stream.write(b);
  };
  return {
    status,
    headers: h,
    stream,
    body,
    send: (data) => (typeof data === 'string' ? frame(Buffer.from(data), 1) : frame(data, 2)),
    close: (code) => {
      const b = Buffer.alloc(2);
      b.writeUInt16BE(code);
      frame(b, 8);
    },
    next: () => new Promise((resolve) => (queue.length ? resolve(queue.shift()!) : waiting.push(resolve))),
  };
}

function h2session(t: Test, url: string, ca?: string): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(url, ca ? { ca, servername: 'chat.example.com' } : {});
  session.on('error', () => undefined);
  t.teardown(() => session.destroy());
  return new Promise((resolve, reject) => {
    session.once('remoteSettings', () => resolve(session));
    session.once('error', reject);
  });
}

/** The stream's readable side ended (END_STREAM), now or before. */
const ended = (s: http2.Http2Stream): Promise<unknown> => (s.readableEnded ? Promise.resolve() : new Promise((r) => s.once('end', r)));
/** The stream closed, now or before (a reset stream also emits 'error': not a rejection here). */
const closed = (s: http2.Http2Stream): Promise<unknown> => (s.closed && s.destroyed ? Promise.resolve() : new Promise((r) => s.once('close', r)));

const eventually = async (what: string, check: () => boolean): Promise<void> => {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

/** The round trip, both closes and both resets, on one way in. */
async function conversation(t: Test, session: () => Promise<http2.ClientHttp2Session>, app: App, authority: string): Promise<void> {
  await t.test('the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL', async (t) => {
    t.equal((await session()).remoteSettings.enableConnectProtocol, true);
  });

  await t.test('CONNECT :protocol websocket -> 200, messages both ways (300 KB), the app saw an HTTP/1.1 upgrade', async (t) => {
    const seen = app.requests.length;
    const ws = await connect(await session(), '/ws/room?x=1', authority, { 'sec-websocket-protocol': 'chat' });
    t.equal(ws.status, 200, 'the stream is accepted');
    t.equal(ws.headers['sec-websocket-accept'], undefined, 'no handshake-only header reaches the HTTP/2 client');
    t.equal(ws.headers.upgrade, undefined);
    const req = app.requests[seen]!;
    t.equal(req.method, 'GET', 'upstream: a GET');
    t.equal(req.url, '/ws/room?x=1', 'with the path and query');
    t.equal(req.headers.upgrade, 'websocket');
    t.match(req.headers['sec-websocket-key'], /^[A-Za-z0-9+/]{22}==$/, 'a key the gateway made (RFC 8441 clients send none)');
    t.equal(req.headers['sec-websocket-protocol'], 'chat', 'the subprotocol offer passed on');
    t.equal(req.headers.host, authority);
    ws.send('ping');
    t.same(await ws.next(), { data: Buffer.from('ping'), binary: false }, 'a text message back');
    const big = Buffer.alloc(300 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    ws.send(big);
    const back = (await ws.next()) as { data: Buffer; binary: boolean };
    t.equal(back.binary, true);
    t.ok(back.data.equals(big), `300 KB back intact (${back.data.length} bytes)`);
    // The client closes: close frame, the app answers and closes TCP, the stream ends.
    const closes = app.closes.length;
    ws.close(1000);
    t.same(await ws.next(), { close: 1000 }, "the app's close frame");
    await ended(ws.stream);
    ws.stream.end();
    await closed(ws.stream);
    await eventually('the app to see the close', () => app.closes.length > closes);
    t.equal(app.closes[app.closes.length - 1], 1000, 'the app saw a clean close (1000)');
  });

  await t.test('the app closes: its close frame arrives, then the end of the stream', async (t) => {
    const ws = await connect(await session(), '/ws/x', authority);
    t.equal(ws.status, 200);
    ws.send('close-please');
    t.same(await ws.next(), { close: 1001 }, "the app's close frame (1001)");
    ws.close(1001);
    await ended(ws.stream);
    // Without an END_STREAM of ours, the gateway ends it: RST_STREAM NO_ERROR once the app's socket closed.
    await closed(ws.stream);
    t.equal(ws.stream.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the stream closes cleanly');
  });

  await t.test('a stream reset by the client aborts the app connection', async (t) => {
    const ws = await connect(await session(), '/ws/x', authority);
    t.equal(ws.status, 200);
    ws.send('hi');
    await ws.next();
    const closes = app.closes.length;
    ws.stream.close(http2.constants.NGHTTP2_CANCEL);
    await eventually('the app to see the abort', () => app.closes.length > closes);
    t.equal(app.closes[app.closes.length - 1], 1006, 'the app saw an abnormal closure (1006), not a clean one');
  });

  await t.test('an app connection reset resets the stream (CONNECT_ERROR)', async (t) => {
    const ws = await connect(await session(), '/ws/x', authority);
    t.equal(ws.status, 200);
    ws.send('hi');
    await ws.next();
    app.sockets[app.sockets.length - 1]!.resetAndDestroy();
    await closed(ws.stream);
    t.equal(ws.stream.rstCode, http2.constants.NGHTTP2_CONNECT_ERROR);
  });
}

t.test('WebSocket over HTTP/2 at the gateway (RFC 8441), bridged to an HTTP/1.1 upgrade', async (t) => {
  const dir = tempDir(t);
  const app = await wsApp(t);
  const cert = makeCert(dir, 'chat', ['chat.example.com']);
  const ca = (await import('node:fs')).readFileSync(cert.certFile, 'utf8');
  const [plain, secure] = [await closedPort(), await closedPort()];
  const attached = (name: string, hosts: string[], rules: unknown[]) => ({ apiVersion: API, kind: 'Route', metadata: { name }, spec: { hosts, gateways: ['edge'], rules } });
  const g = await startGateway(
    t,
    'edge',
    [
      service('chat', [{ port: app.port }], 'http1'),
      attached('chat', ['chat.example.com'], [
        { name: 'keyed', matches: [{ path: { prefix: '/ws/keyed' } }], backends: [{ service: 'chat' }], apiKeys: { consumers: [{ name: 'mobile', keys: [hash('k1')] }], from: [{ header: 'x-api-key' }] } },
        { name: 'walled', matches: [{ path: { prefix: '/ws/walled' } }], backends: [{ service: 'chat' }], ipFilter: { deny: ['127.0.0.0/8'] } },
        { name: 'ws', matches: [{ path: { prefix: '/ws' } }], backends: [{ service: 'chat' }] },
      ]),
      gatewayResource('edge', {
        listeners: [
          { name: 'http', port: plain, protocol: 'HTTP' },
          { name: 'https', port: secure, protocol: 'HTTPS', tls: { certificates: [cert] } },
        ],
      }),
    ],
    dir,
  );
  const h2c = await h2session(t, `http://${HOST}:${plain}`);
  const tls = await h2session(t, `https://${HOST}:${secure}`, ca);

  await t.test('h2c', (t) => conversation(t, async () => h2c, app, 'chat.example.com'));
  await t.test('TLS, ALPN h2', (t) => conversation(t, async () => tls, app, 'chat.example.com'));

  await t.test('routes that refuse answer the stream with their status; the app never sees it', async (t) => {
    const seen = app.requests.length;
    const noKey = await connect(h2c, '/ws/keyed', 'chat.example.com');
    t.equal(noKey.status, 401, 'no API key: 401');
    t.match(noKey.headers['www-authenticate'], /^ApiKey /);
    t.match(noKey.body, /EDGE_API_KEY_MISSING/);
    const keyed = await connect(h2c, '/ws/keyed', 'chat.example.com', { 'x-api-key': 'k1' });
    t.equal(keyed.status, 200, 'with the key: 200');
    keyed.stream.close();
    const walled = await connect(tls, '/ws/walled', 'chat.example.com');
    t.equal(walled.status, 403, 'IP filter: 403');
    const none = await connect(h2c, '/other', 'chat.example.com');
    t.equal(none.status, 404, 'no route: 404');
    t.equal(app.requests.length, seen + 1, 'only the keyed one reached the app');
  });

  await t.test('a plain CONNECT (a TCP tunnel) is still refused', async (t) => {
    const s = h2c.request({ ':method': 'CONNECT', ':authority': 'chat.example.com:443' });
    s.on('error', () => undefined);
    const [h] = (await once(s, 'response')) as [http2.IncomingHttpHeaders];
    t.equal(h[':status'], 405);
    s.close();
  });

  await t.test('counted and logged like an HTTP/1.1 upgrade', async (t) => {
    const text = await (await fetch(`http://${HOST}:${g.admin}/metrics`)).text();
    const total = Number(/^meshlet_websocket_connections_total (\d+)/m.exec(text)?.[1] ?? 0);
    t.ok(total >= 9, `meshlet_websocket_connections_total counts the tunnels (${total})`);
    await eventually('the access log', () => g.logs.some((l) => l.log === 'access' && String(l.path ?? '').startsWith('/ws/room')));
    const line = g.logs.find((l) => l.log === 'access' && String(l.path ?? '').startsWith('/ws/room'))!;
    t.equal(line.method, 'GET', 'the access log has the WebSocket as the GET it is upstream');
    t.equal(line.protocol, 'HTTP/2', 'arrived over HTTP/2');
    t.match(String(line.route), /ws/, 'the route that matched');
    t.equal(line.response_code, 200, "with the status the client saw (200 accepts an extended CONNECT), not the app's 101");
    t.notMatch(text, /meshlet_requests_total\{[^}]*response_code="101"/, 'no request counted as a 101');
  });

  // After the counting case: an HTTP/1.1 upgrade is counted as the 101 it is.
  await t.test("the app's x-meshlet-* headers stay inside, over HTTP/2 and HTTP/1.1", async (t) => {
    const ws = await connect(h2c, '/ws/room', 'chat.example.com');
    t.equal(ws.status, 200);
    t.equal(ws.headers['x-app'], 'kept', "the app's own header arrives");
    t.equal(ws.headers['x-meshlet-internal'], undefined, 'its x-meshlet-* one does not');
    ws.stream.close();
    const sock = (await import('node:net')).connect(plain, HOST);
    t.teardown(() => sock.destroy());
    sock.write('GET /ws/room HTTP/1.1\r\nHost: chat.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    let head = '';
    while (!head.includes('\r\n\r\n')) head += String((await once(sock, 'data'))[0]);
    t.match(head, /^HTTP\/1\.1 101 /, 'HTTP/1.1: switched');
    t.match(head, /\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i, 'the handshake intact');
    t.match(head, /\r\nX-App: kept\r\n/i);
    t.notMatch(head, /x-meshlet-internal/i, 'no x-meshlet-* header in the 101 either');
  });
});

t.test("WebSocket over HTTP/2 at a sidecar's outbound listener", async (t) => {
  const app = await wsApp(t);
  const sc = await startStaticSidecar(t, [service('chat', [{ port: app.port }], 'http1'), route('chat', ['chat'], [{ backends: [{ service: 'chat' }] }])]);
  const session = await h2session(t, `http://${HOST}:${sc.outbound}`);
  await conversation(t, async () => session, app, 'chat');
  await t.test('inside the mesh, the app\u2019s x-meshlet-* header passes', async (t) => {
    const ws = await connect(session, '/ws', 'chat');
    t.equal(ws.headers['x-meshlet-internal'], 'secret');
    ws.stream.close();
  });
});
