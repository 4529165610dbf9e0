/**
 * meshlet's own HTTP/2 server (src/http/h2/session.ts, stream.ts) against node:http2's client
 * (nghttp2): requests with and without bodies, bodies over 1 MiB both ways with slow readers
 * (flow control), trailers both ways, 100-continue, many concurrent streams, resets by the
 * client mid-body, GOAWAY both ways, PING, SETTINGS changed mid-connection, extended CONNECT,
 * the header object as node builds it, node's refusals on respond(), and src/http/h2-server.ts
 * (serveStream, H2Request, H2Response) running unchanged on these streams.
 */
import * as http2 from 'node:http2';
import t from 'tap';
import { serveStream, filterBody, type H2Request, type H2Response } from '../../../../src/http/h2-server';
import { H2Error, type H2Stream } from '../../../../src/http/h2/session';
import { DEFAULT_OPTS, GET, RawClient, startServer, until, type TestServer } from './lib';

type Handler = (stream: H2Stream, headers: http2.IncomingHttpHeaders, flags: number, raw: string[]) => void;

async function withServer(t: { teardown(fn: () => unknown): void }, handler: Handler, opts = DEFAULT_OPTS): Promise<{ srv: TestServer; client: http2.ClientHttp2Session }> {
  const srv = await startServer(handler, opts);
  const client = http2.connect(`http://127.0.0.1:${srv.port}`);
  client.on('error', () => undefined);
  t.teardown(async () => {
    client.destroy();
    await srv.close();
  });
  await new Promise<void>((r) => client.once('remoteSettings', () => r()));
  return { srv, client };
}

interface Reply {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  trailers?: http2.IncomingHttpHeaders;
  rstCode?: number;
  error?: string;
}

function request(client: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer | string, opts: { trailers?: http2.OutgoingHttpHeaders } = {}): Promise<Reply> {
  return new Promise((resolve) => {
    const r = client.request(headers, { endStream: body === undefined && !opts.trailers, waitForTrailers: opts.trailers !== undefined });
    const reply: Reply = { status: 0, headers: {}, body: Buffer.alloc(0) };
    const chunks: Buffer[] = [];
    r.on('response', (h) => {
      reply.status = Number(h[':status']);
      reply.headers = h;
    });
    r.on('trailers', (tr) => (reply.trailers = tr));
    r.on('data', (c: Buffer) => chunks.push(c));
    r.on('error', (e: Error & { code?: string }) => (reply.error = e.code));
    if (opts.trailers) r.on('wantTrailers', () => r.sendTrailers(opts.trailers!));
    r.on('close', () => {
      reply.body = Buffer.concat(chunks);
      reply.rstCode = r.rstCode;
      resolve(reply);
    });
    if (body !== undefined) r.end(body);
    else if (opts.trailers) r.end();
  });
}

function readAll(stream: H2Stream): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
  });
}

