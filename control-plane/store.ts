/**
 * The embedded, durable resource store: one JSON file per resource under
 * `<dataDir>/store/<Kind>/<name>.json` (the name percent-encoded; a name too long for a file name,
 * `@<SHA-256 of the name>.json`: see `resourceFileName`), holding the resource's wire form plus the
 * metadata the store owns (`resourceVersion`, `creationTimestamp`).
 *
 * - Every commit gets the next store-global revision (etcd-style: a multi-resource commit is one
 *   revision); a resource's `metadata.resourceVersion` is the revision that last changed it.
 *   The counter lives in `<dataDir>/store/revision` and never goes backwards across restarts.
 * - A commit resolves only once it is on disk (temp file, fsync, rename, fsync dir). Multi-resource
 *   commits are journalled (`batch.json`) first and replayed at load, so they are all-or-nothing
 *   even across `kill -9`.
 * - Mutations are serialised; the check-then-write of create/update/delete preconditions (and any
 *   validation passed to `commit`) runs inside the lock, against the state it will change.
 *
 * - Integrity: every resource file and the journal carry a SHA-256 of their content
 *   (`{"sha256": ..., "resource": ...}`; files written before checksums, a bare resource, still
 *   load). At load, any file that is unreadable, fails its checksum or holds the wrong resource
 *   stops the store from opening (`StoreCorruptError`, naming every file and how to recover): a
 *   control plane must never push a snapshot with a policy silently missing. `repair: true`
 *   (`meshlet control-plane --repair`) sets such files aside as `<file>.corrupt-<ms>` and opens.
 * - A write that fails part-way (ENOSPC, EIO) has an unknown outcome: the store re-reads the
 *   touched files so memory agrees with the disk, and the commit fails with `outcome_unknown`
 *   (the API's 503 "outcome unknown; re-read before retrying").
 *
 * Reads are served from memory; returned resources are deep-frozen.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { KINDS, type Kind } from '../src/policy/types';
import { systemClock, type Clock } from '../src/core/clock';
import {
  atomicWriteFile,
  canonicalJson,
  durableUnlink,
  ensureDir,
  fsyncDir,
  isTempFile,
  removeTempFiles,
  TEMP_NAME_EXTRA,
} from './fsutil';

/** A resource in its wire form, as the store keeps it. */
export interface WireResource {
  apiVersion: string;
  kind: Kind;
  metadata: WireMetadata;
  spec?: unknown;
  [field: string]: unknown;
}

interface WireMetadata {
  name: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  [field: string]: unknown;
}

/** `unavailable`: the backing store (etcd) cannot be reached or has no quorum; nothing was written. `outcome_unknown`: a write failed part-way. */
export type StoreErrorCode = 'conflict' | 'not_found' | 'invalid' | 'unavailable' | 'outcome_unknown';

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  constructor(code: StoreErrorCode, message: string) {
    super(message);
    this.name = 'StoreError';
    this.code = code;
  }
}

/** Files the store found damaged at load: it refuses to open rather than serve without them. */
export class StoreCorruptError extends Error {
  constructor(
    readonly files: { file: string; problem: string }[],
    dataDir: string,
  ) {
    super(
      `the store in ${dataDir} has ${files.length} damaged file(s); refusing to serve a snapshot without what they hold:\n` +
        files.map((f) => `  ${f.file}: ${f.problem}`).join('\n') +
        `\nTo recover: restore these files from a backup, or run \`meshlet control-plane --repair --data-dir ${dataDir}\` to set them aside ` +
        `(renamed <file>.corrupt-<time>; the resources they held are gone until re-applied with \`meshlet apply\`).`,
    );
    this.name = 'StoreCorruptError';
  }
}

export type StoreOp =
  /** Fails with `conflict` if the resource exists. */
  | { op: 'create'; resource: WireResource }
  /** Fails with `not_found` if missing, `conflict` if `expectedVersion` is set and differs. */
  | { op: 'update'; resource: WireResource; expectedVersion?: string }
  /** Create or update; with `expectedVersion` set, the resource must exist at that version. */
  | { op: 'put'; resource: WireResource; expectedVersion?: string }
  /** Fails with `not_found` if missing, `conflict` if `expectedVersion` is set and differs. */
  | { op: 'delete'; kind: Kind; name: string; expectedVersion?: string };

