/**
 * Resilience through the real sidecar, against real upstream servers: timeouts (route, per try,
 * grpc-timeout), retries (conditions, bodies, Retry-After, never after response bytes, budget),
 * connection and request limits, the route breaker's states, fault injection and mirroring.
 * Every mesh decision is asserted through the response flag users see.
 */
import type * as http from 'node:http';
import t from 'tap';
import { parseGrpcTimeout } from '../../../src/grpc/timeout';
import { agent, closedPort, destinationPolicy, echo, h1Upstream, h2Client, h2Request, h2Upstream, pool, request, route, service, startSidecar, within } from './helpers';

const flags = (h: http.IncomingHttpHeaders): string[] => String(h['x-meshlet-flags'] ?? '').split(',').filter(Boolean);

/** Answers `status` for the first `n` requests, then 200 (echo). */
function failFirst(n: number, status = 503, extra: Record<string, string> = {}): http.RequestListener & { bodies: string[] } {
  let seen = 0;
  const bodies: string[] = [];
  const h = ((req: http.IncomingMessage, res: http.ServerResponse) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      bodies.push(body);
      if (seen++ < n) {
        res.writeHead(status, { 'content-type': 'text/plain', ...extra });
        res.end('try again');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`ok:${body}`);
    });
  }) as http.RequestListener & { bodies: string[] };
  h.bodies = bodies;
  return h;
}

const hold = (): { handler: http.RequestListener; release(): void; held: number } => {
  const waiting: http.ServerResponse[] = [];
  const o = {
    held: 0,
    handler: ((req, res) => {
      req.resume();
      o.held++;
      waiting.push(res);
    }) as http.RequestListener,
    release() {
      for (const r of waiting.splice(0)) {
        r.writeHead(200);
        r.end('released');
      }
    },
  };
  return o;
};

t.test('route timeout answers 504 UT; per-try timeout retries on another try', async (t) => {
  const slow = await h1Upstream(t, (req, res) => {
    req.resume();
    setTimeout(() => {
      if (!res.destroyed) res.end('late');
    }, 3000);
  });
  let n = 0;
  const slowOnce = await h1Upstream(t, (req, res) => {
    req.resume();
    if (n++ === 0) return; // the first try never answers
    res.end('second try');
  });
  const sc = await startSidecar(t, [
    service('slow', [{ port: slow.port }]),
    service('flaky', [{ port: slowOnce.port }]),
    route('slow', ['slow'], [{ backends: [{ service: 'slow' }], timeout: '200ms' }]),
    route('flaky', ['flaky'], [{ backends: [{ service: 'flaky' }], timeout: '5s', retries: { attempts: 2, perTryTimeout: '200ms', retryOn: ['gateway-error'] } }]),
  ]);
  const r = await request({ port: sc.outbound, headers: { host: 'slow' } });
  t.equal(r.status, 504);
  t.same(flags(r.headers), ['UT']);
  t.match(r.text, /request timeout 200ms/);
  const f = await request({ port: sc.outbound, headers: { host: 'flaky' } });
  t.equal(f.status, 200, 'the per-try timeout cut the first try and the retry answered');
  t.equal(f.text, 'second try');
  t.equal(n, 2);
});

t.test('upstream connections: reused while busy, closed after the DestinationPolicy idleTimeout', async (t) => {
  const up = await h1Upstream(t, echo('idle'));
  let opened = 0;
  let closed = 0;
  up.server.on('connection', (s) => {
    opened++;
    s.on('close', () => closed++);
  });
  const sc = await startSidecar(t, [service('idle', [{ port: up.port }]), destinationPolicy('idle', { idleTimeout: '300ms' })]);
  for (let i = 0; i < 5; i++) t.equal((await request({ port: sc.outbound, headers: { host: 'idle' } })).status, 200);
  t.equal(opened, 1, 'one keep-alive connection served five requests in a row');
  t.equal(closed, 0);
  await within(
    (async () => {
      while (closed < 1) await new Promise((r) => setTimeout(r, 20));
    })(),
    3000,
    'the idle upstream connection to be closed',
  );
  t.equal(closed, 1, 'the sidecar closed the idle connection');
  t.equal((await request({ port: sc.outbound, headers: { host: 'idle' } })).status, 200, 'and opens a new one when needed');
  t.equal(opened, 2);
});

