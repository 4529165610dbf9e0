/**
 * Pods as network namespaces, the way a node runs them: each pod is a netns with its own IP on
 * a bridge (veth pair: one end on the bridge, `eth0` inside), names resolved like a cluster
 * would (`ip netns exec` bind-mounts /etc/netns/NAME/hosts over /etc/hosts), the init script
 * run inside, the sidecar as uid 1337, the app as root and unmodified.
 *
 * Every name starts with `mlt7` and carries the suite's id, so parallel suites do not collide;
 * leftovers of a killed run are removed at the start, and everything in teardown.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { followJsonLog, MAIN, ROOT } from '../../integration/lib/meshlet';

export const INIT_SCRIPT = path.join(ROOT, 'deploy', 'meshlet-init.sh');
export const APP = path.join(ROOT, 'test', 'e2e', 'fixtures', 'app.js');

function sh(cmd: string, args: string[], allowFail = false): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.stderr || err.message}`);
  }
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

export interface Proc {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  output(): string;
  waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface Pod {
  name: string;
  ns: string;
  ip: string;
  /** Runs argv inside the pod (as uid 1337 with `asProxy`), collecting JSON log lines. */
  run(argv: string[], opts?: { env?: Record<string, string>; asProxy?: boolean }): Proc;
  /** Runs a command inside the pod to completion. */
  exec(argv: string[]): string;
}

export class Cluster {
  readonly bridge: string;
  readonly subnet: string;
  readonly gateway: string;
  private pods: Pod[] = [];
  private procs: Proc[] = [];

  /** `id` (1-99) picks the bridge and the subnet 10.77.<id>.0/24. */
  constructor(readonly id: number) {
    this.bridge = `mlt7br${id}`;
    this.subnet = `10.77.${id}`;
    this.gateway = `${this.subnet}.1`;
  }

  private prefix(): string {
    return `mlt7-${this.id}-`;
  }

  /** Removes this suite's bridge, veths, namespaces and hosts files, from this run or a killed one. */
  cleanup(): void {
    for (const n of sh('ip', ['netns', 'list'], true).split('\n').map((l) => l.split(' ')[0])) {
      if (n.startsWith(this.prefix())) sh('ip', ['netns', 'del', n], true);
    }
    for (const l of sh('ip', ['-o', 'link', 'show'], true).split('\n')) {
      const m = /^\d+: ([^:@]+)/.exec(l);
      if (m && (m[1] === this.bridge || m[1].startsWith(`mlt7v${this.id}x`))) sh('ip', ['link', 'del', m[1]], true);
    }
    try {
      for (const d of readdirSync('/etc/netns')) if (d.startsWith(this.prefix())) rmSync(path.join('/etc/netns', d), { recursive: true, force: true });
    } catch {
      // no /etc/netns yet
    }
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop('SIGKILL')));
  }

  setup(): void {
    if (!isRoot()) throw new Error('the e2e suite builds network namespaces, veths and iptables rules: run it as root (npm run test:e2e)');
    this.cleanup();
    sh('ip', ['link', 'add', this.bridge, 'type', 'bridge']);
    sh('ip', ['addr', 'add', `${this.gateway}/24`, 'dev', this.bridge]);
    sh('ip', ['link', 'set', this.bridge, 'up']);
  }

  addPod(name: string): Pod {
    const index = this.pods.length + 2;
    const ns = `${this.prefix()}${name}`;
    const ip = `${this.subnet}.${index}`;
    const hostEnd = `mlt7v${this.id}x${index}`;
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    sh('ip', ['link', 'set', hostEnd, 'master', this.bridge]);
    sh('ip', ['link', 'set', hostEnd, 'up']);
    const inPod = (...a: string[]) => sh('ip', ['netns', 'exec', ns, ...a]);
    inPod('ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0');
    inPod('ip', 'link', 'set', 'eth0', 'up');
    inPod('ip', 'link', 'set', 'lo', 'up');
    inPod('ip', 'route', 'add', 'default', 'via', this.gateway);
    const pod: Pod = {
      name,
      ns,
      ip,
      run: (argv, opts = {}) => {
        const p = runProc(['ip', 'netns', 'exec', ns, ...(opts.asProxy ? ['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups'] : []), ...argv], opts.env ?? {});
        this.procs.push(p);
        return p;
      },
      exec: (argv) => inPod(...argv),
    };
    this.pods.push(pod);
    return pod;
  }

  /** /etc/hosts of every pod: every pod by name (`catalog`, `catalog.default.svc.cluster.local`), or as `names` says. */
  writeHosts(names: Record<string, string> = {}): void {
    const lines = ['127.0.0.1 localhost', ...this.pods.map((p) => `${p.ip} ${p.name} ${p.name}.default.svc.cluster.local`), ...Object.entries(names).map(([n, ip]) => `${ip} ${n} ${n}.default.svc.cluster.local`)];
    for (const p of this.pods) {
      mkdirSync(path.join('/etc/netns', p.ns), { recursive: true });
      writeFileSync(path.join('/etc/netns', p.ns, 'hosts'), lines.join('\n') + '\n');
    }
  }
}

/** The sidecar as the injector runs it: uid 1337, interception on, admin on the pod's address. */
export function startSidecarIn(pod: Pod, service: string, controlPlane: string, extra: string[] = []): Proc {
  return pod.run(
    [process.execPath, MAIN, 'sidecar', '--service', service, '--control-plane', controlPlane, '--advertise', pod.ip, '--id', `${service}-${pod.name}`, '--intercept', '--admin', '0.0.0.0:15000', '--inbound', '0.0.0.0:15006', '--insecure-push-plaintext', ...extra],
    { asProxy: true },
  );
}

export function startAppIn(pod: Pod, env: Record<string, string> = {}): Proc {
  return pod.run([process.execPath, APP], { env: { POD: pod.name, PORT: '8080', ...env } });
}

function runProc(argv: string[], env: Record<string, string>): Proc {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const log = followJsonLog(child, exited, argv.join(' '));
  let done = false;
  void exited.then(() => (done = true));
  return {
    child,
    lines: log.lines,
    output: log.output,
    exited,
    waitFor: (pred, timeoutMs = 20_000) => log.waitFor(pred, timeoutMs),
    stop(signal = 'SIGTERM') {
      if (!done) child.kill(signal);
      return exited;
    },
  };
}

/** A plain HTTP GET from the test (host namespace) to a pod: status and parsed JSON body. */
export async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const { request } = await import('undici');
  const res = await request(url, { headers, headersTimeout: 15_000, bodyTimeout: 15_000 });
  const text = await res.body.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // text
  }
  return { status: res.statusCode, body };
}
