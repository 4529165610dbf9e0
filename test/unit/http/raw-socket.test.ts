/**
 * HTTP/1.1 on plain TCP connections, whose reads and writes go through the socket's stream handle
 * (src/http/raw-socket.ts) instead of net.Socket's Readable/Writable: over real sockets, the edge
 * cases the module handles — pipelined requests, bodies read slowly while other connections read
 * into the same shared buffer, responses written under backpressure to a slow reader (partial
 * writes, 'drain'), a peer that resets mid-response, an upgrade handed over as an ordinary socket,
 * EOF and half-close — and `send`/`send3` on their own: ordering with the Writable, 'drain', a
 * write error.
 */
import { createHash } from 'node:crypto';
import * as net from 'node:net';
import pino from 'pino';
import t, { type Test } from 'tap';
import type { H1Request, H1Response } from '../../../src/http/h1-server';
import { startListener, type DownstreamRequest, type DownstreamResponse, type Listener } from '../../../src/http/listener';
import { rawSupport, send, send3 } from '../../../src/http/raw-socket';
import { hashBodySlowly } from './lib/slow-body';

type Handler = (req: H1Request, res: H1Response) => void;

async function listen(t: Test, handler: Handler): Promise<{ port: number }> {
  const l: Listener = await startListener('127.0.0.1', 0, {
    name: 'h1-raw',
    logger: pino({ level: 'silent' }),
    handler: (req: DownstreamRequest, res: DownstreamResponse) => handler(req as H1Request, res as H1Response),
    onRefused: () => undefined,
  });
  t.teardown(async () => {
    const alive = setInterval(() => undefined, 50);
    await l.close(100);
    clearInterval(alive);
  });
  return { port: l.address().port };
}

interface Client {
  socket: net.Socket;
  text(): string;
  bytes(): Buffer;
  until(re: RegExp, ms?: number): Promise<string>;
  closed: Promise<void>;
}

function connect(t: Test, port: number, opts: { allowHalfOpen?: boolean } = {}): Promise<Client> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = '';
    const waiters: (() => void)[] = [];
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: opts.allowHalfOpen ?? false }, () =>
      resolve({
        socket,
        text: () => got,
        bytes: () => Buffer.concat(chunks),
        until: (re, ms = 10_000) =>
          new Promise((ok, fail) => {
            const timer = setTimeout(() => fail(new Error(`timed out waiting for ${re}; got ${JSON.stringify(got.slice(-200))}`)), ms);
            const check = (): void => {
              if (re.test(got)) {
                clearTimeout(timer);
                ok(got);
              } else waiters.push(check);
            };
            check();
          }),
        closed,
      }),
    );
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.toString('latin1');
      for (const w of waiters.splice(0)) w();
    });
    socket.on('error', reject);
    t.teardown(() => socket.destroy());
  });
}

const ok = (req: H1Request, res: H1Response): void => {
  const body = `${req.method} ${req.url}\n`;
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) }).end(body);
};

/** The server-side socket of a response (to check which read path it is on). */
const socketOf = (res: H1Response): net.Socket => (res as unknown as { conn: { socket: net.Socket } }).conn.socket;

const pattern = (size: number, seed: number): Buffer => {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * seed + (i >> 8)) & 0xff;
  return b;
};
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('on this Node the module takes the raw path for plain TCP', async (t) => {
  // Node 20 has the shape it detects; elsewhere it falls back (and the rest of this file tests that path).
  if (process.versions.node.startsWith('20.') && process.env.MESHLET_RAW_SOCKET !== 'off') t.same(rawSupport, { reads: true, writes: true }, 'reads and writes through the handle');
  let dataListeners = -1;
  const { port } = await listen(t, (req, res) => {
    dataListeners = socketOf(res).listenerCount('data');
    ok(req, res);
  });
  const c = await connect(t, port);
  c.socket.write('GET /a HTTP/1.1\r\nhost: x\r\n\r\n');
  await c.until(/GET \/a\n$/);
  t.equal(dataListeners, rawSupport.reads ? 0 : 1, rawSupport.reads ? "no 'data' listener: the handle feeds the parser" : "'data' events");
});

t.test('pipelined requests, in one write and split across writes, answered in order', async (t) => {
  let n = 0;
  const { port } = await listen(t, (req, res) => {
    if (n++ === 0) setTimeout(() => ok(req, res), 100);
    else ok(req, res);
  });
  const c = await connect(t, port);
  c.socket.write('GET /first HTTP/1.1\r\nhost: x\r\n\r\nGET /second HTTP/1.1\r\nhost: x\r\n\r\nGET /third HTTP/1.1\r\nho');
  await new Promise((r) => setTimeout(r, 20));
  c.socket.write('st: x\r\n\r\nGET /fourth HTTP/1.1\r\nhost: x\r\n\r\n');
  const text = await c.until(/GET \/fourth\n$/);
  t.match(text, /GET \/first\n[\s\S]*GET \/second\n[\s\S]*GET \/third\n[\s\S]*GET \/fourth\n$/, 'in order');
  t.equal(text.match(/HTTP\/1\.1 200 OK/g)?.length, 4, 'four answers');
});

