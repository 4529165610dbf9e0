/** The shared gRPC helpers: framing, the size guard, grpc-timeout, status mapping, gRPC-Web codecs. */
import t from 'tap';
import { Flags } from '../../../src/core/errors';
import { encodeFrame, encodeTrailerFrame, FLAG_TRAILERS, FrameDecoder, MessageSizeGuard, parseTrailerBlock } from '../../../src/grpc/framing';
import { decodeGrpcMessage, encodeGrpcMessage, FLAG_STATUS, isGrpcContentType, isGrpcWebContentType, MESH_ERROR_STATUS, Status, statusFromHttp, statusFromRstCode, trailersOnlyHeaders } from '../../../src/grpc/status';
import { formatGrpcTimeout, parseGrpcTimeout } from '../../../src/grpc/timeout';
import { Base64Decoder, webRequestHeaders } from '../../../src/grpc/web';

t.test('frames: encode, decode across chunk boundaries, limit', async (t) => {
  const a = encodeFrame(Buffer.from('hello'));
  const b = encodeFrame(Buffer.alloc(0));
  const c = encodeTrailerFrame({ 'grpc-status': '0', 'grpc-message': 'ok', 'x-multi': ['1', '2'], ':status': '200' });
  const all = Buffer.concat([a, b, c]);
  const d = new FrameDecoder();
  const frames = [];
  for (let i = 0; i < all.length; i += 3) frames.push(...d.push(all.subarray(i, i + 3)));
  t.equal(frames.length, 3);
  t.equal(frames[0]?.payload.toString(), 'hello');
  t.equal(frames[1]?.payload.length, 0);
  t.equal(frames[2]?.flags, FLAG_TRAILERS);
  t.same(parseTrailerBlock(frames[2]!.payload), { 'grpc-status': '0', 'grpc-message': 'ok', 'x-multi': '1, 2' }, 'pseudo-headers are not trailers');
  t.equal(d.pending, 0);
  t.throws(() => new FrameDecoder(4).push(encodeFrame(Buffer.alloc(5))), /over the limit of 4/);
});

t.test('the size guard stops the first oversized message, holding back split prefixes', async (t) => {
  const g = new MessageSizeGuard(10);
  const stream = Buffer.concat([encodeFrame(Buffer.alloc(10)), encodeFrame(Buffer.alloc(3)), encodeFrame(Buffer.alloc(11))]);
  const out: Buffer[] = [];
  let tooLarge: number | undefined;
  for (let i = 0; i < stream.length && tooLarge === undefined; i += 2) {
    const r = g.push(stream.subarray(i, i + 2));
    out.push(r.out);
    tooLarge = r.tooLarge;
  }
  t.equal(tooLarge, 11);
  t.same(Buffer.concat(out), stream.subarray(0, 15 + 8), 'everything before the oversized message passed; none of it did');
  t.ok(g.failed);
  t.equal(g.push(Buffer.from([1])).out.length, 0, 'nothing passes after a failure');
  const ok = new MessageSizeGuard(10);
  const whole = Buffer.concat([encodeFrame(Buffer.alloc(10)), encodeFrame(Buffer.alloc(0))]);
  t.same(ok.push(whole).out, whole, 'one chunk with several messages passes whole');
});

t.test('grpc-timeout', async (t) => {
  t.equal(parseGrpcTimeout('100m'), 100);
  t.equal(parseGrpcTimeout('2S'), 2000);
  t.equal(parseGrpcTimeout('1H'), 3_600_000);
  t.equal(parseGrpcTimeout('3M'), 180_000);
  t.equal(parseGrpcTimeout('1500u'), 1.5);
  t.equal(parseGrpcTimeout('1000000n'), 1);
  for (const bad of ['', '10', 'm', '123456789m', '-1m', '1.5S', '10x']) t.type(parseGrpcTimeout(bad), Error, `invalid: ${JSON.stringify(bad)}`);
  t.equal(formatGrpcTimeout(50), '50000000n');
  t.equal(formatGrpcTimeout(5000), '5000000u');
  t.equal(formatGrpcTimeout(200_000), '200000m');
  t.equal(formatGrpcTimeout(200_000_000), '200000S');
  t.equal(formatGrpcTimeout(-5), '1n', 'never 0 or negative');
  for (const ms of [0.5, 1, 999, 12_345, 7_200_000, 1e12]) {
    const back = parseGrpcTimeout(formatGrpcTimeout(ms));
    t.ok(typeof back === 'number' && back >= ms, `${ms} ms round-trips to no less (${String(back)})`);
  }
});

