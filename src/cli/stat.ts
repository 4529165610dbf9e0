/**
 * `meshlet stat` (once, or `-o json`) and `meshlet top` (refreshing): success rate, req/s and
 * p50/p99 latency per service and per route, over each sidecar's sliding window (60 s), merged by
 * the control plane (`GET /v1/stats`), like `linkerd viz stat` / `top`.
 */
import type { MeshStats, StatRow } from '../observability/mesh-stats';
import { api, CliError, describeApiError, flags, outputFormat, serverUrl, table, UsageError, type Command } from './common';
import { runUntilSignal } from './process';

async function fetchStats(server: string): Promise<MeshStats> {
  const res = await api(server, 'GET', '/v1/stats');
  if (res.status !== 200) throw new CliError(describeApiError(res));
  return res.body as MeshStats;
}

const pct = (v: number | null): string => (v === null ? '-' : `${(v * 100).toFixed(2)}%`);
const ms = (v: number | null): string => (v === null ? '-' : `${v < 10 ? v.toFixed(2) : v.toFixed(0)}ms`);

export function formatStats(s: MeshStats): string {
  const rows = (title: string, list: StatRow[], withRoute: boolean): string => {
    if (list.length === 0) return `${title}: no requests in the window\n`;
    const head = withRoute ? ['SERVICE', 'ROUTE', 'SUCCESS', 'RPS', 'P50', 'P99', 'REQUESTS', 'SIDECARS'] : ['SERVICE', 'SUCCESS', 'RPS', 'P50', 'P99', 'REQUESTS', 'SIDECARS'];
    const body = list.map((r) => [
      r.service,
      ...(withRoute ? [r.route ?? '-'] : []),
      pct(r.successRate),
      r.rps.toFixed(2),
      ms(r.p50Ms),
      ms(r.p99Ms),
      String(r.requests),
      String(r.sidecars),
    ]);
    return `${title}\n${table([head, ...body])}\n`;
  };
  let out = rows('Services (inbound, as the service saw it)', s.services, false) + '\n' + rows('Routes (outbound, as callers saw it)', s.routes, true);
  const authz = s.authz ?? [];
  if (authz.length) {
    const body = authz.map((a) => [a.service, a.policy, a.rule, a.result === 'would_deny' ? 'WOULD DENY (dryRun)' : a.result.toUpperCase(), String(a.count), String(a.sidecars)]);
    out += `\nAuthorization (AuthorizationPolicy decisions since the sidecars started)\n${table([['SERVICE', 'POLICY', 'RULE', 'RESULT', 'REQUESTS', 'SIDECARS'], ...body])}\n`;
  }
  if (s.unreachable.length) out += `\nunreachable sidecars: ${s.unreachable.map((u) => `${u.id} (${u.error})`).join(', ')}\n`;
  return out;
}

export const stat: Command = {
  name: 'stat',
  usage: `meshlet stat [-o json|yaml] [--server URL]

  Success rate, requests per second and p50/p99 latency per service and per route, over the last
  60 s, merged by the control plane from every connected sidecar.`,
  async run(argv) {
    const { values } = flags(argv, { output: { type: 'string', short: 'o' }, server: { type: 'string' } });
    const output = outputFormat(values.output, ['json', 'yaml', 'table'] as const);
    const s = await fetchStats(serverUrl(values.server));
    process.stdout.write(output === 'json' ? JSON.stringify(s, null, 2) + '\n' : output === 'yaml' ? (await import('yaml')).stringify(s) : formatStats(s));
    return 0;
  },
};

export const top: Command = {
  name: 'top',
  usage: `meshlet top [--interval SECONDS] [--count N] [--server URL]

  \`meshlet stat\`, redrawn every --interval seconds (default 2) until Ctrl-C, or --count times.`,
  async run(argv) {
    const { values } = flags(argv, { interval: { type: 'string' }, count: { type: 'string' }, server: { type: 'string' } });
    const interval = values.interval === undefined ? 2 : Number(values.interval);
    if (!Number.isFinite(interval) || interval < 0.1 || interval > 3600) throw new UsageError(`--interval: expected seconds between 0.1 and 3600, got ${JSON.stringify(values.interval)}`);
    const count = values.count === undefined ? Infinity : Number(values.count);
    if (!(Number.isInteger(count) && count > 0) && count !== Infinity) throw new UsageError(`--count: expected a positive integer, got ${JSON.stringify(values.count)}`);
    const server = serverUrl(values.server);
    const tty = process.stdout.isTTY === true;
    let n = 0;
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const draw = async (): Promise<void> => {
      let text: string;
      try {
        text = formatStats(await fetchStats(server));
      } catch (err) {
        text = `cannot reach the control plane at ${server}: ${(err as Error).message}\n`;
      }
      if (stopped) return;
      // Clear and home on a terminal; a separator line otherwise (piped, logged).
      process.stdout.write((tty ? '\x1b[2J\x1b[H' : n > 0 ? '\n' : '') + `meshlet top   ${new Date().toISOString()}   every ${interval}s   Ctrl-C to quit\n\n` + text);
      n++;
    };
    if (count !== Infinity) {
      for (let i = 0; i < count; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, interval * 1000));
        await draw();
      }
      return 0;
    }
    const loop = async (): Promise<void> => {
      await draw();
      if (!stopped) timer = setTimeout(() => void loop(), interval * 1000);
    };
    void loop();
    return runUntilSignal(async () => {
      stopped = true;
      clearTimeout(timer);
    });
  },
};
