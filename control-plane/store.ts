/**
 * The embedded, durable resource store: one JSON file per resource under
 * `<dataDir>/store/<Kind>/<name>.json`, holding the resource's wire form plus the metadata the
 * store owns (`resourceVersion`, `creationTimestamp`).
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
 * Reads are served from memory; returned resources are deep-frozen.
 */
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

/** `unavailable`: the backing store (etcd) cannot be reached or has no quorum; nothing was written. */
export type StoreErrorCode = 'conflict' | 'not_found' | 'invalid' | 'unavailable';

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  constructor(code: StoreErrorCode, message: string) {
    super(message);
    this.name = 'StoreError';
    this.code = code;
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
}

const REVISION_FILE = 'revision';
const JOURNAL_FILE = 'batch.json';
const NAME_MAX = 253;

export class FileStore implements Store {
  private readonly root: string;
  private readonly clock: Clock;
  private readonly logger?: Logger;
  private readonly data = new Map<Kind, Map<string, WireResource>>();
  private rev = 0;
  private lock: Promise<unknown> = Promise.resolve();
  private readonly events = new EventEmitter();
  private closed = false;

  private constructor(dataDir: string, opts: FileStoreOptions) {
    this.root = path.join(dataDir, 'store');
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    for (const k of KINDS) this.data.set(k, new Map());
    this.events.setMaxListeners(0);
  }

  /** Opens (creating if needed) the store in `dataDir`, cleaning up after any crash. */
  static async open(dataDir: string, opts: FileStoreOptions = {}): Promise<FileStore> {
    const s = new FileStore(dataDir, opts);
    await s.load();
    return s;
  }

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

  /** Waits for pending commits; later commits are refused. */
  async close(): Promise<void> {
    this.closed = true;
    await this.lock;
    this.events.removeAllListeners();
  }

  // ------------------------------------------------------------------------------ internals

  private async commitLocked(plan: (view: StoreView) => StoreOp[] | Promise<StoreOp[]>): Promise<CommitResult> {
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

    await this.persist(nextRev, changes);
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
    await atomicWriteFile(journal, JSON.stringify({ revision, entries }));
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
    if (resource) await atomicWriteFile(file, JSON.stringify(resource, null, 2) + '\n');
    else await durableUnlink(file);
  }

  private fileFor(kind: Kind, name: string): string {
    return path.join(this.root, kind, `${encodeURIComponent(name)}.json`);
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
          res = JSON.parse(await fsp.readFile(full, 'utf8')) as WireResource;
          checkKindName(res?.kind, res?.metadata?.name);
          if (res.kind !== kind || `${encodeURIComponent(res.metadata.name)}.json` !== file)
            throw new Error(`holds ${res.kind}/${res.metadata.name}`);
        } catch (err) {
          // Renames are atomic, so this is outside damage; keep the file for a human, start anyway.
          const aside = `${full}.corrupt-${this.clock.now()}`;
          await fsp.rename(full, aside).catch(() => undefined);
          this.logger?.error({ err, file: full, movedTo: aside }, 'unreadable resource file set aside');
          continue;
        }
        const rv = Number(res.metadata.resourceVersion);
        if (Number.isSafeInteger(rv) && rv > rev) rev = rv;
        m.set(res.metadata.name, deepFreeze(res));
      }
    }
    // An interrupted multi-resource commit: its journal is complete (atomic rename), so finish it.
    const journalPath = path.join(this.root, JOURNAL_FILE);
    let journal: { revision: number; entries: { kind: Kind; name: string; resource: WireResource | null }[] } | undefined;
    try {
      journal = JSON.parse(await fsp.readFile(journalPath, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.logger?.error({ err }, 'unreadable store journal ignored');
        await durableUnlink(journalPath);
      }
    }
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
