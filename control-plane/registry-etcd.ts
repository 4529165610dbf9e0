/**
 * The endpoint registry shared by every control-plane replica, on etcd.
 *
 * Each replica keeps its own sidecars in a local `EndpointRegistry` (stream counts, grace
 * timers, ACK state; nothing on disk) and mirrors them to `<prefix>sidecars/<id>`, every key
 * attached to the replica's lease (TTL = the grace period, kept alive while the replica lives).
 * Every replica watches the prefix, so its snapshots carry the endpoints of every replica's
 * sidecars, and `sidecars()` (`meshlet status`) lists them all with the replica each is on.
 *
 * - A replica that dies stops renewing its lease: its sidecars' keys expire after the grace
 *   period, unless those sidecars reconnect to another replica first, which then writes the key
 *   on its own lease (taking it over).
 * - A replica only writes a disconnected sidecar's key, or deletes it, while the key is still on
 *   its own lease (a transaction compares the lease), so it never undoes a takeover.
 * - Once-only work, the garbage collection of registrations whose grace period is long past
 *   (their replica lost etcd while it should have removed them), runs on the replica elected
 *   under `<prefix>election/gc` (an etcd lease-based election).
 * - etcd unreachable: the local view keeps working (sidecars stay in the snapshots); writes are
 *   retried until etcd answers. A lost lease (etcd away longer than the grace period) is
 *   replaced and every local sidecar written again.
 */
