/**
 * gRPC-Web -> gRPC through two sidecars, with the exact wire format of PROTOCOL-WEB.md written and
 * read by hand: a browser-style HTTP/1.1 (and an HTTP/2) client -> sidecar A, which speaks gRPC to
 * sidecar B -> the real @grpc/grpc-js TestService. Binary (+proto) and base64 (-text) bodies, unary
 * and server-streaming calls, trailers in the body's trailer frame, statuses, and CORS.
 */
import t from 'tap';
import { startInteropServer } from '../../fixtures/grpc/interop';
import { encodeFrame, FLAG_TRAILERS, FrameDecoder, parseTrailerBlock, type Frame } from '../../../src/grpc/framing';
import { h2Client, h2Request, request, route, service, startSidecar, type SidecarProc } from '../sidecar/helpers';

// ---- protobuf by hand (varints and length-delimited fields are all these messages need)
const varint = (n: number): number[] => {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
};
const field = (no: number, bytes: Buffer): Buffer => Buffer.concat([Buffer.from([(no << 3) | 2, ...varint(bytes.length)]), bytes]);
const intField = (no: number, v: number): Buffer => Buffer.from([no << 3, ...varint(v)]);
/** SimpleRequest{response_size, response_status{code, message}} */
const simpleRequest = (size: number, status?: { code: number; message: string }): Buffer =>
  Buffer.concat([intField(2, size), ...(status ? [field(7, Buffer.concat([intField(1, status.code), field(2, Buffer.from(status.message))]))] : [])]);
/** StreamingOutputCallRequest{response_parameters[]{size}} */
const streamingRequest = (sizes: number[]): Buffer => Buffer.concat(sizes.map((s) => field(2, intField(1, s))));
/** The payload body length of a SimpleResponse / StreamingOutputCallResponse: payload(1){body(2)}. */
function payloadSize(msg: Buffer): number {
  if (msg.length === 0) return 0;
  let i = 1;
  const read = (): number => {
    let n = 0;
    let shift = 0;
    for (;;) {
      const b = msg[i++] as number;
      n |= (b & 0x7f) << shift;
      if (b < 0x80) return n;
      shift += 7;
    }
  };
  read(); // payload length
  i++; // body tag
  return read();
}

function frames(body: Buffer): Frame[] {
  return new FrameDecoder(16 * 1024 * 1024).push(body);
}

let a: SidecarProc;
const ORIGIN = 'https://app.example.com';

t.before(async () => {
  const app = await startInteropServer(t);
  const b = await startSidecar(t, [service('unused', [{ port: 9 }])], { service: 'interop', appPort: app.port, args: ['--app-protocol', 'http2'] });
  a = await startSidecar(t, [
    service('interop', [{ port: b.inbound }]),
    { ...route('interop', ['interop'], []), spec: { hosts: ['interop'], rules: [{ backends: [{ service: 'interop' }] }], grpc: { allowOrigins: [ORIGIN] } } },
  ]);
});

const web = (path: string, body: Buffer, contentType = 'application/grpc-web+proto', extra: Record<string, string> = {}) =>
  request({ port: a.outbound, method: 'POST', path, headers: { host: 'interop', 'content-type': contentType, 'x-grpc-web': '1', ...extra }, body });

t.test('unary, application/grpc-web+proto over HTTP/1.1', async (t) => {
  const r = await web('/grpc.testing.TestService/UnaryCall', encodeFrame(simpleRequest(1000)));
  t.equal(r.status, 200);
  t.equal(r.headers['content-type'], 'application/grpc-web+proto');
  const f = frames(r.body);
  t.equal(f.length, 2, 'one message frame, one trailer frame');
  t.equal(f[0]?.flags, 0);
  t.equal(payloadSize(f[0]!.payload), 1000, 'the response message');
  t.equal(f[1]?.flags, FLAG_TRAILERS);
  t.equal(parseTrailerBlock(f[1]!.payload)['grpc-status'], '0', 'grpc-status 0 in the trailer frame');
});

t.test('unary, application/grpc-web (no +proto) answers +proto', async (t) => {
  const r = await web('/grpc.testing.TestService/EmptyCall', encodeFrame(Buffer.alloc(0)), 'application/grpc-web');
  t.equal(r.status, 200);
  const f = frames(r.body);
  t.same(
    f.map((x) => x.flags),
    [0, FLAG_TRAILERS],
  );
  t.equal(f[0]?.payload.length, 0, 'Empty');
});