type ChangeAction = 'created' | 'updated' | 'deleted' | 'unchanged';

export interface OpResult {
  kind: Kind;
  name: string;
  action: ChangeAction;
  /** The stored resource after the op (for `deleted`: the resource as it was). */
  resource: WireResource;
}

export interface CommitResult {
  /** The store revision after the commit (unchanged if nothing changed). */
  revision: number;
  results: OpResult[];
}

export interface ChangeEvent {
  revision: number;
  /** Only the ops that changed something. */
  changes: OpResult[];
}

/** The read side, also handed to `commit`'s planner. */
export interface StoreView {
  readonly revision: number;
  get(kind: Kind, name: string): WireResource | undefined;
  list(kind: Kind): WireResource[];
  all(): WireResource[];
}

/**
 * What the control plane needs of a store; two implementations: `FileStore` (this file, the
 * embedded default) and `EtcdStore` (store-etcd.ts, shared by every replica). Both give every
 * commit one store-global revision, `metadata.resourceVersion` = the revision that last changed
 * the resource, all-or-nothing commits whose `plan` sees the state it changes, and `onChange`
 * events for every commit (for etcd: made through any replica).
 */
export interface Store extends StoreView {
  onChange(listener: (e: ChangeEvent) => void): () => void;
  create(resource: WireResource): Promise<OpResult>;
  update(resource: WireResource, expectedVersion?: string): Promise<OpResult>;
  put(resource: WireResource, expectedVersion?: string): Promise<OpResult>;
  delete(kind: Kind, name: string, expectedVersion?: string): Promise<OpResult>;
  commit(plan: (view: StoreView) => StoreOp[] | Promise<StoreOp[]>): Promise<CommitResult>;
  close(): Promise<void>;
}

export interface FileStoreOptions {
  clock?: Clock;
  logger?: Logger;
  /** Set damaged files aside (renamed `.corrupt-<ms>`) and open anyway, instead of refusing to open. */
  repair?: boolean;
}

const REVISION_FILE = 'revision';
const JOURNAL_FILE = 'batch.json';
const NAME_MAX = 253;
/**
 * The longest resource file name written as the name itself: most file systems cap a name at 255
 * bytes, and the temp file written beside it (fsutil.ts), or a damaged file set aside by --repair
 * (`.corrupt-<ms>`), is up to 22 bytes longer.
 */
const FILE_NAME_MAX = 255 - Math.max(TEMP_NAME_EXTRA, '.corrupt-'.length + 13);
/** Starts a hashed file name; never the start of an encodeURIComponent result (`@` encodes as %40). */
const HASHED = '@';

/**
 * A resource's file in its kind's directory: `encodeURIComponent(name).json` (as always), or, when
 * that would be too long for the file system (a name near the 253 characters names may have, or
 * one that percent-encoding makes up to three times longer), `@<SHA-256 of the name>.json`. Every
 * file holds the resource and so its real name, checked at load; the two forms never collide.
 */
export function resourceFileName(name: string): string {
  const plain = legacyFileName(name);
  return Buffer.byteLength(plain) <= FILE_NAME_MAX ? plain : `${HASHED}${sha256(name)}.json`;
}

/** The only form before hashed names (and still the form of names short enough). */
function legacyFileName(name: string): string {
  return `${encodeURIComponent(name)}.json`;
}

/**
 * What both stores share: the in-memory copy of every resource (the file store's loaded files,
 * the etcd store's watch cache), reads from it, change events, and commits run one at a time under
 * one lock. A store supplies `commitLocked`: validating and writing a plan's ops, all or nothing.
 */
export abstract class CachedStore implements Store {
  protected readonly data = new Map<Kind, Map<string, WireResource>>();
  protected rev = 0;
  protected lock: Promise<unknown> = Promise.resolve();
  protected readonly events = new EventEmitter();

  constructor() {
    for (const k of KINDS) this.data.set(k, new Map());
    this.events.setMaxListeners(0);
  }

  protected abstract commitLocked(plan: (view: StoreView) => StoreOp[] | Promise<StoreOp[]>): Promise<CommitResult>;
  abstract close(): Promise<void>;

