// ts-node's transpiler for the tests (tsconfig.json's "ts-node" section, which tap's ts-node reads): esbuild
// instead of TypeScript's own transpileModule. Type-stripping only, like ts-node's transpile-only
// mode that tap already uses (`npm run typecheck` type-checks the tests); TypeScript's emit cost
// ~1.5 s of CPU per test process (loading and warming the compiler for every imported .ts file),
// esbuild a few ms: over the ~160 test files of `npm test` that was minutes of the run.
// Options follow tsconfig.json: ES2022 (class fields defined, as TypeScript does for that
// target), CommonJS, esModuleInterop, "use strict" in every module as tsc emits it (`strict`), and
// `await import(x)` as `require(x)` as tsc compiles it for CommonJS (kept as import(), Node's ESM
// loader would not find the extensionless .ts paths the tests import).
'use strict';
const esbuild = require('esbuild');

exports.create = function create() {
  return {
    transpile(input, { fileName }) {
      const r = esbuild.transformSync(input, {
        loader: fileName.endsWith('.tsx') ? 'tsx' : 'ts',
        format: 'cjs',
        target: 'es2022',
        platform: 'node',
        sourcemap: 'external',
        sourcefile: fileName,
        supported: { 'dynamic-import': false },
        tsconfigRaw: { compilerOptions: { useDefineForClassFields: true, esModuleInterop: true, alwaysStrict: true } },
      });
      return { outputText: r.code, sourceMapText: r.map };
    },
  };
};
