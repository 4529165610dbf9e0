/**
 * The docs tell the truth about the CLI: every command of README.md's quick start runs (against a
 * `meshlet up` on free ports, the README's fixed ports mapped to them), every `meshlet COMMAND
 * --flag` written in README.md and docs/ names a command and a flag that exist, and docs/cli.md
 * is what the `--help` texts say today.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
// The command table is registered by main.ts when it loads.
import '../../src/cli/main';
import { commandFlags } from '../../src/cli/completion';
import { MAIN, ROOT, tmpDir } from './lib/meshlet';

const DOCS = ['README.md', ...readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md') && f !== 'cli.md').map((f) => `docs/${f}`)];

/** Lines of code (fenced blocks and inline code spans), continuation lines joined. */
function codeLines(md: string): string[] {
  const out: string[] = [];
  const fences = md.split(/^```[a-z]*$/m);
  fences.forEach((part, i) => {
    if (i % 2 === 1) out.push(...part.replace(/\\\n\s*/g, ' ').split('\n'));
    else for (const m of part.replace(/\n/g, ' ').matchAll(/`([^`]+)`/g)) out.push(m[1] as string);
  });
  return out;
}

t.test('every meshlet command and flag the docs mention exists', async (t) => {
  const known = new Map(commandFlags().map((c) => [c.name, new Set(c.flags)]));
  let checked = 0;
  for (const doc of DOCS) {
    for (const line of codeLines(readFileSync(path.join(ROOT, doc), 'utf8'))) {
      for (const m of line.matchAll(/(?:^|\s|\()meshlet ([a-z][a-z-]*)((?:[^|;&#`]|&(?!&))*)/g)) {
        const cmd = m[1] as string;
        if (cmd === 'dev') continue; // the `meshlet.dev/...` annotation keys
        t.ok(known.has(cmd), `${doc}: \`meshlet ${cmd}\` is a command`);
        checked++;
        for (const f of (m[2] as string).matchAll(/(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])/g)) {
          t.ok(known.get(cmd)?.has(f[1] as string), `${doc}: \`meshlet ${cmd} ${f[1]}\` is a flag of ${cmd}`);
          checked++;
        }
      }
    }
  }
  t.ok(checked > 20, `the docs were read (${checked} commands and flags checked)`);
});

t.test('docs/cli.md is generated from the --help texts of this build', async (t) => {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'gen-cli-docs.js'), '--check'], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
});

t.test("every command of README.md's quick start runs", async (t) => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('\n## ', readme.indexOf('## Quick start') + 5));
  const commands = section
    .split(/^```[a-z]*$/m)
    .filter((_p, i) => i % 2 === 1)
    .flatMap((block) => block.replace(/\\\n\s*/g, ' ').split('\n'))
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter(Boolean);
  t.ok(commands.includes('npm start'), 'the quick start starts the mesh');
  t.ok(commands.some((c) => c.startsWith('curl')) && commands.some((c) => c.startsWith('npx meshlet')), 'and uses it');

  // `npm start` is `npm run build` (done before the tests) and `meshlet up`: here on free ports.
  const data = tmpDir('meshlet-readme-');
  // `up` writes its context (server, admin token) to the CLI's config file: the README's `npx meshlet` commands use it.
  const config = path.join(data, 'config.yaml');
  const up = spawn(process.execPath, [MAIN, 'up', '--ephemeral-ports', '--data-dir', path.join(data, '.meshlet')], { stdio: ['ignore', 'pipe', 'pipe'], cwd: data, env: { ...process.env, MESHLET_CONFIG: config, MESHLET_SERVER: '', MESHLET_TOKEN: '' } });
  let out = '';
  up.stdout.on('data', (c: Buffer) => (out += c.toString()));
  up.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((r) => up.once('exit', () => r()));
  t.teardown(async () => {
    up.kill('SIGINT');
    const k = setTimeout(() => up.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(k);
    rmSync(data, { recursive: true, force: true });
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`meshlet up did not come up:\n${out}`)), 90_000);
    up.stdout.on('data', () => out.includes('Ctrl-C stops everything') && (clearTimeout(timer), resolve()));
    void exited.then(() => reject(new Error(`meshlet up exited:\n${out}`)));
  });
  const api = /API (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1] as string;
  const fe = /frontend\S*\s+app :\d+\s+sidecar inbound :(\d+)\s+outbound :\d+\s+admin http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
  t.ok(api && fe, `up printed its addresses:\n${out}`);
  const gwm = /gateway\s+http:\/\/127\.0\.0\.1:(\d+)\/\s+admin http:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
  t.ok(gwm, 'up printed the gateway URL and admin port');
  const ports: Record<string, string> = { '15006': fe![1] as string, '15000': fe![2] as string, '15080': api.split(':')[2] as string, '8080': gwm![1] as string, '15400': gwm![2] as string };

  for (const c of commands) {
    if (c === 'npm ci' || c === 'npm start' || c === 'npm test') continue; // what this very run did
    const cmd = c
      .replace(/127\.0\.0\.1:(15006|15000|15080|15400|8080)\b/g, (_m, p: string) => `127.0.0.1:${ports[p]}`)
      .replace(/^curl -s /, 'curl -sf --max-time 20 ')
      .replace(/^npx meshlet /, `"${process.execPath}" "${MAIN}" `);
    const r = spawnSync('bash', ['-c', cmd], { cwd: data, encoding: 'utf8', timeout: 60_000, env: { ...process.env, MESHLET_SERVER: '', MESHLET_TOKEN: '', MESHLET_CONFIG: config } });
    t.equal(r.status, 0, `README: ${c}\n${(r.stdout + r.stderr).slice(0, 400)}`);
  }
});
