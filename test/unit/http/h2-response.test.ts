/**
 * `H2Response` and trailers (src/http/h2-server.ts): a head sent with `respond(headers, true)`
 * gets the trailers `addTrailers` collected; one sent without (and a mesh-made `writeHead`) ends
 * its stream with the body, and trailers handed to it are dropped. `trailersPossible` is the rule
 * the HTTP responder uses to choose.
 */
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import t from 'tap';
import { serveStream, trailersPossible, type H2Request, type H2Response } from '../../../src/http/h2-server';

t.test('trailersPossible', async (t) => {
  t.equal(trailersPossible({ ':status': '200', 'content-length': '5' }), true, 'an HTTP/2 response (node header object), even with a length');
  t.equal(trailersPossible({ 'transfer-encoding': 'chunked' }), true, 'a chunked HTTP/1.1 response');
  t.equal(trailersPossible({ 'content-length': '5', 'transfer-encoding': 'chunked' }), true, 'chunked wins over a length (RFC 9112 6.3)');
  t.equal(trailersPossible({ 'content-length': '5' }), false, 'an HTTP/1.1 response with a length cannot carry trailers');
  t.equal(trailersPossible({}), true, 'neither: treated as possible');
});

t.test('trailers reach the client only when the head asked for them', async (t) => {
  const server = http2.createServer();
  server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, raw: string[]) =>
    serveStream(stream, headers, raw, (req: H2Request, res: H2Response) => {
      const path = req.url;
      if (path === '/mesh') {
        res.addTrailers({ 'x-t': 'dropped' });
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('no');
        return;
      }
      const ask = path === '/ask';
      res.respond({ ':status': 200, 'content-type': 'text/plain' }, ask);
      t.equal(res.trailersAsked, ask);
      res.write('hello');
      res.addTrailers({ 'x-t': 'one' });
      res.addTrailers({ 'x-u': 'two' });
      res.end();
    }),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
  t.teardown(() => {
    client.destroy();
    server.close();
  });
  const get = (path: string): Promise<{ status: number; body: string; trailers: http2.IncomingHttpHeaders | undefined }> =>
    new Promise((resolve, reject) => {
      const s = client.request({ ':path': path });
      let status = 0;
      let body = '';
      let trailers: http2.IncomingHttpHeaders | undefined;
      s.on('response', (h) => (status = Number(h[':status'])));
      s.on('trailers', (h) => (trailers = h));
      s.setEncoding('utf8');
      s.on('data', (c: string) => (body += c));
      s.on('error', reject);
      s.on('end', () => resolve({ status, body, trailers }));
    });

  const asked = await get('/ask');
  t.equal(asked.body, 'hello');
  t.same(asked.trailers && { t: asked.trailers['x-t'], u: asked.trailers['x-u'] }, { t: 'one', u: 'two' }, 'both sets arrive, merged');

  const notAsked = await get('/plain');
  t.equal(notAsked.body, 'hello');
  t.equal(notAsked.trailers, undefined, 'dropped: the head did not ask');

  const mesh = await get('/mesh');
  t.equal(mesh.status, 404);
  t.equal(mesh.body, 'no');
  t.equal(mesh.trailers, undefined, 'a mesh-made answer carries none');
});
