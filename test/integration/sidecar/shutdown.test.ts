/**
 * SIGTERM drains: the sidecar stops accepting connections, lets the requests in flight finish
 * (HTTP/1.1 and h2c), then exits 0.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import t from 'tap';
import { HOST, h1Upstream, h2Client, h2Request, h2Upstream, route, service, startSidecar, within } from './helpers';

t.test('SIGTERM lets in-flight requests finish, then exits 0', async (t) => {
  let releaseH1: (() => void) | undefined;
  let h1Arrived: () => void = () => undefined;
  const h1There = new Promise<void>((r) => (h1Arrived = r));
  const up1 = await h1Upstream(t, (req, res) => {
    req.resume();
    releaseH1 = () => res.end('late h1 answer');
    h1Arrived();
  });
  let releaseH2: (() => void) | undefined;
  let h2Arrived: () => void = () => undefined;
  const h2There = new Promise<void>((r) => (h2Arrived = r));
  const up2 = await h2Upstream(t, (stream) => {
    releaseH2 = () => {
      stream.respond({ ':status': 200 });
      stream.end('late h2 answer');
    };
    h2Arrived();
  });
  const sc = await startSidecar(t, [
    service('one', [{ port: up1.port }]),
    service('two', [{ port: up2.port }], 'http2'),
    route('one', ['one'], [{ backends: [{ service: 'one' }] }]),
    route('two', ['two'], [{ backends: [{ service: 'two' }] }]),
  ]);

  const h1Res = new Promise<{ status: number; body: string }>((resolve, reject) => {
    http
      .get({ host: HOST, port: sc.outbound, path: '/', headers: { host: 'one' }, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
  const session = h2Client(t, sc.outbound);
  const h2Res = h2Request(session, { ':path': '/', ':authority': 'two' });
  await within(Promise.all([h1There, h2There]), 10_000, 'both requests to reach their upstreams');

  sc.child.kill('SIGTERM');
  // New connections are refused once the listener stopped; poll until then (bounded).
  let refused = false;
  for (let i = 0; i < 200 && !refused; i++) {
    refused = await new Promise<boolean>((r) => {
      const s = net.connect(sc.outbound, HOST);
      s.on('connect', () => {
        s.destroy();
        r(false);
      });
      s.on('error', () => r(true));
    });
    if (!refused) await new Promise((r) => setTimeout(r, 10));
  }
  t.ok(refused, 'new connections are refused while draining');
  t.ok(sc.alive(), 'the sidecar waits for the requests in flight');

  releaseH1?.();
  releaseH2?.();
  t.same(await within(h1Res, 10_000, 'the HTTP/1.1 response'), { status: 200, body: 'late h1 answer' }, 'the HTTP/1.1 request in flight completed');
  const r2 = await within(h2Res, 10_000, 'the h2 response');
  t.equal(r2.status, 200, 'the h2 request in flight completed');
  t.equal(r2.body.toString(), 'late h2 answer');
  t.equal(await within(sc.exited, 10_000, 'the sidecar to exit'), 0, 'then the sidecar exits 0');
});
