/**
 * meshlet's own HTTP/2 client (src/http/h2/client.ts) against other implementations: a grpc-js
 * server (unary, server-side error as a trailers-only response, messages of 1 MiB both ways,
 * a bidirectional stream of many messages) driven with gRPC's framing (5-byte prefix + message,
 * grpc-status in the trailers), and nghttp2's own server nghttpd (h2c and TLS with ALPN h2,
 * files of several MiB, many concurrent streams, request bodies, 404).
 */
import * as grpc from '@grpc/grpc-js';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import t, { type Test } from 'tap';
import { connect, type H2ClientSession, type H2ClientStream } from '../../../../src/http/h2/client';
import { outcome, type Outcome } from './client-lib';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const id = (b: Buffer): Buffer => b;
const method = (p: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Buffer, Buffer> => ({
  path: p,
  requestStream,
  responseStream,
  requestSerialize: id,
  requestDeserialize: id,
  responseSerialize: id,
  responseDeserialize: id,
});

/** gRPC message framing: a 5-byte prefix (uncompressed, length) and the message. */
function frame(msg: Buffer): Buffer {
  const p = Buffer.alloc(5);
  p.writeUInt32BE(msg.length, 1);
  return Buffer.concat([p, msg]);
}

function messages(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < body.length; ) {
    const n = body.readUInt32BE(off + 1);
    out.push(body.subarray(off + 5, off + 5 + n));
    off += 5 + n;
  }
  return out;
}

async function grpcServer(t: Test): Promise<number> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 8 << 20, 'grpc.max_send_message_length': 8 << 20 });
  const svc = { echo: method('/t.Echo/Echo', false, false), fail: method('/t.Echo/Fail', false, false), chat: method('/t.Echo/Chat', true, true) };
  server.addService(svc, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request),
    fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb({ code: grpc.status.NOT_FOUND, details: 'nope' }),
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (m: Buffer) => call.write(Buffer.concat([Buffer.from('re:'), m])));
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((r, j) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? j(e) : r(p))));
  t.teardown(() => server.forceShutdown());
  return port;
}

function grpcCall(c: H2ClientSession, p: string): H2ClientStream {
  return c.request({ ':method': 'POST', ':path': p, ':scheme': 'http', ':authority': 'grpc.test', 'content-type': 'application/grpc', te: 'trailers' });
}

t.test('grpc-js: unary calls, an error, 1 MiB messages, a bidirectional stream', async (t) => {
  const port = await grpcServer(t);
  const c = connect(`http://127.0.0.1:${port}`, { settings: { enablePush: false, initialWindowSize: 1024 * 1024 } });
  c.on('error', () => undefined);
  t.teardown(() => c.destroy());

  const results: Promise<Outcome>[] = [];
  for (let i = 0; i < 20; i++) {
    const s = grpcCall(c, '/t.Echo/Echo');
    results.push(outcome(s));
    s.end(frame(Buffer.from(`hello ${i}`)));
  }
  const outs = await Promise.all(results);
  outs.forEach((o, i) => {
    t.equal(o.status, 200);
    t.equal(o.headers!['content-type'], 'application/grpc+proto');
    t.same(messages(o.body).map(String), [`hello ${i}`]);
    t.equal(o.trailers!['grpc-status'], '0');
  });

  const f = grpcCall(c, '/t.Echo/Fail');
  const fo = outcome(f);
  f.end(frame(Buffer.from('x')));
  const fr = await fo;
  t.equal(fr.status, 200);
  const st = fr.trailers?.['grpc-status'] ?? fr.headers!['grpc-status'];
  t.equal(st, String(grpc.status.NOT_FOUND));

  const big = randomBytes(1024 * 1024);
  const b = grpcCall(c, '/t.Echo/Echo');
  const bo = outcome(b, 1);
  b.end(frame(big));
  const br = await bo;
  t.equal(sha(messages(br.body)[0]!), sha(big), '1 MiB each way');
  t.equal(br.trailers!['grpc-status'], '0');

  const chat = grpcCall(c, '/t.Echo/Chat');
  const co = outcome(chat);
  for (let i = 0; i < 200; i++) chat.write(frame(Buffer.from(`m${i}`)));
  chat.end();
  const cr = await co;
  const got = messages(cr.body).map(String);
  t.equal(got.length, 200);
  t.equal(got[199], 're:m199');
  t.equal(cr.trailers!['grpc-status'], '0');
});

