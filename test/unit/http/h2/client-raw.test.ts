/**
 * meshlet's own HTTP/2 client (src/http/h2/client.ts) against a fake server on a raw socket that
 * writes any frame, also those a real server never sends: malformed response heads (bad or
 * missing :status, upper-case names, request pseudo-headers, connection-specific fields), DATA
 * before the head or beyond the windows, frames on idle streams, bad trailers, a body against
 * its content-length, HPACK garbage, a first frame other than SETTINGS, an HTTP/1.1 answer to
 * the preface, PING, RST_STREAM in every state, GOAWAY below open streams, a server that lowers
 * SETTINGS_MAX_CONCURRENT_STREAMS, CONTINUATION, padding, and window overflows.
 */
import * as net from 'node:net';
import t, { type Test } from 'tap';
import { connect, type H2ClientSession } from '../../../../src/http/h2/client';
import { ErrorCode, FrameParser, FrameType, FrameWriter, Flags, Setting } from '../../../../src/http/h2/frames';
import { HpackDecoder, HpackEncoder } from '../../../../src/http/h2/hpack';
import { outcome, sessionClosed } from './client-lib';
import { recorder, until, type RawFrame } from './lib';

/** One connection of the fake server: the client's frames decoded, and a writer for ours. */
class RawConn {
  readonly frames: RawFrame[] = [];
  readonly enc = new HpackEncoder();
  readonly w = new FrameWriter();
  private readonly dec = new HpackDecoder();
  closed = false;
  constructor(readonly socket: net.Socket) {
    const parser = new FrameParser(recorder(this.frames, this.dec), { expectPreface: true, maxFrameSize: 16_777_215 });
    socket.on('data', (c: Buffer) => parser.push(c));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => undefined);
  }
  send(): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.concat(this.w.take()));
  }
  settings(params: number[] = []): void {
    this.w.settings(params);
    this.send();
  }
  headers(id: number, fields: string[], end: boolean): void {
    this.w.headers(id, this.enc.encode(fields), end);
    this.send();
  }
  async waitFor(pred: (f: RawFrame) => boolean, ms = 3000): Promise<RawFrame> {
    let found: RawFrame | undefined;
    await until(() => (found = this.frames.find(pred)) !== undefined, ms, 'a frame');
    return found!;
  }
  /** Waits for the client's HEADERS on stream `id`. */
  request(id: number): Promise<RawFrame> {
    return this.waitFor((f) => f.type === 'HEADERS' && f.id === id);
  }
}

