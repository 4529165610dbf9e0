/**
 * `meshlet tap SERVICE [--route R] [-o json]`: live requests to a service, as they finish, from
 * its sidecars (inbound) and its callers' (outbound), streamed by the control plane
 * (`GET /v1/tap`), like `linkerd viz tap`. Stops with Ctrl-C, or after --count requests.
 */
import { authHeader, CliError, connectError, describeApiError, tlsDispatcher, flags, serverUrl, UsageError, type Command } from './common';
import { runUntilSignal } from './process';

interface TapLine {
  type: 'request' | 'status';
  time?: string;
  direction?: string;
  source?: string;
  destination?: string;
  route?: string;
  method?: string;
  authority?: string;
  path?: string;
  status?: number;
  flags?: string | null;
  latencyMs?: number;
  upstream?: string | null;
  traceId?: string | null;
  sidecar?: string;
  headers?: Record<string, string>;
  dropped?: number;
  sidecars?: number;
}

/** One line a request, like linkerd's `tap`: direction, who called whom, what, and how it ended. */
export function formatTapLine(e: TapLine): string {
  const who = `${e.source === 'unknown' ? '(outside)' : e.source} -> ${e.destination}`;
  const hdrs = e.headers && Object.keys(e.headers).length ? ` ${Object.entries(e.headers).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ')}` : '';
  return (
    `${e.time?.slice(11, 23)} ${e.direction === 'inbound' ? 'in ' : 'out'} ${who} ${e.method} ${e.authority}${e.path} ` +
    `:status=${e.status} flags=${e.flags ?? '-'} latency=${e.latencyMs}ms upstream=${e.upstream ?? '-'} route=${e.route} trace=${e.traceId ?? '-'} sidecar=${e.sidecar}${hdrs}`
  );
}

export const tap: Command = {
  name: 'tap',
  usage: `meshlet tap SERVICE [--route R] [--rate N] [--headers a,b] [--count N] [-o json] [--server URL]

  Live requests to SERVICE as they finish: method, path, status, response flags, latency, the
  upstream endpoint and the trace id, from SERVICE's sidecars (inbound) and its callers' (outbound).
  No bodies, ever; header values only for the names in --headers (never credentials).
  --route R       only requests through route R (as callers' sidecars name it, e.g. catalog/split)
  --rate N        at most N requests a second (1..100, default 20); the rest are counted as not shown
  --count N       stop after N requests
  -o json         one JSON object a line (the API's NDJSON)`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      {
        route: { type: 'string' },
        rate: { type: 'string' },
        headers: { type: 'string' },
        count: { type: 'string' },
        output: { type: 'string', short: 'o' },
        server: { type: 'string' },
      },
      true,
    );
    const [service, ...extra] = positionals;
    if (!service) throw new UsageError('which service? meshlet tap SERVICE');
    if (extra.length) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`);
    if (values.output !== undefined && values.output !== 'json') throw new UsageError(`-o must be json, got ${JSON.stringify(values.output)}`);
    const count = values.count === undefined ? Infinity : Number(values.count);
    if (!(Number.isInteger(count) && count > 0) && count !== Infinity) throw new UsageError(`--count: expected a positive integer, got ${JSON.stringify(values.count)}`);
    const server = serverUrl(values.server);
    const q = new URLSearchParams({ service });
    if (values.route) q.set('route', values.route);
    if (values.rate) q.set('rate', values.rate);
    if (values.headers) q.set('headers', values.headers);
    const json = values.output === 'json';

    const { request } = await import('undici');
    const ctl = new AbortController();
    let res;
    try {
      res = await request(`${server}/v1/tap?${q}`, { signal: ctl.signal, headers: authHeader(), dispatcher: tlsDispatcher(server), headersTimeout: 15_000, bodyTimeout: 0 });
    } catch (e) {
      throw connectError(server, e);
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON
      }
      throw new CliError(describeApiError({ status: res.statusCode, body }));
    }
    let seen = 0;
    let announced = false;
    const stream = (async (): Promise<number> => {
      let buf = '';
      try {
        for await (const chunk of res.body) {
          buf += (chunk as Buffer).toString('utf8');
          let i: number;
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (!line) continue;
            const e = JSON.parse(line) as TapLine;
            if (e.type === 'status') {
              if (!json && !announced) {
                process.stderr.write(`tapping ${service}${values.route ? ` route ${values.route}` : ''} through ${e.sidecars} sidecar(s); Ctrl-C to stop\n`);
                announced = true;
              }
              if (!json && e.dropped) process.stderr.write(`(${e.dropped} requests not shown: over --rate)\n`);
              if (json) process.stdout.write(line + '\n');
              continue;
            }
            process.stdout.write((json ? line : formatTapLine(e)) + '\n');
            if (++seen >= count) {
              ctl.abort();
              return 0;
            }
          }
        }
      } catch (err) {
        if (ctl.signal.aborted) return 0;
        throw new CliError(`the tap stream broke: ${(err as Error).message}`);
      }
      process.stderr.write('the control plane ended the tap\n');
      return 1;
    })();
    if (count !== Infinity) return stream;
    return Promise.race([
      stream,
      runUntilSignal(async () => {
        ctl.abort();
      }),
    ]);
  },
};
