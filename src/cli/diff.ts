/**
 * `meshlet diff -f FILE`: what `apply` would change, as a unified diff of the stored YAML against
 * the file's (the store's own fields left out), like `kubectl diff`: exit 0 when nothing would
 * change, 1 when something would, above 1 on an error. A TLSCertificate's private key is not
 * compared: the API never returns it.
 */
import { stringify } from 'yaml';
import { resourceKey, toWire } from '../policy/parse';
import { redactResource } from '../policy/redact';
import { api, CliError, describeApiError, flags, serverUrl, type Command } from './common';
import { readResources } from './input';

export const diff: Command = {
  name: 'diff',
  errorExitCode: 2,
  usage: `meshlet diff -f FILE|DIR|- [-f ...] [-R] [--server URL]

Shows, as a unified diff, how each resource in the files differs from what the control plane
stores (metadata.resourceVersion and creationTimestamp left out). Exit 0: no difference; 1: some
difference; 2 or more: an error (as kubectl diff).
  -f, --filename FILE    a file, a directory, or -; repeatable
  -R, --recursive        with a directory: its sub-directories too`,
  async run(argv) {
    const { values } = flags(argv, { filename: { type: 'string', short: 'f', multiple: true }, recursive: { type: 'boolean', short: 'R' }, server: { type: 'string' } });
    const { resources } = await readResources(values.filename ?? [], values.recursive === true);
    const server = serverUrl(values.server);
    let different = 0;
    for (const r of resources) {
      const key = resourceKey(r);
      const res = await api(server, 'GET', `/v1/${r.kind.toLowerCase()}/${encodeURIComponent(r.metadata.name)}`);
      let stored: Record<string, unknown> | undefined;
      if (res.status === 200) stored = res.body as Record<string, unknown>;
      else if (res.status !== 404) throw new CliError(describeApiError(res));
      const before = stored ? stringify(normalise(stored)) : '';
      // Private keys are never returned by the API: the file's is redacted too, and not compared.
      const after = stringify(normalise(redactResource(toWire(r))));
      if (before === after) continue;
      different++;
      process.stdout.write(unifiedDiff(before, after, stored ? `stored/${key}` : '/dev/null', `file/${key}`));
    }
    return different > 0 ? 1 : 0;
  },
};

/** The resource without the store's fields, with keys in a stable order (so only content differs). */
function normalise(r: Record<string, unknown>): unknown {
  const md = { ...(r.metadata as Record<string, unknown>) };
  delete md.resourceVersion;
  delete md.creationTimestamp;
  return sortKeys({ ...r, metadata: md });
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}

/** A unified diff (3 lines of context) of two texts, from their longest common subsequence of lines. */
export function unifiedDiff(a: string, b: string, nameA: string, nameB: string, context = 3): string {
  const x = a ? a.replace(/\n$/, '').split('\n') : [];
  const y = b ? b.replace(/\n$/, '').split('\n') : [];
  const n = x.length;
  const m = y.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i]![j] = x[i] === y[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  const ops: { t: ' ' | '-' | '+'; s: string; i: number; j: number }[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) ops.push({ t: ' ', s: x[i++]!, i, j: ++j });
    else if (i < n && (j >= m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) ops.push({ t: '-', s: x[i++]!, i, j });
    else ops.push({ t: '+', s: y[j++]!, i, j });
  }
  let out = `--- ${nameA}\n+++ ${nameB}\n`;
  let k = 0;
  while (k < ops.length) {
    while (k < ops.length && ops[k]!.t === ' ') k++;
    if (k >= ops.length) break;
    const start = Math.max(0, k - context);
    let end = k;
    let lastChange = k;
    while (end < ops.length && (ops[end]!.t !== ' ' || end - lastChange <= context * 2)) {
      if (ops[end]!.t !== ' ') lastChange = end;
      end++;
    }
    end = Math.min(ops.length, lastChange + context + 1);
    const hunk = ops.slice(start, end);
    // Line numbers: count the old and new lines before the hunk.
    let oldStart = 1;
    let newStart = 1;
    for (const o of ops.slice(0, start)) {
      if (o.t !== '+') oldStart++;
      if (o.t !== '-') newStart++;
    }
    const oldLen = hunk.filter((o) => o.t !== '+').length;
    const newLen = hunk.filter((o) => o.t !== '-').length;
    out += `@@ -${oldLen ? oldStart : oldStart - 1},${oldLen} +${newLen ? newStart : newStart - 1},${newLen} @@\n`;
    for (const o of hunk) out += `${o.t}${o.s}\n`;
    k = end;
  }
  return out;
}
