/**
 * What the mesh adds to gRPC calls, seen by real @grpc/grpc-js clients (and raw h2c where the
 * wire matters): the mesh's own errors as gRPC statuses in trailers-only responses, grpc-timeout
 * enforced by the sidecar, the message size limit, an upstream GOAWAY that fails no call, routes on /pkg.Service/Method, and flow control
 * with a consumer that stops reading.
 */
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import t from 'tap';
import { interopClient, startInteropServer } from '../../fixtures/grpc/interop';
import { closedPort, destinationPolicy, h2Client, h2Request, h2Upstream, peakSampler, route, service, startSidecar, within } from '../sidecar/helpers';

const MiB = 1024 * 1024;

function unaryCall(c: ReturnType<typeof interopClient>, method: string, req: unknown, opts: grpc.CallOptions = {}): Promise<{ err?: grpc.ServiceError; res?: any }> {
  return new Promise((resolve) => c[method](req, new grpc.Metadata(), opts, (err: grpc.ServiceError | null, res: unknown) => resolve(err ? { err } : { res })));
}

const grpcHeaders = (path: string, authority: string, extra: http2.OutgoingHttpHeaders = {}): http2.OutgoingHttpHeaders => ({
  ':method': 'POST',
  ':path': path,
  ':authority': authority,
  'content-type': 'application/grpc',
  te: 'trailers',
  ...extra,
});
const EMPTY_MSG = Buffer.from([0, 0, 0, 0, 0]);

t.test('mesh-made errors are gRPC statuses, trailers-only', async (t) => {
  const dead = await closedPort();
  const app = await startInteropServer(t);
  const sc = await startSidecar(t, [
    service('down', [{ port: dead }]),
    service('interop', [{ port: app.port, labels: { v: '1' } }]),
    destinationPolicy('interop', { subsets: [{ name: 'v2', labels: { v: '2' } }] }),
    route('down', ['down'], [{ backends: [{ service: 'down' }] }]),
    route('nobody', ['nobody'], [{ backends: [{ service: 'interop', subset: 'v2' }] }]),
    route('methods', ['methods'], [{ matches: [{ path: { exact: '/grpc.testing.TestService/EmptyCall' } }], backends: [{ service: 'interop' }] }]),
  ]);
  const cases: [string, string, number, string][] = [
    ['down', 'connect failure', grpc.status.UNAVAILABLE, 'UF'],
    ['nobody', 'no healthy endpoint (an empty subset)', grpc.status.UNAVAILABLE, 'UH'],
    ['unknown-host', 'no route', grpc.status.UNIMPLEMENTED, 'NR'],
  ];
  const session = h2Client(t, sc.outbound);
  for (const [authority, what, code, flag] of cases) {
    const r = await unaryCall(interopClient(t, sc.outbound, authority), 'emptyCall', {});
    t.equal(r.err?.code, code, `${what}: grpc-status ${code}`);
    t.equal(r.err?.metadata.get('x-meshlet-flags')[0], flag, `${what}: flag ${flag}`);
    // On the wire: one HEADERS frame with END_STREAM, :status 200, grpc-status in it.
    const raw = await h2Request(session, grpcHeaders('/grpc.testing.TestService/EmptyCall', authority), EMPTY_MSG);
    t.equal(raw.status, 200, `${what}: HTTP 200, not an error page`);
    t.equal(raw.headers['grpc-status'], String(code), `${what}: grpc-status in the headers (trailers-only)`);
    t.equal(raw.trailers, undefined, `${what}: no separate trailers`);
    t.equal(raw.body.length, 0);
  }
  const routed = interopClient(t, sc.outbound, 'methods');
  t.error((await unaryCall(routed, 'emptyCall', {})).err, 'a route on /grpc.testing.TestService/EmptyCall serves that method');
  t.equal((await unaryCall(routed, 'unaryCall', {})).err?.code, grpc.status.UNIMPLEMENTED, 'and not UnaryCall: no route, UNIMPLEMENTED');
});

