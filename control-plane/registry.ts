/**
 * The endpoint registry: which sidecars exist, where their inbound listeners are, and how each
 * is doing with the snapshots pushed to it.
 *
 * A sidecar registers when its push stream opens. When its last stream closes, its endpoint
 * stays for a grace period (so a sidecar or control-plane blip never empties a service), then
 * leaves. The endpoint set is persisted (`<dataDir>/registry.json`, written atomically), so a
 * restarted control plane still knows every endpoint: they come back disconnected as of startup
 * and expire after the grace period unless their sidecar reconnects. Without this, the first
 * sidecar to reconnect would be pushed a snapshot without its peers.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { systemClock, type Clock, type Timer } from '../src/core/clock';
import type { Endpoint } from '../src/policy/types';
import { atomicWriteFile, ensureDir, removeTempFiles } from './fsutil';

export const DEFAULT_GRACE_MS = 10_000;
const FILE = 'registry.json';

/** What a sidecar says about itself when it connects. */
export interface SidecarIdentity {
  id: string;
  service: string;
  address: string;
  port: number;
  labels: Readonly<Record<string, string>>;
  buildVersion: string;
  /** The sidecar's admin port (metrics, stats); 0 or absent: unknown. */
  adminPort?: number;
  /**
   * Where the sidecar's push connection came from, as the control plane saw it. The control plane
   * fetches /stats (and lists Prometheus targets) only there, never at the self-declared `address`:
   * a sidecar cannot point the control plane at another host (SSRF).
   */
  peerAddress?: string;
  /**
   * The SPIFFE ID the control plane signed this sidecar a certificate for (set once the first
   * certificate is signed, kept across reconnects): callers dial it over mTLS expecting exactly it.
   */
  spiffeId?: string;
  /** A gateway (`meshlet gateway`): shown by `meshlet status`, never published as an endpoint. */
  kind?: 'gateway';
}

/** A sidecar as `meshlet status` shows it. Times are ISO 8601. */
export interface SidecarStatus extends SidecarIdentity {
  connected: boolean;
  /** With a shared (etcd) store: the control-plane replica the sidecar is (or was last) connected to. */
  replica?: string;
  connectedAt?: string;
  disconnectedAt?: string;
  /** When a disconnected sidecar's endpoint leaves, unless it reconnects first. */
  expiresAt?: string;
  sentVersion?: string;
  ackedVersion?: string;
  ackedAt?: string;
  nackVersion?: string;
  nackReason?: string;
  nackedAt?: string;
}

/** One open stream's hold on its sidecar's registration. */
export interface SidecarSession {
  readonly id: string;
  /** Idempotent. When the sidecar's last session ends, its grace period starts. */
  disconnect(): void;
  /** The sidecar is shutting down: its endpoint goes now, with no grace period. */
  leave(): void;
  /** The control plane signed this sidecar a certificate for `spiffeId`: its endpoint carries it from now on. */
  certified(spiffeId: string): void;
}

/**
 * What the push server and the API need of an endpoint registry; two implementations:
 * `EndpointRegistry` (this file: one control plane, persisted in its data dir) and
 * `EtcdRegistry` (registry-etcd.ts: every replica's sidecars, on etcd leases).
 */