t.test('grpc-timeout is honoured and passed on shrunk', async (t) => {
  const seen: string[] = [];
  const up = await h2Upstream(t, (stream, headers) => {
    seen.push(String(headers['grpc-timeout']));
    if (headers['x-sleep']) return; // never answers
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '0' }, { endStream: true });
  });
  const sc = await startSidecar(t, [service('g', [{ port: up.port }], 'http2')]);
  const s = h2Client(t, sc.outbound);
  const ok = await h2Request(s, { ':path': '/pkg.S/M', ':authority': 'g', 'content-type': 'application/grpc', 'grpc-timeout': '5S' });
  t.equal(ok.status, 200);
  const passed = parseGrpcTimeout(String(seen[0]));
  t.ok(typeof passed === "number" && passed <= 5000 && passed > 4000, `upstream saw grpc-timeout ${seen[0]} (shrunk below 5 s)`);
  const late = await within(h2Request(s, { ':path': '/pkg.S/M', ':authority': 'g', 'content-type': 'application/grpc', 'grpc-timeout': '150m', 'x-sleep': '1' }), 10_000, 'the deadline');
  t.equal(late.status, 200, 'a gRPC client gets a gRPC status, not an HTTP error page');
  t.equal(late.headers['grpc-status'], '4', 'DEADLINE_EXCEEDED');
  t.equal(late.headers['x-meshlet-flags'], 'UT');
});

t.test('retries: 5xx retried until success, POST body replayed; exhausted -> URX', async (t) => {
  const h = failFirst(2);
  const up = await h1Upstream(t, h);
  const always = await h1Upstream(t, (req, res) => {
    req.resume();
    res.writeHead(503);
    res.end('down');
  });
  const sc = await startSidecar(t, [
    service('flaky', [{ port: up.port }]),
    service('down', [{ port: always.port }]),
    route('flaky', ['flaky'], [{ backends: [{ service: 'flaky' }], retries: { attempts: 3, retryOn: ['5xx'], backoff: { baseInterval: '1ms', maxInterval: '5ms' } } }]),
    route('down', ['down'], [{ backends: [{ service: 'down' }], retries: { attempts: 2, retryOn: 'gateway-error', backoff: { baseInterval: '1ms' } } }]),
  ]);
  const r = await request({ port: sc.outbound, method: 'POST', headers: { host: 'flaky', 'content-type': 'text/plain' }, body: 'x'.repeat(5000) });
  t.equal(r.status, 200);
  t.equal(r.text, `ok:${'x'.repeat(5000)}`, 'the third try got the whole body');
  t.same(h.bodies.map((b) => b.length), [5000, 5000, 5000], 'every try carried the body');
  t.same(flags(r.headers), [], 'a retried success carries no flag');
  const d = await request({ port: sc.outbound, headers: { host: 'down' } });
  t.equal(d.status, 503, "the last upstream answer is passed on");
  t.equal(d.text, 'down');
  t.same(flags(d.headers), ['URX']);
  t.equal(always.hits, 3, '1 try + 2 retries');
});

t.test('retries of an HTTP/2 request: its body, part of it sent after the first try started, is replayed', async (t) => {
  const h = failFirst(2);
  const up = await h1Upstream(t, h);
  const sc = await startSidecar(t, [
    service('flaky', [{ port: up.port }]),
    route('flaky', ['flaky'], [{ backends: [{ service: 'flaky' }], retries: { attempts: 3, retryOn: ['5xx'], backoff: { baseInterval: '1ms', maxInterval: '5ms' } } }]),
  ]);
  const session = h2Client(t, sc.outbound);
  const r = await within(
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const s = session.request({ ':method': 'POST', ':path': '/', ':authority': 'flaky', 'content-type': 'text/plain' }, { endStream: false });
      const chunks: Buffer[] = [];
      let status = 0;
      s.on('response', (hd) => (status = Number(hd[':status'])));
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('error', reject);
      s.on('end', () => resolve({ status, text: Buffer.concat(chunks).toString() }));
      s.write('a'.repeat(3000));
      setTimeout(() => s.end('b'.repeat(2000)), 150);
    }),
    10_000,
    'the retried h2 POST',
  );
  t.equal(r.status, 200);
  t.equal(r.text, `ok:${'a'.repeat(3000)}${'b'.repeat(2000)}`, 'the third try got the whole body');
  t.same(h.bodies.map((b) => b.length), [5000, 5000, 5000], 'every try carried the body');
});

