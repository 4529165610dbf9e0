// ESM loader hooks for the tests' TypeScript loader (tap-ts.mjs): a `.ts` module, or an
// extensionless specifier naming one (as the tests and sources import each other), is loaded as
// CommonJS, which Node hands to the `.ts` require hook tap-ts.mjs installed.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (err) {
    if (!(specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('file:')) || !context.parentURL) throw err;
    for (const suffix of ['.ts', '/index.ts']) {
      const url = new URL(specifier + suffix, context.parentURL);
      if (fs.existsSync(fileURLToPath(url))) return { url: url.href, format: 'commonjs', shortCircuit: true };
    }
    throw err;
  }
}

export async function load(url, context, next) {
  if (url.startsWith('file:') && url.endsWith('.ts')) return { format: 'commonjs', shortCircuit: true };
  return next(url, context);
}
