/** Output helpers shared by the client commands: label selectors, jsonpath, watching by polling. */
import { UsageError } from './common';

type Requirement = { key: string; op: '=' | '!=' | 'exists' | '!exists'; value?: string };

/** `-l app=web,tier!=db,canary,!legacy` (kubectl's equality-based selectors), matched against metadata.labels. */
export function parseSelector(s: string | undefined): ((labels: Record<string, string> | undefined) => boolean) | undefined {
  if (s === undefined) return undefined;
  const reqs: Requirement[] = [];
  for (const raw of s.split(',')) {
    const part = raw.trim();
    if (!part) continue;
    let m: RegExpExecArray | null;
    if ((m = /^([A-Za-z0-9_.\/-]+)\s*(!=|==|=)\s*([A-Za-z0-9_.-]*)$/.exec(part))) reqs.push({ key: m[1] as string, op: m[2] === '!=' ? '!=' : '=', value: m[3] as string });
    else if ((m = /^!([A-Za-z0-9_.\/-]+)$/.exec(part))) reqs.push({ key: m[1] as string, op: '!exists' });
    else if ((m = /^([A-Za-z0-9_.\/-]+)$/.exec(part))) reqs.push({ key: m[1] as string, op: 'exists' });
    else throw new UsageError(`-l: cannot read ${JSON.stringify(part)}; use key=value, key!=value, key or !key, comma-separated`);
  }
  return (labels) => {
    const l = labels ?? {};
    return reqs.every((r) => {
      const has = Object.prototype.hasOwnProperty.call(l, r.key);
      switch (r.op) {
        case '=':
          return has && l[r.key] === r.value;
        case '!=':
          return !has || l[r.key] !== r.value;
        case 'exists':
          return has;
        case '!exists':
          return !has;
      }
      return false;
    });
  };
}

/**
 * kubectl's `-o jsonpath=TEMPLATE`, the common subset: literal text and `{.a.b[0].c}`,
 * `{.items[*].metadata.name}` (several results joined by a space), `{$}` / `{@}` the root,
 * `{"\n"}` for a literal.
 */
export function jsonpath(template: string, data: unknown): string {
  let out = '';
  let i = 0;
  while (i < template.length) {
    const open = template.indexOf('{', i);
    if (open < 0) {
      out += template.slice(i);
      break;
    }
    out += template.slice(i, open);
    const close = template.indexOf('}', open);
    if (close < 0) throw new UsageError(`-o jsonpath: unclosed { in ${JSON.stringify(template)}`);
    const expr = template.slice(open + 1, close).trim();
    if (/^".*"$/.test(expr) || /^'.*'$/.test(expr)) out += JSON.parse(`"${expr.slice(1, -1).replace(/"/g, '\\"')}"`);
    else out += evaluate(expr, data).map(show).join(' ');
    i = close + 1;
  }
  return out;
}

function show(v: unknown): string {
  return v !== null && typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function evaluate(expr: string, data: unknown): unknown[] {
  let rest = expr.replace(/^[$@]/, '');
  if (!rest.startsWith('.') && !rest.startsWith('[') && rest !== '') rest = '.' + rest;
  let cur: unknown[] = [data];
  const re = /^(?:\.([A-Za-z0-9_-]+)|\[(\*|-?\d+|'[^']*'|"[^"]*")\]|\.\*)/;
  while (rest.length > 0) {
    if (rest === '.') break;
    const m = re.exec(rest);
    if (!m) throw new UsageError(`-o jsonpath: cannot read ${JSON.stringify(expr)} at ${JSON.stringify(rest)}`);
    rest = rest.slice(m[0].length);
    const next: unknown[] = [];
    for (const c of cur) {
      if (c === null || typeof c !== 'object') continue;
      const o = c as Record<string, unknown>;
      if (m[0] === '.*' || m[2] === '*') next.push(...(Array.isArray(c) ? c : Object.values(o)));
      else if (m[1] !== undefined) {
        if (m[1] in o) next.push(o[m[1]]);
      } else if (m[2] !== undefined && /^-?\d+$/.test(m[2])) {
        if (Array.isArray(c)) {
          const n = Number(m[2]);
          const v = c[n < 0 ? c.length + n : n];
          if (v !== undefined) next.push(v);
        }
      } else if (m[2] !== undefined) {
        const k = m[2].slice(1, -1);
        if (k in o) next.push(o[k]);
      }
    }
    cur = next;
  }
  return cur;
}

/** Polls `fetch` every `intervalMs` until SIGINT/SIGTERM, calling `onChange` when its JSON changes. */
export async function watch<T>(fetch: () => Promise<T>, onChange: (now: T, before: T | undefined) => void, intervalMs = 1000): Promise<number> {
  const { runUntilSignal } = await import('./process');
  let before: T | undefined;
  let beforeJson = '';
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const tick = async (): Promise<void> => {
    try {
      const now = await fetch();
      const j = JSON.stringify(now);
      if (!stopped && j !== beforeJson) {
        onChange(now, before);
        before = now;
        beforeJson = j;
      }
    } catch (err) {
      if (!stopped) process.stderr.write(`${(err as Error).message}\n`);
    }
    if (!stopped) timer = setTimeout(() => void tick(), intervalMs);
  };
  await tick();
  return runUntilSignal(async () => {
    stopped = true;
    clearTimeout(timer);
  });
}
