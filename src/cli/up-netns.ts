/**
 * `meshlet up --netns`: the demo mesh with real interception, as a node runs pods. Each instance
 * is a network namespace on a bridge with its own IP and /etc/hosts (the way a cluster resolves
 * `catalog`), deploy/meshlet-init.sh runs inside it, its sidecar runs as uid 1337, and the demo
 * app calls `http://catalog/items` directly: the app has no idea the mesh is there. Needs root,
 * iproute2, iptables and setpriv (util-linux). Everything it creates is named PREFIX-* (default
 * `mlup`) and removed when it stops, leftovers of a killed run first.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import { parseAll, parseDocuments, toWire } from '../policy/parse';
import { api, CliError, describeApiError } from './common';
import { runUntilSignal } from './process';

interface PodSpec {
  name: string;
  role: 'frontend' | 'catalog' | 'pricing';
  version?: string;
}

const PODS: PodSpec[] = [
  { name: 'frontend', role: 'frontend' },
  { name: 'catalog-v1', role: 'catalog', version: 'v1' },
  { name: 'catalog-v2', role: 'catalog', version: 'v2' },
  { name: 'pricing', role: 'pricing' },
];

function sh(args: string[], allowFail = false): string {
  try {
    return execFileSync(args[0], args.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new CliError(`${args.join(' ')} failed: ${(err.stderr || err.message).trim()}`);
  }
}

export interface NetnsMeshOptions {
  root: string;
  mainJs: string;
  policies: string;
  prefix: string;
  /** The third octet of 10.78.X.0/24. */
  subnet: number;
  logger: Logger;
}

function cleanup(prefix: string): void {
  for (const n of sh(['ip', 'netns', 'list'], true).split('\n').map((l) => l.split(' ')[0])) if (n.startsWith(`${prefix}-`)) sh(['ip', 'netns', 'del', n], true);
  for (const l of sh(['ip', '-o', 'link', 'show'], true).split('\n')) {
    const m = /^\d+: ([^:@]+)/.exec(l);
    if (m && (m[1] === `${prefix}br` || m[1].startsWith(`${prefix}v`))) sh(['ip', 'link', 'del', m[1]], true);
  }
  try {
    for (const d of readdirSync('/etc/netns')) if (d.startsWith(`${prefix}-`)) rmSync(path.join('/etc/netns', d), { recursive: true, force: true });
  } catch {
    // no /etc/netns
  }
}