async function fakeServer(t: Test): Promise<{ port: number; next: () => Promise<RawConn> }> {
  const waiting: ((c: RawConn) => void)[] = [];
  const ready: RawConn[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    const c = new RawConn(sock);
    const w = waiting.shift();
    if (w) w(c);
    else ready.push(c);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return {
    port: (server.address() as net.AddressInfo).port,
    next: () => new Promise<RawConn>((r) => (ready.length > 0 ? r(ready.shift()!) : waiting.push(r))),
  };
}

interface Pair {
  c: H2ClientSession;
  conn: RawConn;
  errors: (Error & { code?: string; h2Code?: number })[];
}

/** A client connected to the fake server, SETTINGS exchanged (`settings`: the server's). */
async function pair(t: Test, settings: number[] = [], opts: Parameters<typeof connect>[1] = {}): Promise<Pair> {
  const srv = await fakeServer(t);
  const c = connect(`http://127.0.0.1:${srv.port}`, { settings: { initialWindowSize: 65_535 }, ...opts });
  const errors: Pair['errors'] = [];
  c.on('error', (e: Error) => errors.push(e));
  t.teardown(() => c.destroy());
  const conn = await srv.next();
  conn.settings(settings);
  await until(() => c.listenerCount('x') === 0 && (c as unknown as { remoteSettings: object }).remoteSettings !== undefined && conn.frames.some((f) => f.type === 'SETTINGS' && f.ack));
  return { c, conn, errors };
}

const GET = { ':method': 'GET', ':path': '/', ':scheme': 'http', ':authority': 'raw.test' };

/** A response head that must fail the stream with RST_STREAM PROTOCOL_ERROR. */
async function badHead(t: Test, fields: string[], end = false): Promise<void> {
  const { c, conn } = await pair(t);
  const s = c.request(GET, { endStream: true });
  const done = outcome(s);
  await conn.request(1);
  conn.headers(1, fields, end);
  const o = await done;
  t.equal(o.error?.code, 'ERR_HTTP2_STREAM_ERROR', fields.join(' '));
  t.equal(o.rstCode, ErrorCode.PROTOCOL_ERROR);
  t.equal(o.status, undefined, 'no response event');
  const rst = await conn.waitFor((f) => f.type === 'RST_STREAM' && f.id === 1);
  t.equal(rst.code, ErrorCode.PROTOCOL_ERROR);
  // The connection survives a stream error.
  const s2 = c.request(GET, { endStream: true });
  const d2 = outcome(s2);
  await conn.request(3);
  conn.headers(3, [':status', '200'], true);
  t.equal((await d2).status, 200);
}

t.test('malformed response heads fail the stream with PROTOCOL_ERROR (RFC 9113 8.3.2)', async (t) => {
  await badHead(t, [':status', 'abc']);
  await badHead(t, [':status', '2000']);
  await badHead(t, [':status', '099']);
  await badHead(t, ['content-type', 'text/plain']);
  await badHead(t, [':status', '200', ':status', '200']);
  await badHead(t, [':status', '200', 'Content-Type', 'text/plain']);
  await badHead(t, [':status', '200', ':path', '/']);
  await badHead(t, ['x', 'y', ':status', '200']);
  await badHead(t, [':status', '200', 'connection', 'close']);
  await badHead(t, [':status', '200', 'transfer-encoding', 'chunked']);
  await badHead(t, [':status', '200', 'te', 'gzip']);
  await badHead(t, [':status', '200', 'x', 'a\r\nb']);
  await badHead(t, [':status', '200', 'x', ' padded']);
  await badHead(t, [':status', '200', 'bad name', 'v']);
  await badHead(t, [':status', '101']);
  await badHead(t, [':status', '103'], true);
  await badHead(t, [':status', '200', 'content-length', 'x']);
  await badHead(t, [':status', '200', 'content-length', '5'], true);
});

t.test('DATA before the head, trailers without END_STREAM or with a pseudo-header, body against content-length', async (t) => {
  const cases: ((conn: RawConn) => void)[] = [
    (conn) => {
      conn.w.data(1, Buffer.from('early'), false);
      conn.send();
    },
    (conn) => {
      conn.headers(1, [':status', '200'], false);
      conn.headers(1, ['grpc-status', '0'], false);
    },
    (conn) => {
      conn.headers(1, [':status', '200'], false);
      conn.headers(1, [':status', '200'], true);
    },
    (conn) => {
      conn.headers(1, [':status', '200', 'content-length', '3'], false);
      conn.w.data(1, Buffer.from('toolong'), true);
      conn.send();
    },
    (conn) => {
      conn.headers(1, [':status', '200', 'content-length', '10'], false);
      conn.w.data(1, Buffer.from('short'), true);
      conn.send();
    },
    (conn) => {
      conn.headers(1, [':status', '200', 'content-length', '10'], false);
      conn.w.data(1, Buffer.from('short'), false);
      conn.send();
      conn.headers(1, ['x-t', '1'], true);
    },
  ];
  for (const send of cases) {
    const { c, conn } = await pair(t);
    const done = outcome(c.request(GET, { endStream: true }));
    await conn.request(1);
    send(conn);
    const o = await done;
    t.equal(o.rstCode, ErrorCode.PROTOCOL_ERROR);
    t.equal(o.error?.code, 'ERR_HTTP2_STREAM_ERROR');
    await conn.waitFor((f) => f.type === 'RST_STREAM' && f.id === 1 && f.code === ErrorCode.PROTOCOL_ERROR);
  }
});

t.test('a good response the long way: 1xx, CONTINUATION, padding, trailers; RST_STREAM NO_ERROR after it', async (t) => {
  const { c, conn } = await pair(t, [Setting.MAX_FRAME_SIZE, 16_384]);
  const s = c.request({ ...GET, ':method': 'POST' });
  s.end('req');
  const done = outcome(s);
  await conn.waitFor((f) => f.type === 'DATA' && f.id === 1 && f.end === true);
  conn.headers(1, [':status', '100'], false);
  const block = conn.enc.encode([':status', '200', 'x-big', 'v'.repeat(40_000)]);
  conn.w.frame(FrameType.HEADERS, 0, 1, block.subarray(0, 10));
  conn.w.continuation(1, block.subarray(10, 16_000), false);
  conn.w.continuation(1, block.subarray(16_000, 32_000), false);
  conn.w.continuation(1, block.subarray(32_000), true);
  conn.w.paddedData(1, Buffer.from('padded body'), 20, false);
  conn.w.headers(1, conn.enc.encode(['grpc-status', '0']), true);
  conn.w.rstStream(1, ErrorCode.NO_ERROR);
  conn.send();
  const o = await done;
  t.equal(o.info[0]![':status'], 100);
  t.equal(o.status, 200);
  t.equal((o.headers!['x-big'] as string).length, 40_000);
  t.equal(o.body.toString(), 'padded body');
  t.equal(o.trailers!['grpc-status'], '0');
  t.equal(o.error, undefined);
  t.equal(o.rstCode, 0);
  // The request body went out: HEADERS, then DATA 'req' with END_STREAM.
  const data = conn.frames.filter((f) => f.type === 'DATA' && f.id === 1);
  t.equal(Buffer.concat(data.map((f) => f.data!)).toString(), 'req');
  const hdr = await conn.request(1);
  t.same(hdr.headers!.slice(0, 8), [':method', 'POST', ':path', '/', ':scheme', 'http', ':authority', 'raw.test']);
  t.equal(hdr.end, false);
});

t.test('the server resets with CANCEL mid-body: closed with rstCode 8, no error, no clean end', async (t) => {
  const { c, conn } = await pair(t);
  const done = outcome(c.request(GET, { endStream: true }));
  await conn.request(1);
  conn.headers(1, [':status', '200'], false);
  conn.w.data(1, Buffer.from('partial'), false);
  conn.w.rstStream(1, ErrorCode.CANCEL);
  conn.send();
  const o = await done;
  t.equal(o.rstCode, 8);
  t.equal(o.error, undefined);
  t.equal(o.ended, false);
  t.equal(o.body.toString(), 'partial');
});

t.test('windows: DATA beyond the stream window is a stream FLOW_CONTROL_ERROR, beyond the connection window a connection one', async (t) => {
  {
    const { c, conn } = await pair(t, [], { settings: { initialWindowSize: 1000 } });
    const done = outcome(c.request(GET, { endStream: true }));
    await conn.request(1);
    conn.headers(1, [':status', '200'], false);
    conn.w.data(1, Buffer.alloc(1001), false);
    conn.send();
    const o = await done;
    t.equal(o.rstCode, ErrorCode.FLOW_CONTROL_ERROR);
    t.equal(o.error?.code, 'ERR_HTTP2_STREAM_ERROR');
  }
  {
    const { c, conn, errors } = await pair(t, [], { settings: { initialWindowSize: 2_000_000 }, connectionWindowSize: 65_535 });
    // Nobody reads: no credit goes back.
    const s = c.request(GET, { endStream: true });
    s.pause();
    const done = new Promise<{ error?: Error & { code?: string } }>((r) => {
      const o: { error?: Error & { code?: string } } = {};
      s.on('error', (e: Error) => (o.error = e));
      s.on('close', () => r(o));
    });
    await conn.request(1);
    conn.headers(1, [':status', '200'], false);
    for (let i = 0; i < 5; i++) conn.w.data(1, Buffer.alloc(16_000), false);
    conn.send();
    const o = await done;
    const g = await conn.waitFor((f) => f.type === 'GOAWAY');
    t.equal(g.code, ErrorCode.FLOW_CONTROL_ERROR);
    t.equal(o.error?.code, 'ERR_H2_PROTOCOL');
    await sessionClosed(c);
    t.equal(errors[0]?.h2Code, ErrorCode.FLOW_CONTROL_ERROR);
  }
});

t.test('credit: WINDOW_UPDATEs go back as the body is read, stream and connection', async (t) => {
  const { c, conn } = await pair(t, [], { settings: { initialWindowSize: 65_535 }, connectionWindowSize: 65_535 });
  const done = outcome(c.request(GET, { endStream: true }), 2);
  await conn.request(1);
  conn.headers(1, [':status', '200'], false);
  let sent = 0;
  const total = 400_000;
  // Send within the windows the client grants.
  let streamWin = 65_535;
  let connWin = 65_535;
  while (sent < total) {
    await until(() => {
      for (const f of conn.frames.splice(0)) {
        if (f.type !== 'WINDOW_UPDATE') continue;
        if (f.id === 0) connWin += f.increment!;
        else streamWin += f.increment!;
      }
      return Math.min(streamWin, connWin) > 0;
    });
    const n = Math.min(16_000, streamWin, connWin, total - sent);
    conn.w.data(1, Buffer.alloc(n, 7), sent + n === total);
    conn.send();
    sent += n;
    streamWin -= n;
    connWin -= n;
  }
  const o = await done;
  t.equal(o.body.length, total);
  t.equal(o.error, undefined);
  t.equal(c.destroyed, false);
});

t.test('frames on idle streams are connection PROTOCOL_ERRORs; open streams fail', async (t) => {
  const sends: [string, (conn: RawConn) => void][] = [
    ['HEADERS on a stream we did not open', (conn) => conn.headers(3, [':status', '200'], true)],
    ['HEADERS on an even stream (push)', (conn) => conn.headers(2, [':status', '200'], true)],
    ['DATA on an idle stream', (conn) => (conn.w.data(5, Buffer.from('x'), false), conn.send())],
    ['RST_STREAM on an idle stream', (conn) => (conn.w.rstStream(7, ErrorCode.CANCEL), conn.send())],
    ['WINDOW_UPDATE on an idle stream', (conn) => (conn.w.windowUpdate(9, 10), conn.send())],
    ['PUSH_PROMISE', (conn) => (conn.w.pushPromise(1, 2, conn.enc.encode([':method', 'GET'])), conn.send())],
    ['HPACK garbage', (conn) => (conn.w.frame(FrameType.HEADERS, Flags.END_HEADERS, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])), conn.send())],
    ['a connection window over 2^31-1', (conn) => (conn.w.windowUpdate(0, 0x7fffffff), conn.send())],
  ];
  for (const [what, send] of sends) {
    const { c, conn, errors } = await pair(t);
    const done = outcome(c.request(GET, { endStream: true }));
    await conn.request(1);
    send(conn);
    const o = await done;
    await sessionClosed(c);
    const g = await conn.waitFor((f) => f.type === 'GOAWAY');
    t.not(g.code, ErrorCode.NO_ERROR, what);
    t.equal(o.error?.code, 'ERR_H2_PROTOCOL', what);
    t.equal(errors[0]?.code, 'ERR_H2_PROTOCOL', what);
    t.equal(c.destroyed, true);
  }
});

