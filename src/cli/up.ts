import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { request } from 'undici';
import { packageRoot, startDemoApp, type DemoApp, type DemoRole } from '../demo/app';
import { api, CliError, describeApiError, flags, UsageError, type Command } from './common';
import { reservedPort } from './ports';
import { logger, runUntilSignal } from './process';

/** Node flags for sidecar processes: the ones in main.ts's shebang. */
export const SIDECAR_NODE_FLAGS = ['--min-semi-space-size=8', '--max-semi-space-size=8', '--heap-growing-percent=20', '--single-threaded-gc'];

interface Instance {
  id: string;
  role: DemoRole;
  version?: string;
  /** Listener ports; 0 picks free ones. */
  outbound: number;
  inbound: number;
  admin: number;
}

const LAYOUT: Instance[] = [
  { id: 'frontend-0', role: 'frontend', outbound: 15001, inbound: 15006, admin: 15000 },
  { id: 'catalog-v1-0', role: 'catalog', version: 'v1', outbound: 15101, inbound: 15106, admin: 15100 },
  { id: 'catalog-v2-0', role: 'catalog', version: 'v2', outbound: 15201, inbound: 15206, admin: 15200 },
  { id: 'pricing-0', role: 'pricing', outbound: 15301, inbound: 15306, admin: 15300 },
];

interface Running {
  inst: Instance;
  app: DemoApp;
  child: ChildProcess;
  ports?: { outbound: number; inbound: number; admin: number };
  exited: Promise<void>;
}

