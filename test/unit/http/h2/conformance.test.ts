/**
 * HTTP/2 conformance of meshlet's own server layer (src/http/h2/) on a raw socket, h2spec-style:
 * frames node's client never sends (padding, CONTINUATION, PRIORITY, bad stream ids, window
 * overflows, malformed requests) and the error each must get: GOAWAY with the code for a
 * connection error, RST_STREAM with the code for a stream error (RFC 9113).
 */
import t from 'tap';
import { CLIENT_PREFACE, encodeFrame, ErrorCode, Flags, FrameType, Setting } from '../../../../src/http/h2/frames';
import type { H2Stream } from '../../../../src/http/h2/session';
import { GET, POST, RawClient, startServer, until, type TestServer } from './lib';

const { PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, REFUSED_STREAM, COMPRESSION_ERROR, FRAME_SIZE_ERROR, ENHANCE_YOUR_CALM } = ErrorCode;

let srv: TestServer;
const seen: { stream: H2Stream; headers: Record<string, unknown>; body: string; trailers?: Record<string, unknown> }[] = [];

t.before(async () => {
  srv = await startServer(
    (stream, headers) => {
      const rec: (typeof seen)[number] = { stream, headers: headers as Record<string, unknown>, body: '' };
      seen.push(rec);
      stream.on('error', () => undefined);
      stream.on('trailers', (tr: Record<string, unknown>) => (rec.trailers = tr));
      if (headers[':path'] === '/hold') return;
      if (headers[':method'] === 'CONNECT') {
        stream.respond({ ':status': 200 });
        return;
      }
      stream.setEncoding('latin1');
      stream.on('data', (d: string) => (rec.body += d));
      stream.on('end', () => {
        if (stream.closed) return;
        stream.respond({ ':status': 200 });
        stream.end(`echo:${rec.body}`);
      });
    },
    { maxHeaderListPairs: 64, settings: { maxHeaderListSize: 8192, maxConcurrentStreams: 3, initialWindowSize: 65_535, enableConnectProtocol: false }, connectionWindowSize: 100_000 },
  );
});
t.teardown(() => srv.close());

