/**
 * `protocol: auto` (the default) with an upstream that speaks only HTTP/1.1: a request that came
 * over h2c would go upstream over HTTP/2, and a plain node:http app refuses the HTTP/2 preface.
 * The sidecar remembers the endpoint as HTTP/1.1-only and sends the request again over HTTP/1.1,
 * body included; later requests go HTTP/1.1 at once. Outbound (app -> service endpoint) and
 * inbound (another sidecar's h2c -> the local app) alike.
 */
import t from 'tap';
import { echo, h1Upstream, h2Client, h2Request, request, route, service, startSidecar } from './helpers';

t.test('h2c to a plain HTTP/1.1 app under protocol auto', async (t) => {
  const app = await h1Upstream(t, echo('plain'));
  const sc = await startSidecar(t, [service('plain', [{ port: app.port }]), route('plain', ['plain'], [{ backends: [{ service: 'plain' }] }])], { service: 'client', appPort: app.port });
  const session = h2Client(t, sc.outbound);

  t.test('outbound: the first h2c request is answered by the app, body and all', async (t) => {
    const body = Buffer.alloc(10_000, 97);
    const r = await h2Request(session, { ':method': 'POST', ':path': '/first', ':authority': 'plain', 'content-type': 'text/plain' }, body);
    t.equal(r.status, 200, `not a mesh error: ${r.body.toString().slice(0, 100)}`);
    t.equal(r.headers['x-meshlet-flags'], undefined, 'no response flag');
    const seen = JSON.parse(r.body.toString()) as { url: string; bodyBytes: number; method: string };
    t.equal(seen.url, '/first');
    t.equal(seen.method, 'POST');
    t.equal(seen.bodyBytes, body.length, 'the whole body reached the app');
  });

  t.test('outbound: the endpoint is remembered: later requests go over HTTP/1.1 at once', async (t) => {
    const before = app.hits;
    for (let i = 0; i < 5; i++) {
      const r = await h2Request(session, { ':method': 'GET', ':path': `/again/${i}`, ':authority': 'plain' });
      t.equal(r.status, 200);
    }
    t.equal(app.hits - before, 5, 'each request reached the app once');
  });

  t.test('inbound: h2c from another sidecar to a plain HTTP/1.1 app', async (t) => {
    // A sidecar of its own, in front of an app no request has been sent to yet.
    const app2 = await h1Upstream(t, echo('plain2'));
    const sc2 = await startSidecar(t, [service('unused', [{ port: 9 }])], { service: 'plain', appPort: app2.port });
    const inbound = h2Client(t, sc2.inbound);
    const r = await h2Request(inbound, { ':method': 'POST', ':path': '/in', ':authority': 'plain', 'x-meshlet-source': 'client' }, 'hello');
    t.equal(r.status, 200, `not a mesh error: ${r.body.toString().slice(0, 100)}`);
    const seen = JSON.parse(r.body.toString()) as { url: string; bodyBytes: number };
    t.equal(seen.url, '/in');
    t.equal(seen.bodyBytes, 5);
  });

  t.test('HTTP/1.1 clients are unaffected', async (t) => {
    const r = await request({ port: sc.outbound, path: '/h1', headers: { host: 'plain' } });
    t.equal(r.status, 200);
  });
});