t.test('frames on closed streams are ignored or answered with RST_STREAM STREAM_CLOSED', async (t) => {
  const { c, conn } = await pair(t);
  const done = outcome(c.request(GET, { endStream: true }));
  await conn.request(1);
  conn.headers(1, [':status', '200'], true);
  await done;
  conn.w.data(1, Buffer.from('late'), false);
  conn.w.rstStream(1, ErrorCode.CANCEL);
  conn.w.windowUpdate(1, 100);
  conn.send();
  conn.headers(1, [':status', '200'], true);
  await conn.waitFor((f) => f.type === 'RST_STREAM' && f.id === 1 && f.code === ErrorCode.STREAM_CLOSED);
  const d2 = outcome(c.request(GET, { endStream: true }));
  await conn.request(3);
  conn.headers(3, [':status', '204'], true);
  t.equal((await d2).status, 204);
  t.equal(c.destroyed, false);
  // A stream window over 2^31-1: that stream fails with FLOW_CONTROL_ERROR.
  const s3 = c.request({ ...GET, ':method': 'POST' });
  const d3 = outcome(s3);
  await conn.request(5);
  conn.w.windowUpdate(5, 0x7fffffff);
  conn.send();
  t.equal((await d3).rstCode, ErrorCode.FLOW_CONTROL_ERROR);
  // A zero WINDOW_UPDATE on a stream (a stream error found by the codec).
  const s4 = c.request({ ...GET, ':method': 'POST' });
  const d4 = outcome(s4);
  await conn.request(7);
  conn.w.frame(FrameType.WINDOW_UPDATE, 0, 7, Buffer.alloc(4));
  conn.send();
  t.equal((await d4).rstCode, ErrorCode.PROTOCOL_ERROR);
});