export interface Registry {
  readonly graceMs: number;
  /** `services`: those whose endpoints may have changed (absent: any). */
  onChange(listener: (services?: readonly string[]) => void): () => void;
  connect(identity: SidecarIdentity): SidecarSession;
  recordSent(id: string, version: string): void;
  recordAck(id: string, version: string): void;
  recordNack(id: string, version: string, reason: string): void;
  /** Every endpoint, sorted by service: the same array until the endpoint set changes (not to be modified). */
  endpoints(): Endpoint[];
  /**
   * The same endpoints by service (services in name order): each service's array stays the same
   * until that service's endpoints change, and the map the same until any does (not to be modified).
   */
  endpointsByService(): ReadonlyMap<string, readonly Endpoint[]>;
  sidecars(): SidecarStatus[];
  get(id: string): SidecarStatus | undefined;
  connectedCount(): number;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface RegistryOptions {
  /** false: keep nothing on disk (the etcd registry keeps the shared copy). Default true. */
  persist?: boolean;
  graceMs?: number;
  clock?: Clock;
  logger?: Logger;
}

interface Entry {
  status: SidecarStatus;
  streams: number;
  expiry?: Timer;
}

export class EndpointRegistry implements Registry {
  readonly graceMs: number;
  private readonly file: string;
  private readonly clock: Clock;
  private readonly logger?: Logger;
  private readonly entries = new Map<string, Entry>();
  private readonly events = new EventEmitter();
  private writing: Promise<void> | undefined;
  private dirty = false;
  private closed = false;
  private readonly persist: boolean;
  /** Service -> its entries (what `statusesOf` reads). */
  private readonly byService = new Map<string, Set<Entry>>();
  private readonly sets = new EndpointSets({
    services: () => this.byService.keys(),
    statusesOf: (service) => this.statusesOf(service),
  });

  private constructor(dataDir: string, opts: RegistryOptions) {
    this.file = path.join(dataDir, FILE);
    this.persist = opts.persist ?? true;
    this.graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    this.events.setMaxListeners(0);
  }

  /** Opens the registry in `dataDir`; endpoints persisted by a previous run come back disconnected. */
  static async open(dataDir: string, opts: RegistryOptions = {}): Promise<EndpointRegistry> {
    const r = new EndpointRegistry(dataDir, opts);
    if (r.persist) await r.load(dataDir);
    return r;
  }

  /** Called whenever the endpoint set (what snapshots carry) changes, with the services it changed. */
  onChange(listener: (services?: readonly string[]) => void): () => void {
    this.events.on('change', listener);
    return () => this.events.off('change', listener);
  }

  /** Registers (or re-registers) a sidecar for one open stream. */
  connect(identity: SidecarIdentity): SidecarSession {
    const now = this.iso();
    let e = this.entries.get(identity.id);
    let changed = false;
    const services = [identity.service];
    if (!e) {
      e = { status: { ...copyIdentity(identity), connected: true, connectedAt: now }, streams: 0 };
      this.entries.set(identity.id, e);
      this.indexEntry(e);
      changed = true;
    } else {
      changed = !sameEndpoint(e.status, identity);
      const prev = e.status;
      if (prev.service !== identity.service) {
        this.unindexEntry(e);
        services.push(prev.service);
      }
      e.status = {
        ...prev,
        ...copyIdentity(identity),
        connected: true,
        connectedAt: e.streams > 0 ? prev.connectedAt : now,
        disconnectedAt: undefined,
        expiresAt: undefined,
        // The identity of a reconnecting sidecar stays (its certificate is still good), unless it is another service now.
        spiffeId: identity.spiffeId ?? (prev.service === identity.service ? prev.spiffeId : undefined),
      };
      if (e.status.spiffeId === undefined) delete e.status.spiffeId;
      this.indexEntry(e);
    }
    e.expiry?.cancel();
    e.expiry = undefined;
    e.streams++;
    // Which of two ids at one address is published depends on who is connected.
    this.sets.touch(identity.service);
    this.logger?.info(
      { sidecar: identity.id, service: identity.service, address: `${identity.address}:${identity.port}`, streams: e.streams },
      'sidecar connected',
    );
    if (changed) this.changed(services);
    const entry = e;
    let done = false;
    return {
      id: identity.id,
      disconnect: () => {
        if (done) return;
        done = true;
        this.release(entry);
      },
      leave: () => {
        done = true;
        if (this.entries.get(entry.status.id) !== entry) return;
        entry.expiry?.cancel();
        this.entries.delete(entry.status.id);
        this.unindexEntry(entry);
        this.logger?.info({ sidecar: entry.status.id, service: entry.status.service }, 'sidecar endpoint removed: it left');
        this.changed([entry.status.service]);
      },
      certified: (spiffeId: string) => {
        if (this.entries.get(entry.status.id) !== entry || entry.status.spiffeId === spiffeId) return;
        entry.status.spiffeId = spiffeId;
        this.logger?.info({ sidecar: entry.status.id, spiffeId }, 'sidecar endpoint has an identity: callers use mTLS');
        this.changed([entry.status.service]);
      },
    };
  }

