/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) stop at the sidecar in both directions, including every
 * header the Connection header names; the forwarding headers (x-forwarded-for, x-forwarded-proto,
 * via) are added. The client talks over a raw socket so that exactly the bytes below are sent.
 */
import * as http from 'node:http';
import t from 'tap';
import { h1Upstream, h2Client, h2Request, rawExchange, route, service, startSidecar } from './helpers';

interface Seen {
  rawHeaders: string[];
  headers: http.IncomingHttpHeaders;
  body: string;
}

function parseRaw(text: string): { status: number; headers: [string, string][]; body: string } {
  const end = text.indexOf('\r\n\r\n');
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  return {
    status: Number(statusLine.split(' ')[1]),
    headers: lines.map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()] as [string, string];
    }),
    body: text.slice(end + 4),
  };
}

t.test('hop-by-hop headers are stripped in both directions', async (t) => {
  const seen: Seen[] = [];
  const up = await h1Upstream(t, (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      seen.push({ rawHeaders: req.rawHeaders, headers: req.headers, body });
      // Response hop-by-hop headers, and one the Connection header names.
      res.setHeader('connection', 'keep-alive, x-resp-hop');
      res.setHeader('keep-alive', 'timeout=99');
      res.setHeader('proxy-connection', 'keep-alive');
      res.setHeader('x-resp-hop', 'secret');
      res.setHeader('upgrade', 'foo/1');
      res.setHeader('x-resp-keep', 'yes');
      res.setHeader('content-type', 'text/plain');
      res.end('ok');
    });
  });
  // protocol: http1, so that an h2 client (below) is bridged to this HTTP/1.1-only upstream.
  const sc = await startSidecar(t, [service('hdr', [{ port: up.port }], 'http1'), route('hdr', ['hdr'], [{ backends: [{ service: 'hdr' }] }])]);

  const body = 'hello, chunked world';
  const request =
    'POST /h HTTP/1.1\r\n' +
    'Host: hdr\r\n' +
    'Connection: close, X-Foo\r\n' +
    'Keep-Alive: timeout=5\r\n' +
    'Proxy-Connection: keep-alive\r\n' +
    'TE: trailers, deflate\r\n' +
    'Upgrade: foo/2\r\n' +
    'X-Foo: must-not-pass\r\n' +
    'X-Bar: passes\r\n' +
    'X-Forwarded-For: 10.1.2.3\r\n' +
    'X-Forwarded-Proto: https\r\n' +
    'Via: 1.1 edge\r\n' +
    'Transfer-Encoding: chunked\r\n' +
    '\r\n' +
    `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
  const r = await rawExchange(sc.outbound, request);
  const res = parseRaw(r.text);
  t.equal(res.status, 200, 'answered');
  t.equal(seen.length, 1, 'the upstream got the request');
  const s = seen[0];
  const names = s.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());

  t.test('the upstream sees no hop-by-hop header from the client', async (t) => {
    for (const h of ['keep-alive', 'proxy-connection', 'upgrade', 'x-foo']) t.notOk(names.includes(h), `no ${h}`);
    t.notMatch(String(s.headers.connection ?? ''), /x-foo/i, 'the client Connection header is not forwarded');
    t.equal(s.headers.te, 'trailers', 'TE is reduced to "trailers", the one value that passes');
    t.equal(s.headers['x-bar'], 'passes', 'an end-to-end header passes');
    t.equal(s.body, body, 'the chunked body arrives intact');
    // The upstream hop frames the streamed body itself (chunked); the client's own header must not be
    // copied on top of that framing.
    const te = names.filter((n) => n === 'transfer-encoding');
    t.ok(te.length <= 1, 'at most one transfer-encoding: the upstream hop framing');
    if (te.length === 1) t.equal(s.headers['transfer-encoding'], 'chunked');
  });

  t.test('the upstream sees the forwarding headers', async (t) => {
    t.equal(s.headers['x-forwarded-for'], '127.0.0.1', 'an app-supplied x-forwarded-for is replaced by the address the sidecar sees (--xff-trusted-hops 0)');
    t.equal(s.headers['x-forwarded-proto'], 'http', 'x-forwarded-proto is what the client used towards the sidecar');
    t.equal(s.headers.via, '1.1 edge, 1.1 meshlet', 'via is extended');
    t.equal(names.filter((n) => n === 'host').length, 1, 'exactly one Host');
    t.equal(s.headers.host, 'hdr');
  });

  t.test('the client sees no hop-by-hop header from the upstream', async (t) => {
    const get = (n: string) => res.headers.filter(([k]) => k === n).map(([, v]) => v);
    t.same(get('x-resp-hop'), [], 'a header the upstream Connection names is dropped');
    t.same(get('proxy-connection'), [], 'no proxy-connection');
    t.same(get('upgrade'), [], 'no upgrade');
    t.notOk(get('keep-alive').includes('timeout=99'), "the upstream's keep-alive stays on its hop");
    t.notOk(get('connection').some((v) => /x-resp-hop/i.test(v)), "the upstream's Connection header stays on its hop");
    t.same(get('x-resp-keep'), ['yes'], 'an end-to-end header passes');
    t.same(get('via'), ['1.1 meshlet'], 'via is added');
    t.equal(res.body, 'ok');
  });

  t.test('an h2 client gets the same response without connection-specific headers', async (t) => {
    // HTTP/2 forbids them outright (RFC 9113 §8.2.2): forwarding any would break the response.
    const session = h2Client(t, sc.outbound);
    const h = await h2Request(session, { ':method': 'GET', ':path': '/h2', ':authority': 'hdr', te: 'trailers' });
    t.equal(h.status, 200);
    t.equal(h.body.toString(), 'ok');
    for (const n of ['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'x-resp-hop']) t.equal(h.headers[n], undefined, `no ${n}`);
    t.equal(h.headers['x-resp-keep'], 'yes');
    t.equal(h.headers.via, '2 meshlet');
    const last = seen[seen.length - 1];
    t.equal(last.headers.via, '2 meshlet', 'via names the protocol the request arrived in');
    t.equal(last.headers.te, 'trailers');
    t.equal(last.headers['x-forwarded-for'], '127.0.0.1', 'x-forwarded-for from an h2 client too');
    t.equal(last.headers['x-forwarded-proto'], 'http');
    t.equal(last.headers.host, 'hdr', 'the upstream HTTP/1.1 request carries the :authority as Host');
  });
});

t.test('x-forwarded-for with trusted hops (--xff-trusted-hops)', async (t) => {
  const seen: http.IncomingHttpHeaders[] = [];
  const up = await h1Upstream(t, (req, res) => {
    seen.push(req.headers);
    res.end('ok');
  });
  const res = [service('xff', [{ port: up.port }], 'http1'), route('xff', ['xff'], [{ backends: [{ service: 'xff' }] }])];
  const send = async (port: number, xff: string, forwarded?: string) => {
    const r = await rawExchange(port, `GET / HTTP/1.1\r\nHost: xff\r\nX-Forwarded-For: ${xff}\r\n${forwarded ? `Forwarded: ${forwarded}\r\n` : ''}Connection: close\r\n\r\n`);
    t.equal(parseRaw(r.text).status, 200);
    return seen[seen.length - 1];
  };
  const zero = await startSidecar(t, res);
  let h = await send(zero.outbound, '6.6.6.6, 7.7.7.7', 'for=6.6.6.6');
  t.equal(h['x-forwarded-for'], '127.0.0.1', '0 trusted hops: the forged chain is replaced by the peer address');
  t.equal(h.forwarded, undefined, '0 trusted hops: a client-supplied Forwarded header is dropped');
  const two = await startSidecar(t, res, { args: ['--xff-trusted-hops', '2'] });
  h = await send(two.outbound, '6.6.6.6, 203.0.113.9, 10.0.0.2', 'for=6.6.6.6, for=203.0.113.9, for=10.0.0.2');
  t.equal(h['x-forwarded-for'], '203.0.113.9, 10.0.0.2, 127.0.0.1', '2 trusted hops: the last two entries are kept, the forged one dropped, the peer appended');
  t.equal(h.forwarded, 'for=203.0.113.9, for=10.0.0.2', 'Forwarded: the trusted elements only');
  h = await send(two.outbound, '10.0.0.2');
  t.equal(h['x-forwarded-for'], '10.0.0.2, 127.0.0.1', 'fewer entries than trusted hops: kept as they are');
});
