/**
 * A real etcd cluster for tests (Debian's etcd-server): `size` members on free loopback ports
 * outside the kernel's ephemeral range,
 * each with its own temporary data dir, killed and removed in teardown. Members can be stopped
 * (SIGKILL) and started again on the same ports and data, to take quorum away and give it back.
 * Short heartbeat and election timeouts, so a leader change takes about a second.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Test } from 'tap';
import { reservedPort } from '../../../src/cli/ports';
import { portOf, rememberToken, start, tmpDir, tokenFor, type ControlPlaneProc } from './meshlet';

/** The grace period (and so the etcd lease TTL) of `startReplica`'s control planes. */
export const HA_GRACE_MS = 3000;

export interface EtcdMember {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  /** `127.0.0.1:PORT` */
  endpoint: string;
  running(): boolean;
}

export interface EtcdCluster {
  members: EtcdMember[];
  /** `127.0.0.1:P1,127.0.0.1:P2,...` */
  endpoints: string;
  /** `etcd://127.0.0.1:P1,...`, as `meshlet control-plane --store` takes it. */
  url: string;
  /** SIGKILL member `i`. */
  stop(i: number): Promise<void>;
  /** Starts member `i` again (same ports, same data). */
  start(i: number): Promise<void>;
  /** The index of the current leader (asks the running members). */
  leader(): number;
  /** etcdctl against the running members; throws on failure. */
  etcdctl(args: string[]): string;
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function startEtcdCluster(t: Test, size = 3): Promise<EtcdCluster> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'meshlet-etcd-'));
  const members: (EtcdMember & { child?: ChildProcess; exited?: Promise<void>; log: string })[] = [];
  for (let i = 0; i < size; i++) {
    // From below the kernel's ephemeral range (src/cli/ports.ts): a port asked of the kernel with
    // listen(0) and let go is the kind it hands to the next listen(0) of a process started in
    // between, and a member then failed to bind (EADDRINUSE, seen in CI).
    const clientPort = await reservedPort();
    const peerPort = await reservedPort();
    members.push({
      name: `m${i}`,
      clientPort,
      peerPort,
      dataDir: path.join(root, `m${i}`),
      endpoint: `127.0.0.1:${clientPort}`,
      log: '',
      running() {
        return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
      },
    });
  }
  const initialCluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(',');
  const endpoints = members.map((m) => m.endpoint).join(',');
  const token = `meshlet-test-${process.pid}-${Date.now()}`;

  const launch = (i: number): void => {
    const m = members[i]!;
    const c = spawn(
      'etcd',
      [
        '--name', m.name,
        '--data-dir', m.dataDir,
        '--listen-client-urls', `http://127.0.0.1:${m.clientPort}`,
        '--advertise-client-urls', `http://127.0.0.1:${m.clientPort}`,
        '--listen-peer-urls', `http://127.0.0.1:${m.peerPort}`,
        '--initial-advertise-peer-urls', `http://127.0.0.1:${m.peerPort}`,
        '--initial-cluster', initialCluster,
        '--initial-cluster-token', token,
        '--initial-cluster-state', 'new',
        '--heartbeat-interval', '50',
        '--election-timeout', '500',
        '--logger', 'zap',
        '--log-level', 'error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' } },
    );
    m.child = c;
    m.log = '';
    c.stderr!.on('data', (d: Buffer) => (m.log = (m.log + d.toString()).slice(-20_000)));
    m.exited = new Promise<void>((r) => c.once('exit', () => r()));
  };

  const healthy = async (i: number, timeoutMs = 20_000): Promise<void> => {
    const m = members[i]!;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!m.running()) throw new Error(`etcd ${m.name} exited: ${m.log}`);
      try {
        const r = await fetch(`http://${m.endpoint}/health`, { signal: AbortSignal.timeout(1000) });
        const body = (await r.json()) as { health?: string };
        if (body.health === 'true') return;
      } catch {
        // not yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`etcd ${m.name} not healthy after ${timeoutMs} ms: ${m.log}`);
  };

  const cluster: EtcdCluster = {
    members,
    endpoints,
    url: `etcd://${endpoints}`,
    async stop(i) {
      const m = members[i]!;
      if (!m.running()) return;
      m.child!.kill('SIGKILL');
      await m.exited;
    },
    async start(i) {
      if (members[i]!.running()) return;
      launch(i);
      // A lone member cannot be healthy (no quorum): wait for it to answer at all.
      const m = members[i]!;
      const deadline = Date.now() + 20_000;
      for (;;) {
        if (!m.running()) throw new Error(`etcd ${m.name} exited: ${m.log}`);
        const ok = await new Promise<boolean>((resolve) => {
          const s = net.connect(m.clientPort, '127.0.0.1');
          s.once('connect', () => (s.destroy(), resolve(true)));
          s.once('error', () => resolve(false));
        });
        if (ok) return;
        if (Date.now() > deadline) throw new Error(`etcd ${m.name} does not listen: ${m.log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    leader() {
      const out = cluster.etcdctl(['endpoint', 'status', '-w', 'json']);
      const rows = JSON.parse(out) as { Endpoint: string; Status: { header: { member_id: number | string }; leader: number | string } }[];
      const row = rows.find((r) => String(r.Status.header.member_id) === String(r.Status.leader));
      if (!row) throw new Error(`no member reports itself leader: ${out}`);
      const i = members.findIndex((m) => row.Endpoint.endsWith(m.endpoint));
      if (i < 0) throw new Error(`leader ${row.Endpoint} is not a member`);
      return i;
    },
    etcdctl(args) {
      const live = members.filter((m) => m.running()).map((m) => m.endpoint).join(',');
      const r = spawnSync('etcdctl', ['--endpoints', live, '--command-timeout', '5s', ...args], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
      if (r.status !== 0) throw new Error(`etcdctl ${args.join(' ')} failed: ${r.stderr}`);
      return r.stdout;
    },
  };

  t.teardown(async () => {
    for (let i = 0; i < members.length; i++) await cluster.stop(i);
    rmSync(root, { recursive: true, force: true });
  });
  for (let i = 0; i < size; i++) launch(i);
  for (let i = 0; i < size; i++) await healthy(i);
  return cluster;
}

/** `meshlet control-plane --store etcd://...` on free ports, named `replica`, killed in teardown. */
export async function startReplica(t: Test, etcd: EtcdCluster, replica: string, extra: string[] = []): Promise<ControlPlaneProc> {
  const dataDir = tmpDir();
  const p = start([
    'control-plane',
    '--data-dir', dataDir,
    '--store', etcd.url,
    '--replica-id', replica,
    '--api', '127.0.0.1:0',
    '--push', '127.0.0.1:0',
    '--grace', String(HA_GRACE_MS),
    ...extra,
  ]);
  t.teardown(() => p.stop('SIGKILL'));
  const l = await p.waitFor((x) => x.msg === 'control plane started');
  const api = String(l.api);
  return Object.assign(p, { api, apiPort: portOf(api), pushPort: portOf(l.push), token: tokenFor(api) ?? rememberToken(l, dataDir) });
}