t.test('unary, application/grpc-web-text (base64 both ways)', async (t) => {
  const r = await web('/grpc.testing.TestService/UnaryCall', Buffer.from(encodeFrame(simpleRequest(70_000)).toString('base64')), 'application/grpc-web-text');
  t.equal(r.status, 200);
  t.equal(r.headers['content-type'], 'application/grpc-web-text+proto');
  t.match(r.text, /^[A-Za-z0-9+/]+=*$/, 'the body is base64');
  const f = frames(Buffer.from(r.text, 'base64'));
  t.equal(payloadSize(f[0]!.payload), 70_000);
  t.equal(parseTrailerBlock(f[1]!.payload)['grpc-status'], '0');
});

t.test('server streaming, binary and text', async (t) => {
  for (const ct of ['application/grpc-web+proto', 'application/grpc-web-text+proto']) {
    const text = ct.includes('text');
    const msg = encodeFrame(streamingRequest([10, 20_000, 30]));
    const r = await web('/grpc.testing.TestService/StreamingOutputCall', text ? Buffer.from(msg.toString('base64')) : msg, ct);
    const f = frames(text ? Buffer.from(r.text, 'base64') : r.body);
    t.same(
      f.slice(0, -1).map((x) => payloadSize(x.payload)),
      [10, 20_000, 30],
      `${ct}: three messages`,
    );
    t.equal(parseTrailerBlock(f[f.length - 1]!.payload)['grpc-status'], '0', `${ct}: then the trailers`);
  }
});

t.test('statuses: the app error and the mesh error travel in the trailer frame', async (t) => {
  const r = await web('/grpc.testing.TestService/UnaryCall', encodeFrame(simpleRequest(0, { code: 5, message: 'no such thing ☺' })));
  t.equal(r.status, 200);
  const f = frames(r.body);
  const tr = parseTrailerBlock(f[f.length - 1]!.payload);
  t.equal(tr['grpc-status'], '5');
  t.equal(decodeURIComponent(tr['grpc-message'] ?? ''), 'no such thing ☺');
  t.equal(r.headers['grpc-status'], '5', 'trailers-only: also in the headers');

  const nr = await request({ port: a.outbound, method: 'POST', path: '/grpc.testing.TestService/EmptyCall', headers: { host: 'elsewhere', 'content-type': 'application/grpc-web+proto' }, body: encodeFrame(Buffer.alloc(0)) });
  t.equal(nr.status, 200, 'a mesh error is not an HTTP error page');
  const tr2 = parseTrailerBlock(frames(nr.body)[0]!.payload);
  t.equal(tr2['grpc-status'], '12', 'no route: UNIMPLEMENTED');
  t.equal(tr2['x-meshlet-flags'], 'NR');
});

t.test('CORS: preflight from allowed and other origins, and the actual response', async (t) => {
  const pre = await request({
    port: a.outbound,
    method: 'OPTIONS',
    path: '/grpc.testing.TestService/UnaryCall',
    headers: { host: 'interop', origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-grpc-web,x-user-agent' },
  });
  t.equal(pre.status, 204);
  t.equal(pre.headers['access-control-allow-origin'], ORIGIN);
  t.match(pre.headers['access-control-allow-methods'], /POST/);
  t.equal(pre.headers['access-control-allow-headers'], 'content-type,x-grpc-web,x-user-agent');
  const other = await request({ port: a.outbound, method: 'OPTIONS', path: '/grpc.testing.TestService/UnaryCall', headers: { host: 'interop', origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
  t.equal(other.status, 403, 'an origin the route does not list');
  t.equal(other.headers['access-control-allow-origin'], undefined);
  const r = await web('/grpc.testing.TestService/UnaryCall', encodeFrame(simpleRequest(1)), 'application/grpc-web+proto', { origin: ORIGIN });
  t.equal(r.headers['access-control-allow-origin'], ORIGIN);
  t.match(r.headers['access-control-expose-headers'], /grpc-status/);
  const r2 = await web('/grpc.testing.TestService/UnaryCall', encodeFrame(simpleRequest(1)), 'application/grpc-web+proto', { origin: 'https://evil.example' });
  t.equal(r2.headers['access-control-allow-origin'], undefined, 'no CORS headers for other origins');
});

t.test('gRPC-Web over HTTP/2', async (t) => {
  const r = await h2Request(
    h2Client(t, a.outbound),
    { ':method': 'POST', ':path': '/grpc.testing.TestService/UnaryCall', ':authority': 'interop', 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
    encodeFrame(simpleRequest(5000)),
  );
  t.equal(r.status, 200);
  const f = frames(r.body);
  t.equal(payloadSize(f[0]!.payload), 5000);
  t.equal(parseTrailerBlock(f[1]!.payload)['grpc-status'], '0');
});
