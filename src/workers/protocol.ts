/**
 * The messages between a `--concurrency N` primary and its workers (node:cluster IPC, a socketpair
 * between the processes), and the environment a worker is started with.
 */
import type { Exposition } from '../observability/merge';
import type { WireSnapshot } from '../policy';

/** The workload certificate and key the workers serve and dial mTLS with (in memory only: never a file). */
export interface TlsMaterial {
  keyPem: string;
  chainPem: string;
  bundlePem: string;
}

export type PurgeSelector = { key: string } | { prefix: string };

/** Primary -> worker. */
export type ToWorker =
  | { t: 'start'; snapshot?: WireSnapshot; identity?: TlsMaterial }
  | { t: 'identity'; identity: TlsMaterial }
  | { t: 'snapshot'; snapshot: WireSnapshot }
  | { t: 'collect'; id: number; what: 'metrics' | 'stats' }
  /** Remove cached responses from the worker's caches (`POST /cache/purge` on the primary's admin port). */
  | { t: 'purge'; id: number; sel: PurgeSelector }
  | { t: 'log-level'; level: string }
  | { t: 'close'; graceMs: number };

export type Collected = { t: 'collected'; id: number; metrics?: Exposition; stats?: unknown; purged?: number };

/** Worker -> primary. `info` is what the data plane reports of its listeners (the sidecar's ports, the gateway's listeners). */
export type FromWorker =
  | { t: 'hello' }
  | { t: 'listening'; version: string | null; info: unknown }
  | { t: 'applied'; version: string; info?: unknown }
  | { t: 'rejected'; version: string; reason: string }
  | Collected;

/** Which worker this process is (0..N-1); set only in workers. */
export const ENV_SLOT = 'MESHLET_WORKER_SLOT';
/** The id of the process as a whole (a sidecar's or gateway's id), shared by its workers. */
export const ENV_ID = 'MESHLET_PROCESS_ID';
export const ENV_WORKERS = 'MESHLET_WORKERS';
