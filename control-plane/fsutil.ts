/**
 * Durable file writes for the control plane's data dir. A write is atomic (readers see the old
 * file or the new one, never a torn one) and durable (once the promise resolves, a crash or
 * power cut keeps it): write a temp file beside the target, fsync it, rename it over the
 * target, fsync the directory.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

/** Temp files carry this marker: `.<target>.tmp-<pid>-<8 hex digits>`. */
const TEMP_MARKER = '.tmp-';
const TEMP_FILE = /^\..*\.tmp-\d+-[0-9a-f]{8}$/;

/**
 * Whether a file is a temp file `atomicWriteFile` left (loaders delete them). Exactly that shape:
 * a resource named `a.tmp-b` is stored as `a.tmp-b.json`, which is not one.
 */
export function isTempFile(name: string): boolean {
  return TEMP_FILE.test(name);
}

/** How many bytes longer than its target's name a temp file's name can be (pids have at most 7 digits). */
export const TEMP_NAME_EXTRA = 1 + TEMP_MARKER.length + 7 + 1 + 8;

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** `mode` 0o600 for secrets (the CA key): the temp file is created with it, so no reader ever sees it wider. */
export async function atomicWriteFile(file: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}${TEMP_MARKER}${process.pid}-${randomBytes(4).toString('hex')}`);
  const fh = await fsp.open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fh.close();
  try {
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dir);
}

/** Removes `file` durably; resolves false when it did not exist. */
export async function durableUnlink(file: string): Promise<boolean> {
  try {
    await fsp.unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  await fsyncDir(path.dirname(file));
  return true;
}

/** mkdir -p, then fsync the parent of every directory it made, so the new entries survive a crash. */
export async function ensureDir(dir: string): Promise<void> {
  const first = await fsp.mkdir(dir, { recursive: true });
  if (first === undefined) return;
  let d = path.resolve(dir);
  const stop = path.dirname(path.resolve(first));
  for (;;) {
    const parent = path.dirname(d);
    await fsyncDir(parent);
    if (parent === stop || parent === d) break;
    d = parent;
  }
}

/** Deletes leftover temp files in `dir` (from a crash mid-write); returns how many. */
export async function removeTempFiles(dir: string): Promise<number> {
  let n = 0;
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (isTempFile(name)) {
      await fsp.rm(path.join(dir, name), { force: true });
      n++;
    }
  }
  return n;
}

/** JSON with object keys sorted at every level: equal values always give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v as object).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = sortKeys(x);
    }
    return out;
  }
  return v;
}