  get revision(): number {
    return this.rev;
  }

  get(kind: Kind, name: string): WireResource | undefined {
    return this.data.get(kind)?.get(name);
  }

  list(kind: Kind): WireResource[] {
    const m = this.data.get(kind);
    if (!m) return [];
    return [...m.keys()].sort().map((n) => m.get(n) as WireResource);
  }

  /** Every resource, by kind (in KINDS order) then name. */
  all(): WireResource[] {
    return KINDS.flatMap((k) => this.list(k));
  }

  /** Called after every commit that changed something, once it is durable. */
  onChange(listener: (e: ChangeEvent) => void): () => void {
    this.events.on('change', listener);
    return () => this.events.off('change', listener);
  }

  create(resource: WireResource): Promise<OpResult> {
    return this.one({ op: 'create', resource });
  }

  update(resource: WireResource, expectedVersion?: string): Promise<OpResult> {
    return this.one({ op: 'update', resource, expectedVersion });
  }

  put(resource: WireResource, expectedVersion?: string): Promise<OpResult> {
    return this.one({ op: 'put', resource, expectedVersion });
  }

  delete(kind: Kind, name: string, expectedVersion?: string): Promise<OpResult> {
    return this.one({ op: 'delete', kind, name, expectedVersion });
  }

  private async one(op: StoreOp): Promise<OpResult> {
    const r = await this.commit(() => [op]);
    return r.results[0] as OpResult;
  }

  /**
   * Runs `plan` under the store's lock against the current state, then applies the ops it
   * returns, all or nothing. `plan` may throw to abort (nothing is written). Ops that change
   * nothing (same content) are reported `unchanged` and do not bump the revision.
   */
  commit(plan: (view: StoreView) => StoreOp[] | Promise<StoreOp[]>): Promise<CommitResult> {
    const run = this.lock.then(() => this.commitLocked(plan));
    this.lock = run.catch(() => undefined);
    return run;
  }

}

export class FileStore extends CachedStore {
  private readonly root: string;
  private readonly clock: Clock;
  private readonly logger?: Logger;
  private readonly repair: boolean;
  private readonly dataDir: string;
  private closed = false;

  private constructor(dataDir: string, opts: FileStoreOptions) {
    super();
    this.root = path.join(dataDir, 'store');
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    this.repair = opts.repair === true;
    this.dataDir = dataDir;
  }

  /** Opens (creating if needed) the store in `dataDir`, cleaning up after any crash. */
  static async open(dataDir: string, opts: FileStoreOptions = {}): Promise<FileStore> {
    const s = new FileStore(dataDir, opts);
    await s.load();
    return s;
  }

  /** Waits for pending commits; later commits are refused. */
  async close(): Promise<void> {
    this.closed = true;
    await this.lock;
    this.events.removeAllListeners();
  }

  // ------------------------------------------------------------------------------ internals

