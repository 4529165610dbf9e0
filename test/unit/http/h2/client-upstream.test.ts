/**
 * src/http/upstream.ts on meshlet's own HTTP/2 client (`h2Framing: 'meshlet'`, the default): what the stack above relies on from the upstream HTTP/2 session — a response
 * streamed with its trailers, a request body, a GOAWAY racing requests (refused unseen, so
 * retryable), a connection refused (UpstreamConnectError), an HTTP/1.1 server answering the
 * preface (h2PrefaceRefused), an upstream reset (rstCode on the error), an abort (CANCEL to the
 * server), and retire() letting in-flight requests finish.
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { Readable } from 'node:stream';
import t, { type Test } from 'tap';
import * as upstream from '../../../../src/http/upstream';
import type { Headers, ResponseSink, UpstreamTarget } from '../../../../src/http/upstream';
import { until } from './lib';

const up = {
  ...upstream,
  UpstreamPools: class extends upstream.UpstreamPools {
    constructor(opts: upstream.UpstreamPoolOptions = {}) {
      super({ ...opts, h2Framing: 'meshlet' });
    }
  },
};

interface Result {
  status?: number;
  headers?: Headers;
  body: string;
  trailers?: Headers;
  err?: Error & { code?: string; rstCode?: number; connectionLost?: boolean; h2PrefaceRefused?: boolean };
  started?: boolean;
}

function sink(): { sink: ResponseSink; done: Promise<Result> } {
  let resolve!: (r: Result) => void;
  const done = new Promise<Result>((r) => (resolve = r));
  const r: Result = { body: '' };
  return {
    done,
    sink: {
      onResponse: (s, h) => ((r.status = s), (r.headers = h)),
      onData: (c) => ((r.body += c.toString()), true),
      onEnd: (tr) => ((r.trailers = tr), resolve(r)),
      onError: (e, started) => ((r.err = e), (r.started = started), resolve(r)),
    },
  };
}

async function server(t: Test, handler: (s: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders) => void): Promise<UpstreamTarget> {
  const srv = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  srv.on('session', (s) => (sessions.add(s), s.on('error', () => undefined)));
  srv.on('stream', (s, h) => (s.on('error', () => undefined), handler(s, h)));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  t.teardown(() => {
    for (const s of sessions) s.destroy();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  return { key: `127.0.0.1:${port}`, address: '127.0.0.1', port, protocol: 'http2' };
}

const req = (body: Readable | null = null, path = '/'): Parameters<InstanceType<typeof up.UpstreamPools>['send']>[1] => ({ method: body ? 'POST' : 'GET', path, authority: 'up.test', headers: ['x-a', '1', 'x-a', '2'], body });

t.test('a response with trailers, a request body', async (t) => {
  const target = await server(t, (s, h) => {
    s.respond({ ':status': 200, 'x-seen': `${h[':authority']} ${h['x-a']}` }, { waitForTrailers: true });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => s.end(`got ${Buffer.concat(chunks).length}`));
  });
  const pools = new up.UpstreamPools();
  t.teardown(() => pools.close());
  const a = sink();
  pools.send(target, req(), a.sink);
  const r = await a.done;
  t.equal(r.status, 200);
  t.equal(r.headers!['x-seen'], 'up.test 1, 2');
  t.equal(r.body, 'got 0');
  t.equal(r.trailers!['grpc-status'], '0');
  const b = sink();
  pools.send(target, req(Readable.from([Buffer.alloc(100_000, 1), Buffer.alloc(50_000, 2)])), b.sink);
  t.equal((await b.done).body, 'got 150000');
  t.same(pools.counts(), { http1Pools: 0, http2Sessions: 1 });
});

t.test('GOAWAY racing requests: refused unseen (retryable), connection lost', async (t) => {
  let n = 0;
  const target = await server(t, (s) => {
    if (++n === 1) {
      s.session!.goaway(http2.constants.NGHTTP2_NO_ERROR, 1);
      setTimeout(() => s.respond({ ':status': 200 }, { endStream: true }), 20);
    }
  });
  const pools = new up.UpstreamPools();
  t.teardown(() => pools.close());
  const a = sink();
  const b = sink();
  pools.send(target, req(), a.sink);
  pools.send(target, req(), b.sink);
  const [ra, rb] = await Promise.all([a.done, b.done]);
  t.equal(ra.status, 200);
  t.ok(rb.err, 'the second failed');
  t.equal(up.refusedUnseen(rb.err!), true, 'refused unseen');
  t.equal(rb.err!.rstCode, 7);
  t.equal(rb.err!.connectionLost, true);
  // A new session for the next request.
  const c = sink();
  pools.send(target, req(), c.sink);
  await until(() => n >= 3);
});

t.test('an upstream reset: rstCode on the error; an abort cancels the upstream stream', async (t) => {
  let serverRst = -1;
  const target = await server(t, (s, h) => {
    if (h[':path'] === '/reset') return s.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    s.on('close', () => (serverRst = s.rstCode));
    s.respond({ ':status': 200 });
    s.write('partial');
  });
  const pools = new up.UpstreamPools();
  t.teardown(() => pools.close());
  const a = sink();
  pools.send(target, req(null, '/reset'), a.sink);
  const r = await a.done;
  t.equal(r.err!.rstCode, 2);
  t.equal(r.started, false);
  const b = sink();
  const call = pools.send(target, req(), b.sink);
  await until(() => serverRst === -1 && b.sink !== undefined);
  await new Promise((res) => setTimeout(res, 30));
  call.abort();
  await until(() => serverRst !== -1);
  t.equal(serverRst, http2.constants.NGHTTP2_CANCEL);
});

t.test('connect failures: refused (UpstreamConnectError), an HTTP/1.1 server (h2PrefaceRefused)', async (t) => {
  const tmp = net.createServer();
  await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
  const dead = (tmp.address() as net.AddressInfo).port;
  await new Promise<void>((r) => tmp.close(() => r()));
  const pools = new up.UpstreamPools({ connectTimeoutMs: 2000 });
  t.teardown(() => pools.close());
  const a = sink();
  pools.send({ key: `127.0.0.1:${dead}`, address: '127.0.0.1', port: dead, protocol: 'http2' }, req(), a.sink);
  const r = await a.done;
  t.ok(r.err instanceof up.UpstreamConnectError);

  const h1 = net.createServer((sock) => {
    sock.on('error', () => undefined);
    sock.once('data', () => sock.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n'));
  });
  await new Promise<void>((r2) => h1.listen(0, '127.0.0.1', r2));
  t.teardown(() => new Promise<void>((r2) => h1.close(() => r2())));
  const p = (h1.address() as net.AddressInfo).port;
  const b = sink();
  pools.send({ key: `127.0.0.1:${p}`, address: '127.0.0.1', port: p, protocol: 'http2' }, req(), b.sink);
  const rb = await b.done;
  t.equal(rb.err!.h2PrefaceRefused, true);
});

t.test('retire(): in-flight requests finish, then the session closes', async (t) => {
  const target = await server(t, (s) => setTimeout(() => s.respond({ ':status': 204 }, { endStream: true }), 30));
  const pools = new up.UpstreamPools({ drainMs: 5000 });
  t.teardown(() => pools.close());
  const a = sink();
  pools.send(target, req(), a.sink);
  await new Promise((r) => setTimeout(r, 10));
  pools.retain(new Set());
  t.equal((await a.done).status, 204);
  await until(() => pools.counts().http2Sessions === 0);
});

t.test('the request head as the server gets it, on both framings: the field-list path and the header-object path alike', async (t) => {
  const srv = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  srv.on('session', (s) => (sessions.add(s), s.on('error', () => undefined)));
  const seen: string[][] = [];
  srv.on('stream', (s: http2.ServerHttp2Stream, _h: http2.IncomingHttpHeaders, _f: number, raw: string[]) => {
    s.on('error', () => undefined);
    seen.push(raw);
    s.respond({ ':status': 200 });
    s.end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  t.teardown(() => {
    for (const s of sessions) s.destroy();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  const target: UpstreamTarget = { key: `127.0.0.1:${port}`, address: '127.0.0.1', port, protocol: 'http2' };
  const cases: [string, string[], string[]][] = [
    ['usual', ['user-agent', 'wrk', 'Accept', '*/*', 'via', '1.1 meshlet', 'te', 'trailers'], ['user-agent', 'wrk', 'accept', '*/*', 'via', '1.1 meshlet', 'te', 'trailers']],
    ['names like inherited properties', ['constructor', 'c', 'tostring', 't', '__proto__', 'p'], ['constructor', 'c', 'tostring', 't', '__proto__', 'p']],
    ['a repeated name (merged, as the header object merges it)', ['x-a', '1', 'x-b', '2', 'x-a', '3'], ['x-a', '1', 'x-a', '3', 'x-b', '2']],
  ];
  for (const framing of ['meshlet', 'node'] as const) {
    const pools = new upstream.UpstreamPools({ h2Framing: framing });
    t.teardown(() => pools.close());
    for (const [what, headers, want] of cases) {
      const a = sink();
      pools.send(target, { method: 'GET', path: '/h', authority: 'up.test', headers, body: null }, a.sink);
      const r = await a.done;
      t.equal(r.status, 200, `${framing}, ${what}: answered`);
      const raw = seen.shift()!;
      t.same(raw.slice(0, 8), [':method', 'GET', ':path', '/h', ':authority', 'up.test', ':scheme', 'http'], `${framing}, ${what}: pseudo-headers`);
      t.same(raw.slice(8), want, `${framing}, ${what}: the fields`);
    }
  }
});
