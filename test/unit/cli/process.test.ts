/**
 * `runUntilSignal` (src/cli/process.ts), how the long-running commands stop: on SIGTERM the stop
 * runs, the process ends by itself with code 0, and one that a leftover timer keeps up (a library
 * that retries past its close) is ended EXIT_GRACE_MS after the stop, with the stop's code.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import t from 'tap';
import { EXIT_GRACE_MS } from '../../../src/cli/process';

const PROCESS_JS = path.resolve(__dirname, '../../../dist/src/cli/process.js');

/**
 * Runs a process that is kept up by a timer (`keep`, as a server would keep it) and stops with
 * `stop` (JS source of an async function), sends it SIGTERM, and times its end.
 */
async function stopped(stop: string): Promise<{ code: number | null; ms: number; out: string }> {
  const script = `const { runUntilSignal } = require(${JSON.stringify(PROCESS_JS)});
const keep = setInterval(() => undefined, 1000);
runUntilSignal(${stop}).then((code) => { process.exitCode = code; console.log('stopped ' + code); });
console.log('up');`;
  const c = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  await new Promise<void>((resolve) => c.stdout.on('data', (d: Buffer) => ((out += d.toString()), out.includes('up') && resolve())));
  const t0 = Date.now();
  c.kill('SIGTERM');
  const code = await new Promise<number | null>((resolve) => c.on('exit', (x) => resolve(x)));
  return { code, ms: Date.now() - t0, out };
}

t.test('a clean stop: the process ends by itself at once', async (t) => {
  const r = await stopped('async () => { clearInterval(keep); }');
  t.equal(r.code, 0);
  t.match(r.out, /stopped 0/);
  t.ok(r.ms < EXIT_GRACE_MS, `ended in ${r.ms} ms`);
});

t.test('a timer left running after the stop: ended after the grace period, with the stop\u2019s code', async (t) => {
  const r = await stopped('async () => {}');
  t.equal(r.code, 0, 'exit code 0');
  t.match(r.out, /stopped 0/);
  t.ok(r.ms >= EXIT_GRACE_MS - 100 && r.ms < EXIT_GRACE_MS + 3000, `ended ${r.ms} ms after SIGTERM`);
});

t.test('a stop that fails: code 1, also when a timer is left', async (t) => {
  const r = await stopped('async () => { throw new Error("boom"); }');
  t.equal(r.code, 1);
  t.match(r.out, /stopped 1/);
});
