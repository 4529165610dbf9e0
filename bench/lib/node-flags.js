'use strict';
/**
 * The Node flags a build of meshlet runs with, read from that build's `dist/src/cli/main.js`
 * shebang (src/cli/main.ts). test/unit/cli/node-flags.test.ts keeps the shebang equal to
 * `meshlet up`'s SIDECAR_NODE_FLAGS and to the Dockerfile's ENTRYPOINT, so a harness that starts
 * `node FLAGS main.js` (to add flags of its own: --trace-gc-nvp, --cpu-prof, a variant's) measures
 * the process users run, and an A/B of two builds gives each its own flags.
 */
const fs = require('node:fs');

/** The shebang's Node flags of `main` (a built main.js), e.g. ['--max-semi-space-size=8', ...]. */
function nodeFlagsOf(main) {
  const fd = fs.openSync(main, 'r');
  const buf = Buffer.alloc(512);
  const n = fs.readSync(fd, buf, 0, buf.length, 0);
  fs.closeSync(fd);
  const first = buf.toString('utf8', 0, n).split('\n', 1)[0];
  const m = /^#!\/usr\/bin\/env (?:-S )?node((?:\s+--\S+)*)\s*$/.exec(first);
  if (!m) throw new Error(`${main}: its first line is not \`#!/usr/bin/env -S node --flag ...\`: ${JSON.stringify(first)}`);
  return m[1].split(/\s+/).filter(Boolean);
}

/** argv for `process.execPath` to run `main` as the program would run: its own flags, then `args`. */
function meshletArgv(main, args) {
  return [...nodeFlagsOf(main), main, ...args];
}

module.exports = { nodeFlagsOf, meshletArgv };

if (require.main === module) {
  // For shell harnesses (bench/ab.sh): print a build's flags, space-separated.
  process.stdout.write(`${nodeFlagsOf(process.argv[2]).join(' ')}\n`);
}