  recordSent(id: string, version: string): void {
    const e = this.entries.get(id);
    if (e) e.status.sentVersion = version;
  }

  recordAck(id: string, version: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.status.ackedVersion = version;
    e.status.ackedAt = this.iso();
  }

  recordNack(id: string, version: string, reason: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.status.nackVersion = version;
    e.status.nackReason = reason;
    e.status.nackedAt = this.iso();
  }

  /**
   * The endpoints every snapshot carries: one per address, sorted, deterministic. The same array
   * (not to be modified) until the endpoint set changes: a change to policies alone does not
   * rebuild the endpoints of a large mesh.
   */
  endpoints(): Endpoint[] {
    return this.sets.endpoints();
  }

  endpointsByService(): ReadonlyMap<string, readonly Endpoint[]> {
    return this.sets.byService();
  }

  /** The statuses of `service`'s sidecars, not copied (not to be modified): for the etcd registry's merge. */
  statusesOf(service: string): SidecarStatus[] {
    const set = this.byService.get(service);
    return set ? [...set].map((e) => e.status) : [];
  }

  /** Services with at least one sidecar here. */
  services(): IterableIterator<string> {
    return this.byService.keys();
  }

  /** Every sidecar's id. */
  ids(): IterableIterator<string> {
    return this.entries.keys();
  }

  /** A sidecar's status, not copied (not to be modified). */
  peek(id: string): SidecarStatus | undefined {
    return this.entries.get(id)?.status;
  }

  /** Every known sidecar, by id. Copies. */
  sidecars(): SidecarStatus[] {
    return [...this.entries.values()]
      .map((e) => ({ ...e.status, labels: { ...e.status.labels } }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  get(id: string): SidecarStatus | undefined {
    const e = this.entries.get(id);
    return e ? { ...e.status, labels: { ...e.status.labels } } : undefined;
  }

  connectedCount(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.status.connected) n++;
    return n;
  }

  /** Resolves once the latest endpoint set is on disk. */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }

  /** Stops the grace timers and flushes. The persisted endpoints stay for the next run. */
  async close(): Promise<void> {
    this.closed = true;
    for (const e of this.entries.values()) {
      e.expiry?.cancel();
      e.expiry = undefined;
    }
    await this.flush();
    this.events.removeAllListeners();
  }

  // ------------------------------------------------------------------------------ internals

  private release(e: Entry): void {
    if (this.entries.get(e.status.id) !== e) return;
    e.streams = Math.max(0, e.streams - 1);
    if (e.streams > 0 || this.closed) return;
    e.status.connected = false;
    e.status.disconnectedAt = this.iso();
    this.sets.touch(e.status.service);
    this.logger?.info({ sidecar: e.status.id, graceMs: this.graceMs }, 'sidecar disconnected');
    this.startGrace(e);
  }

  private startGrace(e: Entry): void {
    e.status.expiresAt = new Date(this.clock.now() + this.graceMs).toISOString();
    e.expiry?.cancel();
    e.expiry = this.clock.setTimeout(() => {
      if (this.entries.get(e.status.id) !== e || e.streams > 0) return;
      this.entries.delete(e.status.id);
      this.unindexEntry(e);
      this.logger?.info({ sidecar: e.status.id, service: e.status.service }, 'sidecar endpoint removed after grace period');
      this.changed([e.status.service]);
    }, this.graceMs);
  }

  private indexEntry(e: Entry): void {
    const set = this.byService.get(e.status.service);
    if (set) set.add(e);
    else this.byService.set(e.status.service, new Set([e]));
  }

  private unindexEntry(e: Entry): void {
    const set = this.byService.get(e.status.service);
    if (!set) return;
    set.delete(e);
    if (set.size === 0) this.byService.delete(e.status.service);
  }

  private changed(services: readonly string[]): void {
    for (const svc of services) this.sets.touch(svc);
    this.persistSoon();
    try {
      this.events.emit('change', services);
    } catch (err) {
      this.logger?.error({ err }, 'registry change listener failed');
    }
  }

  private persistSoon(): void {
    if (!this.persist) return;
    this.dirty = true;
    if (this.writing) return;
    this.writing = (async () => {
      while (this.dirty) {
        this.dirty = false;
        const body = {
          sidecars: [...this.entries.values()].map((e) => copyIdentity(e.status)).sort((a, b) => (a.id < b.id ? -1 : 1)),
        };
        try {
          await atomicWriteFile(this.file, JSON.stringify(body, null, 2) + '\n');
        } catch (err) {
          this.logger?.error({ err, file: this.file }, 'could not persist the endpoint registry');
        }
      }
      this.writing = undefined;
    })();
  }

  private async load(dataDir: string): Promise<void> {
    await ensureDir(dataDir);
    await removeTempFiles(dataDir);
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.logger?.error({ err }, 'endpoint registry unreadable');
      return;
    }
    let list: unknown;
    try {
      list = (JSON.parse(text) as { sidecars?: unknown }).sidecars;
    } catch (err) {
      this.logger?.error({ err }, 'endpoint registry unreadable; starting empty');
      return;
    }
    if (!Array.isArray(list)) return;
    const now = this.iso();
    for (const raw of list) {
      const id = validIdentity(raw);
      if (!id) continue;
      const e: Entry = { status: { ...id, connected: false, disconnectedAt: now }, streams: 0 };
      const before = this.entries.get(id.id);
      if (before) this.unindexEntry(before);
      this.entries.set(id.id, e);
      this.indexEntry(e);
      this.startGrace(e);
    }
    if (this.entries.size > 0)
      this.logger?.info({ endpoints: this.entries.size, graceMs: this.graceMs }, 'restored endpoints from the previous run');
  }

