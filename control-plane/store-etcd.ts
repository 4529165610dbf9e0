/**
 * The shared resource store on etcd: every control-plane replica reads and writes the same
 * resources, so a policy applied through any replica reaches the sidecars of all of them.
 *
 * Layout under the prefix (default `/meshlet/`):
 *   resources/<Kind>/<urlencoded name>   the wire resource, without `resourceVersion`
 *   resources/.commit                    written by every commit (its value: the commit's id)
 *
 * - `metadata.resourceVersion` is the key's etcd mod revision; a commit is one etcd transaction,
 *   so a multi-resource commit is one revision, all or nothing (as in the file store).
 * - Reads are served from a watch cache: the prefix is listed once, then watched from the next
 *   revision. etcd being unreachable stops writes (`StoreError('unavailable')`, a 503 at the API)
 *   but not reads; when etcd returns, the watch resumes from the last revision it delivered.
 * - A commit's `plan` runs against the cache; the transaction only applies if `.commit` has not
 *   moved since the cache saw it (no other replica committed in between). Otherwise the cache
 *   catches up and the plan runs again, so preconditions (`expectedVersion`, existence,
 *   reference checks) always hold against the state the commit changes: of two replicas
 *   updating one resource at the same version, exactly one wins and the other gets a conflict.
 * - A transaction retried after a lost answer (leader change) is recognised by its commit id, so
 *   an acknowledged write is never lost and never applied twice.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Etcd3, isRecoverableError, type IOptions, type Watcher } from 'etcd3';
import { circuitBreaker, ConsecutiveBreaker, handleWhen, retry } from 'cockatiel';
import type { Logger } from 'pino';
import { KINDS, type Kind } from '../src/policy/types';
import { systemClock, type Clock } from '../src/core/clock';
import {
  CachedStore,
  StoreError,
  checkKindName,
  checkVersion,
  contentOf,
  deepFreeze,
  sameContent,
  type ChangeEvent,
  type CommitResult,
  type OpResult,
  type StoreOp,
  type StoreView,
  type WireResource,
} from './store';

export const DEFAULT_ETCD_PREFIX = '/meshlet/';

/** How to reach etcd, as etcd clients (etcdctl) take it. */
export interface EtcdConnection {
  /** `host:port` or `http(s)://host:port`, one per member. */
  endpoints: string[];
  /** PEM files: the CA that signed the members' certificates; a client certificate and key (mTLS). */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  username?: string;
  password?: string;
  /** Where meshlet's keys live (default `/meshlet/`). */
  prefix?: string;
  /** Deadline of each unary etcd call (default 2000 ms, two attempts); a write that misses it is a 503. */
  requestTimeoutMs?: number;
}

/** An etcd3 client for `conn`: TLS when a CA (or client certificate) is given, auth when a user is. */
export function connectEtcd(conn: EtcdConnection): Etcd3 {
  const tls = conn.caFile !== undefined || conn.certFile !== undefined;
  const hosts = conn.endpoints.map((e) => (/^https?:\/\//.test(e) ? e : `${tls ? 'https' : 'http'}://${e}`));
  const timeout = conn.requestTimeoutMs ?? 2000;
  const read = (f: string) => {
    try {
      return readFileSync(f);
    } catch (err) {
      throw new Error(`cannot read ${f}: ${(err as Error).message}`);
    }
  };
  const opts: IOptions = {
    hosts,
    dialTimeout: timeout,
    // Watches and lease keep-alives are streams: no deadline. Everything else has one.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    faultHandling: {
      // One more attempt (on another member) for a connection-level failure; a write without
      // quorum is a 503 after two deadlines, not three.
      global: retry(handleWhen(isRecoverableError), { maxAttempts: 1 }),
      // A member that failed is tried again after 1 s (etcd3's default: 5 s), so a cluster that
      // regains its quorum is used at once.
      host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) }),
    },
  };
  if (tls) {
    opts.credentials = {
      rootCertificate: conn.caFile ? read(conn.caFile) : Buffer.alloc(0),
      ...(conn.certFile ? { certChain: read(conn.certFile) } : {}),
      ...(conn.keyFile ? { privateKey: read(conn.keyFile) } : {}),
    };
  }
  if (conn.username !== undefined) opts.auth = { username: conn.username, password: conn.password ?? '' };
  return new Etcd3(opts);
}

