/**
 * The request stack's layers, each on a FakeClock with a fake dispatcher: no process, no socket.
 */
import pino from 'pino';
import { Readable } from 'node:stream';
import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { MeshError } from '../../../src/core/errors';
import { compose, LocalReply, MeshCall, type Handler, type Layer } from '../../../src/core/layer';
import type { Headers, ResponseSink, UpstreamCall } from '../../../src/http/upstream-types';
import type { RetryPolicy } from '../../../src/policy';
import type { StackContext } from '../../../src/stack/context';
import { deadlineLayer } from '../../../src/stack/deadline';
import { faultLayer } from '../../../src/stack/fault';
import { grpcMessagesLayer } from '../../../src/stack/grpc-messages';
import { identityLayer } from '../../../src/stack/identity';
import { retryLayer } from '../../../src/stack/retry';

function context(clock: FakeClock): { ctx: StackContext; retries: string[]; timeouts: string[] } {
  const retries: string[] = [];
  const timeouts: string[] = [];
  const ctx = {
    clock,
    random: () => 0.5,
    logger: pino({ level: 'silent' }),
    stats: { metrics: { retry: (d: string) => retries.push(d), timeout: (d: string) => timeouts.push(d) }, record() {} },
  } as unknown as StackContext;
  return { ctx, retries, timeouts };
}

function newCall(headers: string[] = [], kind: MeshCall['kind'] = 'http', body: Readable | null = null): MeshCall {
  return new MeshCall('outbound', kind, 'http1', 'GET', '/', 'svc', undefined, headers, body, '1.1');
}

/** What reached the top of the stack. */
class Recorder implements ResponseSink {
  events: string[] = [];
  error: Error | undefined;
  status = 0;
  onResponse(status: number, _h: Headers): void {
    this.status = status;
    this.events.push(`response ${status}`);
  }
  onData(c: Buffer): boolean {
    this.events.push(`data ${c.toString()}`);
    return true;
  }
  onEnd(): void {
    this.events.push('end');
  }
  onError(err: Error, started: boolean): void {
    this.error = err;
    this.events.push(`error ${(err as MeshError).flag ?? err.message} started=${started}`);
  }
}

/** A fake dispatcher: answers each try with the next scripted outcome, at once or when told. */
function fakeDispatcher(script: (n: number, call: MeshCall, sink: ResponseSink) => void): { bottom: Handler; tries: number; aborted: number; calls: MeshCall[] } {
  const d = {
    tries: 0,
    aborted: 0,
    calls: [] as MeshCall[],
    bottom: ((call: MeshCall, sink: ResponseSink): UpstreamCall => {
      d.tries++;
      d.calls.push(call);
      const c = { abort: () => void d.aborted++, resume() {} };
      script(d.tries, call, sink);
      return c;
    }) as Handler,
  };
  return d;
}

const policy = (p: Partial<RetryPolicy>): RetryPolicy => ({ attempts: 2, retryOn: ['5xx'], budget: { percent: 100, minRetriesPerSecond: 100 }, bufferLimitBytes: 1024, backoff: { baseIntervalMs: 10, maxIntervalMs: 100 }, ...p });

t.test('compose: the first layer is the outermost; absent layers are skipped', async (t) => {
  const order: string[] = [];
  const mark =
    (name: string): Layer =>
    (next) =>
    (call, sink) => {
      order.push(name);
      return next(call, sink);
    };
  const h = compose([mark('a'), undefined, mark('b'), mark('c')], (_c, sink) => {
    order.push('bottom');
    sink.onEnd(undefined);
    return { abort() {}, resume() {} };
  });
  h(newCall(), new Recorder());
  t.same(order, ['a', 'b', 'c', 'bottom']);
});