t.test('GET: header object and raw list as node builds them; Date added; flags', async (t) => {
  let seen: { headers: http2.IncomingHttpHeaders; raw: string[]; flags: number; end: boolean; head: boolean } | undefined;
  const { client } = await withServer(t, (stream, headers, flags, raw) => {
    seen = { headers, raw, flags, end: stream.endAfterHeaders, head: stream.headRequest };
    stream.respond({ ':status': 200, 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'], 'x-n': 5 });
    stream.end('hi');
  });
  const r = await request(client, { ':path': '/x?y=1', cookie: ['a=1', 'b=2'], 'x-dup': ['1', '2'], 'user-agent': 'test' });
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'hi');
  t.same(r.headers['set-cookie'], ['a=1', 'b=2']);
  t.equal(r.headers['x-n'], '5');
  t.match(r.headers.date, /GMT$/);
  t.ok(seen);
  t.equal(seen!.headers[':method'], 'GET');
  t.equal(seen!.headers[':path'], '/x?y=1');
  t.equal(seen!.headers.cookie, 'a=1; b=2', 'cookies joined with "; "');
  t.equal(seen!.headers['x-dup'], '1, 2', 'duplicates joined with ", "');
  t.equal(Object.getPrototypeOf(seen!.headers), null, 'a null-prototype object, as node');
  t.ok(seen!.raw.includes(':method'));
  t.ok(seen!.raw.includes('x-dup'));
  t.equal(seen!.flags, 5, 'END_STREAM | END_HEADERS');
  t.equal(seen!.end, true);
  t.equal(seen!.head, false);
});

t.test('fields named like inherited properties (constructor, __proto__, toString) are own fields of a null-prototype object, in heads and trailers', async (t) => {
  let head: http2.IncomingHttpHeaders | undefined;
  let trailers: http2.IncomingHttpHeaders | undefined;
  const { client } = await withServer(t, (stream, headers) => {
    head = headers;
    stream.on('trailers', (tr: http2.IncomingHttpHeaders) => (trailers = tr));
    readAll(stream).then((b) => {
      stream.respond({ ':status': 200 });
      stream.end(b);
    });
  });
  const r = await request(client, { ':method': 'POST', ':path': '/', constructor: 'c', ['__proto__' as string]: 'p', tostring: 't', 'x-a': ['1', '2'] }, 'body', { trailers: { constructor: 'tc', ['__proto__' as string]: 'tp', 'x-t': '1' } as http2.OutgoingHttpHeaders });
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'body');
  t.ok(head);
  t.equal(Object.getPrototypeOf(head!), null, 'a null-prototype object');
  t.equal(head!.constructor, 'c', 'constructor: the field, not an inherited function');
  t.equal(Object.getOwnPropertyDescriptor(head!, '__proto__')?.value, 'p', '__proto__: an own field');
  t.equal(head!.tostring, 't');
  t.equal(head!['x-a'], '1, 2', 'a repeated field joined');
  t.ok(trailers);
  t.equal(Object.getPrototypeOf(trailers!), null);
  t.equal(trailers!.constructor, 'tc');
  t.equal(Object.getOwnPropertyDescriptor(trailers!, '__proto__')?.value, 'tp');
  t.equal(trailers!['x-t'], '1');
});

