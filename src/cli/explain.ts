/**
 * `meshlet explain --from SERVICE [METHOD] URL [-H 'name: value']...`: what the caller's sidecar
 * does with a request, step by step: which Route serves the host, which rule matches and why the
 * earlier ones do not, the rule's timeouts, retries, faults and breaker, the backends with their
 * endpoints (ejected ones marked), and the rate-limit buckets the callee's sidecars count it
 * against. Computed by the sidecar itself on the snapshot it runs (its admin port's /explain,
 * through the control plane), so it cannot disagree with the data path.
 *
 * `meshlet explain --last REQUEST_ID`: what actually happened to a real request, from the rings
 * of recent decisions the sidecars keep (their admin port's /decisions, fanned in by the control
 * plane): each hop that saw the id, with its route and rule, backend, every try and its outcome,
 * timeouts, rate-limit buckets, flags, status and durations.
 */
import type { DecisionRecord } from '../observability/decisions';
import { api, CliError, describeApiError, flags, outputFormat, serverUrl, UsageError, type Command } from './common';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'CONNECT', 'TRACE'];

interface Body {
  sidecar: string;
  service: string;
  version: string;
  request: { method: string; url: string; headers: Record<string, string> };
  steps: { step: string; result: string; details?: string[] }[];
  outcome: { route?: string; status?: number; flag?: string };
}

export const explain: Command = {
  name: 'explain',
  usage: `meshlet explain --from SERVICE [METHOD] URL [-H 'NAME: VALUE']... [--sidecar ID] [-o json|yaml]
meshlet explain --last REQUEST_ID [--from SERVICE | --sidecar ID] [-o json|yaml]

Walks a request through the policy snapshot the caller's sidecar runs (e.g.
\`meshlet explain --from frontend GET http://catalog/items -H 'x-canary: true'\`), or with
--last shows what actually happened to a real request, by its x-request-id.
  --from SERVICE        the calling service: one of its connected sidecars answers
                        (with --last: ask only this service's sidecars)
  --sidecar ID          ask this sidecar instead (\`meshlet status\` lists them)
  --last REQUEST_ID     what the sidecars did with this request, from the recent requests each one
                        keeps in memory (sidecar --recent-requests, default the last 1024)
  -H, --header H        a request header, NAME: VALUE; repeatable
  -o, --output FORMAT   json or yaml`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      { from: { type: 'string' }, sidecar: { type: 'string' }, last: { type: 'string' }, header: { type: 'string', short: 'H', multiple: true }, output: { type: 'string', short: 'o' }, server: { type: 'string' } },
      true,
    );
    const output = outputFormat(values.output, ['json', 'yaml'] as const);
    if (values.last !== undefined) return last(values.last, positionals, values, output);
    if (!values.from && !values.sidecar) throw new UsageError('--from SERVICE (or --sidecar ID) is required: explain follows the caller\'s sidecar');
    let method = 'GET';
    let url: string | undefined;
    if (positionals.length === 2) [method, url] = [(positionals[0] as string).toUpperCase(), positionals[1]];
    else if (positionals.length === 1) url = positionals[0];
    else throw new UsageError('give [METHOD] URL, e.g. GET http://catalog/items');
    if (!METHODS.includes(method) && !/^[A-Z]+$/.test(method)) throw new UsageError(`not an HTTP method: ${JSON.stringify(method)}`);
    const q = new URLSearchParams();
    if (values.from) q.set('from', values.from);
    if (values.sidecar) q.set('sidecar', values.sidecar);
    q.set('method', method);
    q.set('url', url as string);
    for (const h of values.header ?? []) {
      if (h.indexOf(':') <= 0) throw new UsageError(`-H: expected 'NAME: VALUE', got ${JSON.stringify(h)}`);
      q.append('header', h);
    }
    const res = await api(serverUrl(values.server), 'GET', `/v1/explain?${q}`);
    if (res.status !== 200) throw new CliError(describeApiError(res));
    const b = res.body as Body;
    if (output === 'json') process.stdout.write(JSON.stringify(b, null, 2) + '\n');
    else if (output === 'yaml') process.stdout.write((await import('yaml')).stringify(b));
    else process.stdout.write(formatExplain(b));
    return 0;
  },
};

export function formatExplain(b: Body): string {
  const hs = Object.entries(b.request.headers).map(([k, v]) => ` -H '${k}: ${v}'`).join('');
  let out = `${b.request.method} ${b.request.url}${hs}\nfrom ${b.service}, as sidecar ${b.sidecar} runs it (policy ${b.version})\n\n`;
  b.steps.forEach((s, i) => {
    out += `${i + 1}. ${s.step}: ${s.result}\n`;
    for (const d of s.details ?? []) out += `     ${d}\n`;
  });
  const o = b.outcome;
  out += `\n=> ${o.flag ? `${o.status} ${o.flag}` : o.status ? `${o.status}` : `sent on ${o.route}`}\n`;
  return out;
}

/** One request as one sidecar recorded it (served by its admin port's `/decisions`). */
type Hop = DecisionRecord;

interface LastBody {
  requestId: string;
  asked: number;
  kept: number;
  decisions: Hop[];
  unreachable?: { sidecar: string; message: string }[];
}