t.test('retry: 5xx retried after backoff on the clock, then success', async (t) => {
  const clock = new FakeClock();
  const { ctx, retries } = context(clock);
  const d = fakeDispatcher((n, _c, sink) => {
    sink.onResponse(n < 3 ? 503 : 200, {});
    if (n >= 3) sink.onEnd(undefined);
  });
  const rec = new Recorder();
  const call = newCall();
  call.destination = 'svc';
  compose([retryLayer(ctx, policy({ attempts: 2 }))], d.bottom)(call, rec);
  t.equal(d.tries, 1, 'one try at first');
  t.same(rec.events, [], 'the 503 is not passed up: a retry follows');
  clock.advance(100);
  clock.advance(100);
  t.equal(d.tries, 3, 'retried twice, each after its backoff');
  t.same(rec.events, ['response 200', 'end']);
  t.same(retries, ['svc', 'svc'], 'retries counted for the destination');
  t.equal(call.flags, '');
});

t.test('retry: attempts exhausted: the last answer goes up with URX', async (t) => {
  const clock = new FakeClock();
  const { ctx } = context(clock);
  const d = fakeDispatcher((_n, _c, sink) => {
    sink.onResponse(503, {});
    sink.onEnd(undefined);
  });
  const rec = new Recorder();
  const call = newCall();
  compose([retryLayer(ctx, policy({ attempts: 1 }))], d.bottom)(call, rec);
  clock.advance(1000);
  t.equal(d.tries, 2);
  t.same(rec.events, ['response 503', 'end']);
  t.equal(call.flags, 'URX');
});

t.test('retry: gRPC trailers-only statuses are retried by the same engine', async (t) => {
  const clock = new FakeClock();
  const { ctx } = context(clock);
  const d = fakeDispatcher((n, _c, sink) => {
    sink.onResponse(200, n === 1 ? { 'grpc-status': '14' } : { 'content-type': 'application/grpc' });
    sink.onEnd(n === 1 ? undefined : { 'grpc-status': '0' });
  });
  const rec = new Recorder();
  compose([retryLayer(ctx, policy({ retryOn: ['unavailable'] }))], d.bottom)(newCall([], 'grpc'), rec);
  clock.advance(1000);
  t.equal(d.tries, 2);
  t.same(rec.events, ['response 200', 'end']);
});

t.test('retry: a stream refused unseen is sent again at once, without a policy', async (t) => {
  const clock = new FakeClock();
  const { ctx } = context(clock);
  const d = fakeDispatcher((n, _c, sink) => {
    if (n === 1) return sink.onError(Object.assign(new Error('refused'), { rstCode: 7 }), false);
    sink.onResponse(200, {});
    sink.onEnd(undefined);
  });
  const rec = new Recorder();
  compose([retryLayer(ctx, undefined)], d.bottom)(newCall(), rec);
  t.equal(d.tries, 2, 'sent again without waiting');
  t.same(rec.events, ['response 200', 'end']);
});

t.test('retry: a POST body is replayed to the next try', async (t) => {
  const clock = new FakeClock();
  const { ctx } = context(clock);
  const bodies: string[] = [];
  const d = fakeDispatcher((n, call, sink) => {
    const chunks: Buffer[] = [];
    call.body?.on('data', (c: Buffer) => chunks.push(c));
    call.body?.on('end', () => {
      bodies.push(Buffer.concat(chunks).toString());
      sink.onResponse(n === 1 ? 500 : 200, {});
      sink.onEnd(undefined);
    });
  });
  const rec = new Recorder();
  compose([retryLayer(ctx, policy({}))], d.bottom)(newCall([], 'http', Readable.from([Buffer.from('hello')])), rec);
  for (let i = 0; i < 20 && rec.events.length < 2; i++) {
    await new Promise((r) => setImmediate(r));
    clock.advance(100);
  }
  t.same(bodies, ['hello', 'hello'], 'both tries got the whole body');
  t.same(rec.events, ['response 200', 'end']);
});

