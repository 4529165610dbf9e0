/**
 * Runs other test files again, unchanged, with extra environment variables for every process
 * they start (e.g. `MESHLET_H2_FRAMING=meshlet`), and asserts every file passed.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import type { Test } from 'tap';

const root = path.resolve(__dirname, '../../..');

export function suitesPassWith(t: Test, env: Record<string, string>, suites: string[], timeoutMs = 170_000): void {
  const r = spawnSync(process.execPath, [path.join(root, 'node_modules/tap/dist/esm/run.mjs'), '--disable-coverage', '--jobs=1', '--reporter=tap', ...suites], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  const out = `${r.stdout}${r.stderr}`;
  const files = [...out.matchAll(/^(not ok|ok) \d+ - (\S+)/gm)];
  t.equal(files.length, suites.length, `every suite ran (${files.length} of ${suites.length})`);
  for (const [, verdict, file] of files) t.equal(verdict, 'ok', file);
  t.equal(r.status, 0, r.status === 0 ? 'tap exits 0' : out.slice(-4000));
}
