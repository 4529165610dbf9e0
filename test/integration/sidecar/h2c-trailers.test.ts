/**
 * Trailers on the HTTP/2 downstream, read off the wire: a response asks node:http2 for trailers
 * only when it can have them (src/http/h2-server.ts). An HTTP/1.1 upstream response with a
 * content-length ends its client stream with its last DATA frame (no trailers asked, no empty
 * DATA frame after the body); a chunked one with trailers, and an HTTP/2 upstream's trailers,
 * still reach the client as a trailing HEADERS frame.
 *
 * The frames are read by a TCP relay between a node:http2 client and the sidecar, which keeps
 * every byte the sidecar sends and splits them into frames (9-byte frame headers; the payloads,
 * HPACK included, are not decoded).
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import t, { type Test } from 'tap';
import { HOST, h1Upstream, h2Request, h2Upstream, route, service, startSidecar } from './helpers';

const DATA = 0;
const HEADERS = 1;
const END_STREAM = 1;

interface Frame {
  type: number;
  flags: number;
  stream: number;
  length: number;
}

/** A relay to `port` that records what the server sends, as frames. */
async function frameRelay(t: Test, port: number): Promise<{ port: number; frames(): Frame[] }> {
  const received: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const up = net.connect(port, HOST);
    sockets.add(client).add(up);
    client.pipe(up);
    up.on('data', (d: Buffer) => received.push(d));
    up.pipe(client);
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, HOST, r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    frames(): Frame[] {
      const b = Buffer.concat(received);
      const out: Frame[] = [];
      for (let i = 0; i + 9 <= b.length; ) {
        const length = b.readUIntBE(i, 3);
        out.push({ type: b[i + 3] as number, flags: b[i + 4] as number, stream: b.readUInt32BE(i + 5) & 0x7fffffff, length });
        i += 9 + length;
      }
      return out;
    },
  };
}

/** A GET (or `method`) on a new session through the relay: the answer, and the frames of its stream. */
async function getThrough(t: Test, sidecarPort: number, authority: string, path: string, method = 'GET') {
  const relay = await frameRelay(t, sidecarPort);
  const session = http2.connect(`http://${HOST}:${relay.port}`);
  session.on('error', () => undefined);
  t.teardown(() => session.destroy());
  const r = await h2Request(session, { ':method': method, ':path': path, ':authority': authority, te: 'trailers' });
  // The stream ended at the client, so its END_STREAM frame passed the relay.
  const frames = relay.frames().filter((f) => f.stream === 1);
  return { ...r, frames };
}