  private iso(): string {
    return new Date(this.clock.now()).toISOString();
  }
}

/**
 * The endpoints snapshots carry, kept per service. A service's array is recomputed only after it
 * was touched, and kept (the same array) if it came out the same; the flat list and the map stay
 * the same objects until some service's endpoints change. The push path serialises an array once
 * and reuses the result while it gets the same array (snapshot-builder.ts), so a registry event
 * that does not change what snapshots carry (an ACK, a reconnect at the same address) costs the
 * push path nothing, and one that does costs the serialisation of that service only.
 */
export class EndpointSets {
  private readonly sets = new Map<string, Endpoint[]>();
  private readonly dirty = new Set<string>();
  private everything = true;
  private flat: Endpoint[] = [];
  private map: ReadonlyMap<string, readonly Endpoint[]> = new Map();
  private pending = false;

  constructor(private readonly source: { services(): Iterable<string>; statusesOf(service: string): Iterable<SidecarStatus> }) {}

  /** `service`'s endpoints may have changed. */
  touch(service: string): void {
    this.dirty.add(service);
  }

  /** Any service's may have. */
  touchAll(): void {
    this.everything = true;
  }

  endpoints(): Endpoint[] {
    this.refresh();
    return this.flat;
  }

  byService(): ReadonlyMap<string, readonly Endpoint[]> {
    this.refresh();
    return this.map;
  }

  /** Whether some service's endpoints changed since the last call (whoever recomputed them). */
  takeChange(): boolean {
    this.refresh();
    const p = this.pending;
    this.pending = false;
    return p;
  }

  private refresh(): void {
    if (!this.everything && this.dirty.size === 0) return;
    const services = this.everything ? new Set([...this.sets.keys(), ...this.source.services()]) : this.dirty;
    let changed = false;
    for (const svc of services) {
      const next = endpointsOf(this.source.statusesOf(svc));
      const prev = this.sets.get(svc);
      if (next.length === 0) {
        if (prev) changed = this.sets.delete(svc);
      } else if (!prev || !sameEndpoints(prev, next)) {
        this.sets.set(svc, next);
        changed = true;
      }
    }
    this.everything = false;
    this.dirty.clear();
    if (!changed) return;
    this.pending = true;
    const map = new Map<string, readonly Endpoint[]>();
    const flat: Endpoint[] = [];
    for (const svc of [...this.sets.keys()].sort(cmp)) {
      const l = this.sets.get(svc) as Endpoint[];
      map.set(svc, l);
      for (const e of l) flat.push(e);
    }
    this.map = map;
    this.flat = flat;
  }
}

function sameEndpoints(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as Endpoint;
    const y = b[i] as Endpoint;
    if (x.service !== y.service || x.address !== y.address || x.port !== y.port || x.id !== y.id || x.identity !== y.identity || x.weight !== y.weight || x.meshed !== y.meshed) return false;
    const xk = Object.keys(x.labels);
    if (xk.length !== Object.keys(y.labels).length || xk.some((k) => x.labels[k] !== y.labels[k])) return false;
  }
  return true;
}

