// Writes what is generated from the policy schema (src/policy/codegen.ts, compiled to dist/):
// src/policy/checks.generated.ts (the validators, TypeBox TypeCompiler code), deploy/schema/<kind>.json
// and docs/policy-reference.md. Run by `npm run build` after tsc; when the validators changed it
// compiles again so dist/ carries them. `--check` only reports files that are not current (exit 1).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const root = path.resolve(__dirname, '..');
const gen = require(path.join(root, 'dist/src/policy/codegen.js'));
const js = require(path.join(root, 'dist/src/policy/json-schema.js'));
const { KINDS } = require(path.join(root, 'dist/src/policy/schema.js'));

const files = [
  ['src/policy/checks.generated.ts', gen.generateChecks()],
  ['docs/policy-reference.md', gen.referenceDoc()],
  ...KINDS.map((k) => [`deploy/schema/${js.schemaFileName(k)}`, js.jsonSchemaText(k)]),
];
const check = process.argv.includes('--check');
const stale = [];
for (const [rel, text] of files) {
  const file = path.join(root, rel);
  const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined;
  if (old === text) continue;
  stale.push(rel);
  if (!check) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
  }
}
if (check) {
  if (stale.length > 0) {
    console.error(`not current (run npm run build): ${stale.join(', ')}`);
    process.exit(1);
  }
} else {
  if (stale.length > 0) console.error(`gen-policy: wrote ${stale.join(', ')}`);
  if (stale.includes('src/policy/checks.generated.ts')) execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
}
