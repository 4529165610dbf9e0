#!/usr/bin/env node
/** `meshlet`: one sub-command per file in this folder. */
import { apply } from './apply';
import { CliError, UsageError, type Command } from './common';
import { controlPlane } from './control-plane';
import { del } from './delete';
import { get } from './get';
import { sidecar } from './sidecar';
import { status } from './status';
import { up } from './up';

const COMMANDS: Command[] = [up, controlPlane, sidecar, apply, get, del, status];

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
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`meshlet: unknown command ${JSON.stringify(name)}\n\n${help()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${cmd.summary}\n\nusage: ${cmd.usage}\n`);
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