/** A human message for an etcd failure, for 503 bodies and logs. */
export function etcdFailure(err: unknown): string {
  const m = (err as Error)?.message ?? String(err);
  return m.replace(/\s+/g, ' ').slice(0, 300);
}

export interface EtcdStoreOptions {
  prefix?: string;
  clock?: Clock;
  logger?: Logger;
}

const COMMIT_KEY = '.commit';
const MAX_ATTEMPTS = 20;
/** etcd's default --max-txn-ops is 128; one is the commit marker. */
const MAX_TXN_OPS = 127;

/** `rev` (CachedStore) is the revision of the last commit the cache has seen (the `.commit` key's mod revision). */
export class EtcdStore extends CachedStore {
  private readonly client: Etcd3;
  private readonly root: string;
  private readonly clock: Clock;
  private readonly logger?: Logger;
  /** The last etcd revision applied to the cache. */
  private seen = 0;
  private watcher: Watcher | undefined;
  private waiters: { revision: number; resolve: () => void }[] = [];
  private closed = false;
  private reloading: Promise<void> | undefined;

  private constructor(client: Etcd3, opts: EtcdStoreOptions) {
    super();
    this.client = client;
    this.root = `${opts.prefix ?? DEFAULT_ETCD_PREFIX}resources/`;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
  }

  /** Lists the resources and starts watching them. Fails if etcd cannot be reached now. */
  static async open(client: Etcd3, opts: EtcdStoreOptions = {}): Promise<EtcdStore> {
    const s = new EtcdStore(client, opts);
    await s.load();
    return s;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.lock;
    await this.watcher?.cancel().catch(() => undefined);
    this.watcher = undefined;
    this.events.removeAllListeners();
    for (const w of this.waiters.splice(0)) w.resolve();
  }

  // ------------------------------------------------------------------------------ internals

  private key(kind: Kind, name: string): string {
    return `${this.root}${kind}/${encodeURIComponent(name)}`;
  }

  protected async commitLocked(plan: (view: StoreView) => StoreOp[] | Promise<StoreOp[]>): Promise<CommitResult> {
    if (this.closed) throw new Error('store is closed');
    const commitId = randomUUID();
    for (let attempt = 1; ; attempt++) {
      const ops = await plan(this);
      const { results, finals } = this.evaluate(ops);
      if (finals.size === 0) return { revision: this.rev, results };
      if (finals.size > MAX_TXN_OPS) throw new StoreError('invalid', `one commit can change at most ${MAX_TXN_OPS} resources on etcd, not ${finals.size}`);

      const commitKey = Buffer.from(this.root + COMMIT_KEY);
      let res;
      try {
        res = await this.client.kv.txn({
          compare: [{ key: commitKey, target: 'Mod', result: 'Equal', mod_revision: String(this.rev) }],
          success: [
            { request_put: { key: commitKey, value: Buffer.from(commitId) } },
            ...[...finals.entries()].map(([k, v]) =>
              v === null
                ? { request_delete_range: { key: Buffer.from(k) } }
                : { request_put: { key: Buffer.from(k), value: Buffer.from(JSON.stringify(v)) } },
            ),
          ],
          failure: [{ request_range: { key: commitKey } }],
        });
      } catch (err) {
        // The answer is lost, not necessarily the write: if etcd says it was ours after all, it was.
        if (await this.committed(commitKey, commitId)) {
          const rv = await this.committedRevision(commitKey);
          await this.caughtUp(rv);
          return { revision: rv, results: results.map((r) => (r.action === 'unchanged' || r.action === 'deleted' ? r : { ...r, resource: this.get(r.kind, r.name) ?? r.resource })) };
        }
        throw new StoreError(
          'unavailable',
          `the etcd store is unavailable (${etcdFailure(err)}); the write was not acknowledged, and etcd may still apply it once it has a quorum again: read it back, or retry it (a PUT is idempotent)`,
        );
      }
      let revision = Number(res.header.revision);
      let ours = res.succeeded;
      if (!ours) {
        // Either another replica committed since our cache saw `.commit`, or this is our own
        // transaction, applied on an attempt whose answer was lost (the client retried it).
        const kv = res.responses[0]?.response_range?.kvs?.[0];
        revision = kv ? Number(kv.mod_revision) : this.rev;
        if (kv && kv.value.toString() === commitId) ours = true;
      }
      await this.caughtUp(revision);
      if (ours) {
        const rv = revision;
        const done = results.map((r): OpResult => {
          if (r.action === 'unchanged' || r.action === 'deleted') return r;
          return { ...r, resource: this.get(r.kind, r.name) ?? deepFreeze(withVersion(r.resource, String(rv))) };
        });
        return { revision: rv, results: done };
      }
      if (attempt >= MAX_ATTEMPTS)
        throw new StoreError('conflict', `other control-plane replicas kept writing; gave up after ${attempt} attempts, try again`);
      this.logger?.debug({ attempt }, 'etcd commit raced another replica; planning again');
      // Back off a random while (growing, capped) so that two replicas with queued writes stop
      // taking turns at losing the same race (after a leader change, say).
      await sleep(Math.random() * Math.min(250, 5 * 2 ** attempt));
    }
  }

