/**
 * The inbound listener (mesh -> the local app, --app-port): the app gets the request in the
 * protocol it arrived in, or in --app-protocol; a two-sidecar hop (client -> outbound of one
 * sidecar -> inbound of another -> app), the way traffic crosses the mesh; and a sidecar without
 * an app answers 503 UH on its inbound port.
 */
import t from 'tap';
import { echo, h1Upstream, h2Client, h2Request, h2Upstream, request, route, service, startSidecar } from './helpers';

t.test('inbound to an HTTP/1.1 app, and a two-sidecar hop', async (t) => {
  const app = await h1Upstream(t, echo('app'));
  // (A policy file must hold at least one resource; this one is not used by the inbound path.)
  const server = await startSidecar(t, [service('unused', [{ port: 9 }])], { service: 'catalog', appPort: app.port });
  const r = await request({ port: server.inbound, method: 'POST', path: '/items?id=7', headers: { host: 'catalog:8080' }, body: 'abc' });
  t.equal(r.status, 200);
  const seen = r.json() as { url: string; bodyBytes: number; headers: Record<string, string> };
  t.equal(seen.url, '/items?id=7');
  t.equal(seen.bodyBytes, 3);
  t.equal(seen.headers.host, 'catalog:8080', 'the app sees the Host the client sent');
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
  t.equal(seen.headers.via, '1.1 meshlet');

  // The client's sidecar routes `catalog` to the server's sidecar inbound port.
  const client = await startSidecar(t, [service('catalog', [{ port: server.inbound }]), route('catalog', ['catalog'], [{ backends: [{ service: 'catalog' }] }])], { service: 'frontend' });
  const hop = await request({ port: client.outbound, path: '/items', headers: { host: 'catalog' } });
  t.equal(hop.status, 200, 'client -> sidecar -> sidecar -> app');
  const h = hop.json() as { headers: Record<string, string> };
  t.equal(h.headers.via, '1.1 meshlet, 1.1 meshlet', 'both hops are in via');
  t.equal(h.headers['x-forwarded-for'], '127.0.0.1, 127.0.0.1', 'both hops are in x-forwarded-for');
  t.equal(h.headers.host, 'catalog');
  t.equal(hop.headers.via, '1.1 meshlet, 1.1 meshlet', 'and in the response via');
});

t.test('inbound to an HTTP/2 app', async (t) => {
  const app = await h2Upstream(t, (stream, headers) => {
    stream.respond({ ':status': 200, 'x-app-saw': `${headers[':method']} ${headers[':path']} ${headers[':authority']}` }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.resume();
    stream.on('end', () => stream.end('h2 app'));
  });
  const sc = await startSidecar(t, [service('unused', [{ port: 9 }])], { service: 'greeter', appPort: app.port, args: ['--app-protocol', 'http2'] });
  const h2 = await h2Request(h2Client(t, sc.inbound), { ':method': 'POST', ':path': '/greet', ':authority': 'greeter', te: 'trailers' }, 'hi');
  t.equal(h2.status, 200, 'h2c client -> h2c app');
  t.equal(h2.headers['x-app-saw'], 'POST /greet greeter');
  t.equal(h2.trailers?.['grpc-status'], '0', 'trailers pass');
  const h1 = await request({ port: sc.inbound, path: '/from-h1', headers: { host: 'greeter' } });
  t.equal(h1.status, 200, 'HTTP/1.1 client -> h2c app (--app-protocol http2)');
  t.equal(h1.headers['x-app-saw'], 'GET /from-h1 greeter');
  t.equal(h1.text, 'h2 app');
});

t.test('no app behind the sidecar: 503 UH on the inbound port', async (t) => {
  const sc = await startSidecar(t, [service('unused', [{ port: 9 }])]);
  const r = await request({ port: sc.inbound, path: '/', headers: { host: 'x' } });
  t.equal(r.status, 503);
  t.equal(r.headers['x-meshlet-flags'], 'UH');
});
