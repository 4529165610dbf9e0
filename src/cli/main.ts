#!/usr/bin/env -S node --min-semi-space-size=8 --max-semi-space-size=8 --heap-growing-percent=20 --single-threaded-gc
/**
 * `meshlet`: one sub-command per file in this folder.
 *
 * The shebang tunes V8 for a long-running proxy (bench/ measures both):
 * - `--max-semi-space-size=8`: young generation capped at 8 MiB per semi-space (default 16).
 *   Measured on the full chain under wrk (bench/ab.sh, alternating): 2 MiB cost 39-54 µs per
 *   request against 35-39 µs with 8 (more scavenges, more survivors copied and promoted, more
 *   full collections), gRPC calls ~15% more; 16 MiB is no faster than 8 and peaks at ~93 MB RSS
 *   under load against ~81 MB with 8 (~72 MB with 2). At rest all three settle at ~56 MB.
 * - `--min-semi-space-size=8`: and never shrunk below that. V8 shrinks the young generation when
 *   the allocation rate is low (a sidecar between bursts, or idle for a few seconds) and grows it
 *   back only after as many bytes survived as it holds, which a proxy's short-lived garbage takes
 *   hundreds of scavenges to reach: after one idle spell a sidecar at 5,000 req/s ran 62 to 145
 *   scavenges a phase instead of 31 (bench/tail.js, 2026-12-05). Pinned, every phase had 31, GC
 *   time fell from 33-55 ms to 15-19 ms a phase. At rest it costs ~0.2-0.3 MB (bench/idle-rss.js:
 *   young-generation pages touched at start-up and not given back; V8's heap is no larger).
 * - `--heap-growing-percent=20`: the old generation grows by 20% between full collections
 *   instead of up to 4x, so RSS stays flat from the first minute instead of climbing ~10 MB
 *   before V8's first full collection (seen in a 1,000 req/s soak).
 * - `--single-threaded-gc`: V8 collects on the main thread only, in small incremental steps,
 *   instead of handing marking and scavenging to helper threads. A sidecar gets about one core
 *   (pinned, or a pod's CPU limit), so the helpers ran on the same core as the event loop and
 *   the loop waited for them: at 5,000 req/s on one core (bench/tail.js, 2026-12-05) a
 *   mark-compact came as one 7.5-11.6 ms step plus a 4.5-4.8 ms pause, against 2.4-3.7 ms and
 *   steps under 4 ms with this flag, and the sidecar's added p99.9 (paired estimator) read
 *   3.3 ms against 6.6 ms (medians of six pairs each). CPU per request at full load is the same
 *   within noise (bench/cpu.js h1, h2 and gRPC, five alternated rounds).
 * `meshlet up` passes the same flags (SIDECAR_NODE_FLAGS) to the sidecars it starts; so should
 * anything that runs `node dist/src/cli/main.js` itself.
 */
import { CliError, globals, nearest, setCommandTable, UsageError, type CommandEntry } from './common';

/**
 * Each command's module is loaded only when it runs: a sidecar does not carry the CLI's clients.
 * `client`: talks to the control plane, so takes the global flags (--server, --context).
 */
export const COMMANDS: CommandEntry[] = [
  { name: 'up', summary: 'run a local mesh on loopback: control plane, demo services, a sidecar each (what `npm start` runs)', load: () => require('./up').up },
  { name: 'control-plane', summary: 'run the control plane: REST API, policy store, push to sidecars', load: () => require('./control-plane').controlPlane },
  { name: 'sidecar', summary: 'run the sidecar proxy beside one service instance', load: () => require('./sidecar').sidecar },
  { name: 'gateway', summary: 'run the edge gateway: client-facing HTTP/HTTPS listeners of a Gateway resource, the same routing stack', load: () => require('./gateway').gateway },
  { name: 'apply', summary: 'create or update policies from YAML/JSON files (all or nothing); the control plane validates them against what is stored', client: true, load: () => require('./apply').apply },
  { name: 'diff', summary: 'what `apply` would change, as a unified diff (exit 1 when different)', client: true, load: () => require('./diff').diff },
  { name: 'get', summary: 'list policies of a kind (or all), or show one', client: true, load: () => require('./get').get },
  { name: 'describe', summary: 'one policy: what it refers to, what refers to it, the sidecars running it, its recent traffic', client: true, load: () => require('./describe').describe },
  { name: 'delete', summary: 'delete policies by KIND NAME or -f FILE', client: true, load: () => require('./delete').del },
  { name: 'check', summary: 'find policies that are valid but wrong (like istioctl analyze); exit 1 on errors', client: true, load: () => require('./check').check },
  { name: 'explain', summary: "walk a request through the caller's sidecar: route, rule, backend, endpoints, limits", client: true, load: () => require('./explain').explain },
  { name: 'proxy-config', summary: 'what one sidecar runs (routes, endpoints, policies), through the control plane', client: true, load: () => require('./proxy-config').proxyConfig },
  { name: 'inject', summary: 'add the sidecar to Kubernetes workloads in a YAML file (comments kept, idempotent)', load: () => require('./inject').inject },
  { name: 'status', summary: 'show every sidecar, its service, and the policy version it ACKed or why it NACKed', client: true, load: () => require('./status').status },
  { name: 'stat', summary: 'success rate, req/s, p50/p99 per service and route, from every sidecar (-o json)', client: true, load: () => require('./stat').stat },
  { name: 'top', summary: '`meshlet stat`, refreshing', client: true, load: () => require('./stat').top },
  { name: 'cache', summary: "purge cached responses (Route rules' cache) from every sidecar, by key or prefix", client: true, load: () => require('./cache').cache },
  { name: 'tap', summary: 'watch live requests to a service (method, path, status, flags, latency, trace id)', client: true, load: () => require('./tap').tap },
  { name: 'apikey', summary: "create, list or revoke an ApiConsumer's API keys (the key printed once, only its hash stored)", client: true, load: () => require('./apikey').apikey },
  { name: 'token', summary: 'create, list or revoke API tokens (--role: for the REST API and this CLI) and join tokens (--service: a sidecar\'s identity)', client: true, load: () => require('./token').token },
  { name: 'ca', summary: "show the mesh CA and its trust bundle, or rotate its root (with an overlap in which both roots are trusted)", load: () => require('./ca').ca },
  { name: 'logs', summary: "print (or follow, -f) a service's sidecar logs in the local mesh (`meshlet up`)", client: true, load: () => require('./logs').logs },
  { name: 'version', summary: 'the client version, and the control plane and sidecars when reachable', client: true, load: () => require('./version').version },
  { name: 'config', summary: 'named contexts: which control plane the client commands talk to', load: () => require('./config').config },
  { name: 'completion', summary: 'print shell completion for bash, zsh or fish', load: () => require('./completion').completion },
];
setCommandTable(COMMANDS);