t.test('grpc-js: an unknown method is answered trailers-only (UNIMPLEMENTED in the head)', async (t) => {
  const port = await grpcServer(t);
  const c = connect(`http://127.0.0.1:${port}`);
  c.on('error', () => undefined);
  t.teardown(() => c.destroy());
  const s = grpcCall(c, '/t.Echo/Nope');
  const o = outcome(s);
  s.end(frame(Buffer.from('x')));
  const r = await o;
  t.equal(r.headers!['grpc-status'], String(grpc.status.UNIMPLEMENTED));
  t.equal(r.trailers, undefined);
  t.equal(r.error, undefined);
});

// ---------------------------------------------------------------------------------- nghttpd

const nghttpd = ((): string | undefined => {
  try {
    return execFileSync('sh', ['-c', 'command -v nghttpd'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
})();

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

async function startNghttpd(t: Test, docs: string, tlsFiles?: [string, string]): Promise<number> {
  const port = await freePort();
  const args = ['--address=127.0.0.1', '-d', docs, String(port)];
  if (tlsFiles) args.push(...tlsFiles);
  else args.unshift('--no-tls');
  const p = spawn(nghttpd!, args, { stdio: 'ignore' });
  t.teardown(() => {
    p.kill();
  });
  const end = Date.now() + 5000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return port;
    if (Date.now() > end) throw new Error('nghttpd did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('nghttpd (apt nghttp2-server): files of several MiB, many concurrent streams, request bodies, 404; h2c and TLS', async (t) => {
  t.ok(nghttpd, 'nghttpd is installed');
  const docs = mkdtempSync(path.join(tmpdir(), 'nghttpd-'));
  t.teardown(() => rmSync(docs, { recursive: true, force: true }));
  const big = randomBytes(6 * 1024 * 1024 + 11);
  writeFileSync(path.join(docs, 'big'), big);
  writeFileSync(path.join(docs, 'small'), 'small file\n');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=h2.test', '-addext', 'subjectAltName=DNS:h2.test', '-keyout', path.join(docs, 'key.pem'), '-out', path.join(docs, 'cert.pem')], { stdio: 'ignore' });

  for (const secure of [false, true]) {
    const port = await startNghttpd(t, docs, secure ? [path.join(docs, 'key.pem'), path.join(docs, 'cert.pem')] : undefined);
    const c = connect(`${secure ? 'https' : 'http'}://127.0.0.1:${port}`, {
      settings: { initialWindowSize: 65_535 },
      ...(secure ? { createConnection: () => tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['h2'] }) } : {}),
    });
    c.on('error', () => undefined);
    t.teardown(() => c.destroy());
    const o = await outcome(c.request({ ':path': '/big' }, { endStream: true }), 1);
    t.equal(o.status, 200, `big (${secure ? 'tls' : 'h2c'})`);
    t.equal(sha(o.body), sha(big));
    const many = await Promise.all(Array.from({ length: 100 }, () => outcome(c.request({ ':path': '/small' }, { endStream: true }))));
    t.ok(many.every((m) => m.body.toString() === 'small file\n'));
    const post = c.request({ ':method': 'POST', ':path': '/small' });
    const po = outcome(post);
    post.end(randomBytes(300_000));
    t.equal((await po).body.toString(), 'small file\n', 'a request body over the default window');
    const nf = await outcome(c.request({ ':path': '/missing' }, { endStream: true }));
    t.equal(nf.status, 404);
    const head = await outcome(c.request({ ':method': 'HEAD', ':path': '/big' }, { endStream: true }));
    t.equal(head.status, 200);
    t.equal(head.body.length, 0);
    t.equal(head.error, undefined);
    c.close();
  }
});
