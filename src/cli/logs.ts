/**
 * `meshlet logs SERVICE`: the log lines (sidecar log and access log) of a service's sidecars
 * in the local mesh, from the files `meshlet up` writes under DATA_DIR/logs/SERVICE/, as readable
 * lines (or the raw JSON with `-o json`). `-f` keeps following them from the tail. Without
 * --data-dir: ./.meshlet, else the data directory of the control plane (--server), when it runs on
 * this host. On Kubernetes the sidecar logs to stdout: use `kubectl logs POD -c meshlet-proxy`.
 */
import { existsSync, promises as fsp, type Stats } from 'node:fs';
import * as path from 'node:path';
import { api, CliError, flags, outputFormat, serverUrl, UsageError, type Command } from './common';
import { runUntilSignal } from './process';

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields a human line leaves out (shown elsewhere on the line, or noise). */
const HIDDEN = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'name', 'log', 'v']);

export const logs: Command = {
  name: 'logs',
  usage: `meshlet logs SERVICE [-f] [--tail N] [--since DURATION] [--access] [-o json] [--data-dir DIR]

  -f, --follow          keep printing new lines until Ctrl-C (from the last 10 lines unless --tail)
  --tail N              only the last N lines (of all the service's sidecars together)
  --since DURATION      only lines newer than this: 30s, 5m, 2h, 1d
  --access              access-log lines only
  -o, --output json     the raw JSON lines (default: time, level, message and fields, readable)
  --data-dir DIR        the directory \`meshlet up\` runs in (default .meshlet, else the control plane's)`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      {
        follow: { type: 'boolean', short: 'f' },
        access: { type: 'boolean' },
        'data-dir': { type: 'string' },
        tail: { type: 'string' },
        since: { type: 'string' },
        output: { type: 'string', short: 'o' },
        server: { type: 'string' },
      },
      true,
    );
    if (positionals.length !== 1) throw new UsageError('name exactly one SERVICE');
    const service = positionals[0] as string;
    if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(service)) throw new UsageError(`not a service name: ${JSON.stringify(service)}`);
    const raw = outputFormat(values.output, ['json'] as const) === 'json';
    let tail = values.tail === undefined ? (values.follow ? 10 : Infinity) : Number(values.tail);
    if (!(Number.isInteger(tail) && tail >= 0) && tail !== Infinity) throw new UsageError(`--tail: expected a number of lines (0 or more), got ${JSON.stringify(values.tail)}`);
    if (values.tail === '-1') tail = Infinity;
    const sinceMs = values.since === undefined ? undefined : Date.now() - duration(values.since);
    const dataDir = await findDataDir(values['data-dir'], values.server);
    const dir = path.join(dataDir, 'logs', service);
    let files: string[];
    try {
      files = (await fsp.readdir(dir)).filter((f) => f.endsWith('.log')).sort();
    } catch {
      throw new CliError(`no logs for service ${JSON.stringify(service)} under ${dir}: is \`meshlet up\` running (with this --data-dir)?`);
    }
    if (files.length === 0) throw new CliError(`no logs for service ${JSON.stringify(service)} under ${dir}`);
    const offsets = new Map<string, number>();
    const partial = new Map<string, string>();
    type Line = { id: string; text: string; rec?: Record<string, unknown>; t?: number };
    const toLines = (id: string, text: string): Line[] => {
      const parts = ((partial.get(id) ?? '') + text).split('\n');
      partial.set(id, parts.pop() ?? '');
      const out: Line[] = [];
      for (const l of parts) {
        if (!l) continue;
        let rec: Record<string, unknown> | undefined;
        try {
          const v = JSON.parse(l) as unknown;
          if (v && typeof v === 'object' && !Array.isArray(v)) rec = v as Record<string, unknown>;
        } catch {
          // not JSON: printed as it is
        }
        if (values.access && rec?.log !== 'access') continue;
        const t = typeof rec?.time === 'number' ? rec.time : typeof rec?.start_time === 'string' ? Date.parse(rec.start_time) : undefined;
        if (sinceMs !== undefined && (t === undefined || t < sinceMs)) continue;
        out.push({ id, text: l, rec, t: Number.isNaN(t) ? undefined : t });
      }
      return out;
    };
    const print = (lines: Line[]): void => {
      let out = '';
      for (const l of lines) out += (files.length > 1 ? `[${l.id}] ` : '') + (raw || !l.rec ? l.text : human(l.rec)) + '\n';
      if (out) process.stdout.write(out);
    };
    const readNew = async (f: string): Promise<Line[]> => {
      const file = path.join(dir, f);
      let st: Stats;
      try {
        st = await fsp.stat(file);
      } catch {
        return [];
      }
      let from = offsets.get(f) ?? 0;
      if (st.size < from) from = 0; // truncated: a new `meshlet up`
      if (st.size === from) return [];
      const h = await fsp.open(file, 'r');
      try {
        const buf = Buffer.alloc(st.size - from);
        await h.read(buf, 0, buf.length, from);
        offsets.set(f, st.size);
        return toLines(f.replace(/\.log$/, ''), buf.toString('utf8'));
      } finally {
        await h.close();
      }
    };
    let first: Line[] = [];
    for (const f of files) first.push(...(await readNew(f)));
    // Several sidecars: in time order when every line has a time (stable: file order otherwise).
    if (files.length > 1 && first.every((l) => l.t !== undefined)) first = first.map((l, i) => ({ l, i })).sort((a, b) => (a.l.t as number) - (b.l.t as number) || a.i - b.i).map((x) => x.l);
    print(tail === Infinity ? first : tail === 0 ? [] : first.slice(-tail));
    if (!values.follow) return 0;
    let timer: NodeJS.Timeout | undefined;
    const poll = async (): Promise<void> => {
      for (const f of (await fsp.readdir(dir).catch(() => [] as string[])).filter((x) => x.endsWith('.log')).sort()) {
        if (!files.includes(f)) files.push(f);
        print(await readNew(f));
      }
      timer = setTimeout(() => void poll(), 250);
    };
    timer = setTimeout(() => void poll(), 250);
    return runUntilSignal(async () => clearTimeout(timer));
  },
};