t.test('POST bodies echoed: empty, small, and 3 MiB both ways with slow readers (flow control)', async (t) => {
  let paused: H2Stream | undefined;
  const { srv, client } = await withServer(t, (stream, headers) => {
    if (headers[':path'] === '/slow') {
      // Does not read for a while: the credit is held, the client stalls within the window.
      paused = stream;
      stream.pause();
      setTimeout(() => {
        readAll(stream).then((b) => {
          stream.respond({ ':status': 200 });
          stream.end(String(b.length));
        });
        stream.resume();
      }, 300);
      return;
    }
    stream.respond({ ':status': 200 });
    stream.pipe(stream);
  });
  t.equal((await request(client, { ':path': '/', ':method': 'POST' }, '')).body.length, 0);
  t.equal((await request(client, { ':path': '/', ':method': 'POST' }, 'hello')).body.toString(), 'hello');

  const big = Buffer.alloc(3 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = i % 251;
  const echo = await request(client, { ':path': '/', ':method': 'POST' }, big);
  t.equal(echo.body.length, big.length);
  t.ok(echo.body.equals(big), '3 MiB echoed intact');

  const slow = request(client, { ':path': '/slow', ':method': 'POST' }, big);
  await until(() => paused !== undefined && paused.readableLength > 0);
  await new Promise((r) => setTimeout(r, 150));
  t.ok(paused!.readableLength <= 1024 * 1024 + 65_536, `a paused reader buffers at most about its window (${paused!.readableLength})`);
  const r = await slow;
  t.equal(r.body.toString(), String(big.length), 'all of it arrives once the reader resumes');

  // A slow client reader: the server's writes wait for the window ('drain').
  let drains = 0;
  let writesFalse = 0;
  const srv2 = srv;
  t.ok(srv2.sessions.size > 0);
  const { client: c2 } = await withServer(t, (stream) => {
    stream.respond({ ':status': 200 });
    let left = 40;
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const pump = (): void => {
      while (left > 0) {
        left--;
        if (!stream.write(chunk)) {
          writesFalse++;
          stream.once('drain', () => {
            drains++;
            pump();
          });
          return;
        }
      }
      stream.end();
    };
    pump();
  });
  const got = await new Promise<number>((resolve) => {
    const req = c2.request({ ':path': '/' });
    req.end();
    let n = 0;
    req.pause();
    setTimeout(() => {
      req.on('data', (c: Buffer) => (n += c.length));
      req.resume();
    }, 200);
    req.on('end', () => resolve(n));
  });
  t.equal(got, 40 * 64 * 1024, '2.5 MiB reached a slow client reader');
  t.ok(writesFalse > 0 && drains === writesFalse, `write() returned false (${writesFalse}) and 'drain' followed each time`);
});

t.test('trailers both ways; empty trailers end with an empty DATA frame', async (t) => {
  let reqTrailers: http2.IncomingHttpHeaders | undefined;
  const { client } = await withServer(t, (stream, headers) => {
    stream.on('trailers', (tr: http2.IncomingHttpHeaders) => (reqTrailers = tr));
    readAll(stream).then(() => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      t.throws(() => stream.sendTrailers({ 'x-early': '1' }), { code: 'ERR_HTTP2_TRAILERS_NOT_READY' });
      stream.on('wantTrailers', () => {
        if (headers[':path'] === '/empty') stream.sendTrailers({});
        else {
          t.throws(() => stream.sendTrailers({ ':status': '200' }), { code: 'ERR_HTTP2_INVALID_PSEUDOHEADER' });
          stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' });
          t.throws(() => stream.sendTrailers({ 'x-again': '1' }), { code: 'ERR_HTTP2_TRAILERS_ALREADY_SENT' });
        }
      });
      stream.end('body');
    });
  });
  const r = await request(client, { ':path': '/', ':method': 'POST' }, undefined, { trailers: { 'x-req-trailer': 'yes' } });
  t.equal(r.body.toString(), 'body');
  t.equal(r.trailers?.['grpc-status'], '0');
  t.equal(r.trailers?.['grpc-message'], 'ok');
  t.equal(reqTrailers?.['x-req-trailer'], 'yes', "the request's trailers reached the server ('trailers' event)");
  const e = await request(client, { ':path': '/empty', ':method': 'POST' }, 'x');
  t.equal(e.body.toString(), 'body');
  t.equal(e.trailers, undefined, 'no trailer block for an empty set');
  t.equal(e.rstCode, 0);
});

t.test('100-continue through additionalHeaders; refusals as node throws them', async (t) => {
  const { client } = await withServer(t, (stream, headers) => {
    if (headers.expect === '100-continue') stream.additionalHeaders({ ':status': 100 });
    t.throws(() => stream.additionalHeaders({ ':status': 200 }), { code: 'ERR_HTTP2_INVALID_INFO_STATUS' });
    t.throws(() => stream.additionalHeaders({ ':status': 101 }), { code: 'ERR_HTTP2_STATUS_101' });
    t.throws(() => stream.respond({ ':status': 200, connection: 'close' }), { code: 'ERR_HTTP2_INVALID_CONNECTION_HEADERS' });
    t.throws(() => stream.respond({ ':status': 200, te: 'gzip' }), { code: 'ERR_HTTP2_INVALID_CONNECTION_HEADERS' });
    t.throws(() => stream.respond({ ':status': 200, 'transfer-encoding': ['chunked'] } as unknown as http2.OutgoingHttpHeaders), { code: 'ERR_HTTP2_INVALID_CONNECTION_HEADERS' });
    t.throws(() => stream.respond({ ':status': 200, ':path': '/' }), { code: 'ERR_HTTP2_INVALID_PSEUDOHEADER' });
    t.throws(() => stream.respond({ ':status': 99 }), { code: 'ERR_HTTP2_STATUS_INVALID' });
    t.throws(() => stream.respond({ 'content-type': ['a', 'b'] }), { code: 'ERR_HTTP2_HEADER_SINGLE_VALUE' });
    t.throws(() => stream.respond({ 'bad name': 'x' }), { code: 'ERR_INVALID_HTTP_TOKEN' });
    t.equal(stream.headersSent, false, 'nothing sent by a refused respond()');
    readAll(stream).then((b) => {
      stream.respond({ ':status': 201, 'X-Upper': 'v', skipped: undefined, te: 'trailers', empty: [] });
      t.throws(() => stream.respond({}), { code: 'ERR_HTTP2_HEADERS_SENT' });
      t.throws(() => stream.additionalHeaders({ ':status': 100 }), { code: 'ERR_HTTP2_HEADERS_AFTER_RESPOND' });
      stream.end(b);
    });
  });
  let continued = false;
  const r = await new Promise<Reply>((resolve) => {
    const req = client.request({ ':path': '/', ':method': 'POST', expect: '100-continue' });
    req.on('continue', () => {
      continued = true;
      req.end('after continue');
    });
    const reply: Reply = { status: 0, headers: {}, body: Buffer.alloc(0) };
    req.on('response', (h) => ((reply.status = Number(h[':status'])), (reply.headers = h)));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('close', () => resolve({ ...reply, body: Buffer.concat(chunks) }));
  });
  t.ok(continued, "the client got its 100 ('continue')");
  t.equal(r.status, 201);
  t.equal(r.headers['x-upper'], 'v', 'names lower-cased');
  t.equal(r.body.toString(), 'after continue');
  t.ok(new H2Error('X', 'y') instanceof Error);
});

