/**
 * Every protocol goes through the same request stack. Sidecar A (service `frontend`) forwards to
 * sidecar B (service `backend`) and B's app, over HTTP/1.1, h2c, gRPC, gRPC-Web and an HTTP/JSON
 * call transcoded to gRPC:
 *
 * - identity: a client that sends its own `x-meshlet-source: billing` is counted by the callee
 *   (B's metrics, the app's view) as the real caller, `frontend`, on every protocol;
 * - observe: gRPC and transcoded calls are counted in meshlet_requests_total with their route and
 *   in meshlet_grpc_requests_total with their grpc-status, and get an access-log line;
 * - resilience: retries (on a gRPC status) and the route breaker apply to transcoded calls;
 * - WebSocket upgrades pass through the pick layer's limits (maxRequests).
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import { destinationPolicy, h2Client, h2Request, HOST, request, route, service, startSidecar, within } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'transcode');
const PKG = 'meshlet.test.library.v1';
const EMPTY_MSG = Buffer.from([0, 0, 0, 0, 0]);

interface Seen {
  proto: 'h1' | 'h2';
  path: string;
  source: string | undefined;
}

/**
 * An app that speaks HTTP/1.1 and h2c on one port (sniffing the preface). gRPC paths containing
 * `Unavailable` answer trailers-only UNAVAILABLE; GetBook answers trailers-only NOT_FOUND; other
 * gRPC calls one empty message and OK; anything else 200 `ok`.
 */
