/**
 * Slow request bodies (the "slow POST" attack: a byte every few seconds holds a connection and an
 * upstream request open forever), against the real sidecar with `--request-body-timeout 500
 * --min-upload-rate 200`: a body that stops is cut with 408 `SI` after the idle timeout, one that
 * trickles is cut once it falls below the minimum rate, over HTTP/1.1 and HTTP/2; the upstream sees
 * the request aborted; normal uploads and gRPC streams (long-lived by design) are not affected.
 */
import t, { type Test } from 'tap';
import * as net from 'node:net';
import { h1Upstream, h2Client, HOST, request, route, service, startSidecar, within } from './helpers';

async function setup(t: Test) {
  const seen = { aborted: 0, complete: 0 };
  const up = await h1Upstream(t, (req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => {
      seen.complete++;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`got ${n}`);
    });
    req.on('close', () => {
      if (!req.complete) seen.aborted++;
    });
  });
  const sc = await startSidecar(t, [service('web', [{ port: up.port }], 'http1'), route('web', ['web'], [{ backends: [{ service: 'web' }] }])], {
    args: ['--request-body-timeout', '500', '--min-upload-rate', '200'],
  });
  return { sc, seen };
}

/** A raw HTTP/1.1 POST whose body is written by `send`; resolves with what came back once the server closed. */
function slowPost(port: number, headers: string, send: (sock: net.Socket, stop: () => boolean) => void): Promise<{ text: string; status: number }> {
  return within(
    new Promise((resolve) => {
      const sock = net.connect(port, HOST);
      const chunks: Buffer[] = [];
      let closed = false;
      sock.on('data', (c: Buffer) => chunks.push(c));
      sock.on('error', () => undefined);
      sock.on('close', () => {
        closed = true;
        const text = Buffer.concat(chunks).toString('latin1');
        resolve({ text, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0) });
      });
      sock.on('connect', () => {
        sock.write(`POST /up HTTP/1.1\r\nhost: web\r\n${headers}\r\n`);
        send(sock, () => closed);
      });
    }),
    15_000,
    'the sidecar to close a slow upload',
  );
}

t.test('HTTP/1.1: an idle body and a trickling body get 408 SI; a normal upload and a gRPC stream do not', async (t) => {
  const { sc, seen } = await setup(t);
  const idle = await slowPost(sc.outbound, 'content-length: 1000\r\n', (s) => s.write('x'.repeat(10)));
  t.equal(idle.status, 408, 'a body that stops: 408');
  t.match(idle.text, /x-meshlet-flags: SI/);
  t.match(idle.text, /request body idle for more than 500 ms/);

  let sent = 0;
  const slow = await slowPost(sc.outbound, 'content-length: 100000\r\n', (s, stopped) => {
    const tick = setInterval(() => {
      if (stopped()) return clearInterval(tick);
      s.write('y');
      sent++;
    }, 100);
  });
  t.equal(slow.status, 408, 'a body at 10 bytes/s: 408');
  t.match(slow.text, /request body slower than 200 bytes\/s/);
  t.ok(sent < 100_000, `cut while still sending (${sent} of 100000 bytes sent)`);
  await within((async () => { while (seen.aborted < 2) await new Promise((r) => setTimeout(r, 20)); })(), 5000, 'the upstream to see both requests aborted');
  t.equal(seen.aborted, 2, 'the upstream saw both requests aborted');

  const ok = await request({ port: sc.outbound, method: 'POST', path: '/up', headers: { host: 'web' }, body: Buffer.alloc(200_000, 1) });
  t.equal(ok.status, 200, 'a normal upload');
  t.equal(ok.text, 'got 200000');

  // gRPC: a stream idle for longer than the timeout, then finished, is left alone.
  const grpc = await slowPost(sc.outbound, 'content-type: application/grpc\r\ncontent-length: 10\r\nconnection: close\r\n', (s) => {
    s.write('12345');
    setTimeout(() => s.write('67890'), 1200);
  });
  t.equal(grpc.status, 200, 'a gRPC request body idle 1.2 s is not cut');
  const m = await request({ port: sc.admin, path: '/metrics' });
  t.match(m.text, /meshlet_overload_actions_total\{listener="outbound",action="body_timeout"\} 1\b/, 'idle body counted');
  t.match(m.text, /meshlet_overload_actions_total\{listener="outbound",action="body_too_slow"\} 1\b/, 'slow body counted');
});

t.test('HTTP/2: an idle body and a trickling body get 408 SI', async (t) => {
  const { sc, seen } = await setup(t);
  const session = h2Client(t, sc.outbound);
  const post = (send: (s: ReturnType<typeof session.request>) => void) =>
    within(
      new Promise<{ status: number; flags: unknown; body: string }>((resolve, reject) => {
        const s = session.request({ ':method': 'POST', ':path': '/up', ':authority': 'web' }, { endStream: false });
        const chunks: Buffer[] = [];
        let head: Record<string, unknown> = {};
        s.on('response', (h) => (head = h));
        s.on('data', (c: Buffer) => chunks.push(c));
        s.on('error', reject);
        s.on('close', () => resolve({ status: Number(head[':status']), flags: head['x-meshlet-flags'], body: Buffer.concat(chunks).toString() }));
        send(s);
      }),
      15_000,
      'the sidecar to cut an h2 upload',
    );
  const idle = await post((s) => s.write('x'.repeat(10)));
  t.equal(idle.status, 408, 'a body that stops: 408');
  t.equal(idle.flags, 'SI');
  t.match(idle.body, /idle for more than 500 ms/);
  const slow = await post((s) => {
    const tick = setInterval(() => (s.closed ? clearInterval(tick) : s.write('y')), 100);
  });
  t.equal(slow.status, 408, 'a body at 10 bytes/s: 408');
  t.match(slow.body, /slower than 200 bytes\/s/);
  await within((async () => { while (seen.aborted < 2) await new Promise((r) => setTimeout(r, 20)); })(), 5000, 'the upstream to see both requests aborted');
  t.pass('the upstream saw both requests aborted');
  const fine = await post((s) => s.end(Buffer.alloc(100_000, 1)));
  t.equal(fine.status, 200, 'a normal upload on the same session');
  t.equal(fine.body, 'got 100000');
  // Several bodies in progress at once (the sidecar walks them on one timer): the ones that stop
  // are cut, in whatever order they sit, and the one that completes between them is not.
  const [first, done, last] = await Promise.all([
    post((s) => s.write('a')),
    post((s) => {
      s.write('b');
      setTimeout(() => s.end('b'), 200);
    }),
    post((s) => s.write('c')),
  ]);
  t.equal(first.status, 408, 'the first of three, stopped: 408');
  t.equal(done.status, 200, 'the middle one, completed: 200');
  t.equal(done.body, 'got 2');
  t.equal(last.status, 408, 'the last one, stopped: 408');
});