  private async committed(commitKey: Buffer, commitId: string): Promise<boolean> {
    try {
      const r = await this.client.kv.range({ key: commitKey });
      return r.kvs[0]?.value.toString() === commitId;
    } catch {
      return false;
    }
  }

  private async committedRevision(commitKey: Buffer): Promise<number> {
    const r = await this.client.kv.range({ key: commitKey });
    return Number(r.kvs[0]?.mod_revision ?? this.rev);
  }

  /** Checks `ops` against the cache, in order; the final value of each touched key (null: delete). */
  private evaluate(ops: StoreOp[]): { results: OpResult[]; finals: Map<string, WireResource | null> } {
    const now = new Date(this.clock.now()).toISOString();
    const shadow = new Map<string, WireResource | null>();
    const read = (kind: Kind, name: string): WireResource | undefined => {
      const k = this.key(kind, name);
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
        shadow.set(this.key(op.kind, op.name), null);
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
        if (!cur) throw new StoreError('conflict', `${kind} "${name}" does not exist, but resourceVersion ${expected} was expected`);
        checkVersion(cur, kind, name, expected);
      }
      if (cur && sameContent(cur, res)) {
        results.push({ kind, name, action: 'unchanged', resource: cur });
        continue;
      }
      const c = structuredClone(contentOf(res));
      const stored: WireResource = { ...c, metadata: { ...c.metadata, creationTimestamp: cur?.metadata.creationTimestamp ?? now } };
      shadow.set(this.key(kind, name), stored);
      results.push({ kind, name, action: cur ? 'updated' : 'created', resource: stored });
    }
    return { results, finals: shadow };
  }

  /** Resolves once the cache has applied `revision` (or after 5 s: etcd answered, the watch lags). */
  private caughtUp(revision: number): Promise<void> {
    if (this.seen >= revision || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const w = { revision, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          this.logger?.warn({ revision, seen: this.seen }, 'the etcd watch is behind; answering anyway');
          void this.reload();
          resolve();
        }
      }, 5000).unref();
    });
  }

  private advance(revision: number): void {
    if (revision <= this.seen) return;
    this.seen = revision;
    const ready = this.waiters.filter((w) => w.revision <= revision);
    this.waiters = this.waiters.filter((w) => w.revision > revision);
    for (const w of ready) w.resolve();
  }

  private decode(kvKey: string, value: Buffer, modRevision: string): { kind: Kind; name: string; resource: WireResource } | undefined {
    const rest = kvKey.slice(this.root.length);
    const slash = rest.indexOf('/');
    if (slash < 0) return undefined;
    const kind = rest.slice(0, slash) as Kind;
    let name: string;
    try {
      name = decodeURIComponent(rest.slice(slash + 1));
      const r = JSON.parse(value.toString('utf8')) as WireResource;
      checkKindName(r?.kind, r?.metadata?.name);
      if (r.kind !== kind || r.metadata.name !== name) throw new Error(`holds ${r.kind}/${r.metadata.name}`);
      return { kind, name, resource: deepFreeze(withVersion(r, modRevision)) };
    } catch (err) {
      this.logger?.error({ err, key: kvKey }, 'unreadable resource in etcd ignored');
      return undefined;
    }
  }

  /** Lists everything at one revision, replaces the cache (reporting the differences), and watches from there. */
  private async load(): Promise<void> {
    const res = await this.client.getAll().prefix(this.root).exec();
    const revision = Number(res.header.revision);
    const fresh = new Map<Kind, Map<string, WireResource>>(KINDS.map((k) => [k, new Map()]));
    let commitRev = 0;
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      if (key === this.root + COMMIT_KEY) {
        commitRev = Number(kv.mod_revision);
        continue;
      }
      const d = this.decode(key, kv.value, kv.mod_revision);
      if (d) fresh.get(d.kind)?.set(d.name, d.resource);
    }
    const changes: OpResult[] = [];
    for (const kind of KINDS) {
      const before = this.data.get(kind) as Map<string, WireResource>;
      const after = fresh.get(kind) as Map<string, WireResource>;
      for (const [name, r] of after) {
        const b = before.get(name);
        if (!b) changes.push({ kind, name, action: 'created', resource: r });
        else if (b.metadata.resourceVersion !== r.metadata.resourceVersion) changes.push({ kind, name, action: 'updated', resource: r });
      }
      for (const [name, r] of before) if (!after.has(name)) changes.push({ kind, name, action: 'deleted', resource: r });
      this.data.set(kind, after);
    }
    this.rev = Math.max(this.rev, commitRev);
    await this.watcher?.cancel().catch(() => undefined);
    this.seen = Math.max(this.seen, revision - 1);
    this.advance(revision);
    if (changes.length > 0 && this.seen > 0) this.emit({ revision: this.rev, changes });
    this.watcher = await this.client.watch().prefix(this.root).startRevision(String(revision + 1)).create();
    this.watcher.on('data', (r) => {
      try {
        this.onWatch(r.events, Number(r.header.revision));
      } catch (err) {
        this.logger?.error({ err }, 'etcd watch event failed');
      }
    });
    this.watcher.on('disconnected', (err) => this.logger?.warn({ err: etcdFailure(err) }, 'etcd watch disconnected; serving reads from the cache'));
    this.watcher.on('connected', () => this.logger?.info({ revision: this.seen }, 'etcd watch connected'));
    // Not recoverable (e.g. the revision was compacted away): list again.
    this.watcher.on('error', (err) => {
      this.logger?.warn({ err: etcdFailure(err) }, 'etcd watch failed; listing the store again');
      void this.reload();
    });
  }

  private reload(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.reloading ??= (async () => {
      for (let delay = 200; !this.closed; delay = Math.min(delay * 2, 5000)) {
        try {
          await this.load();
          break;
        } catch (err) {
          this.logger?.warn({ err: etcdFailure(err), retryInMs: delay }, 'etcd store reload failed');
          await new Promise((r) => setTimeout(r, delay));
        }
      }
    })().finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private onWatch(events: { type: string; kv: { key: Buffer; value: Buffer; mod_revision: string } }[], headerRevision: number): void {
    // One transaction is one revision; group the events by it.
    let group: OpResult[] = [];
    let groupRev = 0;
    const flush = () => {
      if (groupRev === 0) return;
      if (group.length > 0) this.emit({ revision: groupRev, changes: group });
      this.advance(groupRev);
      group = [];
    };
    for (const ev of events) {
      const rev = Number(ev.kv.mod_revision);
      const key = ev.kv.key.toString();
      // (A delete's kv carries the deleting revision as its mod_revision.)
      if (rev !== groupRev) {
        flush();
        groupRev = rev;
      }
      if (key === this.root + COMMIT_KEY) {
        if (ev.type === 'Put') this.rev = Math.max(this.rev, rev);
        continue;
      }
      const rest = key.slice(this.root.length);
      const slash = rest.indexOf('/');
      if (slash < 0) continue;
      const kind = rest.slice(0, slash) as Kind;
      const m = this.data.get(kind);
      if (!m) continue;
      let name: string;
      try {
        name = decodeURIComponent(rest.slice(slash + 1));
      } catch {
        continue;
      }
      if (ev.type === 'Delete') {
        const cur = m.get(name);
        if (!cur) continue;
        m.delete(name);
        group.push({ kind, name, action: 'deleted', resource: cur });
      } else {
        const d = this.decode(key, ev.kv.value, ev.kv.mod_revision);
        if (!d) continue;
        const had = m.has(name);
        m.set(name, d.resource);
        group.push({ kind, name, action: had ? 'updated' : 'created', resource: d.resource });
      }
    }
    flush();
    this.advance(headerRevision);
  }

  private emit(e: ChangeEvent): void {
    try {
      this.events.emit('change', e);
    } catch (err) {
      this.logger?.error({ err }, 'store change listener failed');
    }
  }
}

function withVersion(r: WireResource, resourceVersion: string): WireResource {
  return { ...r, metadata: { ...r.metadata, resourceVersion } };
}