t.test('bodies above the buffer limit are not retried (RBL); Retry-After beyond reach is passed on', async (t) => {
  const h = failFirst(100);
  const up = await h1Upstream(t, h);
  const ra = await h1Upstream(t, failFirst(1, 503, { 'retry-after': '30' }));
  const sc = await startSidecar(t, [
    service('big', [{ port: up.port }]),
    service('ra', [{ port: ra.port }]),
    route('big', ['big'], [{ backends: [{ service: 'big' }], retries: { attempts: 3, bufferLimitBytes: 1000, backoff: { baseInterval: '1ms' } } }]),
    route('ra', ['ra'], [{ backends: [{ service: 'ra' }], timeout: '2s', retries: { attempts: 3, backoff: { baseInterval: '1ms' } } }]),
  ]);
  const r = await request({ port: sc.outbound, method: 'PUT', headers: { host: 'big' }, body: 'y'.repeat(4000) });
  t.equal(r.status, 503);
  t.same(flags(r.headers), ['RBL']);
  t.equal(up.hits, 1, 'not retried');
  const small = await request({ port: sc.outbound, method: 'PUT', headers: { host: 'big' }, body: 'y'.repeat(500) });
  t.same(flags(small.headers), ['URX'], 'a small body is retried (here until exhausted)');
  t.equal(up.hits, 5);
  const x = await request({ port: sc.outbound, headers: { host: 'ra' } });
  t.equal(x.status, 503, 'Retry-After: 30 does not fit in the 2 s timeout: not retried');
  t.equal(x.headers['retry-after'], '30', 'the client sees the server asking for patience');
  t.same(flags(x.headers), ['URX']);
  t.equal(ra.hits, 1);
});

t.test('Retry-After that fits is waited for', async (t) => {
  const times: number[] = [];
  const up = await h1Upstream(t, (req, res) => {
    req.resume();
    times.push(Date.now());
    if (times.length === 1) {
      res.writeHead(503, { 'retry-after': '1' });
      res.end();
      return;
    }
    res.end('after');
  });
  const sc = await startSidecar(t, [service('ra', [{ port: up.port }]), route('ra', ['ra'], [{ backends: [{ service: 'ra' }], timeout: '10s', retries: { attempts: 1 } }])]);
  const r = await request({ port: sc.outbound, headers: { host: 'ra' } });
  t.equal(r.status, 200);
  t.ok((times[1] as number) - (times[0] as number) >= 950, `the retry came ${(times[1] as number) - (times[0] as number)} ms later (Retry-After: 1)`);
});

t.test('never retried once response bytes went downstream; connect failures retried elsewhere', async (t) => {
  const cut = await h1Upstream(t, (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-length': '1000' });
    res.write('partial');
    setTimeout(() => res.socket?.destroy(), 20);
  });
  const good = await h1Upstream(t, echo('good'));
  const dead = await closedPort();
  const sc = await startSidecar(t, [
    service('cut', [{ port: cut.port }]),
    service('mixed', [{ port: dead }, { port: good.port }]),
    route('cut', ['cut'], [{ backends: [{ service: 'cut' }], retries: { attempts: 3, retryOn: ['5xx', 'reset'] } }]),
    route('mixed', ['mixed'], [{ backends: [{ service: 'mixed' }], retries: { attempts: 2, retryOn: ['connect-failure'], backoff: { baseInterval: '1ms' } } }]),
  ]);
  const err = await request({ port: sc.outbound, headers: { host: 'cut' } }).then(
    () => undefined,
    (e: Error) => e,
  );
  t.ok(err, 'the client sees the cut (no second response spliced in)');
  t.equal(cut.hits, 1, 'no retry after the head was sent');
  const a = agent(t);
  const res = await pool(40, 4, () => request({ port: sc.outbound, headers: { host: 'mixed' }, agent: a }));
  t.same([...new Set(res.map((r) => r.status))], [200], 'every request reached the live endpoint');
});

