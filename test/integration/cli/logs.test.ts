/**
 * `meshlet logs`: readable lines by default (time, level, message, fields; access lines as a
 * request summary), in time order across a service's sidecars, `--tail N`, `--since`, and `-f`
 * starting from the tail and printing what comes.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { cli, eventually, MAIN, tmpDir } from '../lib/meshlet';

t.test('readable lines, time order, --tail, --since, -f', async (t) => {
  const dir = tmpDir('meshlet-logs-h-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const logs = path.join(dir, 'logs', 'catalog');
  mkdirSync(logs, { recursive: true });
  const now = Date.now();
  const a = path.join(logs, 'catalog-a.log');
  writeFileSync(
    a,
    [
      { level: 30, time: now - 3_600_000, pid: 1, hostname: 'h', msg: 'sidecar started', sidecar: 'catalog-a' },
      { level: 40, time: now - 2000, pid: 1, hostname: 'h', msg: 'endpoint ejected', service: 'pricing', reason: 'consecutive 5xx' },
    ]
      .map((x) => JSON.stringify(x) + '\n')
      .join(''),
  );
  writeFileSync(
    path.join(logs, 'catalog-b.log'),
    JSON.stringify({ level: 30, time: now - 3000, log: 'access', start_time: new Date(now - 3000).toISOString(), direction: 'inbound', method: 'GET', authority: 'catalog', path: '/items', protocol: 'HTTP/1.1', response_code: 503, response_flags: 'UF,URX', duration_ms: 12.5, route: 'catalog/split' }) + '\n',
  );
  const r = cli(['logs', 'catalog', '--data-dir', dir]);
  t.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  t.equal(lines.length, 3);
  t.match(lines[0], /^\[catalog-a\] \d{4}-\d\d-\d\dT[\d:.]+Z INFO  sidecar started sidecar=catalog-a$/);
  t.match(lines[1], /^\[catalog-b\] \S+Z ACCESS inbound GET catalog\/items 503 UF,URX 12\.5ms protocol=HTTP\/1\.1 route=catalog\/split$/, 'the two files in time order');
  t.match(lines[2], /^\[catalog-a\] \S+Z WARN  endpoint ejected service=pricing reason="consecutive 5xx"$/);
  t.same(cli(['logs', 'catalog', '--data-dir', dir, '--tail', '1']).stdout.trim().split('\n').length, 1);
  t.match(cli(['logs', 'catalog', '--data-dir', dir, '--tail', '1']).stdout, /endpoint ejected/);
  const since = cli(['logs', 'catalog', '--data-dir', dir, '--since', '5m']).stdout.trim().split('\n');
  t.equal(since.length, 2, '--since 5m leaves out the line of an hour ago');
  t.equal(cli(['logs', 'catalog', '--data-dir', dir, '--since', 'yesterday']).code, 2);
  t.equal(cli(['logs', 'catalog', '--data-dir', dir, '--tail', 'x']).code, 2);

  // -f: from the last line (--tail 1), then what is appended.
  const f = spawn(process.execPath, [MAIN, 'logs', 'catalog', '--data-dir', dir, '-f', '--tail', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  f.stdout.on('data', (c: Buffer) => (out += c.toString()));
  t.teardown(() => f.kill('SIGKILL'));
  await eventually('the tail', async () => (/endpoint ejected/.test(out) ? true : undefined));
  t.notMatch(out, /sidecar started/, '-f starts from the tail');
  appendFileSync(a, JSON.stringify({ level: 50, time: Date.now(), msg: 'boom', err: { message: 'bad thing' } }) + '\n');
  await eventually('the new line', async () => (/ERROR boom err="bad thing"/.test(out) ? true : undefined));
  f.kill('SIGINT');
});
