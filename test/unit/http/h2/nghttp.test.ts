/**
 * meshlet's own HTTP/2 server (src/http/h2/) against nghttp2's command-line client and load
 * generator (`nghttp`, `h2load`, apt package nghttp2-client): GETs with PRIORITY frames, uploads,
 * padding, CONTINUATION (`--continuation`), request trailers, small client windows, many
 * streams.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { startServer, until, type TestServer } from './lib';

const NGHTTP = '/usr/bin/nghttp';
const H2LOAD = '/usr/bin/h2load';

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 30_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

let srv: TestServer;
let base: string;
const trailersSeen: Record<string, unknown>[] = [];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'h2-nghttp-'));
const upload = path.join(dir, 'upload.bin');
const uploadData = Buffer.alloc(2 * 1024 * 1024 + 123);
for (let i = 0; i < uploadData.length; i++) uploadData[i] = (i * 7) % 256;
fs.writeFileSync(upload, uploadData);

t.before(async () => {
  srv = await startServer((stream, headers) => {
    stream.on('error', () => undefined);
    stream.on('trailers', (tr: Record<string, unknown>) => trailersSeen.push(tr));
    const p = headers[':path'] ?? '/';
    if (p.startsWith('/big')) {
      stream.respond({ ':status': 200 });
      stream.end(Buffer.alloc(3 * 1024 * 1024, 0x61));
      stream.resume();
      return;
    }
    if (p.startsWith('/hdr')) {
      let n = 0;
      for (const k in headers) if (k.startsWith('continuation-test-')) n += String(headers[k]).length;
      stream.respond({ ':status': 200, 'x-echo-len': String(n) });
      stream.end('ok');
      stream.resume();
      return;
    }
    stream.respond({ ':status': 200 });
    stream.pipe(stream);
  });
  base = `http://127.0.0.1:${srv.port}`;
});
t.teardown(async () => {
  await srv.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

t.test('nghttp: GET with PRIORITY frames, upload echoed with padding, trailers', async (t) => {
  const get = await run(NGHTTP, ['-v', `${base}/`]);
  t.equal(get.code, 0, get.stderr);
  t.match(get.stdout, /send PRIORITY frame/, 'nghttp sent PRIORITY frames (ignored)');
  t.match(get.stdout, /recv \(stream_id=13\) :status: 200/);

  const out = path.join(dir, 'echo.bin');
  const up = await run('/bin/sh', ['-c', `${NGHTTP} --padding=255 -d ${upload} ${base}/echo > ${out}`]);
  t.equal(up.code, 0, up.stderr);
  t.ok(fs.readFileSync(out).equals(uploadData), '2 MiB uploaded with padding and echoed intact');

  const tr = await run(NGHTTP, ['-n', '--trailer=x-checksum: 1234', '-d', upload, `${base}/echo`]);
  t.equal(tr.code, 0, tr.stderr);
  await until(() => trailersSeen.some((x) => x['x-checksum'] === '1234'), 3000, 'request trailers');
});

t.test('nghttp: CONTINUATION frames, small client windows, many streams', async (t) => {
  const cont = await run(NGHTTP, ['-v', '--continuation', `${base}/hdr`]);
  t.equal(cont.code, 0, cont.stderr);
  const len = Number(/send HEADERS frame <length=(\d+)/.exec(cont.stdout)?.[1]);
  t.ok(len > 16_384, `a ${len}-byte header block: HEADERS and CONTINUATION frames`);
  t.match(cont.stdout, /x-echo-len: \d{4,}/, 'the long header arrived whole');

  const small = await run('/bin/sh', ['-c', `${NGHTTP} -w 10 -W 12 ${base}/big | wc -c`]);
  t.equal(small.code, 0, small.stderr);
  t.equal(small.stdout.trim(), String(3 * 1024 * 1024), '3 MiB through a 1 KiB stream window and a 4 KiB connection window');

  const many = await run(NGHTTP, ['-n', '-m', '50', `${base}/x`]);
  t.equal(many.code, 0, many.stderr);
});

t.test('h2load: 2,000 requests on 4 connections, 16 streams each, with and without bodies', async (t) => {
  const a = await run(H2LOAD, ['-n', '2000', '-c', '4', '-m', '16', `${base}/`]);
  t.equal(a.code, 0, a.stderr);
  t.match(a.stdout, /2000 succeeded, 0 failed, 0 errored/);
  const small = path.join(dir, 'small.bin');
  fs.writeFileSync(small, Buffer.alloc(5000, 0x42));
  const b = await run(H2LOAD, ['-n', '500', '-c', '2', '-m', '8', '-d', small, `${base}/echo`]);
  t.equal(b.code, 0, b.stderr);
  t.match(b.stdout, /500 succeeded, 0 failed, 0 errored/);
  await until(() => srv.sessions.size === 0 && srv.streams.size === 0, 5000, 'all sessions closed');
});
