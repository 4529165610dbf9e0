/**
 * Fuzzing meshlet's own HTTP/2 server (src/http/h2/) on live connections: random and malformed
 * frame sequences (valid requests mixed with random types, flags, stream ids, lengths, padding,
 * windows, settings, truncated and mutated bytes), written in random chunk sizes, from a seeded
 * PRNG (lib.ts `seeded`: one seed drives a whole run of live connections, which fast-check's
 * shrinking cannot replay usefully). The process must not crash, every session and stream must be
 * gone afterwards, and the server must still answer a real client. The seed is printed;
 * H2_FUZZ_SEED replays a run or explores another (the default is fixed, so CI is deterministic).
 */
import * as http2 from 'node:http2';
import t from 'tap';
import { CLIENT_PREFACE, encodeFrame, Flags, FrameType, FrameWriter, Setting } from '../../../../src/http/h2/frames';
import { HpackEncoder } from '../../../../src/http/h2/hpack';
import { RawClient, seeded, startServer, until, GET, POST } from './lib';

const SEED = Number(process.env.H2_FUZZ_SEED ?? 20_261_203);
const CONNECTIONS = 1000;

t.test(`random frame sequences (seed ${SEED})`, async (t) => {
  const { rnd, int, pick, bytes } = seeded(SEED);
  // The server's choices draw from their own generator: the client plans stay the same for a seed.
  const srvRnd = seeded(SEED + 1).rnd;
  let uncaught = 0;
  const onUncaught = (): void => void uncaught++;
  process.on('uncaughtException', onUncaught);
  t.teardown(() => process.off('uncaughtException', onUncaught));

  let opened = 0;
  const srv = await startServer((stream, headers) => {
    opened++;
    stream.on('error', () => undefined);
    const mode = headers[':path'] === '/final' ? 0 : Math.floor(srvRnd() * 6);
    try {
      if (mode === 0) {
        stream.respond({ ':status': 200 });
        stream.pipe(stream);
      } else if (mode === 1) {
        stream.respond({ ':status': 200 }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'x-t': '1' }));
        stream.end(Buffer.alloc(Math.floor(srvRnd() * 70_000)));
        stream.resume();
      } else if (mode === 2) {
        stream.close(Math.floor(srvRnd() * 14));
      } else if (mode === 3) {
        setTimeout(() => stream.destroy(), Math.floor(srvRnd() * 5));
      } else if (mode === 4) {
        if (headers.expect !== undefined) stream.additionalHeaders({ ':status': 100 });
        stream.resume();
        stream.on('end', () => {
          if (!stream.closed && !stream.destroyed && !stream.headersSent) stream.respond({ ':status': 204 });
        });
      } else {
        // Never answered: the session must still clean it up when the connection goes.
      }
    } catch {
      // respond() on a stream the fuzz reset already: node throws too.
    }
  });
  t.teardown(() => srv.close());

  let enc = new HpackEncoder();
  const TYPES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xff];
  const fuzzFrame = (w: FrameWriter, lastId: { n: number }, first: boolean): void => {
    const r = first && rnd() < 0.8 ? 0 : int(14);
    const id = rnd() < 0.7 ? lastId.n : rnd() < 0.5 ? 0 : int(20);
    switch (r) {
      case 0:
      case 1: {
        // A valid request on the next stream id.
        lastId.n += 2;
        const fields = rnd() < 0.5 ? GET(`/${int(100)}`) : [...POST(), 'content-length', String(int(20))];
        if (rnd() < 0.3) fields.push('expect', '100-continue');
        w.headers(lastId.n, enc.encode(fields), rnd() < 0.4);
        return;
      }
      case 2:
        w.data(id, bytes(int(100)), rnd() < 0.3);
        return;
      case 3:
        w.paddedData(id, bytes(int(50)), int(60), rnd() < 0.3);
        return;
      case 4:
        w.windowUpdate(id, rnd() < 0.1 ? 0x7fffffff : int(100_000));
        return;
      case 5:
        w.settings([pick([1, 2, 3, 4, 5, 6, 8, 9]), pick([0, 1, 2, 16_384, 65_535, 2 ** 31 - 1, int(2 ** 24)])]);
        return;
      case 6:
        w.rstStream(id, int(14));
        return;
      case 7:
        w.ping(bytes(8), rnd() < 0.2);
        return;
      case 8:
        w.priority(id, int(20), rnd() < 0.5, int(256));
        return;
      case 9:
        w.continuation(id, bytes(int(30)), rnd() < 0.5);
        return;
      case 10:
        // Random header block bytes (HPACK garbage).
        w.frame(FrameType.HEADERS, pick([0, Flags.END_HEADERS, Flags.END_HEADERS | Flags.END_STREAM, Flags.PADDED | Flags.END_HEADERS, Flags.PRIORITY | Flags.END_HEADERS]), id, bytes(int(40)));
        return;
      case 11:
        w.goaway(int(20), int(14), bytes(int(10)));
        return;
      default:
        // Any type, any flags, any length (within 16,384) and payload.
        w.frame(pick(TYPES), int(256), id, bytes(rnd() < 0.05 ? int(17_000) : int(64)));
    }
  };

  /** One connection's bytes, chunk sizes and ending, drawn before any I/O (so a seed replays exactly). */
  const plan = (): { wire: Buffer; chunks: number[]; yields: boolean[]; waitMs: number; end: boolean } => {
    // One HPACK context per connection (the server's decoder is per connection too).
    enc = new HpackEncoder();
    const w = new FrameWriter();
    w.settings(rnd() < 0.5 ? [] : [Setting.INITIAL_WINDOW_SIZE, int(70_000), Setting.MAX_FRAME_SIZE, 16_384 + int(50_000)]);
    const frames = [CLIENT_PREFACE, ...w.take()];
    const lastId = { n: -1 };
    const count = 1 + int(40);
    for (let i = 0; i < count; i++) {
      fuzzFrame(w, lastId, i === 0);
      frames.push(...w.take());
    }
    let wire = Buffer.concat(frames);
    if (rnd() < 0.15) {
      // Flip some bytes after the preface.
      wire = Buffer.from(wire);
      for (let i = 0; i < 1 + int(5); i++) wire[24 + int(Math.max(1, wire.length - 24))] = int(256);
    }
    if (rnd() < 0.1) wire = wire.subarray(0, int(wire.length)); // cut short
    const chunks: number[] = [];
    const yields: boolean[] = [];
    for (let off = 0; off < wire.length; ) {
      const n = 1 + int(rnd() < 0.5 ? 20 : 4000);
      chunks.push(n);
      yields.push(rnd() < 0.1);
      off += n;
    }
    return { wire, chunks, yields, waitMs: int(15), end: rnd() < 0.5 };
  };

  const runOne = async (p: ReturnType<typeof plan>): Promise<void> => {
    const c = await RawClient.connect(srv.port, false);
    let off = 0;
    for (let i = 0; i < p.chunks.length; i++) {
      c.raw(p.wire.subarray(off, off + p.chunks[i]!));
      off += p.chunks[i]!;
      if (p.yields[i]) await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, p.waitMs));
    if (p.end) c.socket.end();
    else c.close();
  };

  for (let i = 0; i < CONNECTIONS; i += 10) {
    const plans = Array.from({ length: 10 }, plan);
    await Promise.all(plans.map(runOne));
  }
  await until(() => srv.sessions.size === 0 && srv.streams.size === 0, 10_000, 'sessions and streams closed').catch((e: Error) => {
    for (const st of srv.streams) {
      const x = st as unknown as Record<string, unknown>;
      t.comment(`left: id ${st.id} destroyed ${st.destroyed} closed ${st.closed} open ${String(x.open)} local ${String(x.localEnded)} remote ${String(x.remoteEnded)} readableEnded ${st.readableEnded} flowing ${String(st.readableFlowing)} writableEnded ${st.writableEnded} finished ${st.writableFinished} headersSent ${st.headersSent} rst ${st.rstCode} len ${st.readableLength}`);
    }
    throw e;
  });
  t.ok(opened > CONNECTIONS / 4, `streams were opened (${opened}), not only refused connections`);
  t.equal(uncaught, 0, 'no uncaught exception');
  t.equal(srv.sessions.size, 0, 'no session left');
  t.equal(srv.streams.size, 0, 'no stream left');

  // Still serving.
  const client = http2.connect(`http://127.0.0.1:${srv.port}`);
  client.on('error', () => undefined);
  const got = await new Promise<string>((resolve) => {
    const r = client.request({ ':path': '/final', ':method': 'POST' });
    let body = '';
    r.setEncoding('utf8');
    r.on('data', (d: string) => (body += d));
    r.on('end', () => resolve(body));
    r.on('error', (e: Error) => resolve(e.message));
    r.end('still here');
  });
  t.equal(got, 'still here', 'a real client is still answered');
  client.destroy();
  t.ok(encodeFrame(0, 0, 1).length === 9);
});
