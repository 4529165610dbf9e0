// Bundles the dashboard (control-plane/ui/) with esbuild into dist/ui: one script and one
// stylesheet, content-hashed under assets/ (served as immutable), and index.html pointing at them
// (served with no-cache). Everything the page needs is in the bundle: no CDN, no web fonts.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const esbuild = require('esbuild');

const root = path.resolve(__dirname, '..');
const src = path.join(root, 'control-plane', 'ui');
const out = path.join(root, 'dist', 'ui');

async function main() {
  fs.rmSync(out, { recursive: true, force: true });
  const result = await esbuild.build({
    entryPoints: { app: path.join(src, 'main.tsx') },
    bundle: true,
    minify: true,
    sourcemap: 'linked',
    format: 'esm',
    target: ['chrome110', 'firefox110', 'safari16'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    outdir: path.join(out, 'assets'),
    entryNames: '[name]-[hash]',
    metafile: true,
    legalComments: 'linked',
    logLevel: 'warning',
  });
  const outputs = Object.keys(result.metafile.outputs).map((f) => path.relative(out, path.resolve(root, f)));
  const js = outputs.find((f) => f.endsWith('.js'));
  const css = outputs.find((f) => f.endsWith('.css'));
  if (!js || !css) throw new Error(`build-ui: expected a .js and a .css output, got ${outputs.join(', ')}`);
  const html = fs.readFileSync(path.join(src, 'index.html'), 'utf8').replace('%APP_JS%', js).replace('%APP_CSS%', css);
  fs.writeFileSync(path.join(out, 'index.html'), html);
  const size = (f) => fs.statSync(path.join(out, f)).size;
  if (process.env.MESHLET_UI_VERBOSE) console.log(`build-ui: ${js} ${size(js)} B, ${css} ${size(css)} B`);
}

main().catch((err) => {
  console.error(`build-ui: ${err.message}`);
  process.exit(1);
});