  protected async commitLocked(plan: (view: StoreView) => StoreOp[] | Promise<StoreOp[]>): Promise<CommitResult> {
    if (this.closed) throw new Error('store is closed');
    const ops = await plan(this);
    const nextRev = this.rev + 1;
    const now = new Date(this.clock.now()).toISOString();
    // Work on a shadow of the touched entries so later ops in one commit see earlier ones.
    const shadow = new Map<string, WireResource | null>();
    const read = (kind: Kind, name: string): WireResource | undefined => {
      const k = `${kind}/${name}`;
      if (shadow.has(k)) return shadow.get(k) ?? undefined;
      return this.get(kind, name);
    };
    const results: OpResult[] = [];
    for (const op of ops) {
      if (op.op === 'delete') {
        checkKindName(op.kind, op.name);
        const cur = read(op.kind, op.name);
        if (!cur) throw new StoreError('not_found', `${op.kind} "${op.name}" not found`);
        checkVersion(cur, op.kind, op.name, op.expectedVersion);
        shadow.set(`${op.kind}/${op.name}`, null);
        results.push({ kind: op.kind, name: op.name, action: 'deleted', resource: cur });
        continue;
      }
      const res = op.resource;
      checkKindName(res?.kind, res?.metadata?.name);
      const { kind } = res;
      const name = res.metadata.name;
      const cur = read(kind, name);
      if (op.op === 'create' && cur) throw new StoreError('conflict', `${kind} "${name}" already exists`);
      if (op.op === 'update' && !cur) throw new StoreError('not_found', `${kind} "${name}" not found`);
      const expected = op.op === 'create' ? undefined : op.expectedVersion;
      if (expected !== undefined) {
        if (!cur)
          throw new StoreError('conflict', `${kind} "${name}" does not exist, but resourceVersion ${expected} was expected`);
        checkVersion(cur, kind, name, expected);
      }
      if (cur && sameContent(cur, res)) {
        results.push({ kind, name, action: 'unchanged', resource: cur });
        continue;
      }
      const stored = deepFreeze(withStoreMetadata(res, String(nextRev), cur?.metadata.creationTimestamp ?? now));
      shadow.set(`${kind}/${name}`, stored);
      results.push({ kind, name, action: cur ? 'updated' : 'created', resource: stored });
    }
    const changes = results.filter((r) => r.action !== 'unchanged');
    if (changes.length === 0) return { revision: this.rev, results };

    try {
      await this.persist(nextRev, changes);
    } catch (err) {
      // Part of the work may be on disk (a rename done, then ENOSPC on the next file): make memory
      // agree with what a restart would load, and say the outcome is unknown.
      await this.resync(nextRev, changes.map((c) => ({ kind: c.kind, name: c.name })));
      this.logger?.error({ err, revision: nextRev, resources: changes.map((c) => `${c.kind}/${c.name}`) }, 'store write failed part-way; outcome unknown');
      throw new StoreError('outcome_unknown', `the write failed part-way (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): outcome unknown; re-read before retrying`);
    }
    // Durable: now make it visible.
    for (const c of changes) {
      const m = this.data.get(c.kind) as Map<string, WireResource>;
      const final = shadow.get(`${c.kind}/${c.name}`);
      if (final) m.set(c.name, final);
      else m.delete(c.name);
    }
    this.rev = nextRev;
    const event: ChangeEvent = { revision: nextRev, changes };
    try {
      this.events.emit('change', event);
    } catch (err) {
      this.logger?.error({ err }, 'store change listener failed');
    }
    return { revision: nextRev, results };
  }

  private async persist(revision: number, changes: OpResult[]): Promise<void> {
    // Only the final state of each key matters.
    const finals = new Map<string, { kind: Kind; name: string; resource: WireResource | null }>();
    for (const c of changes) {
      finals.set(`${c.kind}/${c.name}`, { kind: c.kind, name: c.name, resource: c.action === 'deleted' ? null : c.resource });
    }
    const entries = [...finals.values()];
    if (entries.length === 1) {
      const e = entries[0] as (typeof entries)[number];
      await Promise.all([this.writeRevision(revision), this.writeEntry(e.kind, e.name, e.resource)]);
      return;
    }
    // All or nothing: journal, apply, then drop the journal.
    const journal = path.join(this.root, JOURNAL_FILE);
    // 0600 when it carries a private key (a TLSCertificate), as that resource's own file is.
    await atomicWriteFile(journal, JSON.stringify({ revision, entries, sha256: sha256(JSON.stringify({ revision, entries })) }), entries.some((e) => e.kind === 'TLSCertificate') ? 0o600 : 0o644);
    await this.applyEntries(revision, entries);
    await durableUnlink(journal);
  }

  private async applyEntries(
    revision: number,
    entries: { kind: Kind; name: string; resource: WireResource | null }[],
  ): Promise<void> {
    await Promise.all([this.writeRevision(revision), ...entries.map((e) => this.writeEntry(e.kind, e.name, e.resource))]);
  }

  private writeRevision(revision: number): Promise<void> {
    return atomicWriteFile(path.join(this.root, REVISION_FILE), JSON.stringify({ revision }) + '\n');
  }

  private async writeEntry(kind: Kind, name: string, resource: WireResource | null): Promise<void> {
    const file = this.fileFor(kind, name);
    // A TLSCertificate holds a private key: readable by the control plane's user alone.
    if (resource) await atomicWriteFile(file, JSON.stringify({ sha256: sha256(JSON.stringify(resource)), resource }, null, 2) + '\n', kind === 'TLSCertificate' ? 0o600 : 0o644);
    else await durableUnlink(file);
  }