t.test('trailers are asked for only where they can come', async (t) => {
  const h1 = await h1Upstream(t, (req, res) => {
    if (req.url === '/length') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5' });
      res.end('hello');
      return;
    }
    if (req.url === '/chunked-trailers') {
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
      res.write('hel');
      res.addTrailers({ 'x-checksum': 'abc123' });
      res.end('lo');
      return;
    }
    // Chunked, no trailers.
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('hel');
    res.end('lo');
  });
  const h2 = await h2Upstream(t, (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'text/plain', 'content-length': '5' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-h2-trailer': 'yes' }));
    stream.end('hello');
  });
  const sc = await startSidecar(t, [
    service('h1app', [{ port: h1.port }], 'http1'),
    service('h2app', [{ port: h2.port }], 'http2'),
    route('h1app', ['h1app'], [{ backends: [{ service: 'h1app' }] }]),
    route('h2app', ['h2app'], [{ backends: [{ service: 'h2app' }] }]),
  ]);

  t.test('an HTTP/1.1 response with a content-length: the last DATA frame ends the stream', async (t) => {
    const r = await getThrough(t, sc.outbound, 'h1app', '/length');
    t.equal(r.status, 200);
    t.equal(r.body.toString(), 'hello');
    t.equal(r.trailers, undefined, 'no trailers');
    const data = r.frames.filter((f) => f.type === DATA);
    t.same(
      r.frames.map((f) => f.type),
      [HEADERS, ...data.map(() => DATA)],
      'HEADERS, then DATA only',
    );
    t.equal(r.frames[0]?.flags && r.frames[0].flags & END_STREAM, 0, 'the HEADERS frame does not end the stream');
    t.notOk(
      data.some((f) => f.length === 0),
      `no empty DATA frame (what waiting for trailers that never come sends): ${JSON.stringify(data)}`,
    );
    t.equal(data.reduce((n, f) => n + f.length, 0), 5);
    t.equal((data[data.length - 1]?.flags ?? 0) & END_STREAM, END_STREAM, 'the last DATA frame, carrying the body, ends the stream');
  });

  t.test('a chunked HTTP/1.1 response: its trailers reach the client as trailers', async (t) => {
    const r = await getThrough(t, sc.outbound, 'h1app', '/chunked-trailers');
    t.equal(r.status, 200);
    t.equal(r.body.toString(), 'hello');
    t.equal(r.trailers?.['x-checksum'], 'abc123');
    const last = r.frames[r.frames.length - 1];
    t.same(last && { type: last.type, end: last.flags & END_STREAM }, { type: HEADERS, end: END_STREAM }, 'a trailing HEADERS frame ends the stream');
  });

  t.test('a chunked HTTP/1.1 response without trailers still ends cleanly', async (t) => {
    const r = await getThrough(t, sc.outbound, 'h1app', '/chunked');
    t.equal(r.status, 200);
    t.equal(r.body.toString(), 'hello');
    t.equal(r.trailers, undefined);
    const last = r.frames[r.frames.length - 1];
    t.equal(last && last.flags & END_STREAM, END_STREAM);
  });

  t.test('an HTTP/2 upstream: its trailers reach the client, whatever its content-length', async (t) => {
    const r = await getThrough(t, sc.outbound, 'h2app', '/x');
    t.equal(r.status, 200);
    t.equal(r.body.toString(), 'hello');
    t.equal(r.trailers?.['x-h2-trailer'], 'yes');
    const last = r.frames[r.frames.length - 1];
    t.same(last && { type: last.type, end: last.flags & END_STREAM }, { type: HEADERS, end: END_STREAM });
  });

  t.test('a mesh-made answer (no route): no trailers, no empty DATA frame', async (t) => {
    const r = await getThrough(t, sc.outbound, 'nowhere', '/');
    t.equal(r.status, 404);
    t.equal(r.trailers, undefined);
    const data = r.frames.filter((f) => f.type === DATA);
    t.notOk(
      data.some((f) => f.length === 0),
      JSON.stringify(r.frames),
    );
    t.equal((r.frames[r.frames.length - 1]?.flags ?? 0) & END_STREAM, END_STREAM);
  });
});

t.test('a response without a body is one HEADERS frame with END_STREAM (no empty DATA frame)', async (t) => {
  const h1 = await h1Upstream(t, (req, res) => {
    if (req.url === '/204') res.writeHead(204, { 'x-k': '1' });
    else if (req.url === '/304') res.writeHead(304, { etag: '"a"' });
    else if (req.url === '/empty') res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '0' });
    else res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5' });
    res.end(req.method === 'HEAD' || req.url !== '/length' ? undefined : 'hello');
  });
  const h2 = await h2Upstream(t, (stream) => {
    stream.respond({ ':status': 204, 'x-k': '2' }, { endStream: true });
  });
  const sc = await startSidecar(t, [
    service('h1app', [{ port: h1.port }], 'http1'),
    service('h2app', [{ port: h2.port }], 'http2'),
    route('h1app', ['h1app'], [{ backends: [{ service: 'h1app' }] }]),
    route('h2app', ['h2app'], [{ backends: [{ service: 'h2app' }] }]),
  ]);
  const cases: [string, string, string, string, number][] = [
    ['HEAD, HTTP/1.1 upstream with a content-length', 'h1app', '/length', 'HEAD', 200],
    ['204 from an HTTP/1.1 upstream', 'h1app', '/204', 'GET', 204],
    ['304 from an HTTP/1.1 upstream', 'h1app', '/304', 'GET', 304],
    ['content-length: 0 from an HTTP/1.1 upstream', 'h1app', '/empty', 'GET', 200],
    ['204 from an HTTP/2 upstream', 'h2app', '/x', 'GET', 204],
  ];
  for (const [name, authority, path, method, status] of cases) {
    t.test(name, async (t) => {
      const r = await getThrough(t, sc.outbound, authority, path, method);
      t.equal(r.status, status);
      t.equal(r.body.length, 0, 'no body');
      t.same(
        r.frames.map((f) => ({ type: f.type, end: f.flags & END_STREAM })),
        [{ type: HEADERS, end: END_STREAM }],
        'a single HEADERS frame that ends the stream',
      );
    });
  }
  t.test('the answer still carries its headers', async (t) => {
    const r = await getThrough(t, sc.outbound, 'h1app', '/204');
    t.equal(r.headers['x-k'], '1');
    const r2 = await getThrough(t, sc.outbound, 'h1app', '/length', 'HEAD');
    t.equal(r2.headers['content-length'], '5', 'a HEAD answer keeps the length of the body it does not carry');
  });
});
