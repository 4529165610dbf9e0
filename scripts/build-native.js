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
if (!gyp) {
  console.error('build-native: node-gyp not found (it ships with npm); looked in:\n  ' + candidates.join('\n  '));
  process.exit(1);
}
const args = [gyp, 'rebuild'];
const nodedir = process.env.npm_config_nodedir || (fs.existsSync('/usr/include/node/node_api.h') ? '/usr' : undefined);
if (nodedir) args.push(`--nodedir=${nodedir}`);
for (const dir of ['original-dst']) {
  const cwd = path.join(root, 'native', dir);
  const out = path.join(cwd, 'build', 'Release', dir.replace(/-/g, '_') + '.node');
  const src = fs.readdirSync(cwd).filter((f) => /\.(c|gyp)$/.test(f)).map((f) => fs.statSync(path.join(cwd, f)).mtimeMs);
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= Math.max(...src)) continue; // up to date
  const r = spawnSync(process.execPath, args, { cwd, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) {
    console.error(`build-native: building native/${dir} failed; it needs python3, make and a C compiler (apt-get install python3 make g++)`);
    process.exit(1);
  }
}
