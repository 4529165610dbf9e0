import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SIDECAR_NODE_FLAGS } from '../../../src/cli/up';

// The sidecar's V8 flags are written in three places users run it from: the `meshlet` program's
// shebang, the sidecars `meshlet up` starts, and the container image. A flag added to one and not
// the others (as --min-semi-space-size was, twice) changes how some users' sidecars collect garbage.
const ROOT = path.resolve(__dirname, '../../..');

t.test('the shebang, meshlet up and the Dockerfile give the sidecar the same Node flags', async (t) => {
  const shebang = fs.readFileSync(path.join(ROOT, 'src/cli/main.ts'), 'utf8').split('\n')[0] as string;
  const m = /^#!\/usr\/bin\/env -S node (.*)$/.exec(shebang);
  t.ok(m, `the shebang runs node with flags: ${shebang}`);
  const fromShebang = (m?.[1] ?? '').split(/\s+/).filter(Boolean);

  const entry = /^ENTRYPOINT (\[.*\])$/m.exec(fs.readFileSync(path.join(ROOT, 'deploy/Dockerfile'), 'utf8'));
  t.ok(entry, 'the Dockerfile has an exec-form ENTRYPOINT');
  const argv = JSON.parse(entry?.[1] ?? '[]') as string[];
  t.equal(argv[0], 'node');
  t.equal(argv[argv.length - 1], '/app/dist/src/cli/main.js');
  const fromDockerfile = argv.slice(1, -1);

  t.ok(fromShebang.length > 0, 'the shebang sets flags');
  t.same(SIDECAR_NODE_FLAGS, fromShebang, 'meshlet up: the shebang\'s flags');
  t.same(fromDockerfile, fromShebang, 'the image: the shebang\'s flags');

  // The bench harnesses start `node FLAGS main.js` with the flags read from the build's shebang.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const bench = require(path.join(ROOT, 'bench/lib/node-flags.js')) as { nodeFlagsOf(main: string): string[] };
  t.same(bench.nodeFlagsOf(path.join(ROOT, 'src/cli/main.ts')), fromShebang, 'bench/: the shebang\'s flags');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flags-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const odd = path.join(dir, 'main.js');
  fs.writeFileSync(odd, '#!/usr/bin/env node\n');
  t.same(bench.nodeFlagsOf(odd), [], 'a shebang without flags: none');
  fs.writeFileSync(odd, '"use strict";\n');
  t.throws(() => bench.nodeFlagsOf(odd), /first line/, 'no shebang: a clear error, not the defaults');
});
