/**
 * `meshlet` installs and runs like a tool: `npm install -g` from the checkout puts it on PATH
 * (run here from another directory), and `npm pack` makes a package with the built program, the
 * deploy files and docs, and none of the sources or tests.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { MAIN, ROOT, tmpDir } from '../lib/meshlet';

t.test('npm install -g from the checkout puts a working meshlet on PATH', async (t) => {
  t.match(readFileSync(MAIN, 'utf8'), /^#!\/usr\/bin\/env -S node /, 'the program has a shebang');
  const prefix = tmpDir('meshlet-global-');
  t.teardown(() => rmSync(prefix, { recursive: true, force: true }));
  const inst = spawnSync('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--ignore-scripts', ROOT], { encoding: 'utf8', timeout: 120_000 });
  t.equal(inst.status, 0, inst.stderr);
  const env = { ...process.env, PATH: `${path.join(prefix, 'bin')}:${process.env.PATH}`, MESHLET_CONFIG: '/nonexistent' };
  const r = spawnSync('meshlet', ['version', '--client'], { cwd: prefix, env, encoding: 'utf8', timeout: 30_000 });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`^client version: ${JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version} `));
});

t.test('npm pack: the built program, deploy files and docs; no sources or tests', async (t) => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  t.equal(r.status, 0, r.stderr);
  const files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
  for (const f of ['dist/src/cli/main.js', 'dist/control-plane/index.js', 'dist/sidecar/index.js', 'deploy/local/policies.yaml', 'deploy/meshlet-init.sh', 'docs/cli.md', 'README.md', 'package.json'])
    t.ok(files.includes(f), `${f} is packed`);
  t.equal(files.filter((f) => f.startsWith('src/') || f.startsWith('test/') || f.startsWith('bench/')).length, 0, 'no sources, tests or benchmarks');
});