async function last(id: string, positionals: string[], values: { from?: string; sidecar?: string; header?: string[]; server?: string }, output: string | undefined): Promise<number> {
  if (!id.trim()) throw new UsageError('--last needs a request id (the x-request-id of the request)');
  if (positionals.length > 0 || values.header?.length) throw new UsageError('--last takes a request id only, no METHOD, URL or -H');
  const q = new URLSearchParams({ id });
  if (values.from) q.set('from', values.from);
  if (values.sidecar) q.set('sidecar', values.sidecar);
  const res = await api(serverUrl(values.server), 'GET', `/v1/decisions?${q}`);
  if (res.status !== 200) throw new CliError(describeApiError(res));
  const b = res.body as LastBody;
  if (output === 'json') process.stdout.write(JSON.stringify(b, null, 2) + '\n');
  else if (output === 'yaml') process.stdout.write((await import('yaml')).stringify(b));
  else process.stdout.write(formatLast(b));
  if (b.decisions.length === 0) {
    const where = values.sidecar ? `sidecar ${values.sidecar}` : values.from ? `the sidecars of ${values.from}` : `any of the ${b.asked} connected sidecar(s)`;
    throw new CliError(`request ${JSON.stringify(id)} is not among the recent requests of ${where} (each keeps the last ${b.kept || 'few'}); it may be older, or the id may not be the one the mesh propagated (x-request-id)`);
  }
  return 0;
}

const ms = (n: number): string => (n >= 1000 ? `${(n / 1000).toFixed(n % 1000 === 0 ? 0 : 3)}s` : `${Math.round(n * 10) / 10}ms`);

/** The hops of one request, step by step, as `explain` prints a walk through the snapshot. */
export function formatLast(b: LastBody): string {
  let out = `request ${b.requestId}: seen by ${b.decisions.length} sidecar side(s) of ${b.asked} asked\n`;
  for (const u of b.unreachable ?? []) out += `  (sidecar ${u.sidecar} did not answer: ${u.message})\n`;
  for (const h of b.decisions) {
    const steps: [string, string, string[]?][] = [];
    out += `\n${h.direction} at ${h.service} (sidecar ${h.sidecar}), ${h.time}: ${h.method} ${h.authority}${h.path} (${h.kind})\n`;
    if (h.direction === 'inbound') steps.push(['caller', `${h.source ?? 'unknown (not a known service)'}${h.peer ? `, proven by its certificate as ${h.peer}` : ', no client certificate'}`]);
    if (h.direction === 'outbound') {
      if (h.route) steps.push(['route', `rule "${h.rule}" of Route "${h.routeName}" (${h.route})`]);
      else steps.push(['route', h.flags?.split(',').includes('NR') ? 'no Route serves this host and path (NR)' : 'not routed']);
      if (h.backend) steps.push(['backend', `${h.backend.service}${h.backend.subset ? ` subset ${h.backend.subset}` : ''}`]);
      const t: string[] = [];
      if (h.timeoutMs) t.push(`route timeout ${ms(h.timeoutMs)}`);
      if (h.deadlineMs && (!h.timeoutMs || h.deadlineMs < h.timeoutMs - 1)) t.push(`deadline ${ms(h.deadlineMs)} (grpc-timeout)`);
      if (h.retryPolicy?.perTryTimeoutMs) t.push(`${ms(h.retryPolicy.perTryTimeoutMs)} per try`);
      steps.push(['timeouts', t.length ? t.join(', ') : 'none']);
    } else if (h.deadlineMs) steps.push(['timeouts', `deadline ${ms(h.deadlineMs)} (grpc-timeout)`]);
    if (h.rateLimits.length || h.direction === 'inbound')
      steps.push(['rate limits', h.rateLimits.length ? `${h.rateLimits.length} bucket(s) counted` : 'no bucket counted', h.rateLimits.map((l) => `limit "${l.limit}", bucket "${l.bucket}": ${l.outcome}`)]);
    if (h.tries.length) {
      const p = h.retryPolicy;
      const retries = h.tries.length - 1;
      const head = `${h.tries.length} tr${h.tries.length === 1 ? 'y' : 'ies'}${retries ? ` (${retries} retr${retries === 1 ? 'y' : 'ies'})` : ''}${p ? `; policy: up to ${p.attempts} retr${p.attempts === 1 ? 'y' : 'ies'}${p.retryOn.length ? ` on ${p.retryOn.join(', ')}` : ''}` : '; no retry policy'}`;
      steps.push([
        'tries',
        head,
        h.tries.map((t, i) => {
          const outcome = t.status ? `${t.status}${t.error ? ` then ${t.error}` : ''}` : (t.error ?? (t.durationMs === undefined ? 'in flight' : 'cancelled'));
          return `try ${i + 1} at +${ms(t.startMs)}: ${t.endpoint} -> ${outcome}${t.durationMs !== undefined ? ` in ${ms(t.durationMs)}` : ''}`;
        }),
      ]);
    } else if (h.upstream) steps.push(['app', `${h.upstream}${h.triesSent > 1 ? ` (${h.triesSent} tries)` : ''}`]);
    steps.forEach(([step, result, details], i) => {
      out += `${i + 1}. ${step}: ${result}\n`;
      for (const d of details ?? []) out += `     ${d}\n`;
    });
    out += h.inFlight
      ? `=> still in flight after ${ms(h.durationMs ?? 0)}\n`
      : `=> ${h.status}${h.grpcStatus !== undefined && h.grpcStatus >= 0 ? ` grpc-status ${h.grpcStatus}` : ''}${h.flags ? ` ${h.flags}` : ''}${h.durationMs !== undefined ? ` in ${ms(h.durationMs)}` : ', answered by the sidecar before forwarding'}\n`;
  }
  return out;
}