export async function runNetnsMesh(o: NetnsMeshOptions): Promise<number> {
  if (process.getuid?.() !== 0) throw new CliError('--netns builds network namespaces and iptables rules: run it as root');
  if (!/^[a-z][a-z0-9]{0,7}$/.test(o.prefix)) throw new CliError(`--prefix: 1-8 lower-case letters and digits, starting with a letter, got ${JSON.stringify(o.prefix)}`);
  for (const tool of ['ip', 'iptables', 'setpriv']) sh(['sh', '-c', `command -v ${tool}`], false);
  const { originalDstUnavailable } = await import('../http/original-dst');
  const why = originalDstUnavailable();
  if (why) throw new CliError(why);
  const docs = parseDocuments(await import('node:fs/promises').then((f) => f.readFile(o.policies, 'utf8')));
  if (!docs.ok) throw new CliError(`${o.policies}: ${docs.errors.map((e) => e.message).join('; ')}`);
  // GrpcTranscoding protos named by `file:` travel embedded, as with `meshlet up` and `apply -f`.
  const { embedProtoFiles } = await import('../grpc/transcode/embed');
  const embedded = embedProtoFiles(docs.value, path.dirname(o.policies));
  if (!embedded.ok) throw new CliError(`${o.policies}: ${embedded.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`);
  const resources = parseAll(embedded.value);
  if (!resources.ok) throw new CliError(`${o.policies}: ${resources.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`);

  cleanup(o.prefix);
  const net = `10.78.${o.subnet}`;
  const gateway = `${net}.1`;
  const bridge = `${o.prefix}br`;
  const procs: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.exitCode !== null || p.signalCode !== null) return resolve();
            p.once('exit', () => resolve());
            p.kill('SIGTERM');
            setTimeout(() => p.kill('SIGKILL'), 8000).unref();
          }),
      ),
    );
  };
  const { startControlPlane } = await import('../../control-plane');
  let cp: Awaited<ReturnType<typeof startControlPlane>> | undefined;
  try {
    sh(['ip', 'link', 'add', bridge, 'type', 'bridge']);
    sh(['ip', 'addr', 'add', `${gateway}/24`, 'dev', bridge]);
    sh(['ip', 'link', 'set', bridge, 'up']);
    const pods = PODS.map((p, i) => ({ ...p, ns: `${o.prefix}-${p.name}`, ip: `${net}.${i + 2}`, veth: `${o.prefix}v${i + 2}` }));
    for (const p of pods) {
      sh(['ip', 'netns', 'add', p.ns]);
      sh(['ip', 'link', 'add', p.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.ns]);
      sh(['ip', 'link', 'set', p.veth, 'master', bridge]);
      sh(['ip', 'link', 'set', p.veth, 'up']);
      const inPod = (...a: string[]) => sh(['ip', 'netns', 'exec', p.ns, ...a]);
      inPod('ip', 'addr', 'add', `${p.ip}/24`, 'dev', 'eth0');
      inPod('ip', 'link', 'set', 'eth0', 'up');
      inPod('ip', 'link', 'set', 'lo', 'up');
      inPod('ip', 'route', 'add', 'default', 'via', gateway);
    }
    // Service names as a cluster's DNS would answer them; `catalog` is one of its pods (the mesh
    // spreads the traffic over both versions by policy, whichever address the app dialled).
    const hosts = ['127.0.0.1 localhost', ...pods.map((p) => `${p.ip} ${p.name}`)];
    for (const role of ['frontend', 'catalog', 'pricing']) hosts.push(`${pods.find((p) => p.role === role)!.ip} ${role} ${role}.default.svc.cluster.local`);
    for (const p of pods) {
      mkdirSync(path.join('/etc/netns', p.ns), { recursive: true });
      writeFileSync(path.join('/etc/netns', p.ns, 'hosts'), hosts.join('\n') + '\n');
    }

    const dataDir = path.join(o.root, '.meshlet', `${o.prefix}-netns`);
    rmSync(path.join(dataDir, 'registry.json'), { force: true }); // every pod starts fresh
    cp = await startControlPlane({ dataDir, api: { host: '127.0.0.1', port: 0 }, push: { host: gateway, port: 0 }, pushTls: {}, logger: o.logger });
    const applied = await api(`http://127.0.0.1:${cp.apiAddress.port}`, 'POST', '/v1/apply', { items: resources.value.map(toWire) });
    if (applied.status !== 200) throw new CliError(`could not apply ${o.policies}: ${describeApiError(applied)}`);
    const push = `${gateway}:${cp.pushAddress.port}`;

    // Every sidecar proves its service with a join token (which also carries the CA hash that
    // verifies the push port).
    const joinTokens = new Map<string, string>();
    for (const role of new Set(pods.map((p) => p.role))) {
      const t = await cp.tokens?.create({ service: role, ttlMs: 7 * 86_400_000, description: 'meshlet up --netns' });
      if (t) joinTokens.set(role, t.token);
    }
    const run = (p: (typeof pods)[number], argv: string[], asProxy: boolean, label: string): Promise<void> =>
      new Promise((resolve, reject) => {
        const token = asProxy ? joinTokens.get(p.role) : undefined;
        const child = spawn('ip', ['netns', 'exec', p.ns, ...(asProxy ? ['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups'] : []), ...argv], {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, ...(token ? { MESHLET_JOIN_TOKEN: token } : {}) },
        });
        procs.push(child);
        child.once('exit', (code) => reject(new CliError(`${label} in ${p.ns} exited (${code}) before it was up`)));
        createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => process.stderr.write(`[${p.name}] ${l}\n`));
        createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => {
          let rec: { msg?: string; level?: number };
          try {
            rec = JSON.parse(l);
          } catch {
            return;
          }
          if (rec.msg === 'sidecar started' || rec.msg === 'app listening') resolve();
          if ((rec.level ?? 0) >= 40) process.stderr.write(`[${p.name}] ${l}\n`);
        });
      });
    const initScript = path.join(o.root, 'deploy', 'meshlet-init.sh');
    const appJs = path.join(o.root, 'dist', 'src', 'demo', 'app.js');
    for (const p of pods) {
      sh(['ip', 'netns', 'exec', p.ns, 'sh', initScript, '--exclude-inbound-ports', '15000']);
      const args = [process.execPath, o.mainJs, 'sidecar', '--service', p.role, '--id', p.name, '--control-plane', push, '--advertise', p.ip, '--app-port', '80', '--intercept', '--admin', '0.0.0.0:15000', '--drain-ms', '1000'];
      if (p.version) args.push('--labels', `version=${p.version}`);
      // pricing is a gRPC app (h2c), reached by catalog through HTTP/JSON transcoding.
      if (p.role === 'pricing') args.push('--app-protocol', 'http2');
      await run(p, args, true, 'the sidecar');
      const script = `require(${JSON.stringify(appJs)}).startDemoApp(${JSON.stringify(p.role)},{version:${JSON.stringify(p.version)},port:80,host:'0.0.0.0'}).then(()=>console.log(JSON.stringify({msg:'app listening'})))`;
      await run(p, [process.execPath, '-e', script], false, 'the app');
    }
    // Ready when every sidecar ACKed the snapshot in force (the one with all of them in it).
    const server = `http://127.0.0.1:${cp.apiAddress.port}`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const st = await api(server, 'GET', '/v1/status');
      const b = st.body as { version: string; sidecars: { connected: boolean; ackedVersion?: string; expectedVersion?: string }[] };
      if (st.status === 200 && b.sidecars.filter((s) => s.connected && s.ackedVersion === (s.expectedVersion ?? b.version)).length >= pods.length) break;
      if (Date.now() > deadline) throw new CliError(`the sidecars did not all ACK the current policy within 30 s:\n${JSON.stringify(b, null, 2)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const frontend = pods[0];
    process.stdout.write(
      `meshlet up --netns: ${pods.length} pods on ${bridge} (${net}.0/24), each with iptables interception and a sidecar as uid 1337
  control plane   API http://127.0.0.1:${cp.apiAddress.port}, push ${push}
${pods.map((p) => `  ${p.name.padEnd(12)}  ${p.ip}  (ip netns exec ${p.ns} ...; admin http://${p.ip}:15000/config_dump)`).join('\n')}
Try:
  curl -s http://${frontend.ip}/                         # frontend -> catalog -> pricing, every hop intercepted
  curl -s -H 'x-canary: true' http://${frontend.ip}/     # catalog v2, by policy
  MESHLET_SERVER=http://127.0.0.1:${cp.apiAddress.port} meshlet status
Ctrl-C stops everything and removes the namespaces.
`,
    );
    process.stdout.write(JSON.stringify({ msg: 'mesh ready', frontend: `http://${frontend.ip}/`, api: `http://127.0.0.1:${cp.apiAddress.port}` }) + '\n');
    return await runUntilSignal(async () => {
      await stop();
      await cp?.close();
      cleanup(o.prefix);
    });
  } catch (err) {
    await stop();
    await cp?.close();
    cleanup(o.prefix);
    throw err;
  }
}