t.test('the server preface: a first frame other than SETTINGS, or HTTP/1.1, fails the session', async (t) => {
  for (const answer of [Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'), Buffer.from([0, 0, 8, FrameType.PING, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])]) {
    const srv = await fakeServer(t);
    const c = connect(`http://127.0.0.1:${srv.port}`);
    const errors: (Error & { code?: string })[] = [];
    c.on('error', (e: Error) => errors.push(e));
    const done = outcome(c.request(GET, { endStream: true }));
    const conn = await srv.next();
    conn.socket.write(answer);
    const o = await done;
    await sessionClosed(c);
    t.equal(o.error?.code, 'ERR_H2_PROTOCOL');
    t.equal(errors[0]?.code, 'ERR_H2_PROTOCOL');
  }
});

t.test('PING is answered; SETTINGS acknowledged; a SETTINGS flood is not', async (t) => {
  const { c, conn } = await pair(t, [Setting.HEADER_TABLE_SIZE, 0, Setting.ENABLE_PUSH, 0, Setting.MAX_HEADER_LIST_SIZE, 9999, Setting.ENABLE_CONNECT_PROTOCOL, 1, 0x99, 5]);
  conn.w.ping(Buffer.from('12345678'), false);
  conn.send();
  const p = await conn.waitFor((f) => f.type === 'PING' && f.ack === true);
  t.equal(p.data!.toString(), '12345678');
  t.equal(c.remoteSettings.enableConnectProtocol, true);
  t.equal(c.remoteSettings.maxHeaderListSize, 9999);
  t.equal(c.remoteSettings.headerTableSize, 0);
  t.equal(c.localSettingsAcked, false, 'the fake server never acknowledged ours');
  conn.w.settingsAck();
  conn.send();
  await until(() => c.localSettingsAcked);
  // Header table size 0: the request is encoded without the dynamic table and still decodes.
  const d = outcome(c.request({ ...GET, 'x-a': 'b' }, { endStream: true }));
  const h = await conn.request(1);
  t.ok(h.headers!.includes('x-a'));
  conn.headers(1, [':status', '200'], true);
  t.equal((await d).status, 200);
});

t.test('GOAWAY below open streams: those fail REFUSED_STREAM, pending ones too; the rest finish', async (t) => {
  const { c, conn } = await pair(t, [Setting.MAX_CONCURRENT_STREAMS, 3]);
  const outs = Array.from({ length: 5 }, () => outcome(c.request(GET, { endStream: true })));
  await conn.request(5);
  t.equal(c.pendingStreams, 2);
  conn.w.goaway(1, ErrorCode.NO_ERROR, Buffer.from('bye'));
  conn.send();
  conn.headers(1, [':status', '200'], true);
  const res = await Promise.all(outs);
  t.equal(res[0]!.status, 200);
  for (const o of res.slice(1)) {
    t.equal(o.rstCode, ErrorCode.REFUSED_STREAM);
    t.equal(o.error?.code, 'ERR_HTTP2_STREAM_ERROR');
  }
  await sessionClosed(c);
  t.notOk(conn.frames.some((f) => f.type === 'HEADERS' && f.id > 5), 'the pending ones never went out');
});

t.test('SETTINGS_MAX_CONCURRENT_STREAMS lowered to 1 mid-connection; streams open one by one in order', async (t) => {
  const { c, conn } = await pair(t, [Setting.MAX_CONCURRENT_STREAMS, 1]);
  const outs = [0, 1, 2].map((i) => outcome(c.request({ ...GET, ':path': `/${i}` }, { endStream: true })));
  for (const id of [1, 3, 5]) {
    const h = await conn.request(id);
    t.equal(h.headers![3], `/${(id - 1) / 2}`);
    t.notOk(conn.frames.some((f) => f.type === 'HEADERS' && f.id === id + 2), 'the next waits');
    conn.headers(id, [':status', '200'], true);
  }
  await Promise.all(outs);
  // A pending request with a body: its DATA follows its HEADERS once it opens.
  conn.settings([Setting.MAX_CONCURRENT_STREAMS, 0]);
  await until(() => c.remoteSettings.maxConcurrentStreams === 0);
  const s = c.request({ ...GET, ':method': 'POST' });
  s.write('a');
  s.end('b');
  const d = outcome(s);
  await new Promise((r) => setTimeout(r, 20));
  t.equal(s.pending, true);
  conn.settings([Setting.MAX_CONCURRENT_STREAMS, 1]);
  await conn.waitFor((f) => f.type === 'DATA' && f.id === 7 && f.end === true);
  const body = conn.frames.filter((f) => f.type === 'DATA' && f.id === 7).map((f) => f.data!.toString());
  t.equal(body.join(''), 'ab');
  conn.headers(7, [':status', '200'], true);
  t.equal((await d).status, 200);
});

t.test('uploads wait for the windows: stream WINDOW_UPDATE, connection WINDOW_UPDATE, SETTINGS', async (t) => {
  const { c, conn } = await pair(t, [Setting.INITIAL_WINDOW_SIZE, 10]);
  const s = c.request({ ...GET, ':method': 'POST' });
  const body = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
  s.end(body);
  const d = outcome(s);
  await until(() => conn.frames.filter((f) => f.type === 'DATA').length === 1);
  await new Promise((r) => setTimeout(r, 20));
  t.equal(conn.frames.filter((f) => f.type === 'DATA').reduce((n, f) => n + f.data!.length, 0), 10, 'held at the stream window');
  conn.w.windowUpdate(1, 6);
  conn.send();
  await until(() => conn.frames.filter((f) => f.type === 'DATA').reduce((n, f) => n + f.data!.length, 0) === 16);
  conn.settings([Setting.INITIAL_WINDOW_SIZE, 1000]);
  await conn.waitFor((f) => f.type === 'DATA' && f.end === true);
  t.equal(Buffer.concat(conn.frames.filter((f) => f.type === 'DATA').map((f) => f.data!)).toString(), body.toString());
  conn.headers(1, [':status', '200'], true);
  await d;
  // The connection window: 65,535 - 36 left; a 70,000-byte body waits for a connection WINDOW_UPDATE.
  conn.settings([Setting.INITIAL_WINDOW_SIZE, 1_000_000]);
  const s2 = c.request({ ...GET, ':method': 'POST' });
  s2.end(Buffer.alloc(70_000, 1));
  const d2 = outcome(s2);
  await until(() => conn.frames.filter((f) => f.type === 'DATA' && f.id === 3).reduce((n, f) => n + f.data!.length, 0) === 65_535 - 36);
  conn.w.windowUpdate(0, 100_000);
  conn.send();
  await conn.waitFor((f) => f.type === 'DATA' && f.id === 3 && f.end === true);
  t.equal(conn.frames.filter((f) => f.type === 'DATA' && f.id === 3).reduce((n, f) => n + f.data!.length, 0), 70_000);
  conn.headers(3, [':status', '200'], true);
  await d2;
  // A window overflow through SETTINGS is a connection FLOW_CONTROL_ERROR.
  const s3 = c.request({ ...GET, ':method': 'POST' });
  const d3 = outcome(s3);
  await conn.request(5);
  conn.w.windowUpdate(5, 0x7fffffff - 1_000_000);
  conn.send();
  await new Promise((r) => setTimeout(r, 10));
  conn.settings([Setting.INITIAL_WINDOW_SIZE, 2_000_000]);
  const g = await conn.waitFor((f) => f.type === 'GOAWAY');
  t.equal(g.code, ErrorCode.FLOW_CONTROL_ERROR);
  await d3;
});

t.test('a reset while the upload waits for window; abort of a pending stream', async (t) => {
  const { c, conn } = await pair(t, [Setting.INITIAL_WINDOW_SIZE, 5]);
  const s = c.request({ ...GET, ':method': 'POST' });
  let cbErr: unknown = 'not called';
  s.write(Buffer.alloc(100), (e) => (cbErr = e));
  const d = outcome(s);
  await conn.request(1);
  conn.w.rstStream(1, ErrorCode.REFUSED_STREAM);
  conn.send();
  const o = await d;
  t.equal(o.rstCode, ErrorCode.REFUSED_STREAM);
  t.not(cbErr, 'not called', 'the waiting write completed');
  t.equal(s.bufferSize, 0);
});

t.test('the session closes gracefully after a GOAWAY once its last stream ends; destroy() sends GOAWAY', async (t) => {
  const { c, conn } = await pair(t);
  const d = outcome(c.request(GET, { endStream: true }));
  await conn.request(1);
  c.close();
  const g = await conn.waitFor((f) => f.type === 'GOAWAY');
  t.equal(g.code, ErrorCode.NO_ERROR);
  conn.headers(1, [':status', '200'], true);
  await d;
  await sessionClosed(c);
  await until(() => conn.closed);
  const p2 = await pair(t);
  p2.c.destroy(new Error('boom'));
  const g2 = await p2.conn.waitFor((f) => f.type === 'GOAWAY');
  t.equal(g2.code, ErrorCode.INTERNAL_ERROR);
  t.equal(p2.errors[0]?.message, 'boom');
  const p3 = await pair(t);
  p3.c.destroy(ErrorCode.ENHANCE_YOUR_CALM);
  const g3 = await p3.conn.waitFor((f) => f.type === 'GOAWAY');
  t.equal(g3.code, ErrorCode.ENHANCE_YOUR_CALM);
  t.equal(p3.errors[0]?.code, 'ERR_HTTP2_SESSION_ERROR');
});

t.test('after a connection error the client reads on until the server closes (no RST that loses the GOAWAY)', async (t) => {
  // Found by client-fuzz.test.ts: the client destroyed its socket right after end() with the
  // server's bytes still coming, so its kernel reset the connection; the server's next write
  // failed (EPIPE) and destroyed its socket before it had read our GOAWAY: the code was lost.
  // Now the socket stays open, reading and dropping, until the server closes its side.
  const { c, conn } = await pair(t);
  const done = outcome(c.request(GET, { endStream: true }));
  await conn.request(1);
  // The server is busy writing: it reads (our GOAWAY, our FIN) only at the end.
  conn.socket.pause();
  const resets: string[] = [];
  conn.socket.on('error', (e: NodeJS.ErrnoException) => resets.push(String(e.code)));
  conn.headers(1, [':status', '200'], false);
  conn.w.frame(FrameType.PING, 0, 0, Buffer.alloc(7)); // FRAME_SIZE_ERROR
  conn.send();
  const o = await done;
  t.equal(o.error?.code, 'ERR_H2_PROTOCOL');
  await sessionClosed(c);
  for (let i = 0; i < 20 && !conn.socket.destroyed; i++) {
    conn.w.frame(0xee, 0, 0, Buffer.alloc(1000));
    conn.send();
    await new Promise((r) => setTimeout(r, 2));
  }
  t.same(resets, [], 'the server saw no reset');
  conn.socket.resume();
  const g = await conn.waitFor((f) => f.type === 'GOAWAY');
  t.equal(g.code, ErrorCode.FRAME_SIZE_ERROR);
  await until(() => conn.closed && c.socket.destroyed);
});
