/**
 * `meshlet explain --from SERVICE [METHOD] URL [-H 'name: value']...`: what the caller's sidecar
 * does with a request, step by step: which Route serves the host, which rule matches and why the
 * earlier ones do not, the rule's timeouts, retries, faults and breaker, the backends with their
 * endpoints (ejected ones marked), and the rate-limit buckets the callee's sidecars count it
 * against. Computed by the sidecar itself on the snapshot it runs (its admin port's /explain,
 * through the control plane), so it cannot disagree with the data path.
 */
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

Walks a request through the policy snapshot the caller's sidecar runs (e.g.
\`meshlet explain --from frontend GET http://catalog/items -H 'x-canary: true'\`).
  --from SERVICE        the calling service: one of its connected sidecars answers
  --sidecar ID          ask this sidecar instead (\`meshlet status\` lists them)
  -H, --header H        a request header, NAME: VALUE; repeatable
  -o, --output FORMAT   json or yaml`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      { from: { type: 'string' }, sidecar: { type: 'string' }, header: { type: 'string', short: 'H', multiple: true }, output: { type: 'string', short: 'o' }, server: { type: 'string' } },
      true,
    );
    const output = outputFormat(values.output, ['json', 'yaml'] as const);
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
