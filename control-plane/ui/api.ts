/**
 * The dashboard's view of the control plane's API (the same JSON `meshlet` reads; docs/dashboard.md).
 * The page only ever GETs: it is read-only.
 */
import { useEffect, useRef, useState } from 'preact/hooks';

/**
 * The API token: `meshlet up` prints the dashboard's URL as /ui/#token=TOKEN. The fragment never
 * reaches a server or its logs; the page moves it to sessionStorage (this tab only, gone when it
 * closes), takes it out of the address bar, and sends it as a bearer token.
 */
const TOKEN_KEY = 'meshlet-token';
{
  const m = /^#token=([^&/]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1] as string));
    history.replaceState(null, '', `${location.pathname}${location.search}#/`);
  }
}

export function authHeaders(): Record<string, string> {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { authorization: `Bearer ${t}` } : {};
}

const NEEDS_TOKEN =
  'this control plane needs an API token: open the dashboard address `meshlet up` printed (…/ui/#token=…), or this page with #token=TOKEN appended (a view token is enough: `meshlet token create --role view`)';

export interface Stats {
  requests: number;
  rps: number;
  successRate: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
}

export type EndpointState = 'ready' | 'pending' | 'not-ready' | 'disconnected' | 'ejected' | 'static';

export interface GraphNode {
  name: string;
  kind: 'mesh' | 'gateway' | 'outside-mesh' | 'clients' | 'policy-only';
  endpoints: { id: string | null; address: string; state: EndpointState; version: string | null; sidecar: boolean; labels: Record<string, string> }[];
  policy: { current: number; total: number };
  inbound: Stats | null;
}

export interface GraphEdge extends Stats {
  source: string;
  destination: string;
}

export interface Graph {
  at: string | null;
  windowSeconds: number;
  version: string;
  nodes: GraphNode[];
  edges: GraphEdge[];
  unreachable: { id: string; service: string; error: string }[];
}

export interface Point {
  t: number;
  requests: number;
  rps: number;
  successRate: number | null;
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
}

export interface Series {
  points: Point[];
  responses: Record<string, number>;
}

export interface ServiceHistory {
  service: string;
  at: string | null;
  intervalMs: number;
  retentionMs: number;
  windowSeconds: number;
  inbound: Series;
  routes: (Series & { route: string })[];
  callers: (Series & { caller: string })[];
  resilience: {
    breakers: { route: string; state: 'closed' | 'open' | 'half-open'; sidecar: string }[];
    ejected: { endpoint: string; seenBy: string }[];
    rateLimits: { limit: string; scope: string; allowed: number; limited: number; failedOpen: number; failedClosed: number; sidecar: string }[];
  };
  sidecars: { id: string; connected: boolean; ackedVersion: string | null; expectedVersion: string; address: string }[];
  prometheus: { label: string; query: string; url: string }[] | null;
}

export interface Rollout {
  version: string;
  revision: number;
  convergence: { version: string; ms: number } | null;
  summary: { acked: number; nacked: number; pending: number; disconnected: number };
  resources: { kind: string; name: string; resourceVersion: string | null; yaml: string }[];
  sidecars: {
    id: string;
    service: string;
    connected: boolean;
    state: 'acked' | 'nacked' | 'pending' | 'disconnected';
    /** The version of this sidecar's view (scoped sidecars run their scope's, not the mesh's). */
    expectedVersion: string;
    ackedVersion: string | null;
    ackedAt: string | null;
    nackVersion: string | null;
    nackedAt: string | null;
    errors: { path: string; message: string }[];
  }[];
}

export interface TapEvent {
  type: 'request';
  time: string;
  direction: 'inbound' | 'outbound';
  source: string;
  destination: string;
  route: string;
  method: string;
  authority: string;
  path: string;
  protocol: string;
  status: number;
  flags: string | null;
  latencyMs: number;
  upstream: string | null;
  traceId: string | null;
  requestId: string;
  sidecar: string;
  headers?: Record<string, string>;
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const res = await fetch(path, { headers: { accept: 'application/json', ...authHeaders() }, signal });
  if (res.status === 401) throw new Error(NEEDS_TOKEN);
  const body = (await res.json()) as T & { message?: string };
  if (!res.ok) throw new Error(body.message ?? `${path} answered ${res.status}`);
  return body;
}

/** Polls `path` every `everyMs` while mounted; keeps the last good answer when a poll fails. */
export function usePoll<T>(path: string | null, everyMs: number): { data: T | undefined; error: string | undefined; loading: boolean } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const current = useRef(path);
  useEffect(() => {
    current.current = path;
    setData(undefined);
    setError(undefined);
    setLoading(true);
    if (path === null) return;
    let timer: number | undefined;
    const ctl = new AbortController();
    const run = async (): Promise<void> => {
      try {
        const d = await getJson<T>(path, ctl.signal);
        if (current.current !== path) return;
        setData(d);
        setError(undefined);
      } catch (err) {
        if (ctl.signal.aborted) return;
        setError((err as Error).message);
      }
      setLoading(false);
      timer = window.setTimeout(() => void run(), everyMs);
    };
    void run();
    return () => {
      ctl.abort();
      window.clearTimeout(timer);
    };
  }, [path, everyMs]);
  return { data, error, loading };
}

export const fmtPct = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : `${(v * 100).toFixed(v === 1 ? 0 : 1)}%`);
export const fmtMs = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : v < 10 ? `${v.toFixed(2)} ms` : `${Math.round(v)} ms`);
export const fmtRps = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : v < 10 ? v.toFixed(2) : v.toFixed(1));

/** Health from a success rate: what edges, nodes and rows are coloured by. */
export function health(successRate: number | null | undefined): 'good' | 'warn' | 'bad' | 'idle' {
  if (successRate === null || successRate === undefined) return 'idle';
  if (successRate >= 0.99) return 'good';
  if (successRate >= 0.95) return 'warn';
  return 'bad';
}

/** What each response flag means (the mesh answered or cut the request; docs/observability). */
export const FLAG_MEANINGS: Record<string, string> = {
  '-': 'answered by the app',
  NR: 'no route matched',
  UH: 'no healthy upstream endpoint',
  UF: 'upstream connect failure',
  UR: 'upstream reset',
  UO: 'upstream overflow (circuit-breaker limits)',
  UT: 'upstream timeout',
  URX: 'retries exhausted',
  RL: 'rate limited',
  DPE: 'downstream protocol error',
  RD: 'redirected by the mesh',
  CO: 'circuit breaker open',
  RBX: 'retry budget exhausted',
  RBL: 'request body too large to retry',
  FI: 'fault injected: abort',
  DI: 'fault injected: delay',
  DC: 'client went away',
  other: 'other',
};