t.test('deadline: expires on the clock, cancels the try, answers UT; grpc-timeout is honoured', async (t) => {
  const clock = new FakeClock();
  const { ctx, timeouts } = context(clock);
  const d = fakeDispatcher(() => undefined);
  const rec = new Recorder();
  const call = newCall(['grpc-timeout', '50m'], 'grpc');
  compose([deadlineLayer(ctx, 1000)], d.bottom)(call, rec);
  t.equal(call.deadline, clock.monotonic() + 50, 'the shorter of the route timeout and grpc-timeout');
  clock.advance(49);
  t.same(rec.events, []);
  clock.advance(1);
  t.equal(d.aborted, 1, 'the try was cancelled');
  t.same(rec.events, ['error UT started=false']);
  t.equal(timeouts.length, 1);
  const bad = new Recorder();
  compose([deadlineLayer(ctx, undefined)], d.bottom)(newCall(['grpc-timeout', 'soon'], 'grpc'), bad);
  t.ok(bad.error instanceof LocalReply && bad.error.extra?.grpcStatus === 13, 'an invalid grpc-timeout is INTERNAL for gRPC');
});

t.test('deadline: a gRPC call with a route timeout gets a grpc-timeout upstream', async (t) => {
  const clock = new FakeClock();
  const { ctx } = context(clock);
  const d = fakeDispatcher((_n, _c, sink) => sink.onEnd(undefined));
  const call = newCall(['content-type', 'application/grpc'], 'grpc');
  compose([deadlineLayer(ctx, 2000)], d.bottom)(call, new Recorder());
  t.equal(call.headers[call.grpcTimeoutAt - 1], 'grpc-timeout', 'a slot the dispatcher fills with the time left');
});

t.test('fault: a delay holds the request on the clock and earns DI; an abort answers FI', async (t) => {
  const clock = new FakeClock();
  const { ctx } = context(clock);
  const d = fakeDispatcher((_n, _c, sink) => {
    sink.onResponse(200, {});
    sink.onEnd(undefined);
  });
  const call = newCall();
  const rec = new Recorder();
  compose([faultLayer(ctx, { delay: { percent: 100, fixedMs: 300 } })], d.bottom)(call, rec);
  t.equal(d.tries, 0);
  clock.advance(300);
  t.equal(d.tries, 1);
  t.equal(call.flags, 'DI');
  const ab = new Recorder();
  compose([faultLayer(ctx, { abort: { percent: 100, httpStatus: 418 } })], d.bottom)(newCall(), ab);
  t.ok(ab.error instanceof LocalReply && ab.error.status === 418 && ab.error.flag === 'FI');
});

t.test('identity: the app\'s x-meshlet-source and x-meshlet-route are replaced', async (t) => {
  const d = fakeDispatcher((_n, _c, sink) => sink.onEnd(undefined));
  compose([identityLayer('frontend', 'r/0')], d.bottom)(newCall(['x-meshlet-source', 'billing', 'x-meshlet-route', 'x', 'accept', '*/*']), new Recorder());
  const h = d.calls[0]?.headers ?? [];
  t.equal(h.filter((x) => x === 'x-meshlet-source').length, 1);
  t.equal(h[h.indexOf('x-meshlet-source') + 1], 'frontend');
  t.equal(h[h.indexOf('x-meshlet-route') + 1], 'r/0');
  t.ok(h.includes('accept'));
});

t.test('gRPC message sizes: a request message over the limit is stopped before it is sent', async (t) => {
  const msg = Buffer.alloc(5 + 100);
  msg.writeUInt32BE(100, 1);
  let forwarded = 0;
  const d = fakeDispatcher((_n, call) => call.body?.on('data', (c: Buffer) => (forwarded += c.length)));
  const rec = new Recorder();
  compose([grpcMessagesLayer(50)], d.bottom)(newCall([], 'grpc', Readable.from([msg])), rec);
  for (let i = 0; i < 10 && !rec.error; i++) await new Promise((r) => setImmediate(r));
  t.ok(rec.error instanceof LocalReply && rec.error.extra?.grpcStatus === 8, 'RESOURCE_EXHAUSTED');
  t.equal(forwarded, 0, 'no byte of it went upstream');
  t.equal(d.aborted, 1, 'the upstream call was cancelled');
});