export const up: Command = {
  name: 'up',
  usage: `meshlet up [--data-dir D] [--policies FILE] [--ephemeral-ports] [--store etcd [--replicas N]] [--netns [--prefix P] [--subnet N]]

Starts, on 127.0.0.1:
  the control plane         API :15080, push :15010, store under D (default .meshlet/)
  frontend -> catalog (v1 and v2) -> pricing, each with its own \`meshlet sidecar\` process
  the edge gateway          \`meshlet gateway\` on :8080 (the policies' Gateway), in front of frontend
and applies the example policies (default deploy/local/policies.yaml). Ctrl-C stops everything.
  --ephemeral-ports   use free ports everywhere instead of the fixed ones (for tests)
  --store etcd        keep policies and endpoints in a local 3-member etcd cluster (started here,
                      \`etcd\` on PATH, data under D/etcd, ports 12379/12479/12579) instead of files
  --replicas N        run N control-plane replicas on that etcd (API :15080+i, push :15010+i);
                      every sidecar is given all of them and fails over between them
  --netns             (root) each instance a network namespace on a bridge, 10.78.N.0/24, with its own IP
                      and /etc/hosts, iptables interception (deploy/meshlet-init.sh) and its sidecar as
                      uid 1337; the apps call each other by name, unaware of the mesh
  --prefix P          names of the namespaces, bridge and veths (default mlup); --subnet N (default 0)`,
  async run(argv) {
    const { values } = flags(argv, {
      'data-dir': { type: 'string' },
      policies: { type: 'string' },
      'ephemeral-ports': { type: 'boolean' },
      'log-level': { type: 'string' },
      netns: { type: 'boolean' },
      prefix: { type: 'string' },
      subnet: { type: 'string' },
      store: { type: 'string' },
      replicas: { type: 'string' },
    });
    const log = logger(values['log-level'] ?? 'warn', 'meshlet-up');
    const eph = values['ephemeral-ports'] === true;
    const dataDir = path.resolve(values['data-dir'] ?? '.meshlet');
    const policies = values.policies ?? path.join(packageRoot(), 'deploy', 'local', 'policies.yaml');
    const mainJs = path.join(__dirname, 'main.js');
    if (!existsSync(mainJs)) throw new CliError(`meshlet up runs the compiled CLI (${mainJs} is missing): run \`npm run build\` first`);
    if (values.netns) {
      const subnet = Number(values.subnet ?? '0');
      if (!/^\d{1,3}$/.test(values.subnet ?? '0') || subnet > 254) throw new UsageError(`--subnet: expected 0-254, got ${JSON.stringify(values.subnet)}`);
      const { runNetnsMesh } = await import('./up-netns');
      return runNetnsMesh({ root: packageRoot(), mainJs, policies, prefix: values.prefix ?? 'mlup', subnet, logger: log });
    }
    if (values.prefix !== undefined || values.subnet !== undefined) throw new UsageError('--prefix and --subnet go with --netns');
    const store = values.store ?? 'file';
    if (store !== 'file' && store !== 'etcd') throw new UsageError(`--store: expected file or etcd, got ${JSON.stringify(store)}`);
    const replicas = Number(values.replicas ?? '1');
    if (!/^\d{1,2}$/.test(values.replicas ?? '1') || replicas < 1 || replicas > 9) throw new UsageError(`--replicas: expected 1-9, got ${JSON.stringify(values.replicas)}`);
    if (replicas > 1 && store !== 'etcd') throw new UsageError('--replicas N needs --store etcd: replicas share policies and endpoints only through etcd');

    // Every sidecar of this mesh is started fresh: endpoints from an earlier run are not carried over.
    await fsp.rm(path.join(dataDir, 'registry.json'), { force: true });
    const { startControlPlane } = await import('../../control-plane');
    let etcd: import('./up-etcd').LocalEtcd | undefined;
    const cps: import('../../control-plane').ControlPlane[] = [];
    const running: Running[] = [];
    const tokenIds: string[] = [];
    let gw: GatewayRunning | undefined;
    let gatewayUrl: string | undefined;
    const stopAll = async (): Promise<void> => {
      if (gw && gw.child.exitCode === null) gw.child.kill('SIGTERM');
      await gw?.exited;
      for (const r of running) if (r.child.exitCode === null) r.child.kill('SIGTERM');
      const kill = setTimeout(() => running.forEach((r) => r.child.exitCode === null && r.child.kill('SIGKILL')), 8000);
      await Promise.all(running.map((r) => r.exited));
      clearTimeout(kill);
      await Promise.all(running.map((r) => r.app.close()));
      for (const id of tokenIds) await cps[0]?.tokens?.revoke(id).catch(() => undefined);
      for (const c of cps) await c.close();
      await etcd?.stop();
    };
    try {
      if (store === 'etcd') etcd = await (await import('./up-etcd')).startLocalEtcd(path.join(dataDir, 'etcd'), eph);
      for (let i = 0; i < replicas; i++)
        cps.push(
          await startControlPlane({
            dataDir: i === 0 ? dataDir : path.join(dataDir, `replica-${i}`),
            api: { host: '127.0.0.1', port: eph ? 0 : 15080 + i },
            push: { host: '127.0.0.1', port: eph ? 0 : 15010 + i },
            logger: log,
            etcd: etcd ? { endpoints: etcd.endpoints, replica: `replica-${i}` } : undefined,
            // Every replica reads the same token file: the admin token below works on each.
            tokensDir: dataDir,
            // The first replica's admin token (DATA_DIR/admin.token) is the local user's.
            apiAuth: { bootstrapToken: i === 0 },
            // The push port is TLS: each sidecar's join token carries the CA's hash and verifies it.
            pushTls: {},
          }),
        );
    } catch (err) {
      await stopAll();
      throw err;
    }
    const cp = cps[0] as import('../../control-plane').ControlPlane;
    const server = `http://127.0.0.1:${cp.apiAddress.port}`;
    // The local user's admin token (DATA_DIR/admin.token, also what deploy/prometheus.yml reads),
    // kept in the context `meshlet-up` of the CLI's config file so that `meshlet status` and the
    // rest just work.
    let adminToken: string;
    let context: string;
    try {
      adminToken = (await fsp.readFile(cp.adminTokenFile as string, 'utf8')).trim();
      context = saveUpContext(server, adminToken);
    } catch (err) {
      await stopAll();
      throw err;
    }
    const pushes = cps.map((c) => `127.0.0.1:${c.pushAddress.port}`);
    try {
      const text = await fsp.readFile(policies, 'utf8').catch((e: Error) => {
        throw new CliError(`cannot read ${policies}: ${e.message}`);
      });
      const { parseAll, parseDocuments, toWire } = await import('../policy');
      const { formatErrors } = await import('../core/result');
      const docs = parseDocuments(text);
      const { embedProtoFiles } = await import('../grpc/transcode/embed');
      const embedded = docs.ok ? embedProtoFiles(docs.value, path.dirname(policies)) : docs;
      const parsed = embedded.ok ? parseAll(embedded.value) : embedded;
      if (!parsed.ok) throw new CliError(`invalid policies in ${policies}:\n${formatErrors(parsed.errors)}`);
      // With free ports everywhere, the Gateway's listeners get free ports too.
      const resources = eph ? await Promise.all(parsed.value.map(freeGatewayPorts)) : parsed.value;
      gatewayUrl = gatewayUrlOf(resources);
      const applied = await api(server, 'POST', '/v1/apply', { items: resources.map(toWire) }, { token: adminToken });
      if (applied.status !== 200) throw new CliError(`could not apply ${policies}: ${describeApiError(applied)}`);

      // Every sidecar proves its service with a join token made for it (docs/security.md), revoked
      // when `up` stops.
      const joinTokens = new Map<string, string>();
      for (const role of [...new Set(LAYOUT.map((i) => i.role)), GATEWAY]) {
        const t = await cp.tokens?.create({ service: role, ttlMs: 7 * 86_400_000, description: 'meshlet up' });
        if (t) {
          joinTokens.set(role, t.token);
          tokenIds.push(t.info.id);
        }
      }
      const layout = eph ? LAYOUT.map((i) => ({ ...i, outbound: 0, inbound: 0, admin: 0 })) : LAYOUT;
      // The sidecars and the gateway start side by side (each is a node start of ~0.5 s: one after
      // the other they were most of `up`'s start-up). Whatever did start is in `running` / `gw`
      // before the first failure is thrown, so that stopAll stops it.
      const [sidecars, gateway] = await Promise.all([
        Promise.allSettled(
          layout.map((inst, n) => {
            // Spread the sidecars over the replicas: each starts on a different one and knows them all.
            const targets = pushes.map((_, k) => pushes[(n + k) % pushes.length]).join(',');
            return startInstance(inst, mainJs, targets, log, path.join(dataDir, 'logs'), joinTokens.get(inst.role));
          }),
        ),
        Promise.allSettled(gatewayUrl ? [startGatewayProcess(mainJs, pushes.join(','), eph ? 0 : 15400, path.join(dataDir, 'logs'), joinTokens.get(GATEWAY))] : []),
      ]);
      for (const s of sidecars) if (s.status === 'fulfilled') running.push(s.value);
      if (gateway[0]?.status === 'fulfilled') gw = gateway[0].value;
      const failed = [...sidecars, ...gateway].find((s) => s.status === 'rejected');
      if (failed) throw failed.reason;
      await Promise.all(running.map((r) => waitReady(r)));
      // With join tokens, also until each has its certificate: the first request is mTLS on every hop, the gateway's too.
      await waitConverged(server, running.length + (gw ? 1 : 0), adminToken, joinTokens.size > 0);
      if (gw && gatewayUrl) await waitServing(gatewayUrl);
    } catch (err) {
      await stopAll();
      throw err;
    }

    const front = running[0] as Running;
    const p = (r: Running) => r.ports as NonNullable<Running['ports']>;
    const check = await request(gatewayUrl && gw ? gatewayUrl : `http://127.0.0.1:${p(front).inbound}/`).then(
      async (r) => `${r.statusCode} ${(await r.body.text()).trim().slice(0, 200)}`,
      (e: Error) => `failed: ${e.message}`,
    );
    const lines = [
      'meshlet: local mesh is up',
      '',
      ...cps.map(
        (c, i) =>
          `  control plane${cps.length > 1 ? ` ${i}` : '  '} API http://127.0.0.1:${c.apiAddress.port}   push 127.0.0.1:${c.pushAddress.port}   store ${etcd ? `etcd://${etcd.endpoints.join(',')}` : dataDir}`,
      ),
      ...running.map(
        (r) =>
          `  ${r.inst.id.padEnd(13)} app :${String(r.app.port).padEnd(6)} sidecar inbound :${p(r).inbound}  outbound :${p(r).outbound}  admin http://127.0.0.1:${p(r).admin}/config_dump`,
      ),
      ...(gw && gatewayUrl ? [`  gateway       ${gatewayUrl}   admin http://127.0.0.1:${gw.admin}/config_dump`] : []),
      '',
      `Dashboard: ${server}/ui/#token=${adminToken}`,
      '',
      `API: an admin token (${cp.adminTokenFile}) is in the context ${context} of ${configFile()}, so the CLI`,
      `  just works; with curl: curl -s -H 'Authorization: Bearer ${adminToken}' ${server}/v1/status`,
      '',
      'Send traffic (frontend -> catalog -> pricing):',
      ...(gw && gatewayUrl ? [`  curl -s ${gatewayUrl}     # through the edge gateway`] : []),
      `  curl -s http://127.0.0.1:${p(front).inbound}/`,
      `  curl -s -H 'x-canary: true' http://127.0.0.1:${p(front).inbound}/     # always catalog v2`,
      `  curl -s -x http://127.0.0.1:${p(front).outbound} http://catalog/items     # as the frontend app, through its sidecar`,
      '',
      'Inspect:',
      `  npx meshlet status        npx meshlet get routes        curl -s http://127.0.0.1:${p(front).admin}/metrics`,
      '',
      `first request: ${check}`,
      'Ctrl-C stops everything.',
      '',
    ];
    process.stdout.write(lines.join('\n'));
    for (const r of running)
      void r.exited.then(() => {
        if (!stopping) log.error({ sidecar: r.inst.id, code: r.child.exitCode }, 'a sidecar exited; its service is unreachable until `meshlet up` restarts');
      });
    let stopping = false;
    const code = await runUntilSignal(async () => {
      stopping = true;
      process.stdout.write('\nmeshlet: stopping...\n');
      await stopAll();
      process.stdout.write('meshlet: stopped\n');
    });
    return code;
  },
};