t.test('status mapping', async (t) => {
  t.equal(MESH_ERROR_STATUS.MESH_NO_HEALTHY_UPSTREAM, Status.UNAVAILABLE);
  t.equal(MESH_ERROR_STATUS.MESH_UPSTREAM_TIMEOUT, Status.DEADLINE_EXCEEDED);
  t.equal(MESH_ERROR_STATUS.MESH_RATE_LIMITED, Status.RESOURCE_EXHAUSTED);
  for (const f of Object.values(Flags)) t.type(FLAG_STATUS[f], 'number', `flag ${f} maps to a gRPC status`);
  t.same([400, 401, 403, 404, 429, 502, 503, 504, 500].map(statusFromHttp), [13, 16, 7, 12, 14, 14, 14, 14, 2]);
  t.same([8, 7, 11, 12, 2].map(statusFromRstCode), [1, 14, 8, 7, 13]);
  const msg = '\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n 100%';
  const enc = encodeGrpcMessage(msg);
  t.match(enc, /^[\x20-\x7e]*$/, 'printable ASCII only');
  t.equal(decodeGrpcMessage(enc), msg);
  t.equal(decodeGrpcMessage('%E0%A4%A'), '%E0%A4%A', 'a bad escape is kept as it is');
  t.same(trailersOnlyHeaders(14, 'no'), { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'no' });
  t.ok(isGrpcContentType('application/grpc') && isGrpcContentType('application/grpc+proto') && isGrpcContentType('application/grpc;charset=x'));
  t.notOk(isGrpcContentType('application/grpc-web') || isGrpcContentType('application/grpcx') || isGrpcContentType(undefined));
  t.ok(isGrpcWebContentType('application/grpc-web-text+proto'));
});

t.test('gRPC-Web: request headers and the base64 body', async (t) => {
  const { headers, decoder } = webRequestHeaders(['content-type', 'application/grpc-web-text', 'x-grpc-web', '1', 'content-length', '12', 'x-user-agent', 'grpc-web-javascript/0.1']);
  t.same(headers, ['content-type', 'application/grpc', 'x-user-agent', 'grpc-web-javascript/0.1', 'te', 'trailers']);
  t.ok(decoder);
  const plain = webRequestHeaders(['content-type', 'application/grpc-web+proto', 'te', 'trailers']);
  t.same(plain.headers, ['content-type', 'application/grpc+proto', 'te', 'trailers']);
  t.equal(plain.decoder, undefined);
  const d = new Base64Decoder();
  // Two messages encoded separately (padding in the middle), fed in odd-sized chunks.
  const text = Buffer.from(encodeFrame(Buffer.from('ab')).toString('base64') + encodeFrame(Buffer.from('xyz1')).toString('base64'));
  const parts: Buffer[] = [];
  for (let i = 0; i < text.length; i += 5) parts.push(d.push(text.subarray(i, i + 5)));
  t.same(d.end(), Buffer.alloc(0));
  t.same(Buffer.concat(parts), Buffer.concat([encodeFrame(Buffer.from('ab')), encodeFrame(Buffer.from('xyz1'))]));
  const bad = new Base64Decoder();
  bad.push(Buffer.from('abcde'));
  t.type(bad.end(), Error, 'a body that is not whole base64 groups');
});