t.test('request bodies read slowly arrive whole while other connections read into the shared buffer', async (t) => {
  const size = 4 * 1024 * 1024;
  const { port } = await listen(t, hashBodySlowly(10, ok));
  const payloads = [pattern(size, 7), pattern(size, 13)];
  const uploads = await Promise.all(payloads.map(() => connect(t, port)));
  const chatter = await connect(t, port);
  let stop = false;
  const chat = (async () => {
    for (let i = 0; i < 2000 && !stop; i++) {
      chatter.socket.write(`GET /c${i} HTTP/1.1\r\nhost: x\r\n\r\n`);
      await chatter.until(new RegExp(`GET /c${i}\\n$`));
    }
  })();
  uploads.forEach((c, i) => {
    c.socket.write(`POST /up${i} HTTP/1.1\r\nhost: x\r\ncontent-length: ${size}\r\n\r\n`);
    c.socket.write(payloads[i] as Buffer);
  });
  const texts = await Promise.all(uploads.map((c) => c.until(/\r\n\r\n\d+ [0-9a-f]{64}$/, 60_000)));
  stop = true;
  await chat;
  texts.forEach((text, i) => t.match(text, `\r\n\r\n${size} ${sha(payloads[i] as Buffer)}`, `upload ${i}: every byte, in order`));
});

for (const framing of ['content-length', 'chunked'] as const) {
  t.test(`a 32 MiB response (${framing}) to a client that reads slowly: backpressure, 'drain', every byte`, async (t) => {
    const total = 32 * 1024 * 1024;
    const piece = 64 * 1024;
    const payload = pattern(total, 11);
    let refusals = 0;
    let drains = 0;
    const { port } = await listen(t, (_req, res) => {
      res.writeHead(200, framing === 'content-length' ? { 'content-length': String(total) } : {});
      let off = 0;
      const pump = (): void => {
        while (off < total) {
          const chunk = payload.subarray(off, off + piece);
          off += chunk.length;
          if (!res.write(chunk)) {
            refusals++;
            res.once('drain', () => {
              drains++;
              pump();
            });
            return;
          }
        }
        res.end();
      };
      pump();
    });
    const c = await connect(t, port);
    c.socket.pause();
    c.socket.write('GET /big HTTP/1.1\r\nhost: x\r\n\r\n');
    // Not reading: the kernel's buffers fill and the server's writes queue in libuv.
    await new Promise((r) => setTimeout(r, 300));
    c.socket.resume();
    const ended = framing === 'content-length' ? null : /\r\n0\r\n\r\n$/;
    const all = await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('response incomplete')), 60_000);
      let received = c.bytes().length;
      let tail = c.text().slice(-16);
      let headEnd = -1;
      const check = (d?: Buffer): void => {
        if (d) {
          received += d.length;
          tail = (tail + d.toString('latin1')).slice(-16);
        }
        if (headEnd < 0) headEnd = c.text().indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        if ((ended === null && received - headEnd - 4 >= total) || (ended !== null && ended.test(tail))) {
          clearTimeout(timer);
          c.socket.off('data', check);
          resolve(c.bytes().subarray(headEnd + 4));
        }
      };
      c.socket.on('data', check);
      check();
    });
    let body = all;
    if (framing === 'chunked') {
      const parts: Buffer[] = [];
      let i = 0;
      for (;;) {
        const eol = all.indexOf('\r\n', i);
        const len = parseInt(all.subarray(i, eol).toString('latin1'), 16);
        if (len === 0) break;
        parts.push(all.subarray(eol + 2, eol + 2 + len));
        i = eol + 2 + len + 2;
      }
      body = Buffer.concat(parts);
    }
    t.equal(body.length, total, 'every byte');
    t.equal(sha(body), sha(payload), 'in order');
    t.ok(refusals > 0, `write() returned false ${refusals} times`);
    t.equal(drains, refusals, "a 'drain' for every refusal");
    // The connection is still good.
    c.socket.write('GET /after HTTP/1.1\r\nhost: x\r\n\r\n');
    await c.until(/HTTP\/1\.1 200 OK[^]*$/);
  });
}

