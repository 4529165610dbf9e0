/**
 * h2c (HTTP/2 with prior knowledge) on both sides of the sidecar: a gRPC-shaped call whose
 * trailers (grpc-status) come back to the client, many concurrent streams multiplexed on one
 * upstream connection, bodies larger than the flow-control windows, and a `protocol: http2`
 * service reached from an HTTP/1.1 client.
 */
import { createHash } from 'node:crypto';
import type * as http2 from 'node:http2';
import t from 'tap';
import { h2Client, h2Request, h2Upstream, request, route, service, startSidecar } from './helpers';

function frame(b: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(b.length, 1);
  return Buffer.concat([h, b]);
}

t.test('h2c on both sides', async (t) => {
  const seen: http2.IncomingHttpHeaders[] = [];
  const sessions = new Set<unknown>();
  const up = await h2Upstream(t, (stream, headers) => {
    seen.push(headers);
    sessions.add(stream.session);
    const hash = createHash('sha256');
    let bytes = 0;
    stream.on('data', (c: Buffer) => {
      bytes += c.length;
      hash.update(c);
    });
    stream.on('end', () => {
      if (stream.destroyed) return;
      const path = String(headers[':path']);
      if (path.startsWith('/big')) {
        // A response larger than any flow-control window, in 1 MiB writes.
        const total = Number(new URL(path, 'http://x').searchParams.get('bytes'));
        stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(1024 * 1024, 7);
        let left = total;
        const write = (): void => {
          while (left > 0) {
            left -= chunk.length;
            if (!stream.write(chunk)) return void stream.once('drain', write);
          }
          stream.end();
        };
        write();
        return;
      }
      stream.respond({ ':status': 200, 'content-type': String(headers['content-type'] ?? 'text/plain'), 'x-upstream-protocol': 'h2' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'all good' }));
      const json = Buffer.from(JSON.stringify({ bytes, sha: hash.digest('hex'), path, authority: headers[':authority'] }));
      // A gRPC response body is length-prefixed messages (the sidecar follows them).
      const grpc = String(headers['content-type']).startsWith('application/grpc');
      stream.end(grpc ? frame(json) : json);
    });
  });
  const sc = await startSidecar(t, [
    service('greeter', [{ port: up.port }]),
    service('h2only', [{ port: up.port }], 'http2'),
    route('greeter', ['greeter'], [{ backends: [{ service: 'greeter' }] }]),
    route('h2only', ['h2only'], [{ backends: [{ service: 'h2only' }] }]),
  ]);
  const session = h2Client(t, sc.outbound);

  t.test('a gRPC-shaped call: the trailers pass through', async (t) => {
    const msg = Buffer.from([0, 0, 0, 0, 5, 104, 101, 108, 108, 111]);
    const r = await h2Request(
      session,
      { ':method': 'POST', ':path': '/helloworld.Greeter/SayHello', ':authority': 'greeter', 'content-type': 'application/grpc', te: 'trailers' },
      msg,
    );
    t.equal(r.status, 200);
    t.equal(r.headers['content-type'], 'application/grpc');
    t.equal(r.headers['x-upstream-protocol'], 'h2', 'the upstream was reached over HTTP/2 (protocol auto, as the client came)');
    t.same(r.trailers && { status: r.trailers['grpc-status'], message: r.trailers['grpc-message'] }, { status: '0', message: 'all good' }, 'grpc-status and grpc-message arrive as trailers');
    const body = JSON.parse(r.body.subarray(5).toString()) as { bytes: number; path: string; authority: string };
    t.equal(body.bytes, msg.length, 'the request body arrived');
    t.equal(body.path, '/helloworld.Greeter/SayHello');
    t.equal(body.authority, 'greeter', ':authority is kept');
    const last = seen[seen.length - 1];
    t.equal(last.te, 'trailers', 'te: trailers reaches the upstream');
    t.equal(last.via, '2 meshlet');
  });

  t.test('concurrent streams share one upstream connection', async (t) => {
    const before = up.hits;
    const rs = await Promise.all(
      Array.from({ length: 50 }, (_, i) => h2Request(session, { ':method': 'POST', ':path': `/many/${i}`, ':authority': 'greeter', te: 'trailers' }, `request ${i}`)),
    );
    t.ok(
      rs.every((r) => r.status === 200 && r.trailers?.['grpc-status'] === '0'),
      'all 50 answered, each with its trailers',
    );
    t.same(
      rs.map((r) => (JSON.parse(r.body.toString()) as { path: string }).path),
      rs.map((_, i) => `/many/${i}`),
      'each answer belongs to its request',
    );
    t.equal(up.hits - before, 50);
    t.equal(sessions.size, 1, 'the sidecar multiplexes its upstream requests on one HTTP/2 connection');
  });

  t.test('bodies larger than the flow-control windows', async (t) => {
    const body = Buffer.alloc(24 * 1024 * 1024);
    for (let i = 0; i < body.length; i += 4096) body.writeUInt32BE(i, i);
    const r = await h2Request(session, { ':method': 'POST', ':path': '/upload', ':authority': 'greeter' }, body);
    const got = JSON.parse(r.body.toString()) as { bytes: number; sha: string };
    t.equal(got.bytes, body.length, '24 MiB request body arrived');
    t.equal(got.sha, createHash('sha256').update(body).digest('hex'), 'intact');
    const big = await h2Request(session, { ':method': 'GET', ':path': `/big?bytes=${24 * 1024 * 1024}`, ':authority': 'greeter' });
    t.equal(big.status, 200);
    t.equal(big.body.length, 24 * 1024 * 1024, '24 MiB response body arrived');
  });

  t.test('CONNECT and expectations, answered as an HTTP/2 server does', async (t) => {
    const head = (headers: http2.OutgoingHttpHeaders, body?: string): Promise<{ status: number; continued: boolean; body: string }> =>
      new Promise((resolve, reject) => {
        const s = session.request(headers, { endStream: false });
        let continued = false;
        let status = 0;
        const chunks: Buffer[] = [];
        s.on('continue', () => {
          continued = true;
          s.end(body);
        });
        s.on('response', (h) => {
          status = Number(h[':status']);
          if (!continued) s.end();
        });
        s.on('data', (c: Buffer) => chunks.push(c));
        s.on('error', reject);
        s.on('close', () => resolve({ status, continued, body: Buffer.concat(chunks).toString() }));
      });
    const connect = await head({ ':method': 'CONNECT', ':authority': 'greeter:443' });
    t.equal(connect.status, 405, 'CONNECT: the sidecar opens no tunnels');
    const r = await head({ ':method': 'POST', ':path': '/expect', ':authority': 'greeter', expect: '100-continue' }, 'sent after 100');
    t.ok(r.continued, 'expect: 100-continue gets a 100 first');
    t.equal(r.status, 200);
    t.equal((JSON.parse(r.body) as { bytes: number }).bytes, 14, 'then the body goes through');
    const other = await head({ ':method': 'POST', ':path': '/expect', ':authority': 'greeter', expect: 'something-else' });
    t.equal(other.status, 417, 'any other expectation fails');
  });

  t.test('a protocol: http2 service, from an HTTP/1.1 client', async (t) => {
    const r = await request({ port: sc.outbound, method: 'POST', path: '/from-h1?x=1', headers: { host: 'h2only', 'content-type': 'text/plain' }, body: 'hi there' });
    t.equal(r.status, 200);
    t.equal(r.headers['x-upstream-protocol'], 'h2', 'the sidecar spoke HTTP/2 to the upstream');
    const body = JSON.parse(r.text) as { bytes: number; path: string; authority: string };
    t.same(body, { ...body, bytes: 8, path: '/from-h1?x=1', authority: 'h2only' }, 'path, query, authority and body made it across');
    const get = await request({ port: sc.outbound, path: '/get', headers: { host: 'h2only' } });
    t.equal(get.status, 200, 'a request without a body too');
    t.equal(seen[seen.length - 1].via, '1.1 meshlet');
  });
});
