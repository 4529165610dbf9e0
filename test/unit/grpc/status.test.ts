import t from 'tap';
import { encodeFrame, MessageDecoder as FrameDecoder, FrameError } from '../../../src/grpc/framing';
import { decodeGrpcMessage, encodeGrpcMessage, GrpcStatus, grpcStatusName, grpcToHttpStatus, httpToGrpcStatus } from '../../../src/grpc/transcode/status';

t.test('gRPC status -> HTTP status: the google.rpc table', async (t) => {
  const want: Record<string, number> = {
    OK: 200, CANCELLED: 499, UNKNOWN: 500, INVALID_ARGUMENT: 400, DEADLINE_EXCEEDED: 504, NOT_FOUND: 404, ALREADY_EXISTS: 409,
    PERMISSION_DENIED: 403, RESOURCE_EXHAUSTED: 429, FAILED_PRECONDITION: 400, ABORTED: 409, OUT_OF_RANGE: 400,
    UNIMPLEMENTED: 501, INTERNAL: 500, UNAVAILABLE: 503, DATA_LOSS: 500, UNAUTHENTICATED: 401,
  };
  for (const [name, code] of Object.entries(GrpcStatus)) {
    t.equal(grpcToHttpStatus(code), want[name], name);
    t.equal(grpcStatusName(code), name);
  }
  t.equal(grpcToHttpStatus(99), 500);
  t.equal(grpcStatusName(99), 'UNKNOWN');
  t.equal(httpToGrpcStatus(503), GrpcStatus.UNAVAILABLE);
  t.equal(httpToGrpcStatus(404), GrpcStatus.UNIMPLEMENTED);
  t.equal(httpToGrpcStatus(401), GrpcStatus.UNAUTHENTICATED);
  t.equal(httpToGrpcStatus(418), GrpcStatus.UNKNOWN);
});

t.test('grpc-message', async (t) => {
  t.equal(decodeGrpcMessage(encodeGrpcMessage('100% é\n')), '100% é\n');
  t.equal(decodeGrpcMessage('%E0%A4%A'), '%E0%A4%A');
});

t.test('framing', async (t) => {
  const a = encodeFrame(Buffer.from('hello'));
  const b = encodeFrame(Buffer.alloc(0));
  const d = new FrameDecoder(16);
  const all = Buffer.concat([a, b, a]);
  const out: string[] = [];
  for (let i = 0; i < all.length; i += 3) out.push(...d.push(all.subarray(i, i + 3)).map((m) => m.toString()));
  t.same(out, ['hello', '', 'hello'], 'messages split across chunks');
  d.end();
  t.throws(() => new FrameDecoder(4).push(a), FrameError, 'too large');
  t.throws(() => new FrameDecoder().push(Buffer.from([1, 0, 0, 0, 0])), /compressed/);
  const cut = new FrameDecoder();
  cut.push(a.subarray(0, 7));
  t.throws(() => cut.end(), /ended inside a message/);
});
