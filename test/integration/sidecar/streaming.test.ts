/**
 * Bodies stream through the sidecar with backpressure, never buffered whole: a 128 MiB request
 * body generated on the fly reaches the upstream intact, and a 128 MiB response reaches the
 * client intact, while the sidecar's resident memory (its /proc/PID/status VmRSS, sampled) grows
 * by far less than the body. The receiving side stops reading for a while half-way, so a proxy
 * without backpressure would have to hold the rest of the body in memory.
 * Also: `Expect: 100-continue`.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import { Readable } from 'node:stream';
import t from 'tap';
import { HOST, h1Upstream, h2Client, h2Upstream, peakSampler, request, route, service, startSidecar, within } from './helpers';

const MiB = 1024 * 1024;
const TOTAL = 128 * MiB;
const CHUNK = 64 * 1024;
const MAX_GROWTH = 64 * MiB;

/** TOTAL bytes, generated chunk by chunk (each chunk stamped with its index), hashed as they go. */
function generator(total: number): { stream: Readable; digest(): string } {
  const base = randomBytes(CHUNK);
  const hash = createHash('sha256');
  let sent = 0;
  let i = 0;
  const stream = new Readable({
    highWaterMark: CHUNK,
    read() {
      if (sent >= total) {
        this.push(null);
        return;
      }
      const n = Math.min(CHUNK, total - sent);
      const chunk = Buffer.from(base.subarray(0, n));
      chunk.writeUInt32BE(i++, 0);
      sent += n;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, digest: () => hash.digest('hex') };
}

/** Consumes a readable, pausing once for `pauseMs` after `pauseAt` bytes; resolves with bytes and hash. */
function consume(r: Readable, pauseAt: number, pauseMs: number): Promise<{ bytes: number; sha: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    let paused = false;
    r.on('data', (c: Buffer) => {
      bytes += c.length;
      hash.update(c);
      if (!paused && bytes >= pauseAt) {
        paused = true;
        r.pause();
        setTimeout(() => r.resume(), pauseMs);
      }
    });
    r.on('end', () => resolve({ bytes, sha: hash.digest('hex') }));
    r.on('error', reject);
    r.on('aborted', () => reject(new Error('aborted')));
  });
}

t.test('large bodies stream through with bounded memory', async (t) => {
  let received: Promise<{ bytes: number; sha: string }> | undefined;
  const sink = await h1Upstream(t, (req, res) => {
    const done = consume(req, TOTAL / 4, 300);
    received = done;
    void done.then(
      (r) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(r)),
      () => res.destroy(),
    );
  });
  let sourceDigest: (() => string) | undefined;
  const source = await h1Upstream(t, (req, res) => {
    const size = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('bytes'));
    const g = generator(size);
    sourceDigest = g.digest;
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    g.stream.pipe(res);
  });
  const sc = await startSidecar(t, [
    service('sink', [{ port: sink.port }]),
    service('source', [{ port: source.port }]),
    route('sink', ['sink'], [{ backends: [{ service: 'sink' }] }]),
    route('source', ['source'], [{ backends: [{ service: 'source' }] }]),
  ]);

  const upload = (total: number): Promise<{ status: number; body: string; sent: string }> =>
    new Promise((resolve, reject) => {
      const g = generator(total);
      const req = http.request({ host: HOST, port: sc.outbound, method: 'POST', path: '/upload', headers: { host: 'sink' }, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, sent: g.digest() }));
        res.on('error', reject);
      });
      req.on('error', reject);
      g.stream.pipe(req);
    });
  const download = (total: number): Promise<{ status: number; bytes: number; sha: string }> =>
    new Promise((resolve, reject) => {
      const req = http.get({ host: HOST, port: sc.outbound, path: `/download?bytes=${total}`, headers: { host: 'source' }, agent: false }, (res) => {
        consume(res, total / 4, 300).then((r) => resolve({ status: res.statusCode ?? 0, ...r }), reject);
      });
      req.on('error', reject);
    });

  // Warm up both paths (pools, parsers, JIT), so that the baseline includes what is allocated once.
  const w1 = await upload(4 * MiB);
  t.equal(w1.status, 200, 'warm-up upload');
  const w2 = await download(4 * MiB);
  t.equal(w2.bytes, 4 * MiB, 'warm-up download');

  t.test('a 128 MiB chunked request body', async (t) => {
    const before = sc.rss();
    const peak = peakSampler(() => sc.rss());
    const r = await within(upload(TOTAL), 60_000, 'the upload to finish');
    const max = peak.stop();
    t.equal(r.status, 200);
    const got = JSON.parse(r.body) as { bytes: number; sha: string };
    t.equal(got.bytes, TOTAL, 'the upstream received every byte');
    t.equal(got.sha, r.sent, 'the upstream received the bytes sent, in order (sha256)');
    t.ok(received, 'the upstream saw the request');
    t.ok(max - before < MAX_GROWTH, `sidecar RSS grew by ${((max - before) / MiB).toFixed(1)} MiB at most (limit ${MAX_GROWTH / MiB}) for a ${TOTAL / MiB} MiB body`);
  });

  t.test('a 128 MiB streamed response', async (t) => {
    const before = sc.rss();
    const peak = peakSampler(() => sc.rss());
    const r = await within(download(TOTAL), 60_000, 'the download to finish');
    const max = peak.stop();
    t.equal(r.status, 200);
    t.equal(r.bytes, TOTAL, 'the client received every byte');
    t.equal(r.sha, sourceDigest?.(), 'the client received the bytes the upstream sent, in order (sha256)');
    t.ok(max - before < MAX_GROWTH, `sidecar RSS grew by ${((max - before) / MiB).toFixed(1)} MiB at most (limit ${MAX_GROWTH / MiB}) for a ${TOTAL / MiB} MiB body`);
  });

  t.test('Expect: 100-continue', async (t) => {
    const body = Buffer.alloc(256 * 1024, 'x');
    const events: string[] = [];
    const res = await within(
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(
          {
            host: HOST,
            port: sc.outbound,
            method: 'PUT',
            path: '/continue',
            headers: { host: 'sink', expect: '100-continue', 'content-length': String(body.length) },
            agent: false,
          },
          (res) => {
            events.push(`response ${res.statusCode}`);
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (c: string) => (text += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
          },
        );
        req.on('error', reject);
        // The body goes only after the interim response, as a careful client does.
        req.on('continue', () => {
          events.push('continue');
          req.end(body);
        });
        req.flushHeaders();
      }),
      10_000,
      'the 100 Continue and the response',
    );
    t.same(events, ['continue', 'response 200'], 'the client got 100 Continue first, then the final response');
    t.equal(res.status, 200);
    t.equal((JSON.parse(res.body) as { bytes: number }).bytes, body.length, 'the body sent after 100 Continue reached the upstream');
    const after = await request({ port: sc.outbound, method: 'POST', path: '/after', headers: { host: 'sink' }, body: 'abc' });
    t.equal(JSON.parse(after.text).bytes, 3, 'and the sidecar keeps serving');
  });
});