const GLOBAL_FLAGS = ['--server', '--context', '--certificate-authority'];

/** Takes the global flags out of argv, wherever they are. */
function takeGlobals(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (!GLOBAL_FLAGS.includes(flag)) {
      out.push(a);
      continue;
    }
    let value: string | undefined;
    if (eq > 0) value = a.slice(eq + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith('-')) throw new UsageError(`${flag} needs a value`);
      i++;
    }
    if (flag === '--server') globals.server = value;
    else if (flag === '--certificate-authority') globals.certificateAuthority = value;
    else globals.context = value;
  }
  return out;
}

const GLOBAL_HELP = `
global flags (before or after the command):
  --server URL      the control plane's REST API (else $MESHLET_SERVER, else the config file's current context, else http://127.0.0.1:15080)
  --context NAME    a context of the config file (meshlet config get-contexts)
  --certificate-authority FILE   PEM roots that verify an https control plane (else the context's, else the system's)
`;

/**
 * A closed pipe (`meshlet logs X | head`) ends the command quietly: the reader has what it wanted.
 */
export function quietOnClosedPipe(): void {
  for (const s of [process.stdout, process.stderr])
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') process.exit(0);
      throw err;
    });
}

function help(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return `meshlet: a small service mesh

usage: meshlet COMMAND [flags]      (meshlet COMMAND --help for its flags)

${COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`).join('\n')}
${GLOBAL_HELP}`;
}

export async function main(argv: string[]): Promise<number> {
  // The command is the first argument that is not a global flag (or its value).
  let name: string | undefined;
  let rest: string[];
  {
    let i = 0;
    while (i < argv.length && GLOBAL_FLAGS.some((g) => argv[i] === g || (argv[i] as string).startsWith(g + '='))) i += argv[i]?.includes('=') ? 1 : 2;
    name = argv[i];
    rest = [...argv.slice(0, i), ...argv.slice(i + 1)];
  }
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(help());
    return name ? 0 : 2;
  }
  if (name === '--version' || name === '-v') name = 'version';
  const entry = COMMANDS.find((c) => c.name === name);
  if (!entry) {
    const near = name.startsWith('-') ? undefined : nearest(name, COMMANDS.map((c) => c.name));
    process.stderr.write(`meshlet: unknown command ${JSON.stringify(name)}${near ? `; did you mean \`${near}\`?` : ''}\n(\`meshlet --help\` lists the commands)\n`);
    return 2;
  }
  const cmd = entry.load();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${entry.summary}\n\nusage: ${cmd.usage}\n${entry.client ? GLOBAL_HELP : ''}`);
    return 0;
  }
  try {
    if (entry.client) rest = takeGlobals(rest);
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`meshlet ${cmd.name}: ${e.message}\n\nusage: ${cmd.usage}\n`);
      return 2;
    }
    if (e instanceof CliError) {
      process.stderr.write(`meshlet ${cmd.name}: ${e.message}\n`);
      return cmd.errorExitCode ?? 1;
    }
    const err = e as Error & { code?: string };
    process.stderr.write(`meshlet ${cmd.name}: ${err.code === 'EADDRINUSE' ? `port in use (${err.message})` : err.message}\n`);
    return cmd.errorExitCode ?? 1;
  }
}

if (require.main === module) {
  quietOnClosedPipe();
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      // Long-running commands resolve only after they stopped; let the loop drain.
    },
    (err) => {
      process.stderr.write(`meshlet: ${(err as Error).stack ?? err}\n`);
      process.exitCode = 1;
    },
  );
}