  /** Reads one resource file: the resource, or throws saying what is wrong with it. */
  private async readEntry(file: string, kind: Kind, expectedFile: string): Promise<WireResource> {
    const text = await fsp.readFile(file, 'utf8');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new Error(`not valid JSON (truncated or overwritten?): ${(err as Error).message}`);
    }
    let res = parsed as WireResource;
    const env = parsed as { sha256?: unknown; resource?: unknown };
    if (env && typeof env === 'object' && 'sha256' in env && 'resource' in env) {
      res = env.resource as WireResource;
      if (sha256(JSON.stringify(res)) !== env.sha256) throw new Error('checksum mismatch: the content is not what was written');
    }
    checkKindName(res?.kind, res?.metadata?.name);
    // A long name's file from before hashed names (`legacyFileName`) is read too, and renamed at load.
    if (res.kind !== kind || (resourceFileName(res.metadata.name) !== expectedFile && legacyFileName(res.metadata.name) !== expectedFile))
      throw new Error(`holds ${res.kind}/${res.metadata.name}`);
    return res;
  }

  /** After a failed write: memory takes what is on disk for the touched resources. */
  private async resync(revision: number, keys: { kind: Kind; name: string }[]): Promise<void> {
    let changed = false;
    for (const { kind, name } of keys) {
      const m = this.data.get(kind) as Map<string, WireResource>;
      const file = this.fileFor(kind, name);
      try {
        const res = await this.readEntry(file, kind, path.basename(file));
        if (m.get(name)?.metadata.resourceVersion !== res.metadata.resourceVersion) changed = true;
        m.set(name, deepFreeze(res));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          if (m.delete(name)) changed = true;
        } else this.logger?.error({ err, file }, 'store file unreadable after a failed write; memory keeps the previous version');
      }
    }
    if (changed) this.rev = Math.max(this.rev, revision);
  }

  private fileFor(kind: Kind, name: string): string {
    return path.join(this.root, kind, resourceFileName(name));
  }

  /**
   * A long name's file written before hashed names: renamed to its hashed name (atomic, so a crash
   * leaves one or the other, both readable). Should both exist, the newer resourceVersion is kept.
   */
  private async migrate(kind: Kind, file: string, res: WireResource): Promise<void> {
    const m = this.data.get(kind) as Map<string, WireResource>;
    const name = res.metadata.name;
    const target = this.fileFor(kind, name);
    const cur = m.get(name);
    if (cur && Number(cur.metadata.resourceVersion) >= Number(res.metadata.resourceVersion)) {
      await durableUnlink(file);
      this.logger?.warn({ kind, name, removed: file, kept: target }, 'store: an older copy of a resource under its pre-hash file name removed');
      return;
    }
    await fsp.rename(file, target);
    await fsyncDir(path.dirname(target));
    m.set(name, deepFreeze(res));
    this.logger?.info({ kind, name, from: path.basename(file), to: path.basename(target) }, 'store: a long resource name moved to its hashed file name');
  }

  private async load(): Promise<void> {
    await ensureDir(this.root);
    await removeTempFiles(this.root);
    let rev = 0;
    try {
      const text = await fsp.readFile(path.join(this.root, REVISION_FILE), 'utf8');
      const n = Number((JSON.parse(text) as { revision?: unknown }).revision);
      if (Number.isSafeInteger(n) && n > 0) rev = n;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.logger?.warn({ err }, 'store revision file unreadable; recovering the revision from the resources');
    }
    const damaged: { file: string; problem: string }[] = [];
    /** Long names' files from before hashed names: renamed once the store is known to open. */
    const legacy: { kind: Kind; file: string; resource: WireResource }[] = [];
    for (const kind of KINDS) {
      const dir = path.join(this.root, kind);
      await ensureDir(dir);
      const removed = await removeTempFiles(dir);
      if (removed > 0) this.logger?.info({ kind, removed }, 'removed temp files left by an interrupted write');
      const m = this.data.get(kind) as Map<string, WireResource>;
      for (const file of (await fsp.readdir(dir)).sort()) {
        if (isTempFile(file) || !file.endsWith('.json')) continue;
        const full = path.join(dir, file);
        let res: WireResource;
        try {
          res = await this.readEntry(full, kind, file);
        } catch (err) {
          // Renames are atomic, so this is outside damage (disk, hand edit, a bad restore).
          damaged.push({ file: full, problem: (err as Error).message });
          continue;
        }
        const rv = Number(res.metadata.resourceVersion);
        if (Number.isSafeInteger(rv) && rv > rev) rev = rv;
        if (file !== resourceFileName(res.metadata.name)) {
          legacy.push({ kind, file: full, resource: res });
          continue;
        }
        m.set(res.metadata.name, deepFreeze(res));
      }
    }
    // An interrupted multi-resource commit: its journal is complete (atomic rename), so finish it.
    const journalPath = path.join(this.root, JOURNAL_FILE);
    let journal: { revision: number; entries: { kind: Kind; name: string; resource: WireResource | null }[] } | undefined;
    try {
      const j = JSON.parse(await fsp.readFile(journalPath, 'utf8')) as typeof journal & { sha256?: unknown };
      if (j && j.sha256 !== undefined && sha256(JSON.stringify({ revision: j.revision, entries: j.entries })) !== j.sha256)
        throw new Error('checksum mismatch: the content is not what was written');
      journal = j;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') damaged.push({ file: journalPath, problem: `interrupted multi-resource commit unreadable: ${(err as Error).message}` });
    }
    if (damaged.length > 0) {
      if (!this.repair) throw new StoreCorruptError(damaged, this.dataDir);
      for (const d of damaged) {
        const aside = `${d.file}.corrupt-${this.clock.now()}`;
        await fsp.rename(d.file, aside);
        this.logger?.warn({ file: d.file, problem: d.problem, movedTo: aside }, 'repair: damaged store file set aside; re-apply what it held');
      }
    }
    for (const l of legacy) await this.migrate(l.kind, l.file, l.resource);
    if (journal && Array.isArray(journal.entries)) {
      const entries = journal.entries.filter((e) => {
        try {
          checkKindName(e.kind, e.name);
          return true;
        } catch {
          return false;
        }
      });
      rev = Math.max(rev, Number(journal.revision) || 0);
      await this.applyEntries(rev, entries);
      for (const e of entries) {
        const m = this.data.get(e.kind) as Map<string, WireResource>;
        if (e.resource) m.set(e.name, deepFreeze(e.resource));
        else m.delete(e.name);
      }
      await durableUnlink(journalPath);
      this.logger?.info({ revision: journal.revision, resources: entries.length }, 'completed an interrupted commit');
    }
    this.rev = rev;
    await fsyncDir(this.root);
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function checkKindName(kind: unknown, name: unknown): void {
  if (typeof kind !== 'string' || !(KINDS as readonly string[]).includes(kind))
    throw new StoreError('invalid', `unknown kind ${JSON.stringify(kind)}`);
  if (typeof name !== 'string' || name.length === 0 || name.length > NAME_MAX || /[/\\\0]/.test(name) || name === '.' || name === '..')
    throw new StoreError('invalid', `invalid name ${JSON.stringify(name)}`);
}

export function checkVersion(cur: WireResource, kind: Kind, name: string, expected: string | undefined): void {
  if (expected === undefined) return;
  if (cur.metadata.resourceVersion !== expected)
    throw new StoreError(
      'conflict',
      `${kind} "${name}" has been modified: resourceVersion is ${cur.metadata.resourceVersion}, not ${expected}`,
    );
}

/** The resource's content, without the metadata the store owns. */
export function contentOf(r: WireResource): WireResource {
  const { resourceVersion: _rv, creationTimestamp: _ct, ...meta } = r.metadata;
  return { ...r, metadata: meta as WireMetadata };
}

export function sameContent(a: WireResource, b: WireResource): boolean {
  return canonicalJson(contentOf(a)) === canonicalJson(contentOf(b));
}

export function withStoreMetadata(r: WireResource, resourceVersion: string, creationTimestamp: string): WireResource {
  const c = structuredClone(contentOf(r));
  return { ...c, metadata: { ...c.metadata, resourceVersion, creationTimestamp } };
}

export function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}