/** `30s`, `5m`, `2h`, `1d` (or a sum like `1h30m`) in milliseconds. */
export function duration(s: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  let total = 0;
  let matched = '';
  for (const m of s.matchAll(re)) {
    total += Number(m[1]) * (unit[m[2] as string] as number);
    matched += m[0];
  }
  if (!s || matched !== s) throw new UsageError(`--since: expected a duration like 30s, 5m, 2h or 1d, got ${JSON.stringify(s)}`);
  return total;
}

/** One readable line: `2026-12-03T09:00:00.000Z INFO  message key=value ...`; access lines as a request summary. */
export function human(rec: Record<string, unknown>): string {
  const t = typeof rec.time === 'number' ? new Date(rec.time).toISOString() : typeof rec.start_time === 'string' ? rec.start_time : '';
  const fields = (o: Record<string, unknown>, skip: Set<string>): string =>
    Object.entries(o)
      .filter(([k, v]) => !skip.has(k) && !HIDDEN.has(k) && v !== undefined && v !== null)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? (/[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v) : JSON.stringify(v)}`)
      .join(' ');
  if (rec.log === 'access') {
    const flags = rec.response_flags && rec.response_flags !== '-' ? ` ${rec.response_flags}` : '';
    const head = `${t ? t + ' ' : ''}ACCESS ${rec.direction ?? ''} ${rec.method ?? ''} ${rec.authority ?? ''}${rec.path ?? ''} ${rec.response_code ?? ''}${flags} ${rec.duration_ms ?? '?'}ms`.replace(/ {2,}/g, ' ');
    const rest = fields(rec, new Set(['start_time', 'direction', 'method', 'authority', 'path', 'response_code', 'response_flags', 'duration_ms']));
    return rest ? `${head} ${rest}` : head;
  }
  const level = typeof rec.level === 'number' ? (LEVEL_NAMES[rec.level] ?? String(rec.level)) : typeof rec.level === 'string' ? rec.level.toUpperCase() : '';
  const err = rec.err as { message?: string } | undefined;
  const rest = fields(rec, new Set(['err']));
  return [t, level.padEnd(level ? 5 : 0), String(rec.msg ?? ''), err?.message ? `err=${JSON.stringify(err.message)}` : '', rest].filter(Boolean).join(' ');
}

/** --data-dir, else ./.meshlet when it has logs, else the control plane's data dir when it is on this host. */
async function findDataDir(flag: string | undefined, server: string | undefined): Promise<string> {
  if (flag !== undefined) return path.resolve(flag);
  const local = path.resolve('.meshlet');
  if (existsSync(path.join(local, 'logs'))) return local;
  try {
    const res = await api(serverUrl(server), 'GET', '/v1/version');
    const dir = (res.body as { controlPlane?: { dataDir?: string } } | undefined)?.controlPlane?.dataDir;
    if (res.status === 200 && dir && existsSync(path.join(dir, 'logs'))) return dir;
  } catch {
    // no control plane to ask: the local default stands
  }
  return local;
}
