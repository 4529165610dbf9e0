/**
 * Cancellation and resets across the sidecar: a client that goes away cancels the upstream
 * request; an upstream that resets before answering gives the client 502 UR; an upstream that
 * resets mid-response gives the client a failed response (never a clean, truncated one).
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import t from 'tap';
import { HOST, h1Upstream, h2Client, h2Request, h2Upstream, request, route, service, startSidecar, within } from './helpers';

/** An HTTP/1.1 request whose outcome is reported, not thrown: did the response end cleanly? */
function outcome(port: number, host: string, path: string): Promise<{ status: number; completed: boolean; error?: string; bytes: number }> {
  return new Promise((resolve) => {
    let status = 0;
    let bytes = 0;
    let settled = false;
    const done = (completed: boolean, error?: string) => {
      if (settled) return;
      settled = true;
      resolve({ status, completed, error, bytes });
    };
    const req = http.get({ host: HOST, port, path, headers: { host }, agent: false }, (res) => {
      status = res.statusCode ?? 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => done(true));
      res.on('aborted', () => done(false, 'aborted'));
      res.on('error', (e) => done(false, e.message));
      res.on('close', () => done(res.complete, res.complete ? undefined : 'closed before the end'));
    });
    req.on('error', (e) => done(false, e.message));
  });
}

