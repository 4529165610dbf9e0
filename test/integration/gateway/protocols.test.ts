/**
 * The protocols a Route converts, through the real `meshlet gateway` (no sidecar in between),
 * over its plaintext listener (HTTP/1.1 and h2c) and its HTTPS listener (ALPN http/1.1 and h2):
 *
 * - gRPC-Web: a browser-style client writing the PROTOCOL-WEB.md wire format by hand (binary and
 *   base64 bodies, the trailer frame) -> gateway -> the real @grpc/grpc-js interop TestService;
 * - HTTP/JSON -> gRPC transcoding (GrpcTranscoding, protos embedded by `--config`) -> a real
 *   @grpc/grpc-js server of test/fixtures/transcode/library.proto;
 * - WebSocket: a real `ws` client (ws:// and wss://, the way browsers open one: HTTP/1.1) ->
 *   gateway -> a real `ws` echo server, messages both ways.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { encodeFrame, FLAG_TRAILERS, FrameDecoder, parseTrailerBlock } from '../../../src/grpc/framing';
import { startInteropServer } from '../../fixtures/grpc/interop';
import { service } from '../sidecar/helpers';
import { closedPort, gatewayResource, HOST, makeCert, startGateway, tempDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'transcode');
const PKG = 'meshlet.test.library.v1';
const API = 'meshlet.dev/v1';
const ORIGIN = 'https://app.example.com';

// ---- protobuf by hand, as a gRPC-Web client in a browser would have it generated
const varint = (n: number): number[] => {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
};
/** SimpleRequest{response_size = size} */
const simpleRequest = (size: number): Buffer => Buffer.from([2 << 3, ...varint(size)]);
/** The payload body length of a SimpleResponse: payload(1){body(2)}. */
function payloadSize(msg: Buffer): number {
  let i = 1;
  const read = (): number => {
    let n = 0;
    let shift = 0;
    for (;;) {
      const b = msg[i++] as number;
      n |= (b & 0x7f) << shift;
      if (b < 0x80) return n;
      shift += 7;
    }
  };
  read();
  i++;
  return read();
}

async function startLibrary(t: Test): Promise<number> {
  const def = protoLoader.loadSync(path.join(FIXTURES, 'library.proto'), {
    includeDirs: [FIXTURES, path.join(ROOT, 'src', 'proto'), path.join(ROOT, 'node_modules', 'protobufjs')],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { meshlet: { test: { library: { v1: { Library: grpc.ServiceClientConstructor } } } } };
  const server = new grpc.Server();
  server.addService(pkg.meshlet.test.library.v1.Library.service, {
    GetBook(call: grpc.ServerUnaryCall<{ name?: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      const name = String(call.request.name ?? '');
      if (name.endsWith('/missing')) return cb({ code: grpc.status.NOT_FOUND, details: `book ${name} not found` });
      cb(null, { name, title: `Title of ${name}`, tags: ['a'] });
    },
    SearchBooks(call: grpc.ServerUnaryCall<{ query?: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      cb(null, { books: [], next_page_token: String(call.request.query) });
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${HOST}:0`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  t.teardown(() => new Promise<void>((r) => server.tryShutdown(() => r())));
  return port;
}

async function echoServer(t: Test): Promise<{ port: number; paths: string[] }> {
  const wss = new WebSocketServer({ host: HOST, port: 0 });
  const paths: string[] = [];
  wss.on('connection', (ws, req) => {
    paths.push(req.url ?? '');
    ws.on('message', (data, isBinary) => ws.send(isBinary ? data : `echo: ${String(data)}`, { binary: isBinary }));
    // The server speaks first too: both directions, not only answers.
    ws.send('hello from the app');
  });
  await once(wss, 'listening');
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  );
  return { port: (wss.address() as { port: number }).port, paths };
}

type Via = 'http1' | 'h2c' | 'https-http1' | 'https-h2';
interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The protocol the gateway answered in. */
  alpn: string;
}

let ca = '';
const SNI = 'edge.example.com';

/** One request to the gateway over `via`, with `host` as Host / :authority. */
function exchange(via: Via, port: number, host: string, method: string, p: string, headers: Record<string, string>, body?: Buffer): Promise<Answer> {
  if (via === 'h2c' || via === 'https-h2') {
    return new Promise((resolve, reject) => {
      const session = via === 'h2c' ? http2.connect(`http://${HOST}:${port}`) : http2.connect(`https://${HOST}:${port}`, { ca, servername: SNI, ALPNProtocols: ['h2'] });
      session.on('error', reject);
      const req = session.request({ ':method': method, ':path': p, ':authority': host, ...headers });
      const chunks: Buffer[] = [];
      let head: http2.IncomingHttpHeaders = {};
      let alpn = '';
      req.on('response', (h) => {
        head = h;
        alpn = via === 'h2c' ? 'h2c' : String(session.alpnProtocol);
      });
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        session.close();
        resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks), alpn });
      });
      req.on('error', reject);
      req.end(body);
    });
  }
  return new Promise((resolve, reject) => {
    const opts = { host: HOST, port, method, path: p, headers: { host, ...headers }, agent: false as const };
    const onRes = (res: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), alpn: via === 'http1' ? 'http/1.1' : String((res.socket as import('node:tls').TLSSocket).alpnProtocol) }));
    };
    const req = via === 'http1' ? http.request(opts, onRes) : https.request({ ...opts, ca, servername: SNI, ALPNProtocols: ['http/1.1'] } as https.RequestOptions, onRes);
    req.on('error', reject);
    req.end(body);
  });
}