t.test('large bodies stream through with bounded memory over h2c', async (t) => {
  let sourceDigest: (() => string) | undefined;
  const up = await h2Upstream(t, (stream, headers) => {
    if (headers[':method'] === 'POST') {
      consume(stream, TOTAL / 4, 300).then(
        (r) => {
          stream.respond({ ':status': 200 });
          stream.end(JSON.stringify(r));
        },
        () => stream.destroy(),
      );
      return;
    }
    const g = generator(Number(new URL(String(headers[':path']), 'http://x').searchParams.get('bytes')));
    sourceDigest = g.digest;
    stream.respond({ ':status': 200 });
    g.stream.pipe(stream);
  });
  const sc = await startSidecar(t, [service('h2', [{ port: up.port }], 'http2'), route('h2', ['h2'], [{ backends: [{ service: 'h2' }] }])]);
  const session = h2Client(t, sc.outbound);
  const upload = (total: number): Promise<{ got: { bytes: number; sha: string }; sent: string }> =>
    new Promise((resolve, reject) => {
      const g = generator(total);
      const stream = session.request({ ':method': 'POST', ':path': '/upload', ':authority': 'h2' });
      let body = '';
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => (body += c));
      stream.on('end', () => resolve({ got: JSON.parse(body) as { bytes: number; sha: string }, sent: g.digest() }));
      stream.on('error', reject);
      g.stream.pipe(stream);
    });
  const download = (total: number): Promise<{ bytes: number; sha: string }> => {
    const stream = session.request({ ':method': 'GET', ':path': `/download?bytes=${total}`, ':authority': 'h2' });
    return consume(stream, total / 4, 300);
  };
  await upload(4 * MiB);
  await download(4 * MiB);

  const measured = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
    const before = sc.rss();
    const peak = peakSampler(() => sc.rss());
    const r = await within(run(), 60_000, what);
    const max = peak.stop();
    t.ok(max - before < MAX_GROWTH, `${what}: sidecar RSS grew by ${((max - before) / MiB).toFixed(1)} MiB at most (limit ${MAX_GROWTH / MiB})`);
    return r;
  };
  const up1 = await measured('a 128 MiB h2 upload', () => upload(TOTAL));
  t.equal(up1.got.bytes, TOTAL, 'the upstream received every byte of the 128 MiB upload');
  t.equal(up1.got.sha, up1.sent, 'intact (sha256)');
  const down = await measured('a 128 MiB h2 download', () => download(TOTAL));
  t.equal(down.bytes, TOTAL, 'the client received every byte of the 128 MiB download');
  t.equal(down.sha, sourceDigest?.(), 'intact (sha256)');
});
