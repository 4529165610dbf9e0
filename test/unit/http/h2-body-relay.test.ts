/**
 * The HTTP/2 upstream's body pipe riding on the replay body's listeners (src/http/body-relay.ts):
 * a downstream HTTP/2 request stream sent as it is (direct mode) gets no listeners of its own
 * from the pipe, and still: the whole body reaches the upstream (also past backpressure), a
 * second attempt replays it from the first byte, a client reset or a body error cancels the
 * upstream stream and fails the replay body.
 */
import * as http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { UpstreamPools, type ResponseSink, type UpstreamTarget } from '../../../src/http/upstream';
import { ReplayableBody } from '../../../src/resilience/replay-body';

interface Seen {
  bytes: number;
  rst?: number;
}

/** An HTTP/2 upstream that counts each request's body bytes and answers with the count. */
async function upstream(t: Test): Promise<{ target: UpstreamTarget; firstClosed: Promise<Seen> }> {
  let first!: (s: Seen) => void;
  const firstClosed = new Promise<Seen>((r) => (first = r));
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => sessions.add(s));
  server.on('stream', (stream) => {
    const s: Seen = { bytes: 0 };
    stream.on('close', () => {
      s.rst = stream.rstCode;
      first(s);
    });
    stream.on('error', () => {});
    stream.on('data', (c: Buffer) => (s.bytes += c.length));
    stream.on('end', () => {
      if (!stream.closed) stream.respond({ ':status': 200, 'x-bytes': String(s.bytes) }, { endStream: true });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  t.teardown(() => {
    for (const s of sessions) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { target: { key: `127.0.0.1:${port}`, address: '127.0.0.1', port, protocol: 'http2' }, firstClosed };
}

/** A downstream HTTP/2 server handing each request stream to `onStream`; a client session to it. */
async function downstream(t: Test, onStream: (s: http2.ServerHttp2Stream) => void): Promise<http2.ClientHttp2Session> {
  const server = http2.createServer();
  server.on('stream', onStream);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  t.teardown(() => {
    client.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return client;
}

function sink(): { sink: ResponseSink; done: Promise<{ status?: number; bytes?: string; err?: Error }> } {
  let resolve!: (v: { status?: number; bytes?: string; err?: Error }) => void;
  const done = new Promise<{ status?: number; bytes?: string; err?: Error }>((r) => (resolve = r));
  let status: number | undefined;
  let bytes: string | undefined;
  return {
    done,
    sink: {
      onResponse: (s, h) => {
        status = s;
        bytes = h['x-bytes'] as string;
      },
      onData: () => true,
      onEnd: () => resolve({ status, bytes }),
      onError: (err) => resolve({ err }),
    },
  };
}

const EVENTS = ['data', 'end', 'error', 'aborted'] as const;
const counts = (s: http2.ServerHttp2Stream): number[] => EVENTS.map((e) => s.listenerCount(e));

t.test('direct mode: no listeners of its own, whole body upstream (past backpressure), replayed by a second attempt', async (t) => {
  const pools = new UpstreamPools();
  t.teardown(() => pools.close());
  const up = await upstream(t);
  const size = 512 * 1024;
  const results = new Promise<Record<string, unknown>>((resolve) => {
    void downstream(t, async (stream) => {
      const replay = new ReplayableBody(stream, 4 * size, true);
      const before = counts(stream);
      const body = replay.cursor() ?? null;
      const a = sink();
      pools.send(up.target, { method: 'POST', path: '/', authority: 'x', headers: [], body }, a.sink);
      const during = counts(stream);
      const first = await a.done;
      const b = sink();
      const cursor = replay.cursor();
      pools.send(up.target, { method: 'POST', path: '/', authority: 'x', headers: [], body: cursor ?? null }, b.sink);
      const second = await b.done;
      stream.respond({ ':status': 200 }, { endStream: true });
      resolve({ sameStream: body === stream, before, during, first, second, cursorIsStream: cursor === stream });
    }).then((client) => {
      const req = client.request({ ':method': 'POST', ':path': '/' });
      req.on('error', () => {});
      req.resume();
      req.end(Buffer.alloc(size, 7));
    });
  });
  const r = await results;
  t.ok(r.sameStream, 'the first attempt sends the request stream itself');
  t.same(r.during, r.before, 'the pipe added no data/end/error/aborted listeners to the request stream');
  t.same(r.first, { status: 200, bytes: String(size) }, 'the whole body reached the upstream');
  t.notOk(r.cursorIsStream, 'the second attempt gets a cursor');
  t.same(r.second, { status: 200, bytes: String(size) }, 'the second attempt replayed the whole body');
});

for (const how of ['client reset', 'body error'] as const) {
  t.test(`direct mode: a ${how} mid-body cancels the upstream stream and fails the replay body`, async (t) => {
    const pools = new UpstreamPools();
    t.teardown(() => pools.close());
    const up = await upstream(t);
    let replay!: ReplayableBody;
    const got = new Promise<{ err?: Error }>((resolve) => {
      void downstream(t, (stream) => {
        stream.on('error', () => {});
        replay = new ReplayableBody(stream, 1 << 20, true);
        const a = sink();
        pools.send(up.target, { method: 'POST', path: '/', authority: 'x', headers: [], body: replay.cursor() ?? null }, a.sink);
        void a.done.then(resolve);
        if (how === 'body error') stream.once('data', () => setImmediate(() => stream.destroy(new Error('body broke'))));
      }).then((client) => {
        const req = client.request({ ':method': 'POST', ':path': '/' });
        req.on('error', () => {});
        req.write(Buffer.alloc(1000, 1));
        // The client resets its request mid-body: RST_STREAM at once ('aborted' on the server
        // stream, then 'end'). (node's req.close(code) would first end the request cleanly.)
        if (how === 'client reset') setTimeout(() => req.destroy(), 50);
      });
    });
    const seen = await up.firstClosed;
    t.equal(seen?.rst, http2.constants.NGHTTP2_CANCEL, 'the upstream stream was cancelled');
    t.ok(replay.failed instanceof Error, 'the replay body failed (no retry can replay it)');
    t.equal(replay.cursor(), undefined, 'no cursor for another attempt');
    const r = await got;
    t.ok(r.err, 'the call failed');
  });
}