async function client(t: { teardown(fn: () => unknown): void }): Promise<RawClient> {
  const c = await RawClient.connect(srv.port);
  t.teardown(() => c.close());
  return c;
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

t.test('SETTINGS exchange, PING answered, unknown frames and PRIORITY ignored', async (t) => {
  const c = await client(t);
  const settings = await c.waitFor((f) => f.type === 'SETTINGS' && f.ack === false);
  t.same(settings.params, [Setting.MAX_CONCURRENT_STREAMS, 3, Setting.INITIAL_WINDOW_SIZE, 65_535, Setting.MAX_HEADER_LIST_SIZE, 8192]);
  await c.waitFor((f) => f.type === 'SETTINGS' && f.ack === true);
  const wu = await c.waitFor((f) => f.type === 'WINDOW_UPDATE' && f.id === 0);
  t.equal(wu.increment, 100_000 - 65_535, 'the connection window raised at once');
  c.raw(encodeFrame(0x42, 0xff, 0, Buffer.from('unknown frame type')));
  c.w.priority(1, 0, true, 200);
  c.w.priority(9, 1, false, 1);
  c.w.ping(Buffer.from('12345678'), false);
  c.w.ping(Buffer.from('ackackac'), true); // an ACK is not answered
  c.w.settingsAck();
  c.send();
  const ping = await c.waitFor((f) => f.type === 'PING');
  t.equal(ping.ack, true);
  t.equal(ping.data!.toString(), '12345678');
  c.request(1, GET('/after-priority'), true);
  await c.response(1);
  t.equal(c.body(1), 'echo:');
  t.equal(c.frames.filter((f) => f.type === 'PING').length, 1);
  t.notOk(c.frames.some((f) => f.type === 'GOAWAY'));
});

t.test('padding on HEADERS and DATA; CONTINUATION; HEADERS priority fields ignored', async (t) => {
  const c = await client(t);
  const block = c.enc.encode([...POST('/padded'), 'x-long', 'v'.repeat(300)]);
  // HEADERS: padded, with priority, the block split over two CONTINUATIONs.
  const first = Buffer.concat([Buffer.from([7]), u32(0), Buffer.from([42]), block.subarray(0, 100), Buffer.alloc(7)]);
  c.raw(encodeFrame(FrameType.HEADERS, Flags.PADDED | Flags.PRIORITY, 1, first));
  c.raw(encodeFrame(FrameType.CONTINUATION, 0, 1, block.subarray(100, 200)));
  c.raw(encodeFrame(FrameType.CONTINUATION, Flags.END_HEADERS, 1, block.subarray(200)));
  c.w.paddedData(1, Buffer.from('abc'), 200, false);
  c.w.paddedData(1, Buffer.from('def'), 0, true);
  c.send();
  await c.response(1);
  await until(() => c.ended(1));
  t.equal(c.body(1), 'echo:abcdef');
  const rec = seen.find((s) => s.headers[':path'] === '/padded');
  t.equal(rec?.headers['x-long'], 'v'.repeat(300));
});

t.test('request trailers; trailers without END_STREAM or with a pseudo-header are malformed', async (t) => {
  const c = await client(t);
  c.request(1, POST('/tr'), false);
  c.w.data(1, Buffer.from('body'), false);
  c.w.headers(1, c.enc.encode(['x-checksum', 'abc']), true);
  c.send();
  await until(() => c.ended(1));
  t.equal(c.body(1), 'echo:body');
  t.same(seen.find((s) => s.headers[':path'] === '/tr')?.trailers, { 'x-checksum': 'abc' });

  c.request(3, POST('/tr2'), false);
  c.w.headers(3, c.enc.encode(['x-t', '1']), false);
  c.send();
  t.equal((await c.rst(3)).code, PROTOCOL_ERROR, 'trailers must end the stream');
  c.request(5, POST('/tr3'), false);
  c.w.headers(5, c.enc.encode([':status', '200']), true);
  c.send();
  t.equal((await c.rst(5)).code, PROTOCOL_ERROR, 'no pseudo-header in trailers');
  c.request(7, GET('/tr4'), true);
  await c.response(7);
  c.w.headers(7, c.enc.encode(['x', 'y']), true);
  c.send();
  // Stream 7 is closed by now (both ends): HEADERS on it is a connection error.
  t.equal((await c.goaway()).code, PROTOCOL_ERROR);
});

t.test('malformed requests: RST_STREAM PROTOCOL_ERROR, the connection goes on', async (t) => {
  const c = await client(t);
  const bad: [string, string[]][] = [
    ['upper-case name', [...GET(), 'X-Upper', '1']],
    ['connection header', [...GET(), 'connection', 'keep-alive']],
    ['transfer-encoding', [...GET(), 'transfer-encoding', 'chunked']],
    ['te gzip', [...GET(), 'te', 'gzip']],
    ['no :path', [':method', 'GET', ':scheme', 'http', ':authority', 'a']],
    ['empty :path', [':method', 'GET', ':scheme', 'http', ':path', '', ':authority', 'a']],
    ['no :method', [':scheme', 'http', ':path', '/', ':authority', 'a']],
    ['relative :path', [':method', 'GET', ':scheme', 'http', ':path', 'x', ':authority', 'a']],
    ['pseudo after regular', ['x-a', '1', ...GET()]],
    ['unknown pseudo', [...GET(), ':foo', 'bar']],
    [':status in a request', [...GET(), ':status', '200']],
    ['duplicate :path', [...GET(), ':path', '/again']],
    ['duplicate :method', [':method', 'GET', ...GET()]],
    ['duplicate :scheme', [':scheme', 'http', ...GET()]],
    ['duplicate :authority', [':authority', 'x', ...GET()]],
    [':protocol not enabled', [':method', 'CONNECT', ':protocol', 'websocket', ':scheme', 'http', ':path', '/', ':authority', 'a']],
    ['CONNECT with :path', [':method', 'CONNECT', ':authority', 'a:443', ':path', '/']],
    ['CONNECT without :authority', [':method', 'CONNECT']],
    ['value with CR LF', [...GET(), 'x-a', 'a\r\nb']],
    ['value with leading space', [...GET(), 'x-a', ' a']],
    ['value with trailing tab', [...GET(), 'x-a', 'a\t']],
    ['invalid name char', [...GET(), 'x(a)', '1']],
    ['content-length not a number', [...GET(), 'content-length', 'abc']],
    ['content-length with END_STREAM', [...POST(), 'content-length', '5']],
  ];
  let id = 1;
  for (const [name, fields] of bad) {
    c.request(id, fields, true);
    t.equal((await c.rst(id)).code, PROTOCOL_ERROR, name);
    id += 2;
  }
  c.request(id, [':method', 'CONNECT', ':authority', 'example.com:443'], false);
  await c.response(id);
  c.w.rstStream(id, ErrorCode.CANCEL);
  c.send();
  id += 2;
  c.request(id, [':method', 'OPTIONS', ':scheme', 'http', ':path', '*', ':authority', 'a'], true);
  await c.response(id);
  t.notOk(c.frames.some((f) => f.type === 'GOAWAY'), 'no connection error');
});

t.test('content-length must match the body', async (t) => {
  const c = await client(t);
  c.request(1, [...POST(), 'content-length', '3'], false);
  c.w.data(1, Buffer.from('abcd'), true);
  c.send();
  t.equal((await c.rst(1)).code, PROTOCOL_ERROR, 'longer than announced');
  c.request(3, [...POST(), 'content-length', '3'], false);
  c.w.data(3, Buffer.from('ab'), true);
  c.send();
  t.equal((await c.rst(3)).code, PROTOCOL_ERROR, 'shorter than announced');
  c.request(5, [...POST(), 'content-length', '3'], false);
  c.w.data(5, Buffer.from('ab'), false);
  c.w.headers(5, c.enc.encode(['x', 'y']), true);
  c.send();
  t.equal((await c.rst(5)).code, PROTOCOL_ERROR, 'trailers before the announced length');
  c.request(7, [...POST(), 'content-length', '3'], false);
  c.w.data(7, Buffer.from('abc'), true);
  c.send();
  await until(() => c.ended(7));
  t.equal(c.body(7), 'echo:abc');
});

t.test('stream ids: even, decreasing → GOAWAY PROTOCOL_ERROR', async (t) => {
  const even = await client(t);
  even.request(2, GET(), true);
  t.equal((await even.goaway()).code, PROTOCOL_ERROR);
  await until(() => even.closed, 3000, 'the server closes the connection');

  const dec = await client(t);
  dec.request(5, GET(), true);
  await dec.response(5);
  dec.request(3, GET(), true);
  const g = await dec.goaway();
  t.equal(g.code, PROTOCOL_ERROR);
  t.equal(g.last, 5, 'GOAWAY names the last stream processed');
});

t.test('frames on idle streams are connection errors; on closed streams STREAM_CLOSED', async (t) => {
  for (const [name, frame] of [
    ['DATA', encodeFrame(FrameType.DATA, 0, 11, Buffer.from('x'))],
    ['RST_STREAM', encodeFrame(FrameType.RST_STREAM, 0, 11, u32(8))],
    ['WINDOW_UPDATE', encodeFrame(FrameType.WINDOW_UPDATE, 0, 11, u32(1))],
  ] as const) {
    const c = await client(t);
    c.raw(frame);
    t.equal((await c.goaway()).code, PROTOCOL_ERROR, `${name} on an idle stream`);
  }
  const c = await client(t);
  c.request(1, GET(), true);
  await until(() => c.ended(1));
  c.w.data(1, Buffer.from('late'), true);
  c.send();
  t.equal((await c.rst(1)).code, STREAM_CLOSED, 'DATA on a closed stream');
  c.request(3, POST('/hold'), false);
  c.w.data(3, Buffer.from('x'), true);
  c.w.data(3, Buffer.from('y'), false);
  c.send();
  t.equal((await c.rst(3)).code, STREAM_CLOSED, 'DATA after END_STREAM (half-closed remote)');
  c.request(5, POST('/hold'), true);
  c.w.headers(5, c.enc.encode(['x', 'y']), true);
  c.send();
  t.equal((await c.rst(5)).code, STREAM_CLOSED, 'HEADERS after END_STREAM');
  c.w.windowUpdate(1, 100); // a closed stream: ignored
  c.w.rstStream(1, 0); // ignored
  c.send();
  c.request(7, GET(), true);
  await c.response(7);
  t.notOk(c.frames.some((f) => f.type === 'GOAWAY'));
});

t.test('flow control: peers exceeding our windows; window overflows', async (t) => {
  const s = await client(t);
  s.request(1, POST('/hold'), false);
  for (let i = 0; i < 4; i++) s.w.data(1, Buffer.alloc(16_384), false);
  s.w.data(1, Buffer.alloc(100), false); // 65,636 > 65,535
  s.send();
  t.equal((await s.rst(1)).code, FLOW_CONTROL_ERROR, 'over the stream window: RST_STREAM');

  const conn = await client(t);
  const payload = Buffer.alloc(16_384);
  let id = 1;
  for (let sent = 0; sent <= 100_000; id += 2) {
    conn.request(id, POST('/hold'), false);
    for (let i = 0; i < 3 && sent <= 100_000; i++, sent += payload.length) conn.w.data(id, payload, false);
    conn.send();
    if (id === 5) break;
  }
  conn.w.data(id, payload, false);
  conn.w.data(id, payload, false);
  conn.send();
  t.equal((await conn.goaway()).code, FLOW_CONTROL_ERROR, 'over the connection window: GOAWAY');

  const wo = await client(t);
  wo.request(1, POST('/hold'), false);
  wo.w.windowUpdate(1, 2 ** 31 - 1);
  wo.send();
  t.equal((await wo.rst(1)).code, FLOW_CONTROL_ERROR, 'stream window over 2^31-1');
  wo.w.windowUpdate(0, 2 ** 31 - 1);
  wo.send();
  t.equal((await wo.goaway()).code, FLOW_CONTROL_ERROR, 'connection window over 2^31-1');

  const so = await client(t);
  so.request(1, POST('/hold'), false);
  so.w.windowUpdate(1, 2 ** 31 - 65_536);
  so.w.settings([Setting.INITIAL_WINDOW_SIZE, 70_000]);
  so.send();
  t.equal((await so.goaway()).code, FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE overflowing an open stream');
});

t.test('our DATA waits for the peer window; SETTINGS and WINDOW_UPDATE release it; max frame size honoured', async (t) => {
  const c = await RawClient.connect(srv.port, false);
  t.teardown(() => c.close());
  c.w.settings([Setting.INITIAL_WINDOW_SIZE, 10, Setting.MAX_FRAME_SIZE, 20_000, Setting.HEADER_TABLE_SIZE, 0, Setting.ENABLE_PUSH, 0, Setting.MAX_CONCURRENT_STREAMS, 10, Setting.MAX_HEADER_LIST_SIZE, 1000, Setting.ENABLE_CONNECT_PROTOCOL, 0, 0x99, 1]);
  c.raw(Buffer.concat([CLIENT_PREFACE, ...c.w.take()]));
  const body = 'z'.repeat(70_000);
  c.request(1, [...POST(), 'content-length', String(body.length)], false);
  c.w.data(1, Buffer.from(body.slice(0, 16_384)), false);
  c.w.data(1, Buffer.from(body.slice(16_384, 32_768)), false);
  c.w.data(1, Buffer.from(body.slice(32_768, 49_152)), false);
  c.send();
  // Our credit comes back as the application reads (batched at half the window).
  const credit = await c.waitFor((f) => f.type === 'WINDOW_UPDATE' && f.id === 1);
  t.ok(credit.increment! >= 32_768);
  c.w.data(1, Buffer.from(body.slice(49_152, 65_536)), false);
  c.w.data(1, Buffer.from(body.slice(65_536)), true);
  c.send();
  await c.response(1);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(c.body(1).length, 10, 'ten bytes: the stream window');
  c.w.settings([Setting.INITIAL_WINDOW_SIZE, 30]);
  c.send();
  await until(() => c.body(1).length === 30);
  c.w.windowUpdate(1, 100_000);
  c.send();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(c.body(1).length, 65_535, 'then the connection window (65,535) holds it back');
  c.w.windowUpdate(0, 100_000);
  c.send();
  await until(() => c.ended(1));
  t.equal(c.body(1), `echo:${body}`);
  t.ok(c.frames.filter((f) => f.type === 'DATA').every((f) => f.data!.length <= 20_000), 'DATA frames within the peer max frame size');
});

t.test('max concurrent streams: REFUSED_STREAM; a freed slot takes a new stream', async (t) => {
  const c = await client(t);
  for (const id of [1, 3, 5]) c.request(id, POST('/hold'), false);
  c.request(7, GET(), true);
  t.equal((await c.rst(7)).code, REFUSED_STREAM);
  c.w.rstStream(1, ErrorCode.CANCEL);
  c.send();
  c.request(9, GET(), true);
  await c.response(9);
  t.pass('answered once a stream was reset');
});

t.test('HPACK errors, oversized header blocks, self-dependency', async (t) => {
  const h = await client(t);
  h.raw(encodeFrame(FrameType.HEADERS, Flags.END_HEADERS | Flags.END_STREAM, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff])));
  t.equal((await h.goaway()).code, COMPRESSION_ERROR);

  const big = await client(t);
  big.raw(encodeFrame(FrameType.HEADERS, 0, 1, Buffer.alloc(16_000, 0x80)));
  big.raw(encodeFrame(FrameType.CONTINUATION, 0, 1, Buffer.alloc(16_000, 0x80)));
  t.equal((await big.goaway()).code, ENHANCE_YOUR_CALM, 'a header block over the cap');

  const inter = await client(t);
  inter.raw(encodeFrame(FrameType.HEADERS, 0, 1, inter.enc.encode(GET())));
  inter.raw(encodeFrame(FrameType.DATA, 0, 1, Buffer.from('x')));
  t.equal((await inter.goaway()).code, PROTOCOL_ERROR, 'DATA inside a header block');

  const self = await client(t);
  self.raw(encodeFrame(FrameType.HEADERS, Flags.END_HEADERS | Flags.END_STREAM | Flags.PRIORITY, 1, Buffer.concat([u32(1), Buffer.from([1]), self.enc.encode(GET())])));
  t.equal((await self.rst(1)).code, PROTOCOL_ERROR, 'HEADERS depending on itself');
  self.raw(encodeFrame(FrameType.PRIORITY, 0, 3, Buffer.concat([u32(3), Buffer.from([1])])));
  t.equal((await self.rst(3)).code, PROTOCOL_ERROR, 'PRIORITY depending on itself');
  self.raw(encodeFrame(FrameType.PRIORITY, 0, 5, Buffer.alloc(4)));
  t.equal((await self.rst(5)).code, FRAME_SIZE_ERROR, 'PRIORITY of the wrong size');
  self.request(7, POST('/hold'), false);
  self.raw(encodeFrame(FrameType.WINDOW_UPDATE, 0, 7, u32(0)));
  t.equal((await self.rst(7)).code, PROTOCOL_ERROR, 'zero WINDOW_UPDATE on a stream');
});

