/**
 * The client commands' plumbing: `-o` validated everywhere, suggestions for typos, contexts and
 * the token, quiet closed pipes, completion scripts (apply & co: apply.test.ts).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import t from 'tap';
import { MAIN, tmpDir } from '../lib/meshlet';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], opts: { env?: Record<string, string | undefined>; input?: string } = {}): Run {
  const env: Record<string, string | undefined> = { ...process.env, MESHLET_SERVER: undefined, MESHLET_CONFIG: '/nonexistent/meshlet.yaml', MESHLET_TOKEN: undefined, ...opts.env };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const r = spawnSync(process.execPath, [MAIN, ...args], { input: opts.input, env: env as NodeJS.ProcessEnv, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `run` without blocking this process (for tests whose server lives in it). */
function runAsync(args: string[], opts: { env?: Record<string, string | undefined> } = {}): Promise<Run> {
  const env: Record<string, string | undefined> = { ...process.env, MESHLET_SERVER: undefined, MESHLET_CONFIG: '/nonexistent/meshlet.yaml', MESHLET_TOKEN: undefined, ...opts.env };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const c = spawn(process.execPath, [MAIN, ...args], { env: env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => c.on('close', (code) => resolve({ code, stdout, stderr })));
}

t.test('-o is validated by every command that takes it; typos get the nearest name', async (t) => {
  const env = { MESHLET_SERVER: 'http://127.0.0.1:1' };
  const cases = [['status', '-o', 'yaml2'], ['status', '-o', 'foo'], ['get', 'routes', '-o', 'table'], ['stat', '-o', 'yaml2'], ['version', '-o', 'xml'], ['logs', 'x', '-o', 'text'], ['check', '-o', 'foo'], ['apply', '-f', '-', '-o', 'yaml'], ['proxy-config', 'x', '-o', 'wide']];
  const results = await Promise.all(cases.map((args) => runAsync(args, { env })));
  cases.forEach((args, i) => {
    t.equal(results[i]!.code, 2, `${args.join(' ')}: usage error`);
    t.match(results[i]!.stderr, /-o must be one of/, args.join(' '));
  });
  let r = run(['aply', '-f', 'x'], { env });
  t.equal(r.code, 2);
  t.match(r.stderr, /unknown command "aply"; did you mean `apply`\?/);
  r = run(['get', 'routes', '--outptu', 'json'], { env });
  t.match(r.stderr, /unknown flag --outptu; did you mean --output\?/);
  r = run(['apply', '--filname', 'x'], { env });
  t.match(r.stderr, /did you mean --filename\?/);
  r = run(['config', 'use-contxt', 'x'], { env });
  t.match(r.stderr, /did you mean `use-context`\?/);
});

t.test('contexts in the config file, --context, and MESHLET_TOKEN as a bearer token', async (t) => {
  const seen: { url?: string; auth?: string }[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ url: req.url, auth: req.headers.authorization });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ version: 'v1', revision: 1, convergence: null, sidecars: [] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const dir = tmpDir('meshlet-config-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = path.join(dir, 'config.yaml');
  const env = { MESHLET_CONFIG: cfg };
  let r = run(['config', 'set-context', 'dev', '--server', url, '--token', 'from-file'], { env });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /context "dev" created and made current/);
  t.equal(run(['config', 'set-context', 'prod', '--server', 'http://127.0.0.1:1'], { env }).code, 0);
  t.match(run(['config', 'get-contexts'], { env }).stdout, /\*\s+dev\s+http/);
  t.notMatch(run(['config', 'view'], { env }).stdout, /from-file/, 'view hides tokens');

  r = await runAsync(['status'], { env });
  t.equal(r.code, 0, `the current context's server is used: ${r.stderr}`);
  t.equal(seen.at(-1)?.auth, 'Bearer from-file', "the context's token is sent");
  r = await runAsync(['status'], { env: { ...env, MESHLET_TOKEN: 'from-env' } });
  t.equal(seen.at(-1)?.auth, 'Bearer from-env', 'MESHLET_TOKEN wins over the file');
  t.equal((await runAsync(['status', '--context', 'prod'], { env })).code, 1, '--context picks another (unreachable) control plane');
  t.equal(run(['config', 'use-context', 'prod'], { env }).code, 0);
  t.equal(run(['config', 'current-context'], { env }).stdout, 'prod\n');
  t.equal((await runAsync(['status'], { env })).code, 1, 'now the current context is prod');
  t.equal((await runAsync(['--context', 'dev', 'status'], { env })).code, 0, '--context before the verb');
  t.equal((await runAsync(['status'], { env: { ...env, MESHLET_SERVER: url } })).code, 0, 'MESHLET_SERVER wins over the current context');
  r = await runAsync(['status', '--context', 'nope'], { env });
  t.equal(r.code, 2);
  t.match(r.stderr, /no context "nope"/);
  writeFileSync(cfg, 'contexts: [{name: x}]\n');
  r = await runAsync(['status'], { env });
  t.equal(r.code, 1);
  t.match(r.stderr, /contexts\[0\]\.server: must be a URL/, 'a broken config file names the field');
});

t.test('a closed pipe ends every command quietly', async (t) => {
  const dir = tmpDir('meshlet-pipe-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'logs', 'catalog'), { recursive: true });
  const line = JSON.stringify({ level: 30, time: Date.now(), msg: 'x'.repeat(200) });
  writeFileSync(path.join(dir, 'logs', 'catalog', 'catalog-0.log'), (line + '\n').repeat(20_000));
  for (const cmd of [`logs catalog --data-dir ${dir}`, `logs catalog -o json --data-dir ${dir}`, 'completion bash', '--help']) {
    const r = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" "${MAIN}" ${cmd} 2>"${dir}/err" | head -1 >/dev/null; echo "rc=$?"; cat "${dir}/err"`], { encoding: 'utf8', timeout: 30_000 });
    t.equal(r.stdout.trim(), 'rc=0', `meshlet ${cmd} | head -1: no stack trace, exit 0 (${r.stdout})`);
  }
});

t.test('completion scripts', async (t) => {
  const bash = run(['completion', 'bash']);
  t.equal(bash.code, 0);
  t.match(bash.stdout, /complete -F _meshlet meshlet/);
  t.match(bash.stdout, /apply\) flags="[^"]*--dry-run[^"]*--filename/);
  const syntax = spawnSync('bash', ['-n'], { input: bash.stdout, encoding: 'utf8' });
  t.equal(syntax.status, 0, `bash accepts it: ${syntax.stderr}`);
  // Completing `meshlet app` in bash.
  const r = spawnSync('bash', ['-c', `${bash.stdout}\nCOMP_WORDS=(meshlet app); COMP_CWORD=1; _meshlet; echo "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
  t.equal(r.stdout.trim(), 'apply');
  t.match(run(['completion', 'zsh']).stdout, /^#compdef meshlet/);
  t.match(run(['completion', 'fish']).stdout, /complete -c meshlet -n '__fish_seen_subcommand_from get' -l selector/);
  t.equal(run(['completion', 'tcsh']).code, 2);
});