t.test('gRPC-Web, JSON transcoding and WebSocket through the gateway, plaintext and HTTPS', async (t) => {
  const dir = tempDir(t);
  const interop = await startInteropServer(t);
  const library = await startLibrary(t);
  const echo = await echoServer(t);
  const cert = makeCert(dir, 'edge', [SNI]);
  ca = readFileSync(cert.certFile, 'utf8');
  const [plain, secure] = [await closedPort(), await closedPort()];
  const attached = (name: string, hosts: string[], spec: Record<string, unknown>) => ({ apiVersion: API, kind: 'Route', metadata: { name }, spec: { hosts, gateways: ['edge'], ...spec } });
  await startGateway(
    t,
    'edge',
    [
      service('interop', [{ port: interop.port }], 'http2'),
      service('library', [{ port: library }], 'http2'),
      service('chat', [{ port: echo.port }], 'http1'),
      attached('interop', ['grpc.example.com'], { rules: [{ backends: [{ service: 'interop' }] }], grpc: { allowOrigins: [ORIGIN] } }),
      attached('library', ['library.example.com'], { rules: [{ backends: [{ service: 'library' }] }] }),
      attached('chat', ['chat.example.com'], { rules: [{ matches: [{ path: { prefix: '/ws' } }], backends: [{ service: 'chat' }] }] }),
      {
        apiVersion: API,
        kind: 'GrpcTranscoding',
        metadata: { name: 'library' },
        spec: { service: 'library', protos: [{ file: path.join(FIXTURES, 'library.proto') }, { file: path.join(FIXTURES, 'shelf.proto') }], services: [`${PKG}.Library`] },
      },
      gatewayResource('edge', {
        listeners: [
          { name: 'http', port: plain, protocol: 'HTTP' },
          { name: 'https', port: secure, protocol: 'HTTPS', tls: { certificates: [{ certFile: cert.certFile, keyFile: cert.keyFile }] } },
        ],
      }),
    ],
    dir,
    ['--access-log', '0'],
  );
  const ways: [Via, number, string][] = [
    ['http1', plain, 'http/1.1'],
    ['h2c', plain, 'h2c'],
    ['https-http1', secure, 'http/1.1'],
    ['https-h2', secure, 'h2'],
  ];

  for (const [via, port, alpn] of ways) {
    await t.test(`gRPC-Web over ${via}`, async (t) => {
      const bin = await exchange(via, port, 'grpc.example.com', 'POST', '/grpc.testing.TestService/UnaryCall', { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', origin: ORIGIN }, encodeFrame(simpleRequest(1000)));
      t.equal(bin.alpn, alpn, `the gateway spoke ${alpn}`);
      t.equal(bin.status, 200);
      t.equal(bin.headers['content-type'], 'application/grpc-web+proto');
      t.equal(bin.headers['access-control-allow-origin'], ORIGIN, 'CORS for the browser origin');
      const f = new FrameDecoder(1 << 20).push(bin.body);
      t.equal(f.length, 2, 'one message frame, one trailer frame');
      t.equal(payloadSize(f[0]!.payload), 1000, 'the response message');
      t.equal(f[1]?.flags, FLAG_TRAILERS);
      t.equal(parseTrailerBlock(f[1]!.payload)['grpc-status'], '0', 'grpc-status 0 in the trailer frame');
      const text = await exchange(via, port, 'grpc.example.com', 'POST', '/grpc.testing.TestService/UnaryCall', { 'content-type': 'application/grpc-web-text', 'x-grpc-web': '1' }, Buffer.from(encodeFrame(simpleRequest(20_000)).toString('base64')));
      t.equal(text.status, 200);
      t.equal(text.headers['content-type'], 'application/grpc-web-text+proto');
      const tf = new FrameDecoder(1 << 20).push(Buffer.from(text.body.toString('latin1'), 'base64'));
      t.equal(payloadSize(tf[0]!.payload), 20_000, 'base64 both ways');
      t.equal(parseTrailerBlock(tf[1]!.payload)['grpc-status'], '0');
      const pre = await exchange(via, port, 'grpc.example.com', 'OPTIONS', '/grpc.testing.TestService/UnaryCall', { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-grpc-web' });
      t.ok(pre.status === 204 || pre.status === 200, `the preflight is answered at the gateway (${pre.status})`);
      t.equal(pre.headers['access-control-allow-origin'], ORIGIN);
    });

    await t.test(`HTTP/JSON -> gRPC over ${via}`, async (t) => {
      const r = await exchange(via, port, 'library.example.com', 'GET', '/v1/shelves/s1/books/b1', {});
      t.equal(r.alpn, alpn);
      t.equal(r.status, 200, r.body.toString());
      t.match(r.headers['content-type'], /^application\/json/);
      t.same(JSON.parse(r.body.toString()), { name: 'shelves/s1/books/b1', title: 'Title of shelves/s1/books/b1', tags: ['a'] });
      const body = Buffer.from(JSON.stringify({ query: `q-${via}` }));
      const s = await exchange(via, port, 'library.example.com', 'POST', '/v1/books:search', { 'content-type': 'application/json', 'content-length': String(body.length) }, body);
      t.equal(s.status, 200, s.body.toString());
      t.same(JSON.parse(s.body.toString()), { nextPageToken: `q-${via}` }, 'a JSON body becomes the request message');
      const missing = await exchange(via, port, 'library.example.com', 'GET', '/v1/shelves/s1/books/missing', {});
      t.equal(missing.status, 404, 'NOT_FOUND becomes 404');
      t.match(missing.body.toString(), /book shelves\/s1\/books\/missing not found/);
    });
  }

  for (const [scheme, port] of [
    ['ws', plain],
    ['wss', secure],
  ] as const) {
    await t.test(`WebSocket over ${scheme}://`, async (t) => {
      const ws = new WebSocket(`${scheme}://${HOST}:${port}/ws/room?x=1`, { headers: { host: 'chat.example.com' }, ...(scheme === 'wss' ? { ca, servername: SNI } : {}) });
      ws.on('error', () => undefined);
      t.teardown(() => ws.terminate());
      const got: { data: string; binary: boolean }[] = [];
      const more = (n: number) =>
        new Promise<void>((resolve) => {
          const check = () => got.length >= n && (ws.off('message', onMsg), resolve());
          const onMsg = (data: Buffer, binary: boolean) => {
            got.push({ data: binary ? data.toString('hex') : data.toString(), binary });
            check();
          };
          ws.on('message', onMsg);
          check();
        });
      const greeted = more(1);
      await once(ws, 'open');
      await greeted;
      ws.send('ping');
      ws.send(Buffer.from([0, 1, 2, 255]));
      const big = 'x'.repeat(300_000);
      ws.send(big);
      await more(4);
      t.same(
        got.map((g) => (g.data.length > 100 ? { len: g.data.length, binary: g.binary } : g)),
        [
          { data: 'hello from the app', binary: false },
          { data: 'echo: ping', binary: false },
          { data: '000102ff', binary: true },
          { len: 'echo: '.length + big.length, binary: false },
        ],
        'the app spoke first, then answered text, binary and a 300 kB message in order',
      );
      t.equal(echo.paths[echo.paths.length - 1], '/ws/room?x=1', 'the app got the path and query');
      ws.close(1000, 'done');
      const [code] = (await once(ws, 'close')) as [number];
      t.equal(code, 1000, 'a clean close both ways');
    });
  }
});