import * as os from 'node:os';
import { EventEmitter } from 'node:events';
import type { Etcd3, Lease, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../src/core/clock';
import type { Endpoint } from '../src/policy/types';
import { etcdFailure, DEFAULT_ETCD_PREFIX } from './store-etcd';
import {
  DEFAULT_GRACE_MS,
  EndpointRegistry,
  EndpointSets,
  validIdentity,
  type Registry,
  type SidecarIdentity,
  type SidecarSession,
  type SidecarStatus,
} from './registry';

export interface EtcdRegistryOptions {
  prefix?: string;
  /** This replica's name in `meshlet status` (default: host name and pid). */
  replica?: string;
  graceMs?: number;
  clock?: Clock;
  logger?: Logger;
  /** How long status changes (ACKs) are gathered before one write (default 100 ms). */
  syncDelayMs?: number;
}

interface Remote {
  status: SidecarStatus;
  modRevision: string;
  lease: string;
}

const TXN_CHUNK = 100;

function endpointShape(r: Remote): string {
  const s = r.status;
  return JSON.stringify([s.service, s.address, s.port, s.labels, s.spiffeId, s.connected, s.connectedAt, s.disconnectedAt, s.replica, r.lease]);
}

export function defaultReplicaName(): string {
  return `${os.hostname()}-${process.pid}`;
}

export class EtcdRegistry implements Registry {
  readonly graceMs: number;
  readonly replica: string;
  private readonly client: Etcd3;
  private readonly root: string;
  private readonly prefix: string;
  private readonly local: EndpointRegistry;
  private readonly clock: Clock;
  private readonly logger?: Logger;
  private readonly syncDelayMs: number;
  private readonly remote = new Map<string, Remote>();
  /** Service -> the ids of `remote` records of that service. */
  private readonly remoteByService = new Map<string, Set<string>>();
  /**
   * The endpoints snapshots carry, per service: recomputed only for the services an event touched
   * (a watch event, a local connect), and the same arrays while they come out the same.
   */
  private readonly sets = new EndpointSets({ services: () => this.services(), statusesOf: (service) => this.statusesOf(service) });
  /** What this replica last wrote for each of its sidecars (JSON), on `leaseId`. */
  private readonly written = new Map<string, string>();
  /** Local sidecars whose record may differ from what was written (`allDirty`: every one): a sync looks at these only. */
  private readonly dirty = new Set<string>();
  private allDirty = true;
  private readonly events = new EventEmitter();
  private lease: Lease | undefined;
  private leaseId: string | undefined;
  private watcher: Watcher | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> | undefined;
  private resync = false;
  private failures = 0;
  private gcTimer: NodeJS.Timeout | undefined;
  private campaign: ReturnType<ReturnType<Etcd3['election']>['campaign']> | undefined;
  private leader = false;
  private closed = false;

  private constructor(client: Etcd3, local: EndpointRegistry, opts: EtcdRegistryOptions) {
    this.client = client;
    this.local = local;
    this.prefix = opts.prefix ?? DEFAULT_ETCD_PREFIX;
    this.root = `${this.prefix}sidecars/`;
    this.replica = opts.replica ?? defaultReplicaName();
    this.graceMs = local.graceMs;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    this.syncDelayMs = opts.syncDelayMs ?? 100;
    this.events.setMaxListeners(0);
  }

  /** Grants this replica's lease, lists every replica's sidecars and watches them. */
  static async open(client: Etcd3, opts: EtcdRegistryOptions = {}): Promise<EtcdRegistry> {
    const local = await EndpointRegistry.open('.', { persist: false, graceMs: opts.graceMs ?? DEFAULT_GRACE_MS, clock: opts.clock, logger: opts.logger });
    const r = new EtcdRegistry(client, local, opts);
    local.onChange((services) => {
      if (services) for (const svc of services) r.sets.touch(svc);
      else r.sets.touchAll();
      r.scheduleSync(0);
      r.maybeChanged();
    });
    await r.grantLease();
    await r.load();
    r.startElection();
    return r;
  }

  onChange(listener: (services?: readonly string[]) => void): () => void {
    this.events.on('change', listener);
    return () => this.events.off('change', listener);
  }

  connect(identity: SidecarIdentity): SidecarSession {
    const s = this.local.connect(identity);
    // Connected or not decides between this replica's record and another's (a takeover).
    const touched = () => {
      this.dirty.add(identity.id);
      this.sets.touch(identity.service);
      const now = this.local.peek(identity.id)?.service;
      if (now !== undefined && now !== identity.service) this.sets.touch(now);
      this.scheduleSync(0);
      this.maybeChanged();
    };
    touched();
    return {
      id: s.id,
      disconnect: () => {
        s.disconnect();
        touched();
      },
      leave: () => {
        s.leave();
        touched();
      },
      certified: (spiffeId: string) => {
        s.certified(spiffeId);
        touched();
      },
    };
  }

  recordSent(id: string, version: string): void {
    this.local.recordSent(id, version);
    this.dirty.add(id);
    this.scheduleSync();
  }

  recordAck(id: string, version: string): void {
    this.local.recordAck(id, version);
    this.dirty.add(id);
    this.scheduleSync();
  }

  recordNack(id: string, version: string, reason: string): void {
    this.local.recordNack(id, version, reason);
    this.dirty.add(id);
    this.scheduleSync();
  }

  /** The same array until some service's endpoints change (driven by the watch and by local connects). */
  endpoints(): Endpoint[] {
    return this.sets.endpoints();
  }

  endpointsByService(): ReadonlyMap<string, readonly Endpoint[]> {
    return this.sets.byService();
  }

  sidecars(): SidecarStatus[] {
    return [...this.merged().values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  get(id: string): SidecarStatus | undefined {
    const s = this.mergedOne(id);
    return s ? { ...s, labels: { ...s.labels } } : undefined;
  }

  connectedCount(): number {
    let n = 0;
    for (const id of this.remote.keys()) if (this.mergedOne(id)?.connected) n++;
    for (const svc of [...this.local.services()])
      for (const s of this.local.statusesOf(svc)) if (!this.remote.has(s.id) && s.connected) n++;
    return n;
  }

  /** Resolves once every local change has been written to etcd (or the write failed). */
  async flush(): Promise<void> {
    if (this.syncTimer) {
      clearTimeout(this.syncTimer);
      this.syncTimer = undefined;
      await this.sync();
    }
    while (this.syncing) await this.syncing;
  }

  /**
   * Stops watching and campaigning. The lease is not revoked: this replica's sidecars keep their
   * endpoints for the grace period, long enough to reconnect to another replica.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush().catch(() => undefined);
    this.closed = true;
    if (this.syncTimer) clearTimeout(this.syncTimer);
    if (this.gcTimer) clearInterval(this.gcTimer);
    await this.local.close();
    await this.campaign?.resign().catch(() => undefined);
    await this.watcher?.cancel().catch(() => undefined);
    // Stop keep-alives without revoking the lease (etcd3's release() does exactly that).
    this.lease?.release();
    this.events.removeAllListeners();
  }

  // ------------------------------------------------------------------------------ internals

  /** Per id: this replica's own record while it holds the sidecar, else etcd's. */
  private merged(): Map<string, SidecarStatus> {
    const out = new Map<string, SidecarStatus>();
    for (const [id, r] of this.remote) {
      // Our own keys: the local registry is the fresher copy (and knows when one has gone).
      if (this.isOwn(r)) continue;
      out.set(id, { ...r.status, labels: { ...r.status.labels } });
    }
    for (const s of this.local.sidecars()) {
      const other = out.get(s.id);
      if (other && other.connected && !s.connected) continue;
      out.set(s.id, { ...s, replica: this.replica });
    }
    return out;
  }

  /** Whether a remote record is this replica's own (on its current lease): the local registry has the fresher copy. */
  private isOwn(r: Remote): boolean {
    return r.status.replica === this.replica && r.lease === this.leaseId;
  }

  /** One sidecar as `merged()` has it (not copied; `replica` set only on another replica's records). */
  private mergedOne(id: string): SidecarStatus | undefined {
    const r = this.remote.get(id);
    const other = r && !this.isOwn(r) ? r.status : undefined;
    const mine = this.local.peek(id);
    if (mine && !(other && other.connected && !mine.connected)) return mine.replica === this.replica ? mine : { ...mine, replica: this.replica };
    return other;
  }

  private services(): Set<string> {
    return new Set([...this.remoteByService.keys(), ...this.local.services()]);
  }

  /** The sidecars of `service`, merged as `merged()` does. */
  private statusesOf(service: string): SidecarStatus[] {
    const ids = new Set(this.remoteByService.get(service));
    for (const s of this.local.statusesOf(service)) ids.add(s.id);
    const out: SidecarStatus[] = [];
    for (const id of ids) {
      const s = this.mergedOne(id);
      if (s && s.service === service) out.push(s);
    }
    return out;
  }

  private indexRemote(id: string, service: string | undefined, add: boolean): void {
    if (service === undefined) return;
    this.sets.touch(service);
    let set = this.remoteByService.get(service);
    if (add) {
      if (!set) this.remoteByService.set(service, (set = new Set()));
      set.add(id);
    } else if (set) {
      set.delete(id);
      if (set.size === 0) this.remoteByService.delete(service);
    }
  }

  /** Emits `change` when the endpoint set (what snapshots carry) changed. */
  private maybeChanged(): void {
    if (!this.sets.takeChange()) return;
    try {
      this.events.emit('change');
    } catch (err) {
      this.logger?.error({ err }, 'registry change listener failed');
    }
  }

  private key(id: string): string {
    return this.root + encodeURIComponent(id);
  }

  private async grantLease(): Promise<void> {
    const ttl = Math.max(2, Math.ceil(this.graceMs / 1000));
    const lease = this.client.lease(ttl, { autoKeepAlive: true });
    lease.on('lost', (err) => {
      if (this.closed || this.lease !== lease) return;
      this.logger?.warn({ err: etcdFailure(err) }, 'etcd lease lost; granting a new one and writing every sidecar again');
      this.lease = undefined;
      this.leaseId = undefined;
      this.written.clear();
      this.allDirty = true;
      // Which records are this replica's own changed.
      this.sets.touchAll();
      this.maybeChanged();
      void this.regrant();
    });
    try {
      this.leaseId = await lease.grant();
    } catch (err) {
      lease.release();
      throw err;
    }
    this.lease = lease;
    this.sets.touchAll();
    this.maybeChanged();
    this.logger?.info({ replica: this.replica, lease: this.leaseId, ttlSeconds: ttl }, 'endpoint registry lease granted');
  }

  private regranting = false;

  /** One loop at a time: grants a new lease, then writes every local sidecar on it. */
  private async regrant(): Promise<void> {
    if (this.regranting) return;
    this.regranting = true;
    try {
      await this.regrantLoop();
    } finally {
      this.regranting = false;
    }
  }

  private async regrantLoop(): Promise<void> {
    for (let delay = 200; !this.closed; delay = Math.min(delay * 2, 5000)) {
      try {
        await this.grantLease();
        this.scheduleSync(0);
        return;
      } catch (err) {
        this.logger?.warn({ err: etcdFailure(err), retryInMs: delay }, 'could not grant an etcd lease');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private async load(): Promise<void> {
    const res = await this.client.getAll().prefix(this.root).exec();
    this.remote.clear();
    this.remoteByService.clear();
    this.sets.touchAll();
    for (const kv of res.kvs) void this.putRemote(kv.key.toString(), kv.value, kv.mod_revision, kv.lease);
    this.maybeChanged();
    this.watcher = await this.client.watch().prefix(this.root).startRevision(String(Number(res.header.revision) + 1)).create();
    this.watcher.on('put', (kv) => {
      // Most writes are push status (ACKs): only recompute the endpoint set when what it is made of changed.
      if (this.putRemote(kv.key.toString(), kv.value, kv.mod_revision, kv.lease)) this.maybeChanged();
    });
    this.watcher.on('delete', (kv) => {
      const id = this.idOf(kv.key.toString());
      if (id === undefined) return;
      const gone = this.remote.get(id);
      if (gone) this.indexRemote(id, gone.status.service, false);
      this.remote.delete(id);
      // Our own key went (lease expiry while etcd was away, or GC): write it again if we still hold the sidecar.
      if (this.written.delete(id)) {
        this.dirty.add(id);
        this.scheduleSync(0);
      }
      this.maybeChanged();
    });
    this.watcher.on('error', (err) => {
      this.logger?.warn({ err: etcdFailure(err) }, 'etcd registry watch failed; listing again');
      void this.watcher?.cancel().catch(() => undefined);
      void this.relist();
    });
  }

  private async relist(): Promise<void> {
    for (let delay = 200; !this.closed; delay = Math.min(delay * 2, 5000)) {
      try {
        await this.load();
        return;
      } catch (err) {
        this.logger?.warn({ err: etcdFailure(err), retryInMs: delay }, 'etcd registry relist failed');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private idOf(key: string): string | undefined {
    if (!key.startsWith(this.root)) return undefined;
    try {
      return decodeURIComponent(key.slice(this.root.length));
    } catch {
      return undefined;
    }
  }

  /** Records a sidecar key; true if what endpoints are made of (identity, liveness, replica) changed. */
  private putRemote(key: string, value: Buffer, modRevision: string, lease: string): boolean {
    const id = this.idOf(key);
    if (id === undefined) return false;
    let raw: unknown;
    try {
      raw = JSON.parse(value.toString('utf8'));
    } catch {
      this.logger?.warn({ key }, 'unreadable sidecar record in etcd ignored');
      return false;
    }
    const ident = validIdentity(raw);
    if (!ident || ident.id !== id) return false;
    const r = raw as SidecarStatus;
    const status: SidecarStatus = { ...r, ...ident, adminPort: Number(r.adminPort) || undefined, connected: r.connected === true };
    const before = this.remote.get(id);
    const now: Remote = { status, modRevision, lease };
    this.remote.set(id, now);
    if (before && endpointShape(before) === endpointShape(now)) return false;
    if (before) this.indexRemote(id, before.status.service, false);
    this.indexRemote(id, status.service, true);
    return true;
  }

  private scheduleSync(delay = this.syncDelayMs): void {
    if (this.closed) return;
    if (this.syncing) {
      this.resync = true;
      return;
    }
    if (this.syncTimer) {
      if (delay > 0) return;
      clearTimeout(this.syncTimer);
    }
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      void this.sync();
    }, delay);
  }

  /** Writes what changed among this replica's sidecars since the last write. */
  private sync(): Promise<void> {
    if (this.syncing) {
      this.resync = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      try {
        await this.syncOnce();
        this.failures = 0;
      } catch (err) {
        this.failures++;
        if (this.failures === 1 || this.failures % 20 === 0)
          this.logger?.warn({ err: etcdFailure(err) }, 'could not write sidecars to etcd; retrying (traffic is unaffected)');
        this.resync = true;
      } finally {
        this.syncing = undefined;
      }
      if (this.resync && !this.closed) {
        this.resync = false;
        this.scheduleSync(this.failures > 0 ? Math.min(200 * 2 ** Math.min(this.failures, 5), 5000) : 0);
      }
    })();
    return this.syncing;
  }

  private async syncOnce(): Promise<void> {
    const lease = this.leaseId;
    if (!lease) throw new Error('no etcd lease yet');
    // Only the sidecars something happened to (an ACK, a connect) are serialised and compared.
    const ids = this.allDirty ? [...this.local.ids()] : [...this.dirty];
    this.allDirty = false;
    this.dirty.clear();
    try {
      await this.write(lease, ids);
    } catch (err) {
      // What was not written is looked at again on the next attempt.
      for (const id of ids) this.dirty.add(id);
      throw err;
    }
  }

  private async write(lease: string, ids: readonly string[]): Promise<void> {
    const puts: { id: string; json: string }[] = [];
    const guarded: { id: string; json: string | null }[] = [];
    for (const id of ids) {
      const s = this.local.peek(id);
      if (!s) continue;
      const json = JSON.stringify({ ...s, replica: this.replica });
      if (this.written.get(id) === json) continue;
      // A connected sidecar is ours: take the key over. A disconnected one only while the key is still ours.
      if (s.connected) puts.push({ id, json });
      else guarded.push({ id, json });
    }
    // Gone from the local registry (left, or its grace period ended): delete its key if still ours.
    for (const id of this.written.keys()) if (!this.local.peek(id)) guarded.push({ id, json: null });

    for (let i = 0; i < puts.length; i += TXN_CHUNK) {
      const chunk = puts.slice(i, i + TXN_CHUNK);
      await this.client.kv.txn({ success: chunk.map((p) => ({ request_put: { key: Buffer.from(this.key(p.id)), value: Buffer.from(p.json), lease } })) });
      for (const p of chunk) this.written.set(p.id, p.json);
    }
    await Promise.all(
      guarded.map(async (g) => {
        const key = Buffer.from(this.key(g.id));
        const res = await this.client.kv.txn({
          compare: [{ key, target: 'Lease', result: 'Equal', lease }],
          success: [g.json === null ? { request_delete_range: { key } } : { request_put: { key, value: Buffer.from(g.json), lease } }],
        });
        if (g.json === null || !res.succeeded) this.written.delete(g.id);
        else this.written.set(g.id, g.json);
      }),
    );
  }

  private startElection(): void {
    if (this.closed) return;
    const ttl = Math.max(2, Math.ceil(this.graceMs / 1000));
    const campaign = this.client.election(`${this.prefix}election/gc`, ttl).campaign(this.replica);
    this.campaign = campaign;
    campaign.on('elected', () => {
      this.leader = true;
      this.logger?.info({ replica: this.replica }, 'elected to run the endpoint garbage collection');
    });
    campaign.on('error', (err) => {
      this.leader = false;
      if (this.closed) return;
      this.logger?.warn({ err: etcdFailure(err) }, 'election campaign failed; campaigning again');
      setTimeout(() => this.startElection(), 1000).unref();
    });
    if (!this.gcTimer) {
      this.gcTimer = setInterval(() => void this.collectGarbage(), Math.max(1000, this.graceMs / 2));
      this.gcTimer.unref();
    }
  }

  /** On the elected replica only: removes registrations whose grace period ended long ago. */
  private async collectGarbage(): Promise<void> {
    if (!this.leader || this.closed) return;
    const now = this.clock.now();
    for (const [id, r] of this.remote) {
      const s = r.status;
      if (s.connected || !s.expiresAt) continue;
      const exp = Date.parse(s.expiresAt);
      if (!(exp + this.graceMs < now)) continue;
      const key = Buffer.from(this.key(id));
      try {
        const res = await this.client.kv.txn({
          compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: r.modRevision }],
          success: [{ request_delete_range: { key } }],
        });
        if (res.succeeded) this.logger?.info({ sidecar: id, replica: s.replica }, 'expired sidecar registration removed');
      } catch (err) {
        this.logger?.debug({ err: etcdFailure(err) }, 'garbage collection write failed');
        return;
      }
    }
  }
}
