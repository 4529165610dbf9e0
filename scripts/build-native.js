// Builds the native addons in native/ with node-gyp (npm's own copy), against the Node headers
// installed on the machine when there are some (no download). The sidecar needs
// native/original-dst to learn where an iptables-redirected connection was going.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const candidates = [
  process.env.npm_execpath && path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter(Boolean);
const gyp = candidates.find((p) => fs.existsSync(p));
// Only `meshlet sidecar --intercept` (iptables mode) needs the addons: without a compiler the rest
// of meshlet still builds and runs, and --intercept says what is missing. CI sets
// MESHLET_REQUIRE_NATIVE=1 so a broken addon fails the build there.
const required = process.env.MESHLET_REQUIRE_NATIVE === '1';
const giveUp = (msg) => {
  console.error(`build-native: ${msg}${required ? '' : ' (skipped: only `meshlet sidecar --intercept` needs it)'}`);
  process.exit(required ? 1 : 0);
};
if (!gyp) giveUp('node-gyp not found (it ships with npm); looked in:\n  ' + candidates.join('\n  '));
const args = [gyp, 'rebuild'];
const nodedir = process.env.npm_config_nodedir || (fs.existsSync('/usr/include/node/node_api.h') ? '/usr' : undefined);
if (nodedir) args.push(`--nodedir=${nodedir}`);
for (const dir of ['original-dst']) {
  const cwd = path.join(root, 'native', dir);
  const out = path.join(cwd, 'build', 'Release', dir.replace(/-/g, '_') + '.node');
  const src = fs.readdirSync(cwd).filter((f) => /\.(c|gyp)$/.test(f)).map((f) => fs.statSync(path.join(cwd, f)).mtimeMs);
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= Math.max(...src)) continue; // up to date
  const r = spawnSync(process.execPath, args, { cwd, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) giveUp(`building native/${dir} failed; it needs python3, make and a C compiler (apt-get install python3 make g++)`);
}