t.test('many concurrent streams on one connection', async (t) => {
  const { srv, client } = await withServer(t, (stream, headers) => {
    setTimeout(() => {
      stream.respond({ ':status': 200 });
      stream.end(headers[':path']);
    }, Math.random() * 20);
  });
  const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => request(client, { ':path': `/${i}` })));
  t.ok(replies.every((r, i) => r.status === 200 && r.body.toString() === `/${i}`), '300 answers, each to its own request');
  await until(() => srv.streams.size === 0, 3000, 'all streams closed');
});

t.test('client reset mid-body: aborted, close with CANCEL, no error; the session lives on', async (t) => {
  const events: string[] = [];
  let server: H2Stream | undefined;
  const { srv, client } = await withServer(t, (stream, headers) => {
    if (headers[':path'] === '/ok') {
      stream.respond({ ':status': 200 });
      stream.end('still here');
      return;
    }
    server = stream;
    stream.on('aborted', () => events.push('aborted'));
    stream.on('error', (e: Error) => events.push(`error ${e.message}`));
    stream.on('close', () => events.push(`close ${stream.rstCode}`));
    stream.on('data', () => undefined);
    stream.respond({ ':status': 200 });
    stream.write('partial');
  });
  const req = client.request({ ':path': '/', ':method': 'POST' });
  req.on('error', () => undefined);
  req.write(Buffer.alloc(100_000));
  await until(() => server !== undefined && events.length === 0);
  req.close(http2.constants.NGHTTP2_CANCEL);
  await until(() => events.includes('close 8'), 3000, 'close');
  t.same(events, ['aborted', 'close 8']);
  t.equal(server!.closed, true);
  t.equal(server!.aborted, true);
  t.equal(server!.session, undefined, 'a destroyed stream lets go of its session');
  t.equal((await request(client, { ':path': '/ok' })).body.toString(), 'still here');
  t.equal(srv.sessions.size, 1);

  // Reset with an error code: 'error' (ERR_HTTP2_STREAM_ERROR), as node.
  events.length = 0;
  server = undefined;
  const req2 = client.request({ ':path': '/', ':method': 'POST' });
  req2.on('error', () => undefined);
  req2.write('x');
  await until(() => server !== undefined);
  req2.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  await until(() => events.some((e) => e.startsWith('close')));
  t.same(events, ['aborted', 'error Stream closed with error code NGHTTP2_INTERNAL_ERROR', 'close 2']);
});