/** The demo's edge gateway: the Gateway resource of this name in the policies. */
const GATEWAY = 'gateway';

interface GatewayRunning {
  child: ChildProcess;
  admin: number;
  exited: Promise<void>;
}

/** A Gateway's listener ports replaced by free ones (`--ephemeral-ports`). */
async function freeGatewayPorts<R extends { kind: string; spec: unknown }>(r: R): Promise<R> {
  if (r.kind !== 'Gateway') return r;
  const spec = r.spec as { listeners: { port: number }[] };
  const listeners = [];
  for (const l of spec.listeners) listeners.push({ ...l, port: await reservedPort() });
  return { ...r, spec: { ...spec, listeners } };
}

/** The URL of the demo gateway's first HTTP listener, when the policies define one. */
function gatewayUrlOf(resources: readonly { kind: string; metadata: { name: string }; spec: unknown }[]): string | undefined {
  const g = resources.find((r) => r.kind === 'Gateway' && r.metadata.name === GATEWAY);
  const l = (g?.spec as { listeners: { port: number; protocol: string }[] } | undefined)?.listeners.find((x) => x.protocol === 'HTTP');
  return l ? `http://127.0.0.1:${l.port}/` : undefined;
}

async function startGatewayProcess(mainJs: string, controlPlane: string, adminPort: number, logDir: string, joinToken?: string): Promise<GatewayRunning> {
  mkdirSync(path.join(logDir, GATEWAY), { recursive: true });
  const logFile = createWriteStream(path.join(logDir, GATEWAY, `${GATEWAY}-0.log`), { flags: 'w' });
  const args = [mainJs, 'gateway', '--name', GATEWAY, '--id', `${GATEWAY}-0`, '--control-plane', controlPlane, '--address', '127.0.0.1', '--admin', `127.0.0.1:${adminPort}`, '--log-level', 'info'];
  const child = spawn(process.execPath, [...SIDECAR_NODE_FLAGS, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, MESHLET_EXIT_WITH_STDIN: '1', ...(joinToken ? { MESHLET_JOIN_TOKEN: joinToken } : {}) },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => logFile.end());
  const admin = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new CliError(`the gateway exited (code ${code}) before it started: see the lines above`)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      logFile.write(line + '\n');
      let rec: { level?: number; msg?: string; admin?: string } & Record<string, unknown>;
      try {
        rec = JSON.parse(line);
      } catch {
        process.stdout.write(`[gateway] ${line}\n`);
        return;
      }
      if (rec.msg === 'gateway started' && rec.admin) resolve(Number(rec.admin.slice(rec.admin.lastIndexOf(':') + 1)));
      if ((rec.level ?? 0) >= 40) {
        const { level: _l, time: _t, pid: _p, hostname: _h, msg, ...rest } = rec;
        process.stderr.write(`[gateway] ${msg} ${JSON.stringify(rest)}\n`);
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => process.stderr.write(`[gateway] ${line}\n`));
  });
  return { child, admin, exited };
}