/** The endpoints of these sidecars, as every snapshot carries them: one per address, sorted, deterministic. */
export function endpointsOf(statuses: Iterable<SidecarStatus>): Endpoint[] {
  const byAddr = new Map<string, SidecarStatus>();
  for (const s of statuses) {
    if (s.kind === 'gateway') continue;
    const k = `${s.service}\0${s.address}\0${s.port}`;
    const other = byAddr.get(k);
    // Two ids at one address (a pod replaced in place): keep the live one, else the newer.
    if (!other || preferOver(s, other)) byAddr.set(k, s);
  }
  return [...byAddr.values()]
    .map(
      (s): Endpoint => ({
        service: s.service,
        address: s.address,
        port: s.port,
        labels: { ...s.labels },
        weight: 1,
        meshed: true,
        id: s.id,
        ...(s.spiffeId ? { identity: s.spiffeId } : {}),
      }),
    )
    .sort(compareEndpoints);
}

function copyIdentity(s: SidecarIdentity): SidecarIdentity {
  return { id: s.id, service: s.service, address: s.address, port: s.port, labels: { ...s.labels }, buildVersion: s.buildVersion, ...(s.adminPort ? { adminPort: s.adminPort } : {}), ...(s.peerAddress ? { peerAddress: s.peerAddress } : {}), ...(s.spiffeId ? { spiffeId: s.spiffeId } : {}), ...(s.kind ? { kind: s.kind } : {}) };
}

function sameEndpoint(a: SidecarIdentity, b: SidecarIdentity): boolean {
  if (a.service !== b.service || a.address !== b.address || a.port !== b.port) return false;
  if (b.spiffeId !== undefined && a.spiffeId !== b.spiffeId) return false;
  const ak = Object.keys(a.labels).sort();
  const bk = Object.keys(b.labels).sort();
  return ak.length === bk.length && ak.every((k, i) => k === bk[i] && a.labels[k] === b.labels[k]);
}

function preferOver(a: SidecarStatus, b: SidecarStatus): boolean {
  if (a.connected !== b.connected) return a.connected;
  const at = a.connectedAt ?? a.disconnectedAt ?? '';
  const bt = b.connectedAt ?? b.disconnectedAt ?? '';
  return at > bt || (at === bt && a.id < b.id);
}

function compareEndpoints(a: Endpoint, b: Endpoint): number {
  return (
    cmp(a.service, b.service) || cmp(a.address, b.address) || a.port - b.port || cmp(a.id ?? '', b.id ?? '')
  );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function validIdentity(raw: unknown): SidecarIdentity | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const r = raw as Record<string, unknown>;
  const port = Number(r.port);
  if (typeof r.id !== 'string' || !r.id || typeof r.service !== 'string' || !r.service) return undefined;
  if (typeof r.address !== 'string' || !r.address || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  const labels: Record<string, string> = {};
  if (r.labels && typeof r.labels === 'object')
    for (const [k, v] of Object.entries(r.labels as object)) if (typeof v === 'string') labels[k] = v;
  const spiffeId = typeof r.spiffeId === 'string' && r.spiffeId.startsWith('spiffe://') ? r.spiffeId : undefined;
  return { id: r.id, service: r.service, address: r.address, port, labels, buildVersion: typeof r.buildVersion === 'string' ? r.buildVersion : '', ...(spiffeId ? { spiffeId } : {}), ...(r.kind === 'gateway' ? { kind: 'gateway' as const } : {}) };
}