t.test('server-side close(code), destroy(), and close(NO_ERROR) after the body', async (t) => {
  const { srv, client } = await withServer(t, (stream, headers) => {
    stream.on('error', () => undefined);
    switch (headers[':path']) {
      case '/rst':
        stream.respond({ ':status': 200 });
        stream.write('x');
        stream.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
        stream.close(1); // a second close is a no-op
        return;
      case '/destroy':
        stream.destroy();
        return;
      case '/destroy-err':
        stream.destroy(new Error('boom'));
        return;
      case '/finish':
        // The websocket tunnel's pattern: end, then tell the client to stop sending.
        stream.respond({ ':status': 200 });
        stream.end('done', () => undefined);
        stream.once('finish', () => stream.close(http2.constants.NGHTTP2_NO_ERROR));
        return;
      case '/cb':
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM, () => stream.emit('cb-ran'));
        t.throws(() => stream.close(-1), { code: 'ERR_OUT_OF_RANGE' });
        t.throws(() => stream.respond({}), { code: 'ERR_HTTP2_INVALID_STREAM' });
        return;
    }
  });
  t.equal((await request(client, { ':path': '/rst' })).rstCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  t.equal((await request(client, { ':path': '/destroy' })).rstCode, 0, 'destroy() without an error: RST_STREAM NO_ERROR');
  t.equal((await request(client, { ':path': '/destroy-err' })).rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR);
  const fin = await request(client, { ':path': '/finish', ':method': 'POST' }, undefined, {});
  t.equal(fin.body.toString(), 'done');
  t.equal((await request(client, { ':path': '/cb' })).rstCode, http2.constants.NGHTTP2_REFUSED_STREAM);
  await until(() => srv.streams.size === 0);
});

