/**
 * `meshlet logs SERVICE` reads the per-sidecar log files `meshlet up` writes under
 * DATA_DIR/logs/SERVICE/, every instance prefixed by its id (`-o json`: the raw lines; the default
 * readable form is tested in test/integration/cli/logs.test.ts); `--access` keeps the access-log
 * lines; a service without logs is a clear error.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { cli, tmpDir } from '../lib/meshlet';

t.test('meshlet logs SERVICE', async (t) => {
  const dir = tmpDir('meshlet-logs-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'logs', 'catalog'), { recursive: true });
  const access = JSON.stringify({ log: 'access', method: 'GET', path: '/items', response_code: 200 });
  writeFileSync(path.join(dir, 'logs', 'catalog', 'catalog-v1-0.log'), `${JSON.stringify({ msg: 'sidecar started' })}\n${access}\n`);
  writeFileSync(path.join(dir, 'logs', 'catalog', 'catalog-v2-0.log'), `${JSON.stringify({ msg: 'snapshot applied' })}\n`);

  const all = cli(['logs', 'catalog', '--data-dir', dir, '-o', 'json']);
  t.equal(all.code, 0, all.stderr);
  t.same(all.stdout.trim().split('\n'), [
    `[catalog-v1-0] ${JSON.stringify({ msg: 'sidecar started' })}`,
    `[catalog-v1-0] ${access}`,
    `[catalog-v2-0] ${JSON.stringify({ msg: 'snapshot applied' })}`,
  ]);
  const acc = cli(['logs', 'catalog', '--access', '--data-dir', dir, '-o', 'json']);
  t.same(acc.stdout.trim().split('\n'), [`[catalog-v1-0] ${access}`], '--access: access-log lines only');

  const none = cli(['logs', 'pricing', '--data-dir', dir]);
  t.equal(none.code, 1);
  t.match(none.stderr, /no logs for service "pricing"/);
  t.equal(cli(['logs', '--data-dir', dir]).code, 2, 'no service: usage error');
  t.equal(cli(['logs', 'Bad/Name', '--data-dir', dir]).code, 2, 'not a service name: usage error');
});
