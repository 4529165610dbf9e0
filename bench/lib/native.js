'use strict';
/**
 * The bench's C programs (bench/native/NAME.c: openloop, the fixed-rate generator; hiccup, the
 * platform-pause detector), built with `cc -O2` on first use and again whenever the source is
 * newer than the binary, into bench/native/build/ (git-ignored).
 */
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const DIR = path.join(__dirname, '..', 'native');

/** NAME's binary path, compiled if missing or older than its source. Throws if cc fails. */
function build(name, libs = []) {
  const src = path.join(DIR, `${name}.c`);
  const bin = path.join(DIR, 'build', name);
  const fresh = fs.existsSync(bin) && fs.statSync(bin).mtimeMs >= fs.statSync(src).mtimeMs;
  if (!fresh) {
    fs.mkdirSync(path.dirname(bin), { recursive: true });
    const tmp = `${bin}.${process.pid}`;
    execFileSync(process.env.CC || 'cc', ['-O2', '-Wall', '-o', tmp, src, ...libs], { stdio: ['ignore', 'inherit', 'inherit'] });
    fs.renameSync(tmp, bin);
  }
  return bin;
}

module.exports = { build };