t.test('retry budget: with every backend failing, retries stay within it', async (t) => {
  const down = await h1Upstream(t, (req, res) => {
    req.resume();
    res.writeHead(503);
    res.end();
  });
  const sc = await startSidecar(t, [
    service('down', [{ port: down.port }]),
    route('down', ['down'], [{ backends: [{ service: 'down' }], retries: { attempts: 3, backoff: { baseInterval: '1ms' }, budget: { percent: 20, minRetriesPerSecond: 1 } } }]),
  ]);
  const a = agent(t);
  const N = 200;
  const res = await pool(N, 8, () => request({ port: sc.outbound, headers: { host: 'down' }, agent: a }));
  const retries = down.hits - N;
  // 20% of 200 requests + 1/s over the 10 s window = 50 at most; without a budget it would be 600.
  t.ok(retries <= 50, `${retries} retries for ${N} requests (budget 20% + 1/s)`);
  t.ok(retries >= 30, `the budget still allowed retries (${retries})`);
  t.ok(res.filter((r) => flags(r.headers).includes('RBX')).length >= N - 50, 'requests refused a retry say RBX');
});

t.test('maxRequests and connection limits overflow with UO', async (t) => {
  const h = hold();
  const up = await h1Upstream(t, h.handler);
  const h2 = hold();
  const up2 = await h1Upstream(t, h2.handler);
  const sc = await startSidecar(t, [
    service('busy', [{ port: up.port }]),
    service('conns', [{ port: up2.port }]),
    destinationPolicy('busy', { circuitBreaker: { maxRequests: 2 } }),
    destinationPolicy('conns', { circuitBreaker: { maxConnections: 1, maxPendingRequests: 1 } }),
  ]);
  const inflight = [request({ port: sc.outbound, headers: { host: 'busy' } }), request({ port: sc.outbound, headers: { host: 'busy' } })];
  await within(
    (async () => {
      while (h.held < 2) await new Promise((r) => setTimeout(r, 10));
    })(),
    10_000,
    'two held requests',
  );
  const third = await request({ port: sc.outbound, headers: { host: 'busy' } });
  t.equal(third.status, 503);
  t.same(flags(third.headers), ['UO']);
  h.release();
  t.same((await Promise.all(inflight)).map((r) => r.status), [200, 200]);

  const first = request({ port: sc.outbound, headers: { host: 'conns' } });
  await within(
    (async () => {
      while (h2.held < 1) await new Promise((r) => setTimeout(r, 10));
    })(),
    10_000,
    'the first request on the one connection',
  );
  const second = request({ port: sc.outbound, headers: { host: 'conns' } });
  await new Promise((r) => setTimeout(r, 100));
  t.equal(h2.held, 1, 'the second waits for the connection, it does not open another');
  const over = await request({ port: sc.outbound, headers: { host: 'conns' } });
  t.equal(over.status, 503, 'the third has no pending slot');
  t.same(flags(over.headers), ['UO']);
  h2.release();
  t.equal((await first).status, 200);
  await within(
    (async () => {
      while (h2.held < 2) await new Promise((r) => setTimeout(r, 10));
    })(),
    10_000,
    'the pending request to reach the upstream',
  );
  h2.release();
  t.equal((await second).status, 200, 'the pending request went out on the freed connection');
});

t.test('the route breaker moves closed -> open -> half-open -> closed', async (t) => {
  let healthy = false;
  const up = await h1Upstream(t, (req, res) => {
    req.resume();
    res.writeHead(healthy ? 200 : 500);
    res.end();
  });
  const sc = await startSidecar(t, [
    service('brk', [{ port: up.port }]),
    route('brk', ['brk'], [{ backends: [{ service: 'brk' }], breaker: { failureRateThreshold: 50, minimumCalls: 4, openDuration: '500ms', halfOpenCalls: 1 } }]),
  ]);
  const metric = async (): Promise<string | undefined> => /meshlet_circuit_breaker_state\{route="brk\/rule-0"\} (\d)/.exec((await request({ port: sc.admin, path: '/metrics' })).text)?.[1];
  for (let i = 0; i < 4; i++) t.equal((await request({ port: sc.outbound, headers: { host: 'brk' } })).status, 500);
  t.equal(await metric(), '2', 'open after 4 failures');
  const refused = await request({ port: sc.outbound, headers: { host: 'brk' } });
  t.equal(refused.status, 503);
  t.same(flags(refused.headers), ['CO']);
  t.equal(up.hits, 4, 'an open breaker does not call the upstream');
  healthy = true;
  await new Promise((r) => setTimeout(r, 600));
  t.equal(await metric(), '1', 'half-open after openDuration');
  t.equal((await request({ port: sc.outbound, headers: { host: 'brk' } })).status, 200, 'the trial call goes through');
  t.equal(await metric(), '0', 'closed again');
  const moves = () => sc.logs.filter((l) => l.msg === 'circuit breaker state changed').map((l) => `${l.from}->${l.to}`);
  // The log line travels through a pipe: wait for it rather than race it.
  await within(
    (async () => {
      while (moves().length < 3) await new Promise((r) => setTimeout(r, 20));
    })(),
    5_000,
    'three breaker log lines',
  ).catch(() => undefined);
  t.same(moves(), ['closed->open', 'open->half-open', 'half-open->closed']);
});

