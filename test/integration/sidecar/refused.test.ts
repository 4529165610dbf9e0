/**
 * An HTTP/2 upstream that refuses a stream unseen (REFUSED_STREAM, as a server going away does
 * to streams it will not process) gets the request again, without any retry policy and whatever
 * the method, on another endpoint when there is one; at most twice, and never a body that can no
 * longer be replayed.
 */
import * as http2 from 'node:http2';
import t from 'tap';
import { h2Upstream, request, route, service, startSidecar } from './helpers';

const answer = (name: string) => (stream: http2.ServerHttp2Stream): void => {
  stream.respond({ ':status': 200, 'content-type': 'text/plain' });
  stream.end(`from ${name}\n`);
};
const refuse = (stream: http2.ServerHttp2Stream): void => stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);

t.test('a refused stream is sent again, to the other endpoint, with no retry policy', async (t) => {
  const bad = await h2Upstream(t, refuse);
  const good = await h2Upstream(t, answer('good'));
  const sc = await startSidecar(t, [service('web', [{ port: bad.port }, { port: good.port }], 'http2'), route('web', ['web'], [{ name: 'all', backends: [{ service: 'web' }] }])]);
  for (let i = 0; i < 6; i++) {
    const r = await request({ port: sc.outbound, method: 'DELETE', path: `/item/${i}`, headers: { host: 'web' } });
    t.equal(r.status, 200, `request ${i}: answered`);
    t.equal(r.text, 'from good\n');
  }
  t.ok(bad.hits > 0, `the refusing endpoint was tried (${bad.hits} times) and every one of those was sent again`);
  t.equal(good.hits, 6);
});

t.test('refused every time: two more sends, then 502; a body that was not kept is not sent again', async (t) => {
  const bad = await h2Upstream(t, refuse);
  const sc = await startSidecar(t, [service('web', [{ port: bad.port }], 'http2'), route('web', ['web'], [{ name: 'all', backends: [{ service: 'web' }] }])]);
  const r = await request({ port: sc.outbound, path: '/', headers: { host: 'web' } });
  t.equal(r.status, 502);
  t.equal(bad.hits, 3, 'the first send and two more');
  const before = bad.hits;
  const post = await request({ port: sc.outbound, method: 'POST', path: '/', headers: { host: 'web' }, body: 'x'.repeat(1000) });
  t.equal(post.status, 502);
  t.equal(bad.hits - before, 1, 'a streamed body without a retry policy is not replayable: one send');
});
