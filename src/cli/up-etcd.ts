/**
 * `meshlet up --store etcd`: a local 3-member etcd cluster (Debian's `etcd`, or any `etcd` on
 * PATH) for the control-plane replicas to share, its data under DATA_DIR/etcd/ (kept across runs,
 * like the file store). Fixed loopback ports 12379/12479/12579 (peers +1), or free ones.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { CliError } from './common';
import { reservedPort } from './ports';

export interface LocalEtcd {
  /** `127.0.0.1:PORT`, one per member. */
  endpoints: string[];
  stop(): Promise<void>;
}

export async function startLocalEtcd(dataDir: string, ephemeralPorts: boolean, members = 3): Promise<LocalEtcd> {
  const ports: { client: number; peer: number }[] = [];
  for (let i = 0; i < members; i++)
    ports.push(ephemeralPorts ? { client: await reservedPort(), peer: await reservedPort() } : { client: 12379 + 100 * i, peer: 12380 + 100 * i });
  const cluster = ports.map((p, i) => `up${i}=http://127.0.0.1:${p.peer}`).join(',');
  const children: ChildProcess[] = [];
  const exits: Promise<void>[] = [];
  const logs: string[] = ports.map(() => '');
  const stop = async (): Promise<void> => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await Promise.all(exits);
  };
  for (let i = 0; i < members; i++) {
    const p = ports[i] as { client: number; peer: number };
    const dir = path.join(dataDir, `up${i}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const c = spawn(
      'etcd',
      [
        `--name=up${i}`,
        `--data-dir=${dir}`,
        `--listen-client-urls=http://127.0.0.1:${p.client}`,
        `--advertise-client-urls=http://127.0.0.1:${p.client}`,
        `--listen-peer-urls=http://127.0.0.1:${p.peer}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${p.peer}`,
        `--initial-cluster=${cluster}`,
        '--initial-cluster-state=new',
        '--initial-cluster-token=meshlet-up',
        '--log-level=error',
        '--logger=zap',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    c.on('error', () => undefined);
    c.stderr?.on('data', (d: Buffer) => (logs[i] = ((logs[i] ?? '') + d.toString()).slice(-4000)));
    children.push(c);
    exits.push(new Promise<void>((r) => c.once('exit', () => r())).then(() => undefined));
    const spawned = await new Promise<Error | undefined>((resolve) => {
      c.once('spawn', () => resolve(undefined));
      c.once('error', (e) => resolve(e));
    });
    if (spawned) {
      await stop();
      throw new CliError(`cannot run etcd (${spawned.message}): install it (Debian: apt-get install etcd-server)`);
    }
  }
  const deadline = Date.now() + 30_000;
  for (let i = 0; i < members; i++) {
    const p = ports[i] as { client: number; peer: number };
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${p.client}/health`, { signal: AbortSignal.timeout(1000) }).then(
        async (r) => ((await r.json()) as { health?: string }).health === 'true',
        () => false,
      );
      if (ok) break;
      if (children[i]?.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new CliError(`local etcd member up${i} did not start: ${logs[i] || '(no output)'}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { endpoints: ports.map((p) => `127.0.0.1:${p.client}`), stop };
}
