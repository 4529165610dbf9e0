/**
 * Where the control plane keeps what it must never push to a sidecar: the CA (its private key)
 * and the token hashes. One JSON document each, kept
 * - in a file under the data dir (one replica, or replicas given the same directory), or
 * - under `PREFIX/secrets/` in etcd, beside the resources (every replica on that etcd cluster
 *   shares one CA and one token set).
 *
 * Writes are compare-and-set on the version read, so two replicas (or a replica and the CLI)
 * never overwrite each other's change: the loser reads again and retries its own change.
 * A reader asks for the version cheaply before reading the whole document (the token store does
 * it at every verification); on etcd that answer is cached for `cacheMs` (default 1 s), which is
 * how long a token revoked through one replica may still verify on another.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { atomicWriteFile } from './fsutil';

export interface SecretDoc {
  /** Where it is, for messages (a file path or `etcd:KEY`). */
  readonly where: string;
  /** The current text and its version, or undefined when there is none. */
  read(): Promise<{ text: string; version: string } | undefined>;
  /** The current version (undefined: none), possibly cached briefly. */
  version(): Promise<string | undefined>;
  /**
   * Writes `text` if the document is still at `expected` (undefined: it must not exist); returns
   * the version written, or undefined when another writer got there first.
   */
  write(text: string, expected: string | undefined): Promise<string | undefined>;
}

/** A document in a file (mode 0600; its directory is made with `dirMode`). Version: mtime and size. */
export class FileSecret implements SecretDoc {
  readonly where: string;
  constructor(
    private readonly file: string,
    private readonly dirMode = 0o700,
  ) {
    this.where = file;
  }

  async read(): Promise<{ text: string; version: string } | undefined> {
    const version = await this.version();
    if (version === undefined) return undefined;
    try {
      return { text: await fsp.readFile(this.file, 'utf8'), version };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async version(): Promise<string | undefined> {
    try {
      const st = await fsp.stat(this.file);
      return `${st.mtimeMs}:${st.size}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async write(text: string, expected: string | undefined): Promise<string | undefined> {
    // Best effort between processes on one host (the CLI and a control plane): the rename is atomic.
    if ((await this.version()) !== expected) return undefined;
    await fsp.mkdir(path.dirname(this.file), { recursive: true, mode: this.dirMode });
    await atomicWriteFile(this.file, text, 0o600);
    return this.version();
  }
}

/** A document in one etcd key. Version: the key's mod revision. */
export class EtcdSecret implements SecretDoc {
  readonly where: string;
  private cached: { version: string | undefined; at: number } | undefined;

  constructor(
    private readonly client: Etcd3,
    private readonly key: string,
    private readonly cacheMs = 1000,
  ) {
    this.where = `etcd:${key}`;
  }

  async read(): Promise<{ text: string; version: string } | undefined> {
    const r = await this.client.kv.range({ key: Buffer.from(this.key) });
    const kv = r.kvs[0];
    this.cached = { version: kv ? String(kv.mod_revision) : undefined, at: Date.now() };
    return kv ? { text: kv.value.toString('utf8'), version: String(kv.mod_revision) } : undefined;
  }

  async version(): Promise<string | undefined> {
    if (this.cached && Date.now() - this.cached.at < this.cacheMs) return this.cached.version;
    try {
      const r = await this.client.kv.range({ key: Buffer.from(this.key), keys_only: true });
      const kv = r.kvs[0];
      this.cached = { version: kv ? String(kv.mod_revision) : undefined, at: Date.now() };
    } catch (err) {
      // etcd without quorum (or unreachable): keep verifying against what was read last, as the
      // store keeps serving reads from its watch cache; nobody can revoke meanwhile (that is a
      // write). Asked again after `cacheMs`. Never read at all: the caller gets the error.
      if (!this.cached) throw err;
      this.cached = { version: this.cached.version, at: Date.now() };
    }
    return this.cached.version;
  }

  async write(text: string, expected: string | undefined): Promise<string | undefined> {
    const key = Buffer.from(this.key);
    const res = await this.client.kv.txn({
      compare: [expected === undefined ? { key, target: 'Create', result: 'Equal', create_revision: '0' } : { key, target: 'Mod', result: 'Equal', mod_revision: expected }],
      success: [{ request_put: { key, value: Buffer.from(text) } }],
      failure: [],
    });
    this.cached = undefined;
    // The put's revision is the key's new mod revision: the version of exactly what we wrote.
    return res.succeeded ? String(res.header.revision) : undefined;
  }
}

/** etcd keys of the control plane's secrets, under the store's prefix. */
export const secretKeys = (prefix: string) => ({ ca: `${prefix}secrets/ca`, tokens: `${prefix}secrets/tokens` });

/**
 * A first start on etcd with a CA or tokens in the data dir (a control plane moved from the file
 * store): the etcd document starts as the file's, so existing certificates and tokens stay valid.
 * Nothing is done when etcd already has one.
 */
export async function seedFromFile(doc: SecretDoc, file: string): Promise<boolean> {
  if ((await doc.read()) !== undefined) return false;
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    return false;
  }
  return (await doc.write(text, undefined)) !== undefined;
}