t.test('a peer that resets mid-response: the response is closed, nothing throws', async (t) => {
  const piece = Buffer.alloc(256 * 1024, 0x61);
  let resolveClosed: () => void = () => undefined;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let written = 0;
  const { port } = await listen(t, (_req, res) => {
    res.writeHead(200, { 'content-length': String(1024 * 1024 * 1024) });
    res.on('close', () => resolveClosed());
    const pump = (): void => {
      // Bounded: 1 GiB at most; the reset comes long before.
      while (!res.destroyed && written < 1024 * 1024 * 1024) {
        written += piece.length;
        if (!res.write(piece)) {
          res.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
  const c = await connect(t, port);
  c.socket.on('error', () => undefined);
  c.socket.write('GET /stream HTTP/1.1\r\nhost: x\r\n\r\n');
  await c.until(/\r\n\r\naaaa/);
  c.socket.resetAndDestroy();
  await closed;
  t.pass("the response emitted 'close' after the reset");
  // The listener still serves.
  const d = await connect(t, port);
  d.socket.write('GET /next HTTP/1.1\r\nhost: x\r\n\r\n');
  await d.until(/\r\n\r\naaaa/);
});

t.test('an upgrade: the head bytes and the tunnel, with an ordinary socket (pipe, pause, large reads)', async (t) => {
  const { port } = await listen(t, (req, res) => {
    const up = req.upgrade;
    if (!up) {
      ok(req, res);
      return;
    }
    setImmediate(() => {
      const s = up.socket;
      s.write('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n');
      s.write(`[head:${up.head.toString()}]`);
      // An echo through pipe(): 'data', pause/resume and backpressure of an ordinary socket.
      s.pipe(s);
    });
  });
  const other = await connect(t, port);
  const c = await connect(t, port);
  c.socket.write('GET /w HTTP/1.1\r\nhost: x\r\n\r\n');
  await c.until(/GET \/w\n$/);
  c.socket.write('GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nearly-bytes');
  await c.until(/\[head:early-bytes\]$/);
  // 4 MiB through the tunnel while another connection reads through the shared buffer.
  const big = pattern(4 * 1024 * 1024, 5);
  const before = c.bytes().length;
  c.socket.write(big);
  for (let i = 0; i < 50; i++) {
    other.socket.write(`GET /o${i} HTTP/1.1\r\nhost: x\r\n\r\n`);
    await other.until(new RegExp(`GET /o${i}\\n$`));
  }
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('echo incomplete')), 30_000);
    const check = (): void => {
      if (c.bytes().length - before >= big.length) {
        clearTimeout(timer);
        resolve();
      } else setTimeout(check, 10);
    };
    check();
  });
  t.equal(sha(c.bytes().subarray(before)), sha(big), 'echoed whole and in order');
});

t.test('EOF: requests followed by a half-close are answered, then the connection closes', async (t) => {
  const { port } = await listen(t, ok);
  const c = await connect(t, port, { allowHalfOpen: true });
  c.socket.write('GET /one HTTP/1.1\r\nhost: x\r\n\r\n');
  await c.until(/GET \/one\n$/);
  // The request and the FIN in one go (the server answers from the read before the EOF's).
  c.socket.end('GET /half HTTP/1.1\r\nhost: x\r\n\r\n');
  await c.closed;
  t.match(c.text(), /GET \/one\nHTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nGET \/half\n$/, 'answered, then closed');
  // A client that closes while its request is in flight: the response is closed.
  let closedRes = false;
  const { port: p2 } = await listen(t, (_req, res) => res.on('close', () => (closedRes = true)));
  const d = await connect(t, p2);
  d.socket.write('GET /gone HTTP/1.1\r\nhost: x\r\n\r\n');
  await new Promise((r) => setTimeout(r, 50));
  d.socket.destroy();
  for (let i = 0; i < 200 && !closedRes; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(closedRes, "the response emitted 'close'");
});

t.test('send/send3: ordering with the Writable, drain, and a write error', async (t) => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  const peer = await accepted;
  t.teardown(() => {
    client.destroy();
    peer.destroy();
  });
  peer.pause();
  // Fill the kernel's buffers, mixing the three ways of writing; the reader is paused.
  const expected: Buffer[] = [];
  let refused = 0;
  for (let i = 0; i < 600; i++) {
    const b = pattern(32 * 1024, i + 1);
    let ok: boolean;
    if (i % 3 === 0) ok = send(client, b);
    else if (i % 3 === 1) ok = send3(client, `<${i}>`, b, `</${i}>`);
    else ok = client.write(b);
    expected.push(i % 3 === 1 ? Buffer.concat([Buffer.from(`<${i}>`), b, Buffer.from(`</${i}>`)]) : b);
    if (!ok) refused++;
  }
  t.ok(refused > 0, `writes refused under backpressure: ${refused}`);
  const drained = new Promise<void>((r) => client.once('drain', () => r()));
  const want = Buffer.concat(expected);
  const got: Buffer[] = [];
  let n = 0;
  const all = new Promise<void>((r) =>
    peer.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n >= want.length) r();
    }),
  );
  peer.resume();
  await drained;
  await all;
  t.equal(sha(Buffer.concat(got)), sha(want), 'every byte in the order written');
  // A write to a peer that reset: the socket is destroyed with the error, on a later tick.
  const errored = new Promise<Error>((r) => client.once('error', r));
  peer.resetAndDestroy();
  await new Promise((r) => setTimeout(r, 50));
  let threw = false;
  try {
    for (let i = 0; i < 100 && !client.destroyed; i++) send(client, 'x'.repeat(1024));
  } catch {
    threw = true;
  }
  t.notOk(threw, 'send does not throw');
  const err = (await errored) as Error & { code?: string };
  t.match(err.code, /^(ECONNRESET|EPIPE)$/, `error ${err.code}`);
  t.ok(client.destroyed, 'destroyed');
});