t.test('resets and cancellation', async (t) => {
  // HTTP/1.1 upstream: behaviour chosen by path.
  const cancelled: Record<string, Promise<string>> = {};
  const arrived: Record<string, () => void> = {};
  const arrivals: Record<string, Promise<void>> = {};
  const expectArrival = (path: string) => (arrivals[path] = new Promise<void>((r) => (arrived[path] = r)));
  const h1 = await h1Upstream(t, (req, res) => {
    const path = req.url ?? '/';
    if (path.startsWith('/hold')) {
      // Never answers; reports how the request ended.
      cancelled[path] = new Promise((resolve) => {
        res.on('close', () => resolve(res.writableEnded ? 'finished' : 'closed before the response finished'));
      });
      req.resume();
      arrived[path]?.();
      return;
    }
    if (path.startsWith('/stream')) {
      // Starts the response, then never finishes it; reports how it ended.
      cancelled[path] = new Promise((resolve) => {
        res.on('close', () => resolve(res.writableEnded ? 'finished' : 'closed before the response finished'));
      });
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.write(Buffer.alloc(1024, 3));
      req.resume();
      arrived[path]?.();
      return;
    }
    if (path === '/reset-before') {
      req.socket.destroy();
      return;
    }
    if (path === '/reset-mid-chunked' || path === '/reset-mid-length') {
      res.writeHead(200, path.endsWith('length') ? { 'content-length': String(1024 * 1024) } : {});
      res.write(Buffer.alloc(16 * 1024, 1), () => setTimeout(() => req.socket.destroy(), 20));
      return;
    }
    req.resume();
    res.end('fine');
  });
  const h2Cancelled: Record<string, Promise<number>> = {};
  const h2 = await h2Upstream(t, (stream, headers) => {
    const path = String(headers[':path']);
    if (path.startsWith('/hold')) {
      h2Cancelled[path] = new Promise((resolve) => stream.on('close', () => resolve(stream.rstCode ?? -1)));
      arrived[path]?.();
      return;
    }
    if (path === '/reset-before') {
      stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    if (path === '/reset-mid') {
      // The upstream connection dies mid-response. (node's stream.close(code) would first end the
      // stream cleanly, END_STREAM then RST_STREAM, which a client rightly sees as complete.)
      stream.respond({ ':status': 200 });
      stream.write(Buffer.alloc(16 * 1024, 1), () => setTimeout(() => stream.session?.destroy(), 20));
      return;
    }
    if (path === '/rst-mid') {
      // RST_STREAM(INTERNAL_ERROR) mid-response: submitted before the queued DATA can go out.
      stream.respond({ ':status': 200 });
      stream.write(Buffer.alloc(16 * 1024, 1), () =>
        setTimeout(() => {
          stream.end(Buffer.alloc(4 * 1024 * 1024, 1));
          stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        }, 20),
      );
      return;
    }
    stream.respond({ ':status': 200 });
    stream.end('fine');
  });
  const sc = await startSidecar(t, [
    service('one', [{ port: h1.port }], 'http1'),
    service('two', [{ port: h2.port }], 'http2'),
    route('one', ['one'], [{ backends: [{ service: 'one' }] }]),
    route('two', ['two'], [{ backends: [{ service: 'two' }] }]),
  ]);

  t.test('an HTTP/1.1 client going away cancels the upstream request', async (t) => {
    const path = '/hold/h1';
    const there = expectArrival(path);
    const req = http.get({ host: HOST, port: sc.outbound, path, headers: { host: 'one' }, agent: false });
    req.on('error', () => undefined);
    await within(there, 10_000, 'the request to reach the upstream');
    req.destroy();
    t.equal(await within(cancelled[path], 10_000, 'the upstream to see the cancellation'), 'closed before the response finished');
  });

  t.test('a client going away mid-upload cancels the upstream request', async (t) => {
    const path = '/hold/upload';
    const there = expectArrival(path);
    const req = http.request({ host: HOST, port: sc.outbound, method: 'POST', path, headers: { host: 'one' }, agent: false });
    req.on('error', () => undefined);
    req.write(Buffer.alloc(64 * 1024, 2));
    await within(there, 10_000, 'the request to reach the upstream');
    req.destroy();
    t.equal(await within(cancelled[path], 10_000, 'the upstream to see the cancellation'), 'closed before the response finished');
  });

  t.test('a client going away mid-response cancels the upstream request', async (t) => {
    const path = '/stream/h1';
    const there = expectArrival(path);
    const gotBytes = new Promise<void>((resolve, reject) => {
      const req = http.get({ host: HOST, port: sc.outbound, path, headers: { host: 'one' }, agent: false }, (res) => {
        res.once('data', () => {
          resolve();
          req.destroy();
        });
      });
      req.on('error', () => undefined);
      req.on('close', () => reject(new Error('closed before any byte arrived')));
    });
    await within(there, 10_000, 'the request to reach the upstream');
    await within(gotBytes, 10_000, 'the first bytes of the response');
    t.equal(await within(cancelled[path], 10_000, 'the upstream to see the cancellation'), 'closed before the response finished');
    const s = h2Client(t, sc.outbound);
    const h2path = '/stream/h2';
    const h2there = expectArrival(h2path);
    const stream = s.request({ ':path': h2path, ':authority': 'one' });
    stream.on('error', () => undefined);
    await within(h2there, 10_000, 'the h2 request to reach the upstream');
    await within(new Promise((r) => stream.once('data', r)), 10_000, 'the first bytes of the h2 response');
    stream.close(http2.constants.NGHTTP2_CANCEL);
    t.equal(await within(cancelled[h2path], 10_000, 'the upstream to see the h2 cancellation'), 'closed before the response finished', 'an h2 client too (HTTP/1.1 upstream)');
  });

  t.test('an h2 client cancelling its stream cancels the upstream stream', async (t) => {
    const path = '/hold/h2';
    const there = expectArrival(path);
    const session = h2Client(t, sc.outbound);
    const stream = session.request({ ':path': path, ':authority': 'two' });
    stream.on('error', () => undefined);
    await within(there, 10_000, 'the request to reach the upstream');
    stream.close(http2.constants.NGHTTP2_CANCEL);
    t.equal(await within(h2Cancelled[path], 10_000, 'the upstream stream to close'), http2.constants.NGHTTP2_CANCEL, 'the upstream stream was reset with CANCEL');
  });

  t.test('upstream reset before the response: 502 UR', async (t) => {
    for (const host of ['one', 'two']) {
      const r = await request({ port: sc.outbound, path: '/reset-before', headers: { host } });
      t.equal(r.status, 502, `${host}: 502`);
      t.equal(r.headers['x-meshlet-flags'], 'UR', `${host}: flag UR`);
    }
    const s = h2Client(t, sc.outbound);
    const r2 = await h2Request(s, { ':path': '/reset-before', ':authority': 'two' });
    t.equal(r2.status, 502, 'h2 client: 502');
    t.equal(r2.headers['x-meshlet-flags'], 'UR');
  });

  t.test('upstream reset mid-response: the client response fails', async (t) => {
    for (const path of ['/reset-mid-chunked', '/reset-mid-length']) {
      const r = await within(outcome(sc.outbound, 'one', path), 10_000, `${path} to end`);
      t.equal(r.status, 200, `${path}: the response had started`);
      t.equal(r.completed, false, `${path}: the client sees the response fail (${r.error}), not a clean end`);
      t.ok(r.bytes < 1024 * 1024, `${path}: after ${r.bytes} bytes`);
    }
    for (const path of ['/reset-mid', '/rst-mid']) {
      const h1r = await within(outcome(sc.outbound, 'two', path), 10_000, 'h1 client of an h2 upstream');
      t.equal(h1r.completed, false, `${path}: HTTP/1.1 client of an HTTP/2 upstream fails too (${h1r.error})`);
      const s = h2Client(t, sc.outbound);
      const err = await within(
        h2Request(s, { ':path': path, ':authority': 'two' }).then(
          () => 'completed',
          (e: Error & { code?: string }) => e.code ?? e.message,
        ),
        10_000,
        'the h2 stream to end',
      );
      t.equal(err, 'ERR_HTTP2_STREAM_ERROR', `${path}: h2 client: the stream is reset`);
    }
  });

  t.test('the sidecar keeps serving', async (t) => {
    for (const host of ['one', 'two']) {
      const r = await request({ port: sc.outbound, path: '/ok', headers: { host } });
      t.equal(r.status, 200, host);
      t.equal(r.text, 'fine');
    }
    t.ok(sc.alive());
  });
});