t.test('preface and first frame; GOAWAY from the client', async (t) => {
  const bad = await RawClient.connect(srv.port, false);
  t.teardown(() => bad.close());
  bad.raw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  t.equal((await bad.goaway()).code, PROTOCOL_ERROR, 'not the client preface');

  const noSettings = await RawClient.connect(srv.port, false);
  t.teardown(() => noSettings.close());
  noSettings.raw(Buffer.concat([CLIENT_PREFACE, encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8))]));
  t.equal((await noSettings.goaway()).code, PROTOCOL_ERROR, 'the preface must be followed by SETTINGS');

  const graceful = await client(t);
  graceful.request(1, POST('/hold'), false);
  await until(() => srv.streams.size > 0 && [...srv.streams].some((s) => s.id === 1));
  const before = srv.sessions.size;
  graceful.w.goaway(0, ErrorCode.NO_ERROR);
  graceful.send();
  const g = await graceful.goaway();
  t.equal(g.code, ErrorCode.NO_ERROR, 'answered with our GOAWAY');
  graceful.request(3, GET(), true);
  t.equal((await graceful.rst(3)).code, REFUSED_STREAM, 'no new stream after GOAWAY');
  graceful.w.data(1, Buffer.from('last'), true);
  graceful.send();
  const held = seen.find((r) => r.stream.id === 1 && r.headers[':path'] === '/hold' && !r.stream.closed && !r.stream.destroyed)!.stream;
  held.respond({ ':status': 200 });
  held.end('bye');
  await until(() => graceful.closed, 3000, 'the session ends when its stream is done');
  t.ok(srv.sessions.size < before);

  const hard = await client(t);
  hard.request(1, POST('/hold'), false);
  await until(() => [...srv.streams].some((s) => s.id === 1 && !s.closed));
  hard.w.goaway(0, ErrorCode.INTERNAL_ERROR);
  hard.send();
  await until(() => hard.closed, 3000, 'a GOAWAY with an error destroys the session');
});

