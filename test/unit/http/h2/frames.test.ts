/**
 * The HTTP/2 frame codec (src/http/h2/frames.ts): frames split across chunks and many per chunk,
 * DATA payloads handed on without a copy when whole in one chunk, every malformed frame mapped to
 * the RFC 9113 error code, and the writers' output read back by the parser.
 */
import t from 'tap';
import { CLIENT_PREFACE, encodeFrame, ErrorCode, Flags, FrameParser, FrameType, FrameWriter, Setting, type FrameSink } from '../../../../src/http/h2/frames';

type Ev = [string, ...unknown[]];

function collect(opts: ConstructorParameters<typeof FrameParser>[1] = {}): { parser: FrameParser; events: Ev[] } {
  const events: Ev[] = [];
  const sink: FrameSink = {
    onData: (sid, data, end, flow) => events.push(['data', sid, Buffer.from(data).toString('latin1'), end, flow]),
    onHeaders: (sid, block, end, selfDep) => events.push(['headers', sid, block.toString('latin1'), end, selfDep]),
    onRstStream: (sid, code) => events.push(['rst', sid, code]),
    onSettings: (ack, params) => events.push(['settings', ack, params]),
    onPing: (ack, p) => events.push(['ping', ack, p.toString('hex')]),
    onGoaway: (last, code, debug) => events.push(['goaway', last, code, debug.toString()]),
    onWindowUpdate: (sid, inc) => events.push(['window', sid, inc]),
    onStreamError: (sid, code) => events.push(['streamError', sid, code]),
    onConnectionError: (code) => events.push(['connError', code]),
  };
  return { parser: new FrameParser(sink, opts), events };
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

function settingsPayload(...kv: number[]): Buffer {
  const b = Buffer.alloc((kv.length / 2) * 6);
  for (let i = 0; i < kv.length; i += 2) {
    b.writeUInt16BE(kv[i]!, i * 3);
    b.writeUInt32BE(kv[i + 1]!, i * 3 + 2);
  }
  return b;
}

/** The error a single frame gets (fed after a valid preface-less start). */
function errorOf(frame: Buffer, opts: ConstructorParameters<typeof FrameParser>[1] = {}): Ev | undefined {
  const { parser, events } = collect(opts);
  parser.push(frame);
  return events.find((e) => e[0] === 'connError' || e[0] === 'streamError');
}

t.test('frames split at every byte and merged into one chunk give the same events', async (t) => {
  const w = new FrameWriter();
  w.settings([Setting.INITIAL_WINDOW_SIZE, 1 << 20, Setting.MAX_CONCURRENT_STREAMS, 100]);
  w.headers(1, Buffer.from('hdr-block'), false);
  w.data(1, Buffer.from('hello'), false);
  w.paddedData(1, Buffer.from('padded'), 10, true);
  w.data(3, Buffer.alloc(3000, 0x61), true);
  w.ping(Buffer.from('01234567'), false);
  w.windowUpdate(0, 1000);
  w.rstStream(3, ErrorCode.CANCEL);
  w.goaway(7, ErrorCode.NO_ERROR, Buffer.from('bye'));
  w.frame(0xee, 0, 0, Buffer.from('unknown')); // ignored
  w.priority(5, 1, false, 16); // ignored
  w.settingsAck();
  const wire = Buffer.concat([CLIENT_PREFACE, ...w.take()]);
  t.ok(w.empty, 'take() empties the writer');

  const whole = collect({ expectPreface: true });
  whole.parser.push(wire);
  t.same(whole.events.map((e) => e[0]), ['settings', 'headers', 'data', 'data', 'data', 'ping', 'window', 'rst', 'goaway', 'settings']);
  t.same(whole.events[0], ['settings', false, [Setting.INITIAL_WINDOW_SIZE, 1 << 20, Setting.MAX_CONCURRENT_STREAMS, 100]]);
  t.same(whole.events[3], ['data', 1, 'padded', true, 17], 'padding removed, the whole payload counts for flow control');
  t.same(whole.events[8], ['goaway', 7, 0, 'bye']);

  for (const step of [1, 2, 7, 9, 10, 100, 4096]) {
    const split = collect({ expectPreface: true });
    for (let i = 0; i < wire.length; i += step) split.parser.push(wire.subarray(i, i + step));
    t.same(split.events, whole.events, `chunks of ${step} bytes`);
  }
});

t.test('a DATA payload whole in the chunk is a view of it (no copy)', async (t) => {
  const frame = encodeFrame(FrameType.DATA, 0, 1, Buffer.from('zero-copy'));
  let got: Buffer | undefined;
  const p = new FrameParser({
    onData: (_s, d) => (got = d),
    onHeaders() {},
    onRstStream() {},
    onSettings() {},
    onPing() {},
    onGoaway() {},
    onWindowUpdate() {},
    onStreamError() {},
    onConnectionError() {},
  });
  p.push(frame);
  t.equal(got?.buffer, frame.buffer, 'same memory as the chunk');
  t.equal(got?.toString(), 'zero-copy');
});

t.test('HEADERS + CONTINUATION assembled; priority and padding removed', async (t) => {
  const { parser, events } = collect();
  const prio = Buffer.concat([u32(0), Buffer.from([15])]);
  const headersPayload = Buffer.concat([Buffer.from([3]), prio, Buffer.from('abc'), Buffer.alloc(3)]);
  parser.push(encodeFrame(FrameType.HEADERS, Flags.PADDED | Flags.PRIORITY | Flags.END_STREAM, 1, headersPayload));
  parser.push(encodeFrame(FrameType.CONTINUATION, 0, 1, Buffer.from('def')));
  parser.push(encodeFrame(FrameType.CONTINUATION, Flags.END_HEADERS, 1, Buffer.from('ghi')));
  t.same(events, [['headers', 1, 'abcdefghi', true, false]]);
  t.equal(parser.inHeaderBlock, false);

  const self = collect();
  self.parser.push(encodeFrame(FrameType.HEADERS, Flags.PRIORITY | Flags.END_HEADERS, 3, Buffer.concat([u32(3), Buffer.from([1]), Buffer.from('x')])));
  t.same(self.events, [['headers', 3, 'x', false, true]], 'a self-dependent HEADERS is flagged');
});

t.test('malformed frames get the right error codes', async (t) => {
  const { PROTOCOL_ERROR, FRAME_SIZE_ERROR, FLOW_CONTROL_ERROR, ENHANCE_YOUR_CALM } = ErrorCode;
  const cases: [string, Buffer, Ev, ConstructorParameters<typeof FrameParser>[1]?][] = [
    ['frame over max frame size', encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(16385)), ['connError', FRAME_SIZE_ERROR]],
    ['frame over a smaller max frame size', encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(16385)), ['connError', FRAME_SIZE_ERROR], { maxFrameSize: 16384 }],
    ['DATA on stream 0', encodeFrame(FrameType.DATA, 0, 0, Buffer.from('x')), ['connError', PROTOCOL_ERROR]],
    ['padded DATA without pad length', encodeFrame(FrameType.DATA, Flags.PADDED, 1), ['connError', FRAME_SIZE_ERROR]],
    ['DATA padding too long', encodeFrame(FrameType.DATA, Flags.PADDED, 1, Buffer.from([3, 1, 2])), ['connError', PROTOCOL_ERROR]],
    ['HEADERS on stream 0', encodeFrame(FrameType.HEADERS, Flags.END_HEADERS, 0, Buffer.from('x')), ['connError', PROTOCOL_ERROR]],
    ['padded HEADERS without pad length', encodeFrame(FrameType.HEADERS, Flags.PADDED | Flags.END_HEADERS, 1), ['connError', FRAME_SIZE_ERROR]],
    ['HEADERS padding too long', encodeFrame(FrameType.HEADERS, Flags.PADDED | Flags.END_HEADERS, 1, Buffer.from([5, 1])), ['connError', PROTOCOL_ERROR]],
    ['HEADERS too short for priority', encodeFrame(FrameType.HEADERS, Flags.PRIORITY | Flags.END_HEADERS, 1, Buffer.from([0, 0])), ['connError', FRAME_SIZE_ERROR]],
    ['padded HEADERS too short for priority', encodeFrame(FrameType.HEADERS, Flags.PADDED | Flags.PRIORITY | Flags.END_HEADERS, 1, Buffer.from([2, 0, 0, 0])), ['connError', PROTOCOL_ERROR]],
    ['PRIORITY on stream 0', encodeFrame(FrameType.PRIORITY, 0, 0, Buffer.alloc(5)), ['connError', PROTOCOL_ERROR]],
    ['PRIORITY of 4 bytes', encodeFrame(FrameType.PRIORITY, 0, 1, Buffer.alloc(4)), ['streamError', 1, FRAME_SIZE_ERROR]],
    ['PRIORITY on itself', encodeFrame(FrameType.PRIORITY, 0, 1, Buffer.concat([u32(1), Buffer.from([1])])), ['streamError', 1, PROTOCOL_ERROR]],
    ['RST_STREAM on stream 0', encodeFrame(FrameType.RST_STREAM, 0, 0, u32(0)), ['connError', PROTOCOL_ERROR]],
    ['RST_STREAM of 3 bytes', encodeFrame(FrameType.RST_STREAM, 0, 1, Buffer.alloc(3)), ['connError', FRAME_SIZE_ERROR]],
    ['SETTINGS on a stream', encodeFrame(FrameType.SETTINGS, 0, 1), ['connError', PROTOCOL_ERROR]],
    ['SETTINGS not a multiple of 6', encodeFrame(FrameType.SETTINGS, 0, 0, Buffer.alloc(7)), ['connError', FRAME_SIZE_ERROR]],
    ['SETTINGS ACK with payload', encodeFrame(FrameType.SETTINGS, Flags.ACK, 0, Buffer.alloc(6)), ['connError', FRAME_SIZE_ERROR]],
    ['ENABLE_PUSH 2', encodeFrame(FrameType.SETTINGS, 0, 0, settingsPayload(Setting.ENABLE_PUSH, 2)), ['connError', PROTOCOL_ERROR]],
    ['ENABLE_CONNECT_PROTOCOL 2', encodeFrame(FrameType.SETTINGS, 0, 0, settingsPayload(Setting.ENABLE_CONNECT_PROTOCOL, 2)), ['connError', PROTOCOL_ERROR]],
    ['INITIAL_WINDOW_SIZE 2^31', encodeFrame(FrameType.SETTINGS, 0, 0, settingsPayload(Setting.INITIAL_WINDOW_SIZE, 2 ** 31)), ['connError', FLOW_CONTROL_ERROR]],
    ['MAX_FRAME_SIZE too small', encodeFrame(FrameType.SETTINGS, 0, 0, settingsPayload(Setting.MAX_FRAME_SIZE, 16383)), ['connError', PROTOCOL_ERROR]],
    ['MAX_FRAME_SIZE too large', encodeFrame(FrameType.SETTINGS, 0, 0, settingsPayload(Setting.MAX_FRAME_SIZE, 2 ** 24)), ['connError', PROTOCOL_ERROR]],
    ['PUSH_PROMISE from a client', encodeFrame(FrameType.PUSH_PROMISE, Flags.END_HEADERS, 1, u32(2)), ['connError', PROTOCOL_ERROR]],
    ['PING on a stream', encodeFrame(FrameType.PING, 0, 1, Buffer.alloc(8)), ['connError', PROTOCOL_ERROR]],
    ['PING of 7 bytes', encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(7)), ['connError', FRAME_SIZE_ERROR]],
    ['GOAWAY on a stream', encodeFrame(FrameType.GOAWAY, 0, 1, Buffer.alloc(8)), ['connError', PROTOCOL_ERROR]],
    ['GOAWAY of 7 bytes', encodeFrame(FrameType.GOAWAY, 0, 0, Buffer.alloc(7)), ['connError', FRAME_SIZE_ERROR]],
    ['WINDOW_UPDATE of 3 bytes', encodeFrame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.alloc(3)), ['connError', FRAME_SIZE_ERROR]],
    ['WINDOW_UPDATE 0 on the connection', encodeFrame(FrameType.WINDOW_UPDATE, 0, 0, u32(0)), ['connError', PROTOCOL_ERROR]],
    ['WINDOW_UPDATE 0 on a stream', encodeFrame(FrameType.WINDOW_UPDATE, 0, 1, u32(0)), ['streamError', 1, PROTOCOL_ERROR]],
    ['CONTINUATION without HEADERS', encodeFrame(FrameType.CONTINUATION, Flags.END_HEADERS, 1, Buffer.from('x')), ['connError', PROTOCOL_ERROR]],
    [
      'a frame inside a header block',
      Buffer.concat([encodeFrame(FrameType.HEADERS, 0, 1, Buffer.from('x')), encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8))]),
      ['connError', PROTOCOL_ERROR],
    ],
    [
      'CONTINUATION of another stream',
      Buffer.concat([encodeFrame(FrameType.HEADERS, 0, 1, Buffer.from('x')), encodeFrame(FrameType.CONTINUATION, Flags.END_HEADERS, 3, Buffer.from('y'))]),
      ['connError', PROTOCOL_ERROR],
    ],
    [
      'a header block over the cap',
      Buffer.concat([encodeFrame(FrameType.HEADERS, 0, 1, Buffer.alloc(60)), encodeFrame(FrameType.CONTINUATION, 0, 1, Buffer.alloc(60))]),
      ['connError', ENHANCE_YOUR_CALM],
      { maxHeaderBlockSize: 100 },
    ],
    ['a first HEADERS over the cap', encodeFrame(FrameType.HEADERS, 0, 1, Buffer.alloc(101)), ['connError', ENHANCE_YOUR_CALM], { maxHeaderBlockSize: 100 }],
    ['bad preface', Buffer.from('GET / HTTP/1.1\r\n\r\n'), ['connError', PROTOCOL_ERROR], { expectPreface: true }],
    ['preface then PING', Buffer.concat([CLIENT_PREFACE, encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8))]), ['connError', PROTOCOL_ERROR], { expectPreface: true }],
  ];
  for (const [name, frame, want, opts] of cases) t.same(errorOf(frame, opts), want, name);
});

