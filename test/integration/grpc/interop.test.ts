/**
 * The gRPC interop scenarios (grpc/doc/interop-test-descriptions.md) through two real sidecars:
 * a real @grpc/grpc-js client -> sidecar A (outbound, routes `interop`) -> sidecar B (inbound)
 * -> a real @grpc/grpc-js TestService server. h2c on every hop.
 */
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { interopClient, startInteropServer, type InteropServer } from '../../fixtures/grpc/interop';
import { route, service, startSidecar, within, type SidecarProc } from '../sidecar/helpers';

type Client = ReturnType<typeof interopClient>;

function unary<T>(c: Client, method: string, req: unknown, md = new grpc.Metadata(), opts: grpc.CallOptions = {}): Promise<{ res?: T; err?: grpc.ServiceError; initial?: grpc.Metadata; status?: grpc.StatusObject }> {
  return new Promise((resolve) => {
    let initial: grpc.Metadata | undefined;
    let out: { res?: T; err?: grpc.ServiceError } = {};
    let done = 0;
    const finish = (): void => {
      if (++done === 2) resolve({ ...out, initial, status });
    };
    let status: grpc.StatusObject | undefined;
    const call = c[method](req, md, opts, (err: grpc.ServiceError | null, res: T) => {
      out = err ? { err } : { res };
      finish();
    }) as grpc.ClientUnaryCall;
    call.on('metadata', (m) => (initial = m));
    call.on('status', (s) => {
      status = s;
      finish();
    });
  });
}

function collect<T>(call: grpc.ClientReadableStream<T>): Promise<{ msgs: T[]; err?: grpc.ServiceError; status?: grpc.StatusObject }> {
  return new Promise((resolve) => {
    const msgs: T[] = [];
    let err: grpc.ServiceError | undefined;
    call.on('data', (m: T) => msgs.push(m));
    call.on('error', (e: grpc.ServiceError) => (err = e));
    call.on('status', (status) => setImmediate(() => resolve({ msgs, err, status })));
  });
}

const size = (m: { payload?: { body: Buffer } }): number => m.payload?.body.length ?? -1;

let app: InteropServer;
let a: SidecarProc;
let client: Client;

t.before(async () => {
  // Sidecars and servers live for the whole file; `t` here is the root test.
  app = await startInteropServer(t);
  const b = await startSidecar(t, [service('unused', [{ port: 9 }])], { service: 'interop', appPort: app.port, args: ['--app-protocol', 'http2'] });
  a = await startSidecar(t, [service('interop', [{ port: b.inbound }]), route('interop', ['interop'], [{ backends: [{ service: 'interop' }] }])], { service: 'client' });
  client = interopClient(t, a.outbound, 'interop');
});

t.test('empty_unary', async (t) => {
  const r = await unary<object>(client, 'emptyCall', {});
  t.error(r.err);
  t.same(r.res, {});
});

t.test('large_unary', async (t) => {
  const r = await unary<{ payload: { body: Buffer } }>(client, 'unaryCall', { responseSize: 314159, payload: { body: Buffer.alloc(271828) } });
  t.error(r.err);
  t.equal(r.res?.payload.body.length, 314159, 'a 314159-byte response to a 271828-byte request');
});

t.test('client_streaming', async (t) => {
  const res = await new Promise<{ aggregatedPayloadSize: number }>((resolve, reject) => {
    const call = client.streamingInputCall((err: grpc.ServiceError | null, r: { aggregatedPayloadSize: number }) => (err ? reject(err) : resolve(r))) as grpc.ClientWritableStream<unknown>;
    for (const n of [27182, 8, 1828, 45904]) call.write({ payload: { body: Buffer.alloc(n) } });
    call.end();
  });
  t.equal(res.aggregatedPayloadSize, 74922);
});

t.test('server_streaming', async (t) => {
  const call = client.streamingOutputCall({ responseParameters: [31415, 9, 2653, 58979].map((size) => ({ size })) }) as grpc.ClientReadableStream<{ payload: { body: Buffer } }>;
  const r = await collect(call);
  t.error(r.err);
  t.same(r.msgs.map(size), [31415, 9, 2653, 58979]);
  t.equal(r.status?.code, grpc.status.OK);
});

t.test('ping_pong', async (t) => {
  const call = client.fullDuplexCall() as grpc.ClientDuplexStream<unknown, { payload: { body: Buffer } }>;
  const sizes: number[] = [];
  const next = (): Promise<{ payload: { body: Buffer } }> => new Promise((r) => call.once('data', r));
  const pairs = [
    [31415, 27182],
    [9, 8],
    [2653, 1828],
    [58979, 45904],
  ] as const;
  for (const [resp, req] of pairs) {
    call.write({ responseParameters: [{ size: resp }], payload: { body: Buffer.alloc(req) } });
    sizes.push(size(await within(next(), 10_000, 'a ping-pong response')));
  }
  const status = new Promise<grpc.StatusObject>((r) => call.on('status', r));
  call.end();
  t.same(sizes, [31415, 9, 2653, 58979], 'one response per request, in step');
  t.equal((await status).code, grpc.status.OK);
});