/** Until the gateway's listener answers (it binds once the snapshot with its Gateway arrives). */
async function waitServing(url: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await request(url).then(
      async (res) => (await res.body.dump(), true),
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new CliError(`the gateway did not start serving ${url} within 20 s (is the port in use? see the lines above)`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

async function startInstance(inst: Instance, mainJs: string, controlPlane: string, log: ReturnType<typeof logger>, logDir: string, joinToken?: string): Promise<Running> {
  // Every line the sidecar writes (its log and access log) goes to LOGDIR/SERVICE/ID.log, for `meshlet logs`.
  mkdirSync(path.join(logDir, inst.role), { recursive: true });
  const logFile = createWriteStream(path.join(logDir, inst.role, `${inst.id}.log`), { flags: 'w' });
  // The sidecar's outbound port must be known before the app starts (its HTTP_PROXY); with
  // ephemeral ports the app learns it once the sidecar reports it.
  let proxy = { host: '127.0.0.1', port: inst.outbound };
  const app = await startDemoApp(inst.role, { version: inst.version, proxy: () => proxy });
  const args = [
    mainJs,
    'sidecar',
    '--service',
    inst.role,
    '--id',
    inst.id,
    '--control-plane',
    controlPlane,
    '--app-port',
    String(app.port),
    '--inbound',
    `127.0.0.1:${inst.inbound}`,
    '--outbound',
    `127.0.0.1:${inst.outbound}`,
    '--admin',
    `127.0.0.1:${inst.admin}`,
    '--advertise',
    '127.0.0.1',
    '--log-level',
    'info',
    // Access logs on in the local mesh: `meshlet logs SERVICE` shows them.
    '--access-log',
    '1',
  ];
  if (inst.version) args.push('--labels', `version=${inst.version}`);
  // pricing is a gRPC (h2c) app: its sidecar speaks HTTP/2 to it.
  if (inst.role === 'pricing') args.push('--app-protocol', 'http2');
  // Own process group: Ctrl-C reaches `up`, which stops the sidecars in order; stdin closes
  // when `up` dies, however it dies, and the sidecar then exits too (no orphans holding ports).
  const child = spawn(process.execPath, [...SIDECAR_NODE_FLAGS, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
    // The join token goes in the environment, not argv (ps shows argv to every user).
    env: { ...process.env, MESHLET_EXIT_WITH_STDIN: '1', ...(joinToken ? { MESHLET_JOIN_TOKEN: joinToken } : {}) },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => logFile.end());
  const r: Running = { inst, app, child, exited };
  const started = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new CliError(`sidecar ${inst.id} exited (code ${code}) before it started: see the lines above`)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      logFile.write(line + '\n');
      let rec: { level?: number; msg?: string; outbound?: string; inbound?: string; admin?: string } & Record<string, unknown>;
      try {
        rec = JSON.parse(line);
      } catch {
        process.stdout.write(`[${inst.id}] ${line}\n`);
        return;
      }
      if (rec.msg === 'sidecar started' && rec.outbound && rec.inbound && rec.admin) {
        const port = (s: string) => Number(s.slice(s.lastIndexOf(':') + 1));
        r.ports = { outbound: port(rec.outbound), inbound: port(rec.inbound), admin: port(rec.admin) };
        proxy = { host: '127.0.0.1', port: r.ports.outbound };
        resolve();
      }
      if ((rec.level ?? 0) >= 40) {
        const { level: _l, time: _t, pid: _p, hostname: _h, msg, ...rest } = rec;
        process.stderr.write(`[${inst.id}] ${msg} ${JSON.stringify(rest)}\n`);
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => process.stderr.write(`[${inst.id}] ${line}\n`));
  });
  try {
    await started;
  } catch (err) {
    await app.close();
    throw err;
  }
  log.debug({ sidecar: inst.id, ports: r.ports }, 'sidecar started');
  return r;
}

async function waitReady(r: Running): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await request(`http://127.0.0.1:${r.ports?.admin}/ready`).then(
      async (res) => {
        await res.body.dump();
        return res.statusCode === 200;
      },
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new CliError(`sidecar ${r.inst.id} did not become ready (no policy snapshot) within 20 s`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/**
 * Until every sidecar (and the gateway) ACKed the version in force (the snapshot that has all of
 * them in it) and, with `certified`, the control plane signed each a certificate.
 */
async function waitConverged(server: string, n: number, token: string, certified: boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const st = await api(server, 'GET', '/v1/status', undefined, { token });
    const b = st.body as { version: string; sidecars: { connected: boolean; ackedVersion?: string; expectedVersion?: string; spiffeId?: string }[] };
    if (st.status === 200 && b.sidecars.filter((s) => s.connected && s.ackedVersion === (s.expectedVersion ?? b.version) && (!certified || s.spiffeId)).length >= n) return;
    if (Date.now() > deadline) throw new CliError(`the sidecars did not all ACK the current policy${certified ? ' and get their certificates' : ''} within 20 s:\n${JSON.stringify(b, null, 2)}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}


/** The context `meshlet-up` (server and admin token), made the current one; returns its name. */
function saveUpContext(server: string, token: string): string {
  const { loadConfig, saveConfig } = require('./config-file') as typeof import('./config-file');
  const name = 'meshlet-up';
  const cfg = loadConfig();
  cfg.contexts = [...cfg.contexts.filter((c) => c.name !== name), { name, server, token }];
  cfg.currentContext = name;
  saveConfig(cfg);
  return name;
}

function configFile(): string {
  return (require('./config-file') as typeof import('./config-file')).configPath();
}