t.test('fault injection: abort (HTTP and gRPC), delay, only with a header', async (t) => {
  const up = await h1Upstream(t, echo('app'));
  const sc = await startSidecar(t, [
    service('app', [{ port: up.port }]),
    route('app', ['app'], [
      { name: 'abort', matches: [{ path: { prefix: '/abort' } }], backends: [{ service: 'app' }], fault: { abort: { httpStatus: 418, percent: 100 }, header: 'x-chaos' } },
      { name: 'grpc', matches: [{ path: { exact: '/pkg.S/M' } }], backends: [{ service: 'app' }], fault: { abort: { grpcStatus: 14 } } },
      { name: 'delay', matches: [{ path: { prefix: '/delay' } }], backends: [{ service: 'app' }], fault: { delay: { fixed: '200ms', percent: 100 } } },
    ]),
  ]);
  const a = await request({ port: sc.outbound, path: '/abort', headers: { host: 'app', 'x-chaos': '1' } });
  t.equal(a.status, 418);
  t.same(flags(a.headers), ['FI']);
  const b = await request({ port: sc.outbound, path: '/abort', headers: { host: 'app' } });
  t.equal(b.status, 200, 'no header, no fault');
  t.equal(up.hits, 1, 'the aborted request never reached the app');
  const s = h2Client(t, sc.outbound);
  const g = await h2Request(s, { ':method': 'POST', ':path': '/pkg.S/M', ':authority': 'app', 'content-type': 'application/grpc' }, Buffer.alloc(5));
  t.equal(g.status, 200, JSON.stringify(g.headers));
  t.equal(g.headers['grpc-status'], '14', 'a trailers-only gRPC UNAVAILABLE');
  t.equal(g.headers['x-meshlet-flags'], 'FI');
  const d = await request({ port: sc.outbound, path: '/delay', headers: { host: 'app' } });
  t.equal(d.status, 200);
  t.same(flags(d.headers), ['DI'], 'the delayed response says so');
});

t.test('mirroring copies requests and never holds the primary', async (t) => {
  const primary = await h1Upstream(t, echo('primary'));
  const mirrored: { host?: string; body: string }[] = [];
  // The mirror never answers: if the primary waited for it, the requests below would hang.
  const shadow = await h1Upstream(t, (req) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => mirrored.push({ host: req.headers.host, body }));
  });
  const sc = await startSidecar(t, [
    service('primary', [{ port: primary.port }]),
    service('shadow', [{ port: shadow.port }]),
    route('primary', ['primary'], [{ backends: [{ service: 'primary' }], mirror: { service: 'shadow', percent: 100 } }]),
  ]);
  const a = agent(t);
  const res = await within(pool(20, 4, (i) => request({ port: sc.outbound, method: 'POST', headers: { host: 'primary' }, body: `req-${i}`, agent: a })), 15_000, 'primary responses');
  t.same([...new Set(res.map((r) => r.status))], [200]);
  await within(
    (async () => {
      while (mirrored.length < 20) await new Promise((r) => setTimeout(r, 10));
    })(),
    10_000,
    'the mirror to receive 20 copies',
  );
  t.equal(mirrored[0]?.host, 'primary-shadow', 'the copy is marked as a shadow');
  t.same(mirrored.map((m) => m.body).sort(), Array.from({ length: 20 }, (_, i) => `req-${i}`).sort(), 'bodies copied');
  t.match((await request({ port: sc.admin, path: '/metrics' })).text, /meshlet_mirrored_requests_total\{destination="shadow"\} 20/);
});

