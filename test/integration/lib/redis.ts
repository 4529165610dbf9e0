/**
 * A real redis-server for tests, on a free port (never the shared 6379), without persistence.
 * `stop()` kills it (SIGKILL: Redis going away mid-traffic), `start()` brings it back on the same
 * port; it is stopped in teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import type { Test } from 'tap';

export interface RedisProc {
  port: number;
  address: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** SIGSTOP / SIGCONT: Redis alive but not answering. */
  pause(): void;
  resume(): void;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (v: boolean): void => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(500, () => done(false));
    sock.on('error', () => done(false));
    sock.on('data', (c: Buffer) => {
      buf += c.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
    sock.on('connect', () => sock.write('PING\r\n'));
  });
}

export async function startRedis(t: Test): Promise<RedisProc> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stderr = '';
  const proc: RedisProc = {
    port,
    address: `127.0.0.1:${port}`,
    async start() {
      const c = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'ignore', 'pipe'] });
      child = c;
      c.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      exited = new Promise<void>((r) => c.once('exit', () => r()));
      for (let i = 0; i < 200; i++) {
        if (c.exitCode !== null) throw new Error(`redis-server exited (${c.exitCode}): ${stderr}`);
        if (await answersPing(port)) return;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`redis-server on port ${port} never answered PING: ${stderr}`);
    },
    async stop() {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      c.kill('SIGCONT');
      c.kill('SIGKILL');
      await exited;
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
  };
  t.teardown(() => proc.stop());
  await proc.start();
  return proc;
}