t.test('after a connection error the parser delivers nothing more', async (t) => {
  const { parser, events } = collect();
  parser.push(Buffer.concat([encodeFrame(FrameType.DATA, 0, 0, Buffer.from('x')), encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8))]));
  parser.push(encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8)));
  t.same(events, [['connError', ErrorCode.PROTOCOL_ERROR]]);
  t.equal(parser.isStopped, true);
});

t.test('the writer splits a large header block into CONTINUATIONs and packs small frames', async (t) => {
  const w = new FrameWriter();
  const block = Buffer.alloc(40_000, 0x41);
  w.headers(1, block, true);
  const { parser, events } = collect();
  const bufs = w.take();
  const wire = Buffer.concat(bufs);
  t.equal(wire.length, 40_000 + 9 * 3, 'HEADERS + 2 CONTINUATIONs');
  parser.push(wire);
  t.same(events, [['headers', 1, block.toString('latin1'), true, false]]);

  const w2 = new FrameWriter();
  for (let i = 0; i < 3000; i++) w2.windowUpdate(1, 1);
  const big = Buffer.alloc(2000);
  w2.data(1, big, false);
  w2.pushPromise(1, 2, Buffer.from('p'));
  w2.continuation(1, Buffer.from('c'), true);
  const parts = w2.take();
  t.ok(parts.includes(big), 'a large payload is queued as it is');
  t.equal(Buffer.concat(parts).length, 3000 * 13 + 9 + 2000 + 9 + 5 + 9 + 1);
  t.same(w2.take(), []);
});
