/**
 * The dashboard's pages: the graph (with its data as tables), a service (and route) page, the
 * policy rollout, and the live tap. All read-only.
 */
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { authHeaders, FLAG_MEANINGS, fmtMs, fmtPct, fmtRps, health, usePoll, type Graph, type Point, type Rollout, type Series, type ServiceHistory, type TapEvent } from './api';
import { Chart } from './chart';
import { label, ServiceGraph } from './graph';

const REFRESH_MS = 3000;

function Problem({ error }: { error: string | undefined }) {
  return error ? (
    <p class="problem" role="alert">
      Cannot reach the control plane: {error}
    </p>
  ) : null;
}

function Updated({ at }: { at: string | null | undefined }) {
  return <p class="updated">{at ? `sampled ${new Date(at).toLocaleTimeString()}` : 'no sample yet'}</p>;
}

// ------------------------------------------------------------------------------------- graph

export function GraphPage() {
  const { data, error } = usePoll<Graph>('/v1/graph', REFRESH_MS);
  return (
    <section aria-labelledby="graph-title">
      <h1 id="graph-title">Service graph</h1>
      <Problem error={error} />
      {!data ? (
        <p>Loading…</p>
      ) : (
        <>
          <p class="lede">
            Calls seen in the last {data.windowSeconds} s · policy version <code>{data.version}</code>
          </p>
          <Updated at={data.at} />
          <Legend />
          <ServiceGraph graph={data} />
          <h2>Calls (last {data.windowSeconds} s)</h2>
          {data.edges.length === 0 ? (
            <p class="empty">No requests in the last minute.</p>
          ) : (
            <table class="edges">
              <thead>
                <tr>
                  <th scope="col">From</th>
                  <th scope="col">To</th>
                  <th scope="col">req/s</th>
                  <th scope="col">Success</th>
                  <th scope="col">p50</th>
                  <th scope="col">p99</th>
                </tr>
              </thead>
              <tbody>
                {data.edges.map((e) => (
                  <tr class={health(e.successRate)} data-edge={`${e.source}->${e.destination}`}>
                    <td>{label(e.source)}</td>
                    <td>
                      <a href={`#/service/${encodeURIComponent(e.destination)}`}>{e.destination}</a>
                    </td>
                    <td class="num">{fmtRps(e.rps)}</td>
                    <td class="num">{fmtPct(e.successRate)}</td>
                    <td class="num">{fmtMs(e.p50Ms)}</td>
                    <td class="num">{fmtMs(e.p99Ms)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <h2>Services and endpoints</h2>
          <table class="nodes">
            <thead>
              <tr>
                <th scope="col">Service</th>
                <th scope="col">Kind</th>
                <th scope="col">Endpoints</th>
                <th scope="col">Policy current</th>
              </tr>
            </thead>
            <tbody>
              {data.nodes.map((n) => (
                <tr data-node={n.name}>
                  <td>{n.kind === 'clients' ? label(n.name) : <a href={`#/service/${encodeURIComponent(n.name)}`}>{n.name}</a>}</td>
                  <td>{n.kind}</td>
                  <td>
                    <ul class="endpoints">
                      {n.endpoints.map((e) => (
                        <li data-endpoint={e.id ?? e.address} data-state={e.state}>
                          <span class={`dot ${e.state}`} aria-hidden="true" /> {e.id ?? e.address} <span class={`state ${e.state}`}>{e.state}</span>
                        </li>
                      ))}
                    </ul>
                  </td>
                  <td>{n.kind === 'mesh' || n.kind === 'gateway' ? `${n.policy.current}/${n.policy.total}` : '–'}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {data.unreachable.length > 0 && (
            <p class="problem">Sidecars not answering: {data.unreachable.map((u) => `${u.id} (${u.error})`).join(', ')}</p>
          )}
        </>
      )}
    </section>
  );
}

function Legend() {
  return (
    <ul class="legend" aria-label="Legend">
      <li>
        <span class="swatch good" /> ≥ 99% success
      </li>
      <li>
        <span class="swatch warn" /> ≥ 95%
      </li>
      <li>
        <span class="swatch bad" /> &lt; 95%
      </li>
      {(['ready', 'pending', 'not-ready', 'ejected', 'disconnected', 'static'] as const).map((s) => (
        <li>
          <span class={`dot ${s}`} /> {s}
        </li>
      ))}
    </ul>
  );
}

// ----------------------------------------------------------------------------------- service

function GoldenCharts({ title, points }: { title: string; points: Point[] }) {
  const times = useMemo(() => points.map((p) => p.t / 1000), [points]);
  const rps = useMemo(() => [{ label: 'req/s', values: points.map((p) => p.rps), color: '--series-1' }], [points]);
  const sr = useMemo(() => [{ label: 'success', values: points.map((p) => p.successRate), color: '--good' }], [points]);
  const lat = useMemo(
    () => [
      { label: 'p50', values: points.map((p) => p.p50Ms), color: '--series-1' },
      { label: 'p90', values: points.map((p) => p.p90Ms), color: '--series-2' },
      { label: 'p99', values: points.map((p) => p.p99Ms), color: '--series-3' },
    ],
    [points],
  );
  return (
    <div class="golden" aria-label={title}>
      <Chart title={`${title}: requests`} times={times} lines={rps} unit="req/s" format={(v) => (v === null ? '–' : fmtRps(v))} />
      <Chart title={`${title}: success rate`} times={times} lines={sr} unit="%" format={(v) => fmtPct(v)} range={[0, 1]} />
      <Chart title={`${title}: latency`} times={times} lines={lat} unit="ms" format={(v) => fmtMs(v)} />
    </div>
  );
}

function Responses({ responses, caption }: { responses: Record<string, number>; caption: string }) {
  const rows = Object.entries(responses).sort((a, b) => b[1] - a[1]);
  const total = rows.reduce((n, [, c]) => n + c, 0);
  if (!rows.length) return <p class="empty">{caption}: no requests counted yet.</p>;
  return (
    <table class="responses">
      <caption>{caption}</caption>
      <thead>
        <tr>
          <th scope="col">Status</th>
          <th scope="col">Flag</th>
          <th scope="col">Meaning</th>
          <th scope="col">Requests</th>
          <th scope="col">Share</th>
        </tr>
      </thead>
      <tbody>
        {rows.map(([k, n]) => {
          const [code, flag] = k.split(' ') as [string, string];
          return (
            <tr class={Number(code) >= 500 || code === '0' ? 'bad' : flag !== '-' ? 'warn' : ''} data-flag={flag}>
              <td class="num">{code === '0' ? 'none' : code}</td>
              <td>
                <code>{flag}</code>
              </td>
              <td>{FLAG_MEANINGS[flag] ?? flag}</td>
              <td class="num">{n}</td>
              <td class="num">{fmtPct(n / total)}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function latest(s: Series): Point | undefined {
  return s.points[s.points.length - 1];
}

export function ServicePage({ service, route }: { service: string; route?: string }) {
  const { data, error } = usePoll<ServiceHistory>(`/v1/history/${encodeURIComponent(service)}`, REFRESH_MS);
  const routeSeries = route ? data?.routes.find((r) => r.route === route) : undefined;
  return (
    <section aria-labelledby="svc-title">
      <p class="crumbs">
        <a href="#/">Graph</a> › {route ? <a href={`#/service/${encodeURIComponent(service)}`}>{service}</a> : service}
        {route ? ` › ${route}` : ''}
      </p>
      <h1 id="svc-title">{route ? `Route ${route}` : `Service ${service}`}</h1>
      <Problem error={error} />
      {!data ? (
        <p>Loading…</p>
      ) : route ? (
        routeSeries ? (
          <>
            <Updated at={data.at} />
            <p class="lede">What callers&apos; sidecars sent to {service} through this route, each point the trailing {data.windowSeconds} s, over the last {Math.round(data.retentionMs / 60000)} minutes.</p>
            <GoldenCharts title={route} points={routeSeries.points} />
            <Responses responses={routeSeries.responses} caption={`Responses through ${route} (last ${Math.round(data.retentionMs / 60000)} min)`} />
            <Breakers data={data} only={route} />
          </>
        ) : (
          <p class="empty">No requests through {route} in the last {Math.round(data.retentionMs / 60000)} minutes.</p>
        )
      ) : (
        <>
          <Updated at={data.at} />
          <p class="lede">
            Each point is the trailing {data.windowSeconds} s window, sampled every {data.intervalMs / 1000} s from the sidecars, for the last {Math.round(data.retentionMs / 60000)} minutes.{' '}
            <a href={`#/tap/${encodeURIComponent(service)}`}>Tap {service}</a>
          </p>
          {data.prometheus && (
            <p class="prom">
              In Prometheus:{' '}
              {data.prometheus.map((l, i) => (
                <>
                  {i > 0 && ' · '}
                  <a href={l.url} target="_blank" rel="noreferrer noopener">
                    {l.label}
                  </a>
                </>
              ))}
            </p>
          )}
          <h2>Served by {service} (inbound)</h2>
          {data.inbound.points.length ? <GoldenCharts title={`${service} inbound`} points={data.inbound.points} /> : <p class="empty">No requests served in the last 15 minutes.</p>}
          <Responses responses={data.inbound.responses} caption={`Responses ${service} served (last ${Math.round(data.retentionMs / 60000)} min)`} />
          <h2>Routes to {service}</h2>
          {data.routes.length === 0 ? (
            <p class="empty">No caller sent requests through a route to {service}.</p>
          ) : (
            <table class="routes">
              <thead>
                <tr>
                  <th scope="col">Route</th>
                  <th scope="col">req/s</th>
                  <th scope="col">Success</th>
                  <th scope="col">p50</th>
                  <th scope="col">p90</th>
                  <th scope="col">p99</th>
                </tr>
              </thead>
              <tbody>
                {data.routes.map((r) => {
                  const p = latest(r);
                  return (
                    <tr class={health(p?.successRate)}>
                      <td>
                        <a href={`#/service/${encodeURIComponent(service)}/route/${encodeURIComponent(r.route)}`}>{r.route}</a>
                      </td>
                      <td class="num">{fmtRps(p?.rps)}</td>
                      <td class="num">{fmtPct(p?.successRate)}</td>
                      <td class="num">{fmtMs(p?.p50Ms)}</td>
                      <td class="num">{fmtMs(p?.p90Ms)}</td>
                      <td class="num">{fmtMs(p?.p99Ms)}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          )}
          {data.routes.map((r) => (
            <details class="series" open={data.routes.length <= 3}>
              <summary>Route {r.route}</summary>
              <GoldenCharts title={`route ${r.route}`} points={r.points} />
            </details>
          ))}
          <h2>Callers of {service}</h2>
          {data.callers.length === 0 && <p class="empty">No callers in the last 15 minutes.</p>}
          {data.callers.map((c) => (
            <details class="series" open={data.callers.length <= 3}>
              <summary>From {label(c.caller)}</summary>
              <GoldenCharts title={`from ${label(c.caller)}`} points={c.points} />
            </details>
          ))}
          <h2>Resilience</h2>
          <Breakers data={data} />
          <h3>Outlier ejections</h3>
          {data.resilience.ejected.length === 0 ? (
            <p class="empty">No endpoint of {service} is ejected by any caller.</p>
          ) : (
            <ul>
              {data.resilience.ejected.map((e) => (
                <li class="bad" data-ejected={e.endpoint}>
                  {e.endpoint} ejected by {e.seenBy}
                </li>
              ))}
            </ul>
          )}
          <h3>Rate-limit decisions</h3>
          {data.resilience.rateLimits.length === 0 ? (
            <p class="empty">No rate limit on {service}.</p>
          ) : (
            <table class="ratelimits">
              <thead>
                <tr>
                  <th scope="col">Limit</th>
                  <th scope="col">Scope</th>
                  <th scope="col">Sidecar</th>
                  <th scope="col">Allowed</th>
                  <th scope="col">Limited</th>
                  <th scope="col">Failed open</th>
                  <th scope="col">Failed closed</th>
                </tr>
              </thead>
              <tbody>
                {data.resilience.rateLimits.map((l) => (
                  <tr>
                    <td>{l.limit}</td>
                    <td>{l.scope}</td>
                    <td>{l.sidecar}</td>
                    <td class="num">{l.allowed}</td>
                    <td class="num">{l.limited}</td>
                    <td class="num">{l.failedOpen}</td>
                    <td class="num">{l.failedClosed}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <h2>Sidecars</h2>
          <ul>
            {data.sidecars.map((s) => (
              <li>
                {s.id} at {s.address}: {s.connected ? `connected, policy ${s.ackedVersion ?? 'none yet'}${s.ackedVersion && s.ackedVersion !== s.expectedVersion ? ` (current: ${s.expectedVersion})` : ''}` : 'disconnected'}
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}

function Breakers({ data, only }: { data: ServiceHistory; only?: string }) {
  const list = data.resilience.breakers.filter((b) => !only || b.route === only);
  return (
    <>
      <h3>Circuit breakers</h3>
      {list.length === 0 ? (
        <p class="empty">No circuit breaker on these routes.</p>
      ) : (
        <ul>
          {list.map((b) => (
            <li class={b.state === 'closed' ? 'good' : 'bad'}>
              {b.route} at {b.sidecar}: {b.state}
            </li>
          ))}
        </ul>
      )}
    </>
  );
}

// ----------------------------------------------------------------------------------- rollout

export function RolloutPage() {
  const { data, error } = usePoll<Rollout>('/v1/rollout', REFRESH_MS);
  return (
    <section aria-labelledby="rollout-title">
      <h1 id="rollout-title">Policy rollout</h1>
      <Problem error={error} />
      {!data ? (
        <p>Loading…</p>
      ) : (
        <>
          <p class="lede">
            Snapshot in force <code>{data.version}</code> (store revision {data.revision}) · <span class="good">{data.summary.acked} ACKed</span> ·{' '}
            <span class={data.summary.nacked ? 'bad' : ''}>{data.summary.nacked} NACKed</span> · {data.summary.pending} pending
            {data.summary.disconnected ? ` · ${data.summary.disconnected} disconnected` : ''}
            {data.convergence ? ` · last change reached every sidecar in ${data.convergence.ms} ms` : ''}
          </p>
          <table class="sidecars">
            <thead>
              <tr>
                <th scope="col">Sidecar</th>
                <th scope="col">Service</th>
                <th scope="col">State</th>
                <th scope="col">Version in force</th>
                <th scope="col">Errors</th>
              </tr>
            </thead>
            <tbody>
              {data.sidecars.map((s) => (
                <tr key={s.id} class={s.state === 'acked' ? 'good' : s.state === 'nacked' ? 'bad' : 'warn'} data-sidecar={s.id} data-state={s.state}>
                  <td>{s.id}</td>
                  <td>{s.service}</td>
                  <td>
                    <strong>{s.state}</strong>
                  </td>
                  <td>
                    <code>{s.ackedVersion ?? '–'}</code>
                  </td>
                  <td>
                    {s.errors.length ? (
                      <ul class="errors">
                        {s.errors.map((e) => (
                          <li>
                            {e.path && <code>{e.path}</code>} {e.message}
                          </li>
                        ))}
                      </ul>
                    ) : (
                      '–'
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Resources</h2>
          {data.resources.map((r) => (
            <details key={`${r.kind}/${r.name}`} class="resource" data-resource={`${r.kind}/${r.name}`}>
              <summary>
                {r.kind}/{r.name} <span class="muted">version {r.resourceVersion ?? '–'}</span>
              </summary>
              <pre>{r.yaml}</pre>
            </details>
          ))}
        </>
      )}
    </section>
  );
}

// --------------------------------------------------------------------------------------- tap

const MAX_ROWS = 200;

export function TapPage({ service: initial }: { service?: string }) {
  const { data: graph } = usePoll<Graph>('/v1/graph', 10_000);
  const services = (graph?.nodes ?? []).filter((n) => n.kind !== 'clients').map((n) => n.name);
  const [service, setService] = useState(initial ?? '');
  const [route, setRoute] = useState('');
  const [rate, setRate] = useState('20');
  const [headers, setHeaders] = useState('');
  const [running, setRunning] = useState(false);
  const [events, setEvents] = useState<TapEvent[]>([]);
  const [status, setStatus] = useState('');
  const ctl = useRef<AbortController | null>(null);
  const { data: hist } = usePoll<ServiceHistory>(service ? `/v1/history/${encodeURIComponent(service)}` : null, 15_000);

  useEffect(() => () => ctl.current?.abort(), []);
  useEffect(() => {
    if (!service && services[0]) setService(initial ?? services.find((s) => s !== 'unknown') ?? services[0]);
  }, [services.join(',')]);

  const stop = (): void => {
    ctl.current?.abort();
    ctl.current = null;
    setRunning(false);
  };
  const start = async (): Promise<void> => {
    stop();
    const c = new AbortController();
    ctl.current = c;
    setEvents([]);
    setRunning(true);
    setStatus('connecting…');
    const q = new URLSearchParams({ service, rate });
    if (route) q.set('route', route);
    if (headers.trim()) q.set('headers', headers.trim());
    try {
      const res = await fetch(`/v1/tap?${q}`, { signal: c.signal, headers: authHeaders() });
      if (!res.ok || !res.body) {
        const b = (await res.json().catch(() => ({}))) as { message?: string };
        setStatus(`tap refused: ${b.message ?? res.status}`);
        setRunning(false);
        return;
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i: number;
        const fresh: TapEvent[] = [];
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!line) continue;
          const e = JSON.parse(line) as TapEvent | { type: 'status'; sidecars: number; dropped: number };
          if (e.type === 'status') setStatus(`watching ${e.sidecars} sidecar(s)${e.dropped ? ` · ${e.dropped} requests not shown (rate limit)` : ''}`);
          else fresh.push(e);
        }
        if (fresh.length) setEvents((old) => [...fresh.reverse(), ...old].slice(0, MAX_ROWS));
      }
      setStatus('stream ended');
    } catch (err) {
      if (!c.signal.aborted) setStatus(`tap failed: ${(err as Error).message}`);
    }
    if (ctl.current === c) setRunning(false);
  };

  const headerNames = [...new Set(events.flatMap((e) => Object.keys(e.headers ?? {})))];
  return (
    <section aria-labelledby="tap-title">
      <h1 id="tap-title">Live requests (tap)</h1>
      <p class="lede">Sampled requests as they finish, from the sidecars of the service and of its callers. No bodies; header values only for the names you list. Off as soon as you stop or leave.</p>
      <form
        class="tap-form"
        onSubmit={(e) => {
          e.preventDefault();
          if (running) stop();
          else void start();
        }}
      >
        <label>
          Service
          <select value={service} onChange={(e) => setService((e.target as HTMLSelectElement).value)} disabled={running} name="service">
            {services.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Route
          <select value={route} onChange={(e) => setRoute((e.target as HTMLSelectElement).value)} disabled={running} name="route">
            <option value="">every route</option>
            {(hist?.routes ?? []).map((r) => (
              <option value={r.route}>{r.route}</option>
            ))}
          </select>
        </label>
        <label>
          Max per second
          <input type="number" min="1" max="100" value={rate} onInput={(e) => setRate((e.target as HTMLInputElement).value)} disabled={running} name="rate" />
        </label>
        <label>
          Show headers
          <input type="text" placeholder="e.g. user-agent,x-canary" value={headers} onInput={(e) => setHeaders((e.target as HTMLInputElement).value)} disabled={running} name="headers" />
        </label>
        <button type="submit" disabled={!service}>
          {running ? 'Stop' : 'Start'}
        </button>
      </form>
      <p class="tap-status" role="status" aria-live="polite">
        {status}
      </p>
      <table class="tap">
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Dir</th>
            <th scope="col">From → To</th>
            <th scope="col">Method</th>
            <th scope="col">Path</th>
            <th scope="col">Status</th>
            <th scope="col">Flags</th>
            <th scope="col">Latency</th>
            <th scope="col">Upstream</th>
            <th scope="col">Route</th>
            <th scope="col">Trace id</th>
            {headerNames.map((h) => (
              <th scope="col">{h}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <tr key={`${e.requestId} ${e.sidecar} ${e.direction}`} class={e.status >= 500 || e.status === 0 ? 'bad' : e.flags ? 'warn' : ''} data-request-id={e.requestId}>
              <td>{new Date(e.time).toLocaleTimeString()}</td>
              <td>{e.direction === 'inbound' ? 'in' : 'out'}</td>
              <td>
                {label(e.source)} → {e.destination}
              </td>
              <td>{e.method}</td>
              <td class="path">{e.path}</td>
              <td class="num">{e.status}</td>
              <td>
                <code>{e.flags ?? '-'}</code>
              </td>
              <td class="num">{fmtMs(e.latencyMs)}</td>
              <td>{e.upstream ?? '–'}</td>
              <td>{e.route}</td>
              <td>
                <code class="trace">{e.traceId ?? '–'}</code>
              </td>
              {headerNames.map((h) => (
                <td>{e.headers?.[h] ?? ''}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
