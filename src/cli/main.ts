#!/usr/bin/env -S node --max-semi-space-size=8 --heap-growing-percent=20
/**
 * `meshlet`: one sub-command per file in this folder.
 *
 * The shebang tunes V8 for a long-running proxy (bench/ measures both):
 * - `--max-semi-space-size=8`: young generation capped at 8 MiB per semi-space (default 16).
 *   Measured on the full chain under wrk (bench/ab.sh, alternating): 2 MiB cost 39-54 µs per
 *   request against 35-39 µs with 8 (more scavenges, more survivors copied and promoted, more
 *   full collections), gRPC calls ~15% more; 16 MiB is no faster than 8 and peaks at ~93 MB RSS
 *   under load against ~81 MB with 8 (~72 MB with 2). At rest all three settle at ~56 MB.
 * - `--heap-growing-percent=20`: the old generation grows by 20% between full collections
 *   instead of up to 4x, so RSS stays flat from the first minute instead of climbing ~10 MB
 *   before V8's first full collection (seen in a 1,000 req/s soak).
 * `meshlet up` passes the same flags (SIDECAR_NODE_FLAGS) to the sidecars it starts; so should
 * anything that runs `node dist/src/cli/main.js` itself.
 */
import { CliError, UsageError, type Command } from './common';

/** Each command's module is loaded only when it runs: a sidecar does not carry the CLI's clients. */
const COMMANDS: { name: string; summary: string; load(): Command }[] = [
  { name: 'up', summary: 'run a local mesh on loopback: control plane, demo services, a sidecar each (what `npm start` runs)', load: () => require('./up').up },
  { name: 'control-plane', summary: 'run the control plane: REST API, policy store, push to sidecars', load: () => require('./control-plane').controlPlane },
  { name: 'sidecar', summary: 'run the sidecar proxy beside one service instance', load: () => require('./sidecar').sidecar },
  { name: 'apply', summary: 'create or update policies from a YAML/JSON file (all or nothing)', load: () => require('./apply').apply },
  { name: 'get', summary: 'list policies of a kind, or show one', load: () => require('./get').get },
  { name: 'delete', summary: 'delete a policy', load: () => require('./delete').del },
  { name: 'inject', summary: 'add the sidecar to Kubernetes workloads in a YAML file (comments kept, idempotent)', load: () => require('./inject').inject },
  { name: 'status', summary: 'show every sidecar, its service, and the policy version it ACKed or why it NACKed', load: () => require('./status').status },
  { name: 'stat', summary: 'success rate, req/s, p50/p99 per service and route, from every sidecar (-o json)', load: () => require('./stat').stat },
  { name: 'top', summary: '`meshlet stat`, refreshing', load: () => require('./stat').top },
  { name: 'token', summary: 'create, list or revoke join tokens: the credential a sidecar outside Kubernetes gets its identity with', load: () => require('./token').token },
  { name: 'ca', summary: "show the mesh CA and its trust bundle, or rotate its root (with an overlap in which both roots are trusted)", load: () => require('./ca').ca },
  { name: 'logs', summary: "print (or follow, -f) a service's sidecar logs in the local mesh (`meshlet up`)", load: () => require('./logs').logs },
];

function help(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return `meshlet: a small service mesh

usage: meshlet COMMAND [flags]      (meshlet COMMAND --help for its flags)

${COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`).join('\n')}
`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(help());
    return name ? 0 : 2;
  }
  const entry = COMMANDS.find((c) => c.name === name);
  if (!entry) {
    process.stderr.write(`meshlet: unknown command ${JSON.stringify(name)}\n\n${help()}`);
    return 2;
  }
  const cmd = entry.load();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${entry.summary}\n\nusage: ${cmd.usage}\n`);
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`meshlet ${cmd.name}: ${e.message}\n\nusage: ${cmd.usage}\n`);
      return 2;
    }
    if (e instanceof CliError) {
      process.stderr.write(`meshlet ${cmd.name}: ${e.message}\n`);
      return 1;
    }
    const err = e as Error & { code?: string };
    process.stderr.write(`meshlet ${cmd.name}: ${err.code === 'EADDRINUSE' ? `port in use (${err.message})` : err.message}\n`);
    return 1;
  }
}

if (require.main === module) {
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