t.test('custom_metadata', async (t) => {
  const md = (): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('x-grpc-test-echo-initial', 'test_initial_metadata_value');
    m.set('x-grpc-test-echo-trailing-bin', Buffer.from([0xab, 0xab, 0xab]));
    return m;
  };
  const r = await unary<{ payload: { body: Buffer } }>(client, 'unaryCall', { responseSize: 314159, payload: { body: Buffer.alloc(271828) } }, md());
  t.error(r.err);
  t.same(r.initial?.get('x-grpc-test-echo-initial'), ['test_initial_metadata_value'], 'unary: initial metadata echoed');
  t.same(r.status?.metadata.get('x-grpc-test-echo-trailing-bin'), [Buffer.from([0xab, 0xab, 0xab])], 'unary: -bin trailing metadata echoed');
  const seen = app.seen[app.seen.length - 1];
  t.same(seen?.metadata.get('x-grpc-test-echo-trailing-bin'), [Buffer.from([0xab, 0xab, 0xab])], 'the server got the -bin header intact');

  const call = client.fullDuplexCall(md()) as grpc.ClientDuplexStream<unknown, unknown>;
  const initial = new Promise<grpc.Metadata>((r) => call.on('metadata', r));
  call.write({ responseParameters: [{ size: 314159 }], payload: { body: Buffer.alloc(271828) } });
  call.end();
  const res = await collect(call as unknown as grpc.ClientReadableStream<{ payload: { body: Buffer } }>);
  t.same((await initial).get('x-grpc-test-echo-initial'), ['test_initial_metadata_value'], 'full duplex: initial metadata echoed');
  t.same(res.status?.metadata.get('x-grpc-test-echo-trailing-bin'), [Buffer.from([0xab, 0xab, 0xab])], 'full duplex: trailing metadata echoed');
  t.same(res.msgs.map(size), [314159]);
});

t.test('status_code_and_message', async (t) => {
  const responseStatus = { code: 2, message: 'test status message' };
  const r = await unary(client, 'unaryCall', { responseStatus });
  t.equal(r.err?.code, 2, 'unary: UNKNOWN');
  t.equal(r.err?.details, 'test status message');
  const call = client.fullDuplexCall() as grpc.ClientDuplexStream<unknown, unknown>;
  call.write({ responseStatus });
  call.end();
  const res = await collect(call as unknown as grpc.ClientReadableStream<unknown>);
  t.equal(res.status?.code, 2, 'full duplex: UNKNOWN');
  t.equal(res.status?.details, 'test status message');
});

t.test('special_status_message', async (t) => {
  const message = '\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n';
  const r = await unary(client, 'unaryCall', { responseStatus: { code: 2, message } });
  t.equal(r.err?.code, 2);
  t.equal(r.err?.details, message, 'the percent-encoded grpc-message survives both sidecars');
});

t.test('unimplemented_method', async (t) => {
  const r = await unary(client, 'unimplementedCall', {});
  t.equal(r.err?.code, grpc.status.UNIMPLEMENTED);
});

t.test('timeout_on_sleeping_server', async (t) => {
  const call = client.fullDuplexCall({ deadline: Date.now() + 1 }) as grpc.ClientDuplexStream<unknown, unknown>;
  call.write({ payload: { body: Buffer.alloc(27182) } });
  const res = await collect(call as unknown as grpc.ClientReadableStream<unknown>);
  t.equal(res.status?.code, grpc.status.DEADLINE_EXCEEDED);
});

t.test('cancel_after_begin', async (t) => {
  const before = app.seen.length;
  const status = await new Promise<grpc.StatusObject>((resolve) => {
    const call = client.streamingInputCall(() => undefined) as grpc.ClientWritableStream<unknown>;
    call.on('status', resolve);
    // Let the call reach the server first, then cancel.
    const poll = setInterval(() => {
      if (app.seen.length > before) {
        clearInterval(poll);
        call.cancel();
      }
    }, 5);
  });
  t.equal(status.code, grpc.status.CANCELLED);
  const rec = app.seen[before];
  await within(
    (async () => {
      while (!rec?.cancelled) await new Promise((r) => setTimeout(r, 10));
    })(),
    10_000,
    'the server to see the cancellation',
  );
  t.ok(rec?.cancelled, 'the cancellation reached the server through both sidecars');
});

t.test('cancel_after_first_response', async (t) => {
  const before = app.seen.length;
  const call = client.fullDuplexCall() as grpc.ClientDuplexStream<unknown, { payload: { body: Buffer } }>;
  const status = new Promise<grpc.StatusObject>((r) => call.on('status', r));
  call.on('error', () => undefined);
  call.write({ responseParameters: [{ size: 31415 }], payload: { body: Buffer.alloc(27182) } });
  const first = await within(new Promise<{ payload: { body: Buffer } }>((r) => call.once('data', r)), 10_000, 'the first response');
  t.equal(size(first), 31415);
  call.cancel();
  t.equal((await status).code, grpc.status.CANCELLED);
  const rec = app.seen[before];
  await within(
    (async () => {
      while (!rec?.cancelled) await new Promise((r) => setTimeout(r, 10));
    })(),
    10_000,
    'the server to see the cancellation',
  );
  t.ok(rec?.cancelled, 'the server saw the cancellation');
});

t.test('deadlines propagate, shrunk by the time spent', async (t) => {
  const before = app.seen.length;
  const r = await unary(client, 'emptyCall', {}, new grpc.Metadata(), { deadline: Date.now() + 5000 });
  t.error(r.err);
  const left = app.seen[before]?.deadlineLeftMs ?? NaN;
  t.ok(left > 0 && left <= 5000, `the server got a deadline no later than the client's (${Math.round(left)} ms left of 5000)`);
});
