import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { compileCors, parseCorsConfig, type CorsPolicy } from '../../../src/edge/cors';
import { edgeErrorResponse } from '../../../src/edge/errors';

function cors(raw: unknown): CorsPolicy {
  const r = compileCors(raw, 'spec.cors');
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

const pre = (origin: string, method: string, headers?: string) => ({
  origin,
  'access-control-request-method': method,
  ...(headers ? { 'access-control-request-headers': headers } : {}),
});

t.test('preflights: allowed origins, methods and headers get 204 with the allow headers; anything else 403 saying why', async (t) => {
  const p = cors({
    allowOrigins: ['https://app.example.com', 'https://*.example.org:8443'],
    allowMethods: ['GET', 'PUT'],
    allowHeaders: ['Content-Type', 'X-Trace'],
    exposeHeaders: ['X-Total'],
    allowCredentials: true,
    maxAgeSeconds: 300,
  });
  const ok = p.evaluate('OPTIONS', pre('https://app.example.com', 'PUT', 'content-type, x-trace'));
  t.same(ok, {
    kind: 'preflight',
    status: 204,
    headers: {
      vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
      'access-control-allow-origin': 'https://app.example.com',
      'access-control-allow-methods': 'GET, PUT',
      'access-control-max-age': '300',
      'access-control-allow-headers': 'content-type, x-trace',
      'access-control-allow-credentials': 'true',
    },
  });
  t.equal(p.evaluate('OPTIONS', pre('https://a.b.example.org:8443', 'GET')).kind, 'preflight', 'wildcard subdomain');
  const cases: [Record<string, string>, RegExp][] = [
    [pre('https://evil.com', 'GET'), /origin https:\/\/evil\.com is not allowed/],
    [pre('https://example.org:8443', 'GET'), /origin .* is not allowed/],
    [pre('https://a.example.org', 'GET'), /not allowed/],
    [pre('http://app.example.com', 'GET'), /not allowed/],
    [pre('https://app.example.com', 'DELETE'), /method DELETE is not allowed/],
    [pre('https://app.example.com', 'GET', 'x-secret'), /header x-secret is not allowed/],
  ];
  for (const [h, re] of cases) {
    const out = p.evaluate('OPTIONS', h);
    t.equal(out.kind, 'rejected', JSON.stringify(h));
    if (out.kind === 'rejected') {
      t.equal(out.error.status, 403);
      t.equal(out.error.code, 'EDGE_CORS_REJECTED');
      t.match(out.error.message, re);
      t.notOk('access-control-allow-origin' in out.headers);
    }
  }
});

t.test('actual requests: allow headers for allowed origins only; none without Origin; * without credentials', async (t) => {
  const p = cors({ allowOrigins: ['https://app.example.com'], exposeHeaders: ['x-total'], allowCredentials: true });
  t.same(p.evaluate('GET', {}), { kind: 'none' });
  t.same(p.evaluate('GET', { origin: 'https://app.example.com' }), {
    kind: 'actual',
    headers: { vary: 'Origin', 'access-control-allow-origin': 'https://app.example.com', 'access-control-allow-credentials': 'true', 'access-control-expose-headers': 'x-total' },
  });
  t.same(p.evaluate('POST', { origin: 'https://evil.com' }), { kind: 'actual', headers: { vary: 'Origin' } });
  const star = cors({ allowOrigins: ['*'], allowHeaders: ['*'] });
  t.same(star.evaluate('GET', { origin: 'https://x.y' }), { kind: 'actual', headers: { 'access-control-allow-origin': '*' } });
  const sp = star.evaluate('OPTIONS', pre('https://x.y', 'POST', 'x-anything'));
  t.equal(sp.kind === 'preflight' && sp.headers['access-control-allow-headers'], '*');
});

t.test('config errors name the field', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{}, /spec\.cors\.allowOrigins: is required/],
    [{ allowOrigins: ['*'], allowCredentials: true }, /spec\.cors\.allowOrigins: \* cannot be used with allowCredentials/],
    [{ allowOrigins: ['app.example.com'] }, /allowOrigins\[0\]: "app\.example\.com" must be/],
    [{ allowOrigins: ['*'], maxAgeSeconds: -5 }, /maxAgeSeconds/],
    [{ allowOrigins: ['*'], allowHeaders: ['a b'] }, /allowHeaders\[0\]/],
  ];
  for (const [input, re] of cases) {
    const r = parseCorsConfig(input, 'spec.cors');
    t.notOk(r.ok);
    if (!r.ok) t.match(r.errors.map((e) => `${e.path}: ${e.message}`).join('\n'), re);
  }
});

t.test('over real HTTP: preflight answered without reaching the service; actual responses carry the headers', async (t) => {
  const p = cors({ allowOrigins: ['https://app.example.com'], allowMethods: ['GET', 'POST'], allowHeaders: ['content-type'] });
  let serviceCalls = 0;
  const server = http.createServer((req, res) => {
    const out = p.evaluate(req.method!, req.headers);
    if (out.kind === 'preflight') return void res.writeHead(out.status, out.headers).end();
    if (out.kind === 'rejected') {
      const r = edgeErrorResponse(out.error);
      return void res.writeHead(r.status, { ...r.headers, ...out.headers }).end(r.body);
    }
    serviceCalls++;
    res.writeHead(200, { 'content-type': 'text/plain', ...(out.kind === 'actual' ? out.headers : {}) }).end('hello');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api`;
  const a = await request(url, { method: 'OPTIONS', headers: pre('https://app.example.com', 'POST', 'Content-Type') });
  await a.body.dump();
  t.equal(a.statusCode, 204);
  t.equal(a.headers['access-control-allow-origin'], 'https://app.example.com');
  t.equal(a.headers['access-control-allow-headers'], 'content-type');
  const b = await request(url, { method: 'OPTIONS', headers: pre('https://evil.com', 'POST') });
  t.equal(b.statusCode, 403);
  t.match(await b.body.json(), { error: 'EDGE_CORS_REJECTED' });
  t.equal(serviceCalls, 0, 'preflights never reached the service');
  const c = await request(url, { headers: { origin: 'https://app.example.com' } });
  t.equal(await c.body.text(), 'hello');
  t.equal(c.headers['access-control-allow-origin'], 'https://app.example.com');
  t.equal(c.headers.vary, 'Origin');
});
