/** Process plumbing for the long-running sub-commands: logging and a clean stop on signals. */
import pino, { type Logger } from 'pino';
import { UsageError } from './common';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function logger(level: string | undefined, name?: string): Logger {
  const l = level ?? process.env.MESHLET_LOG_LEVEL ?? 'info';
  if (!LEVELS.includes(l)) throw new UsageError(`--log-level must be one of ${LEVELS.join(', ')}, got ${JSON.stringify(l)}`);
  return pino({ level: l, name });
}

/**
 * After `stop` finished, how long the process may take to end by itself before it is ended: a
 * library that keeps a timer of its own past its close (etcd3 retries a watch of a closed client
 * for ever, e.g. one a control plane replica waiting in an election still had) would keep it up
 * until a second signal or SIGKILL.
 */
export const EXIT_GRACE_MS = 5000;

/**
 * Resolves with exit code 0 after SIGINT/SIGTERM once `stop` finished; a second signal exits at
 * once, and a process still up EXIT_GRACE_MS after `stop` exits with that code.
 */
export function runUntilSignal(stop: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const done = (code: number): void => {
      // Unref'd: it fires only if something else still keeps the process up.
      setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
      resolve(code);
    };
    const onSignal = (sig: NodeJS.Signals): void => {
      if (stopping) {
        process.exit(130);
      }
      stopping = true;
      stop().then(
        () => {
          process.stdin.destroy();
          done(0);
        },
        (err) => {
          process.stderr.write(`error while stopping (${sig}): ${(err as Error).message}\n`);
          done(1);
        },
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    // Started by `meshlet up`: stop when it goes away, however it goes (its end of our stdin closes).
    if (process.env.MESHLET_EXIT_WITH_STDIN === '1') {
      process.stdin.on('end', () => onSignal('SIGTERM'));
      process.stdin.on('error', () => onSignal('SIGTERM'));
      process.stdin.resume();
    }
  });
}