t.test('gRPC: a trailers-only status named in retryOn is retried; exhausted -> URX', async (t) => {
  let calls = 0;
  const up = await h2Upstream(t, (stream) => {
    stream.resume();
    stream.on('end', () => {
      calls++;
      const status = calls <= 2 || stream.sentHeaders === undefined ? (calls <= 2 ? '14' : '0') : '0';
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': status }, { endStream: true });
    });
  });
  let downCalls = 0;
  const down = await h2Upstream(t, (stream) => {
    stream.resume();
    stream.on('end', () => {
      downCalls++;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'busy' }, { endStream: true });
    });
  });
  const sc = await startSidecar(t, [
    service('g', [{ port: up.port }], 'http2'),
    service('d', [{ port: down.port }], 'http2'),
    route('g', ['g'], [{ backends: [{ service: 'g' }], retries: { attempts: 3, retryOn: ['unavailable'], backoff: { baseInterval: '1ms' } } }]),
    route('d', ['d'], [{ backends: [{ service: 'd' }], retries: { attempts: 2, retryOn: ['unavailable'], backoff: { baseInterval: '1ms' } } }]),
  ]);
  const s = h2Client(t, sc.outbound);
  const frame = Buffer.from([0, 0, 0, 0, 0]);
  const ok = await h2Request(s, { ':method': 'POST', ':path': '/pkg.S/M', ':authority': 'g', 'content-type': 'application/grpc', te: 'trailers' }, frame);
  const status = ok.headers['grpc-status'] ?? ok.trailers?.['grpc-status'];
  t.equal(status, '0', 'OK after two UNAVAILABLE answers');
  t.equal(calls, 3, 'the upstream saw three calls');
  const bad = await h2Request(s, { ':method': 'POST', ':path': '/pkg.S/M', ':authority': 'd', 'content-type': 'application/grpc', te: 'trailers' }, frame);
  t.equal(bad.headers['grpc-status'], '14');
  t.equal(bad.headers['x-meshlet-flags'], 'URX');
  t.equal(downCalls, 3, '1 call + 2 retries');
});

t.test('gRPC calls feed the route breaker and outlier detection', async (t) => {
  const unavailable = (stream: import('node:http2').ServerHttp2Stream): void => {
    stream.resume();
    stream.on('end', () => stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' }, { endStream: true }));
  };
  const ok = (stream: import('node:http2').ServerHttp2Stream): void => {
    stream.resume();
    stream.on('end', () => stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '0' }, { endStream: true }));
  };
  const down = await h2Upstream(t, unavailable);
  const bad = await h2Upstream(t, unavailable);
  const good = await h2Upstream(t, ok);
  const sc = await startSidecar(t, [
    service('brk', [{ port: down.port }], 'http2'),
    service('pool', [{ port: bad.port }, { port: good.port }], 'http2'),
    destinationPolicy('pool', { outlierDetection: { consecutiveGatewayErrors: 2, interval: '10s', baseEjectionTime: '30s', maxEjectionPercent: 50 } }),
    route('brk', ['brk'], [{ backends: [{ service: 'brk' }], breaker: { failureRateThreshold: 50, minimumCalls: 4, openDuration: '30s' } }]),
  ]);
  const s = h2Client(t, sc.outbound);
  const call = (authority: string) => h2Request(s, { ':method': 'POST', ':path': '/pkg.S/M', ':authority': authority, 'content-type': 'application/grpc', te: 'trailers' }, Buffer.alloc(5));
  for (let i = 0; i < 4; i++) t.equal((await call('brk')).headers['grpc-status'], '14');
  const refused = await call('brk');
  t.equal(refused.headers['grpc-status'], '14', 'an open breaker answers UNAVAILABLE to a gRPC client');
  t.equal(refused.headers['x-meshlet-flags'], 'CO');
  t.equal(down.hits, 4, 'the open breaker kept the fifth call from the upstream');
  const statuses: string[] = [];
  for (let i = 0; i < 12; i++) statuses.push(String((await call('pool')).headers['grpc-status']));
  t.equal(bad.hits, 2, 'two UNAVAILABLE answers in a row ejected the endpoint');
  t.same(statuses.slice(4), Array(8).fill('0'), 'after the ejection every call succeeds');
});
