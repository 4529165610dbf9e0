// The tests' TypeScript loader (.taprc: `node-arg`, with tap's own TypeScript plugin turned off).
// That plugin runs ts-node, which loads the TypeScript compiler to read tsconfig.json even when it
// only strips types, in each test process and again in its ESM loader thread: an empty test file
// took 1.7 s of CPU, over the ~170 files of `npm test` minutes of the run. This strips types with
// esbuild (a few ms a file): `.ts` modules are compiled to CommonJS as they are required, with an
// inline source map (stack traces and coverage point at the .ts lines), and the loader hooks
// (tap-ts-hooks.mjs) hand a `.ts` entry point, or an extensionless import of one, to that hook.
//
// Options follow tsconfig.json: ES2022 (class fields defined, as TypeScript does for that target),
// CommonJS, esModuleInterop, "use strict" in every module as tsc emits it (`strict`), and
// `await import(x)` as `require(x)`, as tsc compiles it for CommonJS. `npm run typecheck`
// type-checks the tests.
import fs from 'node:fs';
import { createRequire, register } from 'node:module';

const require = createRequire(import.meta.url);
const esbuild = require('esbuild');

require.extensions['.ts'] = function compileTs(module, filename) {
  const { code } = esbuild.transformSync(fs.readFileSync(filename, 'utf8'), {
    loader: 'ts',
    format: 'cjs',
    target: 'es2022',
    platform: 'node',
    sourcemap: 'inline',
    sourcefile: filename,
    supported: { 'dynamic-import': false },
    tsconfigRaw: { compilerOptions: { useDefineForClassFields: true, esModuleInterop: true, alwaysStrict: true } },
  });
  module._compile(code, filename);
};
register('./tap-ts-hooks.mjs', import.meta.url);