async function dualApp(t: Test, seen: Seen[]): Promise<number> {
  const h1 = http.createServer((req, res) => {
    seen.push({ proto: 'h1', path: req.url ?? '', source: req.headers['x-meshlet-source'] as string | undefined });
    if (req.headers.upgrade) return;
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  h1.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    seen.push({ proto: 'h1', path: req.url ?? '', source: req.headers['x-meshlet-source'] as string | undefined });
    // Switches and then stays open, silent.
    socket.write('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: ' + accept(String(req.headers['sec-websocket-key'])) + '\r\n\r\n');
    socket.on('error', () => undefined);
  });
  const h2 = http2.createServer();
  h2.on('stream', (stream, headers) => {
    const p = String(headers[':path']);
    seen.push({ proto: 'h2', path: p, source: headers['x-meshlet-source'] as string | undefined });
    stream.on('error', () => undefined);
    stream.resume();
    stream.on('end', () => {
      if (!String(headers['content-type']).startsWith('application/grpc')) return stream.respond({ ':status': 200 }, { endStream: false }), stream.end('ok');
      if (p.includes('Unavailable')) return stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'down' }, { endStream: true });
      if (p.endsWith('/GetBook')) return stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5', 'grpc-message': 'no such book' }, { endStream: true });
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(EMPTY_MSG);
    });
  });
  await new Promise<void>((r) => h1.listen(0, HOST, r));
  await new Promise<void>((r) => h2.listen(0, HOST, r));
  t.teardown(() => {
    h1.closeAllConnections();
    h1.close();
    h2.close();
  });
  // One port for both: the first bytes say which server gets the connection (bytes relayed).
  const server = net.createServer((sock) => {
    sock.on('error', () => undefined);
    sock.once('data', (chunk: Buffer) => {
      const to = (chunk.toString('latin1', 0, 3) === 'PRI' ? h2 : h1).address() as net.AddressInfo;
      const inner = net.connect({ host: HOST, port: to.port, noDelay: true });
      inner.on('error', () => sock.destroy());
      inner.write(chunk);
      sock.pipe(inner);
      inner.pipe(sock);
      sock.on('close', () => inner.destroy());
      inner.on('close', () => sock.destroy());
    });
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, HOST, r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

function accept(key: string): string {
  return require('node:crypto').createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
}

async function metrics(port: number): Promise<string> {
  return (await request({ port, path: '/metrics', headers: { host: 'admin' } })).text;
}

function sum(text: string, re: RegExp): number {
  let n = 0;
  for (const line of text.split('\n')) if (re.test(line)) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  return n;
}

const transcoding = {
  apiVersion: 'meshlet.dev/v1',
  kind: 'GrpcTranscoding',
  metadata: { name: 'library' },
  spec: { service: 'backend', protos: [{ file: path.join(FIXTURES, 'library.proto') }, { file: path.join(FIXTURES, 'shelf.proto') }], services: [`${PKG}.Library`], unknownMethods: 'passthrough' },
};

t.test('one stack for every protocol', async (t) => {
  const seen: Seen[] = [];
  const appPort = await dualApp(t, seen);
  const b = await startSidecar(t, [service('billing', [{ port: 9 }]), service('frontend', [{ port: 9 }])], { service: 'backend', appPort });
  const a = await startSidecar(
    t,
    [
      service('backend', [{ port: b.inbound }]),
      service('billing', [{ port: 9 }]),
      route('backend', ['backend'], [{ backends: [{ service: 'backend' }] }]),
      transcoding,
    ],
    { service: 'frontend', args: ['--access-log', '1'] },
  );
  const spoof = { 'x-meshlet-source': 'billing' };
  const session = h2Client(t, a.outbound);

  t.test('a spoofed x-meshlet-source is replaced by the real caller on every protocol', async (t) => {
    const from = seen.length;
    const h1 = await request({ port: a.outbound, path: '/h1', headers: { host: 'backend', ...spoof } });
    t.equal(h1.status, 200, `HTTP/1.1 ${h1.text}`);
    const h2 = await h2Request(session, { ':method': 'GET', ':path': '/h2', ':authority': 'backend', ...spoof });
    t.equal(h2.status, 200, `h2c ${h2.body}`);
    const g = await h2Request(session, { ':method': 'POST', ':path': '/pkg.Svc/Call', ':authority': 'backend', 'content-type': 'application/grpc', te: 'trailers', ...spoof }, EMPTY_MSG);
    t.equal(g.trailers?.['grpc-status'], '0', `gRPC ${JSON.stringify(g.headers)}`);
    const web = await request({ port: a.outbound, method: 'POST', path: '/pkg.Svc/Web', headers: { host: 'backend', 'content-type': 'application/grpc-web+proto', ...spoof }, body: EMPTY_MSG });
    t.equal(web.status, 200, 'gRPC-Web');
    const tc = await request({ port: a.outbound, path: '/v1/books/42', headers: { host: 'backend', ...spoof } });
    t.equal(tc.status, 404, 'transcoded: the app said NOT_FOUND');
    t.equal(JSON.parse(tc.text).status, 'NOT_FOUND');
    const got = seen.slice(from);
    t.same(
      got.map((s) => s.path),
      ['/h1', '/h2', '/pkg.Svc/Call', '/pkg.Svc/Web', `/${PKG}.Library/GetBook`],
      'every call reached the app',
    );
    t.same(
      got.map((s) => s.source),
      ['frontend', 'frontend', 'frontend', 'frontend', 'frontend'],
      'the app sees the real caller on every protocol',
    );
    const m = await metrics(b.admin);
    t.equal(sum(m, /^meshlet_requests_total\{direction="inbound",source="frontend"/), 5, 'the callee counts five calls from frontend');
    t.equal(sum(m, /^meshlet_requests_total\{direction="inbound",source="billing"/), 0, 'and none from the spoofed name');
  });

  t.test('gRPC and transcoded calls are observed: route, grpc_status, access log', async (t) => {
    const m = await metrics(a.admin);
    t.match(m, /^meshlet_requests_total\{direction="outbound",source="frontend",destination="backend",route="backend\/[^"]+",response_code_class="2xx",response_code="200",response_flags="-"\} [1-9]/m, 'counted on their route');
    t.ok(sum(m, /^meshlet_grpc_requests_total\{direction="outbound",source="frontend",destination="backend",route="backend\/[^"]*",grpc_status="0"\}/) >= 2, 'gRPC and gRPC-Web: grpc_status 0');
    t.equal(sum(m, /^meshlet_grpc_requests_total\{direction="outbound",[^}]*grpc_status="5"\}/), 1, 'the transcoded call: grpc_status 5 (NOT_FOUND)');
    t.equal(sum(m, /^meshlet_request_duration_seconds_count\{direction="outbound",source="frontend",destination="backend"/) >= 5, true, 'in the duration histogram');
    await within(
      (async () => {
        for (;;) {
          const paths = a.logs.filter((l) => l.direction === 'outbound').map((l) => l.path);
          if (['/pkg.Svc/Call', '/pkg.Svc/Web', '/v1/books/42'].every((p) => paths.includes(p))) return;
          await new Promise((r) => setTimeout(r, 50));
        }
      })(),
      5000,
      'access-log lines for the gRPC, gRPC-Web and transcoded calls',
    );
    t.pass('gRPC, gRPC-Web and transcoded calls have access-log lines');
  });
});

t.test('retries and the route breaker apply to transcoded calls', async (t) => {
  const seen: Seen[] = [];
  const appPort = await dualApp(t, seen);
  // The app answers every GetBook NOT_FOUND; a route to a path with `Unavailable` is not bound, so
  // here the binding's gRPC path is reached through a Route that retries NOT_FOUND? No: retryOn
  // names gRPC statuses; the app's GetBook answer is NOT_FOUND (not retriable), so a second
  // transcoding target is used: an endpoint answering UNAVAILABLE to everything.
  const down = http2.createServer();
  let hits = 0;
  down.on('stream', (stream) => {
    hits++;
    stream.on('error', () => undefined);
    stream.resume();
    stream.on('end', () => stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'down' }, { endStream: true }));
  });
  await new Promise<void>((r) => down.listen(0, HOST, r));
  t.teardown(() => down.close());
  const downPort = (down.address() as net.AddressInfo).port;
  void appPort;
  const a = await startSidecar(
    t,
    [
      service('backend', [{ port: downPort }]),
      route('backend', ['backend'], [
        {
          backends: [{ service: 'backend' }],
          retries: { attempts: 2, retryOn: ['unavailable'], backoff: { baseInterval: '1ms', maxInterval: '2ms' } },
          breaker: { failureRateThreshold: 50, minimumCalls: 2, openDuration: '30s' },
        },
      ]),
      transcoding,
    ],
    { service: 'frontend' },
  );
  const r1 = await request({ port: a.outbound, path: '/v1/books/1', headers: { host: 'backend' } });
  t.equal(r1.status, 503, 'UNAVAILABLE becomes 503');
  t.equal(JSON.parse(r1.text).status, 'UNAVAILABLE');
  t.equal(hits, 3, 'the transcoded call was tried three times (two retries on UNAVAILABLE)');
  t.match(String(r1.headers['x-meshlet-flags']), /URX/, 'retries exhausted');
  await request({ port: a.outbound, path: '/v1/books/2', headers: { host: 'backend' } });
  const before = hits;
  const r3 = await request({ port: a.outbound, path: '/v1/books/3', headers: { host: 'backend' } });
  t.equal(r3.status, 503);
  t.equal(r3.headers['x-meshlet-flags'], 'CO', 'the breaker opened on the transcoded calls\' failures');
  t.equal(hits, before, 'and the upstream was not called');
});

t.test('a WebSocket upgrade is held to the destination limits (pick layer)', async (t) => {
  const seen: Seen[] = [];
  const appPort = await dualApp(t, seen);
  const a = await startSidecar(t, [service('chat', [{ port: appPort }]), destinationPolicy('chat', { circuitBreaker: { maxRequests: 1 } }), route('chat', ['chat'], [{ backends: [{ service: 'chat' }] }])], { service: 'frontend' });
  const ws = new WebSocket(`ws://${HOST}:${a.outbound}/ws`, { headers: { host: 'chat', 'x-meshlet-source': 'billing' } });
  ws.on('error', () => undefined);
  t.teardown(() => ws.terminate());
  await within(new Promise((r) => ws.once('open', r)), 10_000, 'the first upgrade');
  t.equal(seen[seen.length - 1]?.source, 'frontend', 'the upgrade carries the real caller');
  const second = await request({ port: a.outbound, path: '/ws', headers: { host: 'chat', connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' } });
  t.equal(second.status, 503, 'a second tunnel while one is open: over maxRequests');
  t.equal(second.headers['x-meshlet-flags'], 'UO');
  const m = await metrics(a.admin);
  t.match(m, /^meshlet_requests_total\{direction="outbound",source="frontend",destination="chat",route="[^"]+",response_code_class="5xx",response_code="503",response_flags="UO"\} 1$/m, 'the refused upgrade is counted on its route');
});
