/**
 * `H1Response.writeForwardedHead` (src/http/h1-server.ts): a proxied HTTP/1.1 response head
 * written straight from the upstream's header object must be byte for byte what the object path
 * wrote (`forwardResponseHeaders`, the flag header extended, then `writeHead`, as
 * src/stack/respond-http.ts did for every HTTP/1.1 response): the same fields in the same order,
 * hop-by-hop and Connection-named fields dropped, `via` and the flag header extended where the
 * upstream had them and added last where not, the same framing. Property-tested with fast-check
 * over header objects of hop-by-hop, Connection-named, via, flag, length, repeated and
 * integer-like names, each response read off a real socket.
 */
import fc from 'fast-check';
import * as net from 'node:net';
import t from 'tap';
import { connectionDrops, forwardResponseHeaders } from '../../../src/http/headers';
import type { H1Request, H1Response } from '../../../src/http/h1-server';
import { startH1Server } from './lib/h1-server';

type Head = Record<string, string | string[] | undefined>;

interface Case {
  h: Head;
  status: number;
  flags: string;
  /** The names the response leaves out (`H1Response.omit`, as the gateway sets it). */
  omit?: (name: string) => boolean;
}

let current: Case = { h: {}, status: 200, flags: '' };

/** What the gateway leaves out: x-meshlet-* (any case) but the flags header. */
const meshButFlags = (name: string): boolean => name.toLowerCase().startsWith('x-meshlet-') && name.toLowerCase() !== 'x-meshlet-flags';
const mesh = (name: string): boolean => name.toLowerCase().startsWith('x-meshlet-');

function answer(req: H1Request, res: H1Response): void {
  const { h, status, flags } = current;
  res.omit = current.omit;
  if (req.url.startsWith('/object')) {
    const out = forwardResponseHeaders(h, '1.1 meshlet');
    if (flags) {
      const prev = out['x-meshlet-flags'];
      out['x-meshlet-flags'] = prev !== undefined && prev.length > 0 ? `${String(prev)},${flags}` : flags;
    }
    res.writeHead(status, out as never).end();
  } else res.writeForwardedHead(status, h, '1.1 meshlet', flags, connectionDrops(h)).end();
}

/** One request on its own connection (`connection: close`): every byte the server sends. */
function fetchRaw(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const c = net.connect(port, '127.0.0.1', () => c.write(head));
    c.on('data', (d: Buffer) => (got += d.toString('latin1')));
    c.on('close', () => resolve(got));
    c.on('error', reject);
  });
}

t.test('the forwarded head equals the object path, byte for byte', async (t) => {
  const port = await startH1Server(t, answer);

  // A typical nginx head first: the exact bytes, via and the flags added last.
  current = { h: { server: 'nginx', 'content-type': 'text/plain', 'content-length': '0', connection: 'keep-alive', 'keep-alive': 'timeout=5' }, status: 200, flags: 'UO' };
  const typical = await fetchRaw(port, 'GET /forwarded HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
  t.equal(typical, 'HTTP/1.1 200 OK\r\nserver: nginx\r\ncontent-type: text/plain\r\ncontent-length: 0\r\nvia: 1.1 meshlet\r\nx-meshlet-flags: UO\r\nconnection: close\r\n\r\n');
  // Fields the upstream's Connection header names go, via and the flags then come last.
  current = { h: { via: '1.0 lb', 'x-drop': 'a', 'x-meshlet-flags': 'RL', etag: '"e"', connection: 'x-drop, Via, x-meshlet-flags', 'content-length': '0' }, status: 200, flags: 'UO' };
  const named = await fetchRaw(port, 'GET /forwarded HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
  t.equal(named, 'HTTP/1.1 200 OK\r\netag: "e"\r\ncontent-length: 0\r\nvia: 1.1 meshlet\r\nx-meshlet-flags: UO\r\nconnection: close\r\n\r\n');
  // A response that leaves x-meshlet-* out: the upstream's and the flags this hop adds.
  current = { h: { 'x-meshlet-internal': 'secret', 'x-meshlet-flags': 'RL', etag: '"e"', 'content-length': '0' }, status: 200, flags: 'UO', omit: mesh };
  const omitted = await fetchRaw(port, 'GET /forwarded HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
  t.equal(omitted, 'HTTP/1.1 200 OK\r\netag: "e"\r\ncontent-length: 0\r\nvia: 1.1 meshlet\r\nconnection: close\r\n\r\n');
  current = { ...current, omit: meshButFlags };
  const kept = await fetchRaw(port, 'GET /forwarded HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
  t.equal(kept, 'HTTP/1.1 200 OK\r\nx-meshlet-flags: RL,UO\r\netag: "e"\r\ncontent-length: 0\r\nvia: 1.1 meshlet\r\nconnection: close\r\n\r\n');

  const name = fc.constantFrom(
    'content-type', 'content-length', 'date', 'via', 'x-meshlet-flags', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'proxy-connection',
    'trailer', 'x-drop', 'set-cookie', 'server', 'x-a', 'etag', ':status', '123', '7', 'http2-settings', 'expect', 'location', 'x-meshlet-internal',
  );
  const value = fc.oneof(
    fc.constantFrom('', '0', '20', '-1', 'x', 'x-drop', 'close, x-drop', 'keep-alive', 'trailers', 'chunked', 'RL', '1.1 lb', 'via, x-meshlet-flags'),
    fc.array(fc.constantFrom('a', 'b', '0', 'x-drop', ''), { maxLength: 3 }),
    fc.constant(undefined),
  );
  let compared = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(name, value), { maxLength: 10 }),
      fc.constantFrom(200, 201, 204, 304, 404, 503, 299),
      fc.constantFrom('', 'UO', 'UO,RL'),
      fc.constantFrom('GET', 'HEAD'),
      fc.constantFrom('1.1', '1.0'),
      // Most heads list fields in their Connection header, among the names above.
      fc.option(fc.constantFrom('x-drop', 'close, x-drop', 'x-a, via', 'keep-alive, x-meshlet-flags, etag', 'Server, content-length', ['x-a', 'date']), { freq: 3 }),
      fc.constantFrom(undefined, mesh, meshButFlags),
      async (pairs, status, flags, method, version, connection, omit) => {
        const h: Head = {};
        for (const [n, v] of pairs) h[n] = v;
        if (connection !== null) h['connection'] = connection;
        current = { h, status, flags, omit };
        const ask = (path: string): string => `${method} ${path} HTTP/${version}\r\nhost: x\r\nconnection: close\r\n\r\n`;
        const [viaObject, forwarded] = [await fetchRaw(port, ask('/object')), await fetchRaw(port, ask('/forwarded'))];
        compared++;
        return viaObject.length > 0 && forwarded === viaObject;
      },
    ),
    { numRuns: 150, seed: 20261205 },
  );
  t.equal(compared, 150, 'every generated head compared');
});
