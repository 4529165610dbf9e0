/**
 * The HTTP/1.1 answer head an HTTP/2 WebSocket (RFC 8441) is bridged from: header names
 * lower-cased, repeated headers kept as lists, the bytes read past the head found (they are the
 * first WebSocket frames or the start of the body).
 */
import t from 'tap';
import { parseResponseHead } from '../../../src/http/websocket';

t.test('a 101 with the first frame in the same read', async (t) => {
  const head = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Odd:   spaced value  \r\n\r\n';
  const frame = Buffer.from([0x81, 0x02, 0x68, 0x69]);
  const p = parseResponseHead(Buffer.concat([Buffer.from(head, 'latin1'), frame]));
  t.ok(p);
  t.same(p!.headers, { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-accept': 'abc=', 'set-cookie': ['a=1', 'b=2'], 'x-odd': 'spaced value' });
  t.equal(p!.bodyAt, Buffer.byteLength(head), 'the frame starts right after the blank line');
});

t.test('an incomplete head is not parsed', async (t) => {
  t.equal(parseResponseHead(Buffer.from('HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n')), undefined);
});

t.test('a line without a colon is skipped, a refusal with a body is found', async (t) => {
  const p = parseResponseHead(Buffer.from('HTTP/1.1 403 Forbidden\r\ngarbage\r\nContent-Length: 3\r\n\r\nno!'));
  t.same(p!.headers, { 'content-length': '3' });
  t.equal(p!.bodyAt, 'HTTP/1.1 403 Forbidden\r\ngarbage\r\nContent-Length: 3\r\n\r\n'.length);
});
