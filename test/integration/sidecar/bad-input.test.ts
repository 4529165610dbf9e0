/**
 * Bad input is refused at the listener with the status it deserves, over raw sockets, never
 * reaching an upstream, and the sidecar stays up: request smuggling (Content-Length and
 * Transfer-Encoding) 400, an invalid header name 400, headers over the limit 431, headers that
 * never finish 408. And the HTTP/2 "rapid reset" attack (CVE-2023-44487): the attacking
 * connection is closed while a well-behaved client on another connection keeps being served.
 */
import * as http2 from 'node:http2';
import t from 'tap';
import { h1Upstream, h2Client, h2Request, h2Upstream, rawExchange, request, route, service, startSidecar, within } from './helpers';

const MAX_HEADER_BYTES = 16 * 1024;
const HEADERS_TIMEOUT_MS = 500;

t.test('malformed HTTP/1.1 requests', async (t) => {
  const up = await h1Upstream(t, (req, res) => {
    req.resume();
    req.on('end', () => res.end('fine'));
  });
  const sc = await startSidecar(t, [service('app', [{ port: up.port }]), route('app', ['app'], [{ backends: [{ service: 'app' }] }])], {
    args: ['--max-header-bytes', String(MAX_HEADER_BYTES), '--headers-timeout', String(HEADERS_TIMEOUT_MS)],
  });

  const cases: { name: string; bytes: string; status: number; endAfterWrite?: boolean }[] = [
    {
      name: 'Content-Length and Transfer-Encoding together (request smuggling)',
      bytes: 'POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n',
      status: 400,
    },
    { name: 'two different Content-Lengths', bytes: 'POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', status: 400 },
    { name: 'two Host headers', bytes: 'GET / HTTP/1.1\r\nHost: app\r\nHost: other\r\n\r\n', status: 400 },
    { name: 'a control character in a header value', bytes: 'GET / HTTP/1.1\r\nHost: app\r\nX-A: a\x01b\r\n\r\n', status: 400 },
    { name: 'obsolete line folding', bytes: 'GET / HTTP/1.1\r\nHost: app\r\nX-A: a\r\n b\r\n\r\n', status: 400 },
    { name: 'invalid header name (a space in it)', bytes: 'GET / HTTP/1.1\r\nHost: app\r\nBad Header: x\r\n\r\n', status: 400 },
    { name: 'invalid header name (a separator in it)', bytes: 'GET / HTTP/1.1\r\nHost: app\r\nx(y): z\r\n\r\n', status: 400 },
    { name: 'headers over the limit', bytes: `GET / HTTP/1.1\r\nHost: app\r\nX-Big: ${'a'.repeat(2 * MAX_HEADER_BYTES)}\r\n\r\n`, status: 431 },
    {
      name: 'many headers adding up to over the limit',
      bytes: `GET / HTTP/1.1\r\nHost: app\r\n${Array.from({ length: 64 }, (_, i) => `X-H${i}: ${'b'.repeat(512)}\r\n`).join('')}\r\n`,
      status: 431,
    },
    { name: 'headers that never finish (the client stalls)', bytes: 'GET / HTTP/1.1\r\nHost: app\r\nX-Partial: ', status: 408 },
  ];
  for (const c of cases) {
    const r = await rawExchange(sc.outbound, c.bytes, { maxMs: 15_000 });
    t.equal(r.timedOut, false, `${c.name}: the sidecar answered and closed the connection`);
    t.equal(r.status, c.status, `${c.name}: ${c.status}`);
    t.match(r.text, /\r\nx-meshlet-flags: DPE\r\n/i, `${c.name}: flagged DPE (downstream protocol error)`);
    t.match(r.text, /\r\nconnection: close\r\n/i, `${c.name}: connection: close`);
  }
  t.equal(up.hits, 0, 'none of them reached the upstream');

  const ok = await request({ port: sc.outbound, method: 'POST', path: '/', headers: { host: 'app' }, body: 'x' });
  t.equal(ok.status, 200, 'the sidecar still serves a normal request');
  t.equal(ok.text, 'fine');
  t.equal(up.hits, 1);
  const bigButAllowed = await request({ port: sc.outbound, path: '/', headers: { host: 'app', 'x-big': 'c'.repeat(MAX_HEADER_BYTES / 2) } });
  t.equal(bigButAllowed.status, 200, 'headers under the limit pass');
  const m = (await request({ port: sc.admin, path: '/metrics' })).text;
  t.match(m, /meshlet_requests_refused_total\{reason="[^"]+"\} \d+/, 'refusals are counted on /metrics');
  t.ok(sc.alive(), 'the sidecar is still running');
});

t.test('HTTP/2 rapid reset closes the attacking connection only', async (t) => {
  const up = await h2Upstream(t, (stream, headers) => {
    // /hold is never answered: every attacking stream is reset before its response.
    if (headers[':path'] === '/hold') return;
    stream.respond({ ':status': 200 });
    stream.end('fine');
  });
  const sc = await startSidecar(t, [service('app', [{ port: up.port }]), route('app', ['app'], [{ backends: [{ service: 'app' }] }])]);

  const good = h2Client(t, sc.outbound);
  const first = await h2Request(good, { ':path': '/', ':authority': 'app' });
  t.equal(first.status, 200, 'the well-behaved client is served before the attack');

  const attacker = h2Client(t, sc.outbound);
  let goawayCode: number | undefined;
  attacker.on('goaway', (code) => (goawayCode = code));
  const closed = new Promise<void>((r) => attacker.once('close', () => r()));
  await within(new Promise<void>((r) => attacker.once('connect', () => r())), 10_000, 'the attacker to connect');

  // The well-behaved client keeps sending while the attack runs.
  const during: Promise<number>[] = [];
  let sent = 0;
  const STREAMS = 600;
  for (let i = 0; i < STREAMS && !attacker.closed && !attacker.destroyed; i++) {
    const s = attacker.request({ ':path': '/hold', ':authority': 'app' });
    s.on('error', () => undefined);
    s.close(http2.constants.NGHTTP2_CANCEL);
    sent++;
    if (i % 20 === 0) {
      during.push(h2Request(good, { ':path': `/during/${i}`, ':authority': 'app' }).then((r) => r.status));
      // Let the frames go out in batches, as a real attacker's would.
      await new Promise((r) => setImmediate(r));
    }
  }
  await within(closed, 15_000, `the attacking connection to be closed (${sent} streams opened and reset)`);
  t.pass(`the attacking connection was closed after ${sent} opened-and-reset streams`);
  t.equal(goawayCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 'told why: GOAWAY(ENHANCE_YOUR_CALM)');

  const statuses = await within(Promise.all(during), 15_000, 'the well-behaved requests made during the attack');
  t.ok(
    statuses.every((s) => s === 200),
    `the ${statuses.length} well-behaved requests made during the attack were all served`,
  );
  // Well over the 100-stream mark on this connection: many streams are fine when they are answered.
  const after: { status: number; body: Buffer }[] = [];
  for (let batch = 0; batch < 6; batch++)
    after.push(...(await Promise.all(Array.from({ length: 25 }, (_, i) => h2Request(good, { ':path': `/after/${batch}/${i}`, ':authority': 'app' })))));
  t.ok(
    after.every((r) => r.status === 200 && r.body.toString() === 'fine'),
    `and after it, on the same connection (${after.length} more streams)`,
  );
  t.equal(good.closed || good.destroyed, false, "the well-behaved client's connection stayed open");
  const fresh = await h2Request(h2Client(t, sc.outbound), { ':path': '/', ':authority': 'app' });
  t.equal(fresh.status, 200, 'new connections are served too');
  const m = (await request({ port: sc.admin, path: '/metrics' })).text;
  t.match(m, /meshlet_requests_refused_total\{reason="rapid reset[^"]*"\} 1/, 'the refusal is counted');

  // This sidecar runs with the default header limit, 64 KiB.
  const big = await rawExchange(sc.outbound, `GET / HTTP/1.1\r\nHost: app\r\nX-Big: ${'a'.repeat(65 * 1024)}\r\n\r\n`, { maxMs: 15_000 });
  t.equal(big.status, 431, 'headers over the default 64 KiB limit: 431');
});