t.test('the sidecar enforces grpc-timeout and cancels the upstream', async (t) => {
  const reset: number[] = [];
  const up = await h2Upstream(t, (stream) => {
    // Sleeps forever; records how its stream ended.
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    stream.on('close', () => reset.push(stream.rstCode ?? -1));
  });
  const sc = await startSidecar(t, [service('sleepy', [{ port: up.port }]), route('sleepy', ['sleepy'], [{ backends: [{ service: 'sleepy' }] }])]);
  const r = await h2Request(h2Client(t, sc.outbound), grpcHeaders('/x.Sleepy/Sleep', 'sleepy', { 'grpc-timeout': '200m' }), EMPTY_MSG);
  t.equal(r.trailers?.['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED), 'DEADLINE_EXCEEDED from the mesh, without a client-side deadline');
  t.equal(r.trailers?.['x-meshlet-flags'], 'UT');
  await within(
    (async () => {
      while (reset.length === 0) await new Promise((res) => setTimeout(res, 10));
    })(),
    10_000,
    'the upstream stream to close',
  );
  t.equal(reset[0], http2.constants.NGHTTP2_CANCEL, 'the upstream call was cancelled (RST_STREAM CANCEL)');

  const bad = await h2Request(h2Client(t, sc.outbound), grpcHeaders('/x.Sleepy/Sleep', 'sleepy', { 'grpc-timeout': 'soon' }), EMPTY_MSG);
  t.equal(bad.headers['grpc-status'], String(grpc.status.INTERNAL), 'an invalid grpc-timeout: INTERNAL');
  t.match(decodeURIComponent(String(bad.headers['grpc-message'])), /invalid grpc-timeout "soon"/);
});

t.test('an upstream that dies mid-call: UNAVAILABLE with the flag, after the messages that made it', async (t) => {
  const up = await h2Upstream(t, (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    // One StreamingOutputCallResponse{payload{body: 3 bytes}}, then the server goes away.
    stream.write(Buffer.from([0, 0, 0, 0, 7, 0x0a, 0x05, 0x12, 0x03, 1, 2, 3]));
    setTimeout(() => stream.session?.destroy(), 50);
  });
  const sc = await startSidecar(t, [service('interop', [{ port: up.port }]), route('interop', ['interop'], [{ backends: [{ service: 'interop' }] }])]);
  const call = interopClient(t, sc.outbound, 'interop').streamingOutputCall({}) as grpc.ClientReadableStream<{ payload: { body: Buffer } }>;
  const msgs: number[] = [];
  call.on('data', (m: { payload: { body: Buffer } }) => msgs.push(m.payload.body.length));
  call.on('error', () => undefined);
  const status = await within(new Promise<grpc.StatusObject>((r) => call.on('status', r)), 10_000, 'the status');
  t.same(msgs, [3], 'the message sent before the failure arrived');
  t.equal(status.code, grpc.status.UNAVAILABLE);
  t.equal(status.metadata.get('x-meshlet-flags')[0], 'UR');
});

t.test('messages over the route limit: RESOURCE_EXHAUSTED, both ways', async (t) => {
  const app = await startInteropServer(t);
  const sc = await startSidecar(t, [
    service('interop', [{ port: app.port }]),
    { ...route('interop', ['interop'], [{ backends: [{ service: 'interop' }] }]), spec: { hosts: ['interop'], rules: [{ backends: [{ service: 'interop' }] }], grpc: { maxMessageBytes: 100_000 } } },
  ]);
  const c = interopClient(t, sc.outbound, 'interop');
  const before = app.seen.length;
  const big = await unaryCall(c, 'unaryCall', { responseSize: 10, payload: { body: Buffer.alloc(200_000) } });
  t.equal(big.err?.code, grpc.status.RESOURCE_EXHAUSTED, 'a 200 kB request');
  t.match(big.err?.details, /request message of \d+ bytes is over the limit of 100000 bytes/);
  t.equal(app.seen.length - before, 0, 'the server never ran the handler: the message was stopped at its length prefix');
  const bigResp = await unaryCall(c, 'unaryCall', { responseSize: 200_000 });
  t.equal(bigResp.err?.code, grpc.status.RESOURCE_EXHAUSTED, 'a 200 kB response');
  t.match(bigResp.err?.details, /response message/);
  const ok = await unaryCall(c, 'unaryCall', { responseSize: 99_000, payload: { body: Buffer.alloc(99_000) } });
  t.equal(ok.res?.payload.body.length, 99_000, 'messages under the limit pass');
  // A client stream whose oversized message comes after the call went upstream: stopped too.
  const streamed = await new Promise<{ err?: grpc.ServiceError }>((resolve) => {
    const call = c.streamingInputCall((err: grpc.ServiceError | null) => resolve(err ? { err } : {})) as grpc.ClientWritableStream<unknown>;
    call.write({ payload: { body: Buffer.alloc(1000) } });
    setTimeout(() => {
      call.write({ payload: { body: Buffer.alloc(200_000) } });
      call.end();
    }, 200);
  });
  t.equal(streamed.err?.code, grpc.status.RESOURCE_EXHAUSTED, 'a 200 kB message in a client stream, after a small one');
  t.match(streamed.err?.details, /request message of \d+ bytes is over the limit of 100000 bytes/);
});

t.test('a route that allows larger messages: they cross both sidecars', async (t) => {
  const big = { 'grpc.max_receive_message_length': 16 * MiB, 'grpc.max_send_message_length': 16 * MiB };
  const app = await startInteropServer(t, big);
  const b = await startSidecar(t, [service('unused', [{ port: 9 }])], { service: 'interop', appPort: app.port, args: ['--app-protocol', 'http2'] });
  const a = await startSidecar(t, [
    service('interop', [{ port: b.inbound }]),
    { ...route('interop', ['interop'], []), spec: { hosts: ['interop'], rules: [{ backends: [{ service: 'interop' }] }], grpc: { maxMessageBytes: 8 * MiB } } },
  ]);
  const r = await unaryCall(interopClient(t, a.outbound, 'interop', big), 'unaryCall', { responseSize: 6 * MiB, payload: { body: Buffer.alloc(6 * MiB) } });
  t.error(r.err, '6 MiB each way, over the 4 MiB default, under the route limit');
  t.equal(r.res?.payload.body.length, 6 * MiB);
});

t.test('an upstream GOAWAY fails no call that can go elsewhere', async (t) => {
  const app = await startInteropServer(t);
  let refused = 0;
  // An upstream going away: it sends GOAWAY(last stream 0) on every connection, so each call the
  // sidecar sends on it is refused unprocessed (REFUSED_STREAM), as a server shutting down does.
  const goaway = await h2Upstream(t, () => undefined);
  goaway.server.on('session', (s) => {
    refused++;
    s.goaway(http2.constants.NGHTTP2_NO_ERROR, 0);
  });
  const sc = await startSidecar(t, [
    service('interop', [{ port: goaway.port }, { port: app.port }]),
    route('interop', ['interop'], [{ backends: [{ service: 'interop' }] }]),
  ]);
  const c = interopClient(t, sc.outbound, 'interop');
  const results = [];
  for (let i = 0; i < 8; i++) results.push(await unaryCall(c, 'unaryCall', { responseSize: 10, payload: { body: Buffer.alloc(1000) } }));
  t.same(
    results.map((r) => r.err?.code ?? 0),
    results.map(() => 0),
    'all 8 calls succeeded',
  );
  t.ok(refused > 0, `the GOAWAY upstream was tried (${refused} connections) and its calls went elsewhere`);
});

t.test('a consumer that stops reading: the sidecars hold back, memory stays bounded', async (t) => {
  const app = await startInteropServer(t);
  const b = await startSidecar(t, [service('unused', [{ port: 9 }])], { service: 'interop', appPort: app.port, args: ['--app-protocol', 'http2'] });
  const a = await startSidecar(t, [service('interop', [{ port: b.inbound }]), route('interop', ['interop'], [{ backends: [{ service: 'interop' }] }])]);
  const N = 512;
  const SIZE = 64 * 1024; // 32 MiB in all
  const rss = peakSampler(() => a.rss() + b.rss());
  const base = a.rss() + b.rss();
  const call = interopClient(t, a.outbound, 'interop').streamingOutputCall({ responseParameters: Array.from({ length: N }, () => ({ size: SIZE })) }) as grpc.ClientReadableStream<{
    payload: { body: Buffer };
  }>;
  let received = 0;
  let msgs = 0;
  const first = new Promise<void>((r) => call.once('data', () => r()));
  call.on('data', (m: { payload: { body: Buffer } }) => {
    received += m.payload.body.length;
    msgs++;
  });
  await within(first, 10_000, 'the first message');
  call.pause();
  // Wait until the server can write no more (its writes wait for 'drain'): the count stops moving.
  let last = -1;
  let still = 0;
  while (still < 5) {
    await new Promise((r) => setTimeout(r, 100));
    if (app.bytesWritten === last) still++;
    else still = 0;
    last = app.bytesWritten;
  }
  const inFlight = app.bytesWritten - received;
  t.ok(app.bytesWritten < N * SIZE, `the server was held back (${(app.bytesWritten / MiB).toFixed(1)} of 32 MiB written while the client did not read)`);
  t.ok(inFlight < 16 * MiB, `bytes in flight stay bounded: ${(inFlight / MiB).toFixed(1)} MiB`);
  const growth = rss.stop() - base;
  t.ok(growth < 32 * MiB, `while the client did not read, the two sidecars grew by ${(growth / MiB).toFixed(1)} MiB`);
  const status = new Promise<grpc.StatusObject>((r) => call.on('status', r));
  call.resume();
  t.equal((await within(status, 30_000, 'the end of the stream')).code, grpc.status.OK);
  t.equal(msgs, N, 'every message arrived once the client read again');
});
