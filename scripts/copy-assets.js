// Copies non-TypeScript runtime assets (the .proto files) next to the compiled JavaScript.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const root = path.resolve(__dirname, '..');
const pairs = [['src/proto', 'dist/src/proto']];
for (const [from, to] of pairs) {
  fs.mkdirSync(path.join(root, to), { recursive: true });
  for (const f of fs.readdirSync(path.join(root, from))) {
    if (f.endsWith('.proto')) fs.copyFileSync(path.join(root, from, f), path.join(root, to, f));
  }
}
// The CLI runs as a program (its shebang carries the Node flags the sidecar wants).
fs.chmodSync(path.join(root, 'dist/src/cli/main.js'), 0o755);
