/** This build's version: `version` of the package.json this code ships in (found once, walking up). */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

function find(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    try {
      const p = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (p.name === 'meshlet' && p.version) return p.version;
    } catch {
      // not here: one level up
    }
    dir = path.dirname(dir);
  }
  return 'unknown';
}

export const VERSION = find();
