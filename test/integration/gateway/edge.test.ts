/**
 * The gateway's client-facing behaviour over plaintext listeners, against the real process: which
 * Routes it serves (those attached to it; the mesh's routes and implicit service names are not
 * reachable), client limits (413, 431, 408, per-client connection cap), x-forwarded-for with 0 and
 * N trusted hops, and x-meshlet-* response headers stripped unless the listener keeps them. A
 * sidecar from the same policies shows the other side: a gateway-only Route is not in the mesh.
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import t from 'tap';
import { h1Upstream, rawExchange, route, service, startSidecar } from '../sidecar/helpers';
import { closedPort, gatewayResource, HOST, startGateway, tempDir, within } from './helpers';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function get(port: number, host: string, path = '/', headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, path, method, headers: { host, ...headers }, agent: false }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

t.test('the gateway at the edge', async (t) => {
  const dir = tempDir(t);
  const seen: http.IncomingHttpHeaders[] = [];
  const up = await h1Upstream(t, (req, res) => {
    seen.push(req.headers);
    req.resume();
    req.on('end', () => {
      res.setHeader('x-meshlet-internal', 'secret');
      if (req.url === '/trailers') {
        // Chunked, with trailers: an HTTP/2 client gets them as a trailing HEADERS frame.
        res.setHeader('trailer', 'x-meshlet-trail, x-app-trail');
        res.write('app ');
        res.addTrailers({ 'x-meshlet-trail': 'secret', 'x-app-trail': 'kept' });
      }
      res.end(`app ${req.url}`);
    });
  });
  const [plain, trusting, keeping] = [await closedPort(), await closedPort(), await closedPort()];
  const policies = [
    service('web', [{ port: up.port }], 'http1'),
    // Attached to both gateways; not in the mesh.
    { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'shop' }, spec: { hosts: ['shop.example.com'], gateways: ['edge', 'edge2'], rules: [{ backends: [{ service: 'web' }] }] } },
    // A mesh route (no gateways): not at the gateway.
    route('internal', ['internal.example.com'], [{ backends: [{ service: 'web' }] }]),
    gatewayResource('edge', {
      listeners: [
        { name: 'plain', port: plain, protocol: 'HTTP', limits: { maxRequestBodyBytes: 1000, maxHeaderBytes: 2048, requestHeadersTimeout: '300ms', maxConnectionsPerClient: 3 } },
        { name: 'keeping', port: keeping, protocol: 'HTTP', keepMeshHeaders: ['x-meshlet-flags'] },
      ],
    }),
    gatewayResource('edge2', { trustedHops: 1, listeners: [{ name: 'lb', port: trusting, protocol: 'HTTP' }] }),
  ];
  const g = await startGateway(t, 'edge', policies, dir, ['--access-log', '0']);
  await startGateway(t, 'edge2', policies, dir, ['--access-log', '0']);

  t.test('a Route attached to the gateway reaches the app; others do not', async (t) => {
    const ok = await get(plain, 'shop.example.com', '/cart?x=1');
    t.equal(ok.status, 200);
    t.equal(ok.body, 'app /cart?x=1');
    const mesh = await get(plain, 'internal.example.com');
    t.equal(mesh.status, 404, 'a mesh-only Route is not served at the gateway');
    const implicit = await get(plain, 'web');
    t.equal(implicit.status, 404, 'nor is a service by its name (no implicit routes at the edge)');
    const sc = await startSidecar(t, policies);
    const r = await rawExchange(sc.outbound, 'GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n');
    t.match(r.text, /^HTTP\/1\.1 404/, 'in the mesh, the gateway-only Route does not apply');
    const r2 = await rawExchange(sc.outbound, 'GET / HTTP/1.1\r\nHost: internal.example.com\r\nConnection: close\r\n\r\n');
    t.match(r2.text, /^HTTP\/1\.1 200/, 'while the mesh Route does');
  });

  t.test('x-meshlet-* response headers stay inside unless the listener keeps them', async (t) => {
    const ok = await get(plain, 'shop.example.com');
    t.equal(ok.headers['x-meshlet-internal'], undefined, 'an app-set x-meshlet-* header is removed');
    const nr = await get(plain, 'nowhere.example.com');
    t.equal(nr.status, 404);
    t.equal(nr.headers['x-meshlet-flags'], undefined, 'the mesh\u2019s own flags header too');
    const kept = await get(keeping, 'nowhere.example.com');
    t.equal(kept.headers['x-meshlet-flags'], 'NR', 'kept where the listener asks (keepMeshHeaders)');
    t.equal((await get(keeping, 'shop.example.com')).headers['x-meshlet-internal'], undefined, 'only the named ones');
    // gRPC-Web carries its trailers in the body (a frame flagged 0x80): left out there too.
    const web = { 'content-type': 'application/grpc-web+proto' };
    const call = '\0\0\0\0\0'; // one empty message
    const nrWeb = await get(plain, 'nowhere.example.com', '/pkg.Svc/Call', web, 'POST', call);
    t.match(nrWeb.body, /grpc-status: \d+/, 'a gRPC-Web answer of the gateway\u2019s own, its trailer frame in the body');
    t.equal(nrWeb.headers['x-meshlet-flags'], undefined, 'no flags header in the head');
    t.notMatch(nrWeb.body, /x-meshlet-flags/i, 'nor in the trailer frame');
    t.match((await get(keeping, 'nowhere.example.com', '/pkg.Svc/Call', web, 'POST', call)).body, /x-meshlet-flags: NR/, 'which a keeping listener keeps');
  });

  t.test('over HTTP/2 (h2c) too: x-meshlet-* response headers stay inside unless kept', async (t) => {
    interface H2Answer {
      headers: http2.IncomingHttpHeaders;
      trailers: http2.IncomingHttpHeaders | undefined;
    }
    const h2ask = async (port: number, host: string, path = '/', extra: http2.OutgoingHttpHeaders = {}): Promise<H2Answer> => {
      const c = http2.connect(`http://${HOST}:${port}`);
      c.on('error', () => undefined);
      try {
        return await new Promise<H2Answer>((resolve, reject) => {
          const r = c.request({ ':path': path, ':authority': host, ...extra });
          let headers: http2.IncomingHttpHeaders = {};
          let trailers: http2.IncomingHttpHeaders | undefined;
          r.on('response', (h) => (headers = h));
          r.on('trailers', (h) => (trailers = h));
          r.on('end', () => resolve({ headers, trailers }));
          r.on('error', reject);
          r.resume();
          r.end();
        });
      } finally {
        c.close();
      }
    };
    const h2get = async (port: number, host: string): Promise<http2.IncomingHttpHeaders> => (await h2ask(port, host)).headers;
    const ok = await h2get(plain, 'shop.example.com');
    t.equal(ok[':status'], 200);
    t.equal(ok['x-meshlet-internal'], undefined, 'an app-set x-meshlet-* header is removed');
    t.equal((await h2get(plain, 'nowhere.example.com'))['x-meshlet-flags'], undefined, 'the flags header too');
    t.equal((await h2get(keeping, 'nowhere.example.com'))['x-meshlet-flags'], 'NR', 'kept where the listener asks');
    t.equal((await h2get(keeping, 'shop.example.com'))['x-meshlet-internal'], undefined, 'only the named ones');
    const trailed = await h2ask(plain, 'shop.example.com', '/trailers');
    t.equal(trailed.headers[':status'], 200);
    t.equal(trailed.trailers?.['x-app-trail'], 'kept', 'the app’s trailers arrive');
    t.equal(trailed.trailers?.['x-meshlet-trail'], undefined, 'less its x-meshlet-* ones');
    // A gRPC call the gateway answers itself (no route): trailers-only, grpc-status in the head.
    const grpc = { 'content-type': 'application/grpc', te: 'trailers', ':method': 'POST' };
    const nr = await h2ask(plain, 'nowhere.example.com', '/pkg.Svc/Call', grpc);
    t.not(nr.headers['grpc-status'], undefined, 'a gRPC answer of the gateway’s own');
    t.not(nr.headers['grpc-status'], '0');
    t.equal(nr.headers['x-meshlet-flags'], undefined, 'without the flags header');
    t.equal((await h2ask(keeping, 'nowhere.example.com', '/pkg.Svc/Call', grpc)).headers['x-meshlet-flags'], 'NR', 'which a keeping listener keeps');
  });

  t.test('x-forwarded-for: 0 trusted hops replaces it, 1 keeps the load balancer\u2019s entry', async (t) => {
    await get(plain, 'shop.example.com', '/', { 'x-forwarded-for': '6.6.6.6', forwarded: 'for=6.6.6.6' });
    let h = seen[seen.length - 1];
    t.equal(h['x-forwarded-for'], HOST, 'a client cannot claim another address');
    t.equal(h.forwarded, undefined);
    t.equal(h['x-forwarded-proto'], 'http');
    await get(trusting, 'shop.example.com', '/', { 'x-forwarded-for': '6.6.6.6, 203.0.113.5' });
    h = seen[seen.length - 1];
    t.equal(h['x-forwarded-for'], `203.0.113.5, ${HOST}`, 'the forged entry dropped, the trusted one kept, the peer appended');
  });

  t.test('client limits: 413, 431, 408, connections per client', async (t) => {
    const big = await get(plain, 'shop.example.com', '/', { 'content-type': 'text/plain' }, 'POST', 'x'.repeat(2000));
    t.equal(big.status, 413, 'a body over maxRequestBodyBytes (declared length)');
    const chunked = await rawExchange(plain, `POST / HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7d0\r\n${'y'.repeat(2000)}\r\n0\r\n\r\n`);
    t.match(chunked.text, /^HTTP\/1\.1 413/, 'a chunked body passing the limit');
    const small = await get(plain, 'shop.example.com', '/', {}, 'POST', 'x'.repeat(500));
    t.equal(small.status, 200, 'under the limit');
    const headers = await get(plain, 'shop.example.com', '/', { 'x-big': 'z'.repeat(4000) });
    t.equal(headers.status, 431, 'headers over maxHeaderBytes');
    const slow = await within(rawExchange(plain, 'GET / HTTP/1.1\r\nHost: shop.example.com\r\n'), 10_000, 'the 408');
    t.match(slow.text, /^HTTP\/1\.1 408/, 'headers not finished within requestHeadersTimeout');
    // Three idle connections from 127.0.0.1 are allowed; the fourth is closed at once.
    const open = await Promise.all([1, 2, 3].map(() => connect(plain)));
    t.teardown(() => open.forEach((s) => s.destroy()));
    const fourth = await connect(plain);
    const closed = await within(new Promise<boolean>((r) => (fourth.once('close', () => r(true)), fourth.write('GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n'))), 5000, 'the fourth connection closed');
    t.ok(closed, 'the connection over maxConnectionsPerClient is closed');
    open[0].destroy();
    await new Promise((r) => setTimeout(r, 100));
    t.equal((await get(plain, 'shop.example.com')).status, 200, 'below the cap again, served');
    void g;
  });
});

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, HOST, () => resolve(s));
    s.on('error', reject);
  });
}