t.test('a stream closed on the wire with its body unread is destroyed with the session', async (t) => {
  const c = await client(t);
  c.request(1, POST('/hold'), false);
  await until(() => seen.some((r) => r.headers[':path'] === '/hold' && r.stream.id === 1 && !r.stream.destroyed));
  const held = seen.filter((r) => r.headers[':path'] === '/hold' && r.stream.id === 1).pop()!.stream;
  held.pause();
  c.w.data(1, Buffer.from('unread body'), true);
  c.send();
  await until(() => held.readableLength > 0);
  held.respond({ ':status': 200 });
  held.end();
  await until(() => held.closed);
  t.equal(held.destroyed, false, 'closed, waiting for its body to be read');
  c.close();
  await until(() => held.destroyed, 3000, 'destroyed with the session');
});

t.test('nothing left behind', async (t) => {
  await until(() => srv.sessions.size === 0 && srv.streams.size === 0, 5000, 'sessions and streams closed');
  t.pass();
});

t.test('after a connection error the server reads on until the client closes (no RST that loses the GOAWAY)', async (t) => {
  // The server's twin of the client's lingering close (found by client-fuzz.test.ts): destroying
  // the socket right after end() with the client's bytes still coming made the kernel reset the
  // connection, and a client busy writing then lost the GOAWAY and its code unread.
  const c = await client(t);
  await c.waitFor((f) => f.type === 'SETTINGS' && f.ack === true);
  // The client is busy writing: it reads (the GOAWAY, the FIN) only at the end.
  c.socket.pause();
  const resets: string[] = [];
  c.socket.on('error', (e: NodeJS.ErrnoException) => resets.push(String(e.code)));
  c.raw(encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(7))); // FRAME_SIZE_ERROR
  await until(() => srv.sessions.size === 0, 3000, 'the session closed');
  for (let i = 0; i < 20 && !c.socket.destroyed; i++) {
    c.raw(encodeFrame(0xee, 0, 0, Buffer.alloc(1000)));
    await new Promise((r) => setTimeout(r, 2));
  }
  t.same(resets, [], 'the client saw no reset');
  c.socket.resume();
  t.equal((await c.goaway()).code, FRAME_SIZE_ERROR);
  c.socket.end();
  await until(() => c.closed, 3000, 'the connection closed once the client closed its side');
});
