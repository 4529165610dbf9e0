// Copies non-TypeScript runtime assets (the .proto files, with their folders) next to the compiled JavaScript.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const root = path.resolve(__dirname, '..');
const pairs = [['src/proto', 'dist/src/proto']];
function copyProtos(from, to) {
  fs.mkdirSync(to, { recursive: true });
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    if (e.isDirectory()) copyProtos(path.join(from, e.name), path.join(to, e.name));
    else if (e.name.endsWith('.proto')) fs.copyFileSync(path.join(from, e.name), path.join(to, e.name));
  }
}
for (const [from, to] of pairs) copyProtos(path.join(root, from), path.join(root, to));
// The CLI runs as a program (its shebang carries the Node flags the sidecar wants).
fs.chmodSync(path.join(root, 'dist/src/cli/main.js'), 0o755);
