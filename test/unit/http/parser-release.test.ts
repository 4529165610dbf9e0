/**
 * Connections that come and go must not leave their native parsers (and everything their
 * callbacks reach) behind: a dead upstream refusing thousands of connections, and thousands of
 * one-request client connections, leave the heap where it was.
 */
import * as net from 'node:net';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import t from 'tap';
import { H1Pool } from '../../../src/http/h1-client';
import { startH1Server } from './lib/h1-server';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

async function settledHeap(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  return process.memoryUsage().heapUsed;
}

const ROUNDS = 12_000;

t.test('an upstream refusing connections leaks nothing', async (t) => {
  // A port with nothing behind it: bind, note the port, close.
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const pool = new H1Pool('127.0.0.1', port, { keepAliveMs: 60_000, connectTimeoutMs: 5_000 });
  const one = () =>
    new Promise<string>((resolve) =>
      pool.request(
        { method: 'GET', path: '/', authority: 'x', headers: [], body: null },
        { onResponse() {}, onData: () => true, onEnd: () => resolve('end'), onError: (e) => resolve((e as { code?: string }).code ?? 'error') },
      ),
    );
  t.equal(await one(), 'ECONNREFUSED', 'a connect failure, reported as such');
  const before = await settledHeap();
  for (let i = 0; i < ROUNDS; i++) await one();
  const grown = (await settledHeap()) - before;
  t.ok(grown < 2 * 1024 * 1024, `heap grew ${(grown / 1024).toFixed(0)} KiB over ${ROUNDS} refused connections`);
  pool.destroy();
});

t.test('short client connections leak nothing', async (t) => {
  const port = await startH1Server(t, (_req, res) => res.writeHead(200, { 'content-length': '2' }).end('ok'), 16 * 1024);
  const one = () =>
    new Promise<string>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1', () => c.end('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'));
      let got = '';
      c.on('data', (d: Buffer) => (got += d.toString('latin1')));
      c.on('close', () => resolve(got));
      c.on('error', reject);
    });
  t.match(await one(), /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/, 'served');
  const before = await settledHeap();
  for (let i = 0; i < ROUNDS; i++) await one();
  const grown = (await settledHeap()) - before;
  t.ok(grown < 2 * 1024 * 1024, `heap grew ${(grown / 1024).toFixed(0)} KiB over ${ROUNDS} connections`);
});