t.test('HEAD and bodiless statuses end with the HEADERS frame', async (t) => {
  const { client } = await withServer(t, (stream, headers) => {
    t.equal(stream.writableEnded, stream.headRequest, 'a HEAD stream is ended at once, as node does');
    stream.respond(headers[':path'] === '/204' ? { ':status': 204 } : { ':status': 200, 'content-length': '5' });
    // As H2Response does: writes after the end are dropped.
    if (!stream.writableEnded) stream.end('hello');
  });
  const head = await request(client, { ':path': '/', ':method': 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.body.length, 0);
  const nc = await request(client, { ':path': '/204' });
  t.equal(nc.status, 204);
  t.equal(nc.body.length, 0);
});

t.test('write() before respond() sends a 200; end() before respond() ends with the HEADERS', async (t) => {
  const { client } = await withServer(t, (stream, headers) => {
    if (headers[':path'] === '/write') {
      stream.end('implicit');
      return;
    }
    stream.end();
    setTimeout(() => stream.respond({ ':status': 202 }), 10);
  });
  const w = await request(client, { ':path': '/write' });
  t.equal(w.status, 200);
  t.equal(w.body.toString(), 'implicit');
  const e = await request(client, { ':path': '/late' });
  t.equal(e.status, 202);
  t.equal(e.body.length, 0);
});

t.test('PING answered; SETTINGS changed mid-connection (smaller window and larger frames)', async (t) => {
  const big = Buffer.alloc(300_000, 0x62);
  const { client } = await withServer(t, (stream) => {
    stream.respond({ ':status': 200 });
    stream.end(big);
  });
  const rtt = await new Promise<Buffer>((resolve, reject) => client.ping(Buffer.from('abcdefgh'), (err, _d, payload) => (err ? reject(err) : resolve(payload))));
  t.equal(rtt.toString(), 'abcdefgh');
  await new Promise<void>((r) => client.settings({ initialWindowSize: 1000, maxFrameSize: 32_768 }, () => r()));
  const r1 = await request(client, { ':path': '/' });
  t.ok(r1.body.equals(big), 'a 300 KB body through a 1000-byte stream window');
  await new Promise<void>((r) => client.settings({ initialWindowSize: 2_000_000, headerTableSize: 0 }, () => r()));
  const r2 = await request(client, { ':path': '/' });
  t.ok(r2.body.equals(big));
});

t.test('GOAWAY: session.close() lets the open stream finish; a client GOAWAY closes the session', async (t) => {
  let hold: H2Stream | undefined;
  const { srv, client } = await withServer(t, (stream) => {
    hold = stream;
  });
  let goaway: number | undefined;
  client.on('goaway', (code) => (goaway = code));
  const pending = request(client, { ':path': '/' });
  await until(() => hold !== undefined);
  const session = [...srv.sessions][0]!;
  let closedCb = false;
  session.close(() => (closedCb = true));
  t.equal(session.closed, true);
  t.equal(session.destroyed, false, 'still serving its open stream');
  await until(() => goaway !== undefined);
  t.equal(goaway, 0);
  hold!.respond({ ':status': 200 });
  hold!.end('finished after GOAWAY');
  const r = await pending;
  t.equal(r.body.toString(), 'finished after GOAWAY');
  await until(() => closedCb, 3000, 'close callback');
  t.equal(session.destroyed, true);
  session.close(); // no-op
  session.destroy(); // no-op

  const srv2 = await startServer(() => undefined);
  t.teardown(() => srv2.close());
  const c2 = http2.connect(`http://127.0.0.1:${srv2.port}`);
  c2.on('error', () => undefined);
  await new Promise<void>((r) => c2.once('remoteSettings', () => r()));
  await until(() => srv2.sessions.size === 1);
  c2.close();
  await until(() => srv2.sessions.size === 0, 3000, 'server session closed after the client GOAWAY');
});

t.test('session.destroy(code) and goaway(code): streams destroyed, GOAWAY with the code', async (t) => {
  const streamEvents: string[] = [];
  const { srv, client } = await withServer(t, (stream) => {
    stream.on('aborted', () => streamEvents.push('aborted'));
    stream.on('error', (e: Error & { code?: string }) => streamEvents.push(e.code ?? 'error'));
    stream.on('close', () => streamEvents.push('close'));
  });
  let goaway: number | undefined;
  client.on('goaway', (code) => (goaway = code));
  const pending = request(client, { ':path': '/' });
  await until(() => srv.streams.size === 1);
  const session = [...srv.sessions][0]!;
  t.equal(session.encrypted, false);
  t.equal(session.alpnProtocol, 'h2c');
  t.equal(session.openStreams, 1);
  session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  session.destroy();
  const r = await pending;
  t.ok(r.rstCode !== undefined);
  await until(() => goaway !== undefined);
  t.equal(goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  await until(() => streamEvents.includes('close'));
  t.same(streamEvents, ['aborted', 'ERR_HTTP2_STREAM_ERROR', 'close'], 'destroyed with the session code, as node');
  await until(() => srv.sessions.size === 0);
});

/** A raw client with one open request, and the server's stream for it, its events recorded. */
async function rawClientStream(t: { teardown(fn: () => unknown): void }): Promise<{ srv: TestServer; raw: RawClient; events: string[] }> {
  let server: H2Stream | undefined;
  const srv = await startServer((stream) => (server = stream));
  t.teardown(() => srv.close());
  const raw = await RawClient.connect(srv.port);
  raw.request(1, GET(), false);
  await until(() => server !== undefined);
  const events: string[] = [];
  const s = server!;
  s.on('aborted', () => events.push('aborted'));
  s.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code}`));
  s.on('close', () => events.push(`close ${s.rstCode}`));
  return { srv, raw, events };
}

t.test('the client going away closes the session; its streams close with CANCEL', async (t) => {
  const { srv, raw, events } = await rawClientStream(t);
  raw.end();
  await until(() => events.length === 2);
  t.same(events, ['aborted', 'close 8']);
  await until(() => srv.sessions.size === 0);
  t.same(srv.sessionErrors, [], 'a clean close is no session error');
});

t.test('the client resetting the connection: its streams abort with the socket error (as node), nothing uncaught', async (t) => {
  const { srv, raw, events } = await rawClientStream(t);
  raw.reset();
  await until(() => events.length === 3);
  t.same(events, ['aborted', 'error ECONNRESET', `close ${http2.constants.NGHTTP2_INTERNAL_ERROR}`]);
  await until(() => srv.sessions.size === 0);
  t.same(
    srv.sessionErrors.map((e: NodeJS.ErrnoException) => e.code),
    ['ECONNRESET'],
    'the session reports the reset once',
  );
});

t.test('header list over maxHeaderListSize or maxHeaderListPairs: RST_STREAM ENHANCE_YOUR_CALM (as node)', async (t) => {
  const { client } = await withServer(
    t,
    (stream) => {
      stream.respond({ ':status': 200 });
      stream.end();
    },
    { maxHeaderListPairs: 8, settings: { maxHeaderListSize: 1000 } },
  );
  const big = await request(client, { ':path': '/', 'x-big': 'a'.repeat(2000) });
  t.equal(big.rstCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  const many: http2.OutgoingHttpHeaders = { ':path': '/' };
  for (let i = 0; i < 20; i++) many[`x-${i}`] = 'v';
  t.equal((await request(client, many)).rstCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  t.equal((await request(client, { ':path': '/' })).status, 200, 'the connection goes on');
});

t.test('extended CONNECT (RFC 8441) with :protocol: a tunnel both ways', async (t) => {
  const { client } = await withServer(t, (stream, headers) => {
    t.equal(headers[':protocol'], 'websocket');
    stream.respond({ ':status': 200 });
    stream.pipe(stream);
  });
  t.equal((client as unknown as { remoteSettings: http2.Settings }).remoteSettings.enableConnectProtocol, true);
  const req = client.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/chat', ':scheme': 'http', ':authority': 'localhost' }, { endStream: false });
  const echoed = await new Promise<string>((resolve) => {
    req.on('response', () => {
      req.write('ping');
      req.once('data', (d: Buffer) => resolve(d.toString()));
    });
  });
  t.equal(echoed, 'ping');
  req.close();
});

t.test("src/http/h2-server.ts unchanged on these streams: serveStream, countingPush, filterBody, trailers", async (t) => {
  let filtered = 0;
  const { client } = await withServer(t, (stream, headers, _flags, raw) =>
    serveStream(stream as unknown as http2.ServerHttp2Stream, headers, raw, (req: H2Request, res: H2Response) => {
      const body = req.body;
      if (body === null) {
        res.writeHead(200, { 'content-type': 'text/plain', Connection: 'keep-alive' });
        res.end(`no body ${req.method} ${req.url}`);
        return;
      }
      t.ok(filterBody(body, { filter: (c) => ((filtered += c.length), c), afterPush: () => undefined }));
      const chunks: Buffer[] = [];
      body.on('data', (c: Buffer) => chunks.push(c));
      body.on('end', () => {
        res.respond({ ':status': 200, 'content-type': 'application/grpc' }, true);
        res.write(Buffer.concat(chunks));
        res.addTrailers({ 'grpc-status': '0' });
        res.end();
        if (req.url === '/grpc') t.equal(req.bodyBytes, 70_000, 'bytes counted by the overridden push');
      });
    }),
  );
  const a = await request(client, { ':path': '/nobody' });
  t.equal(a.body.toString(), 'no body GET /nobody');
  t.equal(a.headers.connection, undefined, 'connection-specific header left out');
  const b = await request(client, { ':path': '/grpc', ':method': 'POST', 'content-type': 'application/grpc' }, Buffer.alloc(70_000, 1));
  t.equal(b.body.length, 70_000);
  t.equal(b.trailers?.['grpc-status'], '0');
  t.equal(filtered, 70_000, 'the body filter saw every byte');
  const c = await request(client, { ':path': '/', expect: 'nope' });
  t.equal(c.status, 417);
  const d = await request(client, { ':path': '/', ':method': 'POST', expect: '100-continue' }, 'x');
  t.equal(d.status, 200);
});

t.test('bodiless requests through serveStream: answered at once, later, or reset by the client first: each stream closes, none lingers', async (t) => {
  const events: string[] = [];
  let resetSeen: (() => void) | undefined;
  const { srv, client } = await withServer(t, (stream, headers, _flags, raw) => {
    const path = headers[':path'];
    stream.on('end', () => events.push(`${path} end`));
    stream.on('close', () => events.push(`${path} close ${stream.rstCode}`));
    serveStream(stream as unknown as http2.ServerHttp2Stream, headers, raw, (req: H2Request, res: H2Response) => {
      t.equal(req.body, null, 'no body');
      if (path === '/now') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('now');
      } else if (path === '/later') {
        setTimeout(() => {
          res.respond({ ':status': 200, 'content-length': '5' });
          res.write(Buffer.from('la'));
          res.write(Buffer.from('ter'));
          res.end();
        }, 20);
      } else {
        // Never answered: the client resets it.
        resetSeen?.();
      }
    });
  });
  const a = await request(client, { ':path': '/now' });
  t.equal(a.status, 200);
  t.equal(a.body.toString(), 'now');
  const b = await request(client, { ':path': '/later' });
  t.equal(b.status, 200);
  t.equal(b.body.toString(), 'later');
  const seen = new Promise<void>((r) => (resetSeen = r));
  const c = client.request({ ':path': '/reset' }, { endStream: true });
  c.on('error', () => undefined);
  await seen;
  c.close(http2.constants.NGHTTP2_CANCEL);
  await until(() => events.includes(`/reset close ${http2.constants.NGHTTP2_CANCEL}`), 3000, 'the reset stream closed');
  await until(() => srv.streams.size === 0, 3000, 'every stream closed');
  for (const p of ['/now', '/later']) {
    t.ok(events.includes(`${p} end`), `${p}: its readable side ended`);
    t.ok(events.includes(`${p} close 0`), `${p}: closed cleanly`);
    t.ok(events.indexOf(`${p} end`) < events.indexOf(`${p} close 0`), `${p}: 'end' before 'close'`);
  }
  const session = [...srv.sessions][0]!;
  t.equal(session.lingering.size, 0, 'no stream left lingering');
  t.equal(session.openStreams, 0);
});

t.test("destroy(code), a session 'error', 'goaway' and 'remoteSettings' events, a socket closed before serveH2", async (t) => {
  const { srv, client } = await withServer(t, () => undefined);
  await until(() => srv.sessions.size === 1);
  const session = [...srv.sessions][0]!;
  const events: string[] = [];
  session.on('remoteSettings', () => events.push('remoteSettings'));
  session.on('goaway', (code: number) => events.push(`goaway ${code}`));
  await new Promise<void>((r) => client.settings({ enablePush: false, maxHeaderListSize: 5000, enableConnectProtocol: false } as http2.Settings, () => r()));
  await until(() => events.includes('remoteSettings'));
  let goaway: number | undefined;
  client.on('goaway', (code) => (goaway = code));
  session.destroy(http2.constants.NGHTTP2_PROTOCOL_ERROR);
  await until(() => goaway !== undefined && srv.sessions.size === 0);
  t.equal(goaway, http2.constants.NGHTTP2_PROTOCOL_ERROR);
  t.match(srv.sessionErrors.at(-1), { code: 'ERR_HTTP2_SESSION_ERROR' });

  // A client GOAWAY with an error code: 'goaway' heard, the session destroyed.
  const { srv: srv2, client: c2 } = await withServer(t, () => undefined);
  await until(() => srv2.sessions.size === 1);
  const s2 = [...srv2.sessions][0]!;
  s2.on('goaway', (code: number) => events.push(`goaway ${code}`));
  c2.goaway(http2.constants.NGHTTP2_INTERNAL_ERROR);
  await until(() => s2.destroyed);
  t.ok(events.includes(`goaway ${http2.constants.NGHTTP2_INTERNAL_ERROR}`));

  // A socket that closed before it was served.
  const net = await import('node:net');
  const { serveH2 } = await import('../../../../src/http/h2/session');
  const sock = new net.Socket();
  sock.destroy();
  let closed = false;
  const s3 = serveH2(sock, {}, () => undefined, () => undefined);
  s3.on('close', () => (closed = true));
  await until(() => closed);
  t.equal(s3.destroyed, true);
});
