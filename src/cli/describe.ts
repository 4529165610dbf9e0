/**
 * `meshlet describe KIND NAME`: one resource, what it refers to and what refers to it, which
 * sidecars run the policy version that holds it (ACK/NACK), and its recent traffic from the
 * control plane's merged stats (like `kubectl describe`).
 */
import { stringify } from 'yaml';
import { kindFromName } from '../policy/parse';
import { KINDS, type Kind } from '../policy/types';
import type { MeshStats } from '../observability/mesh-stats';
import { age, api, CliError, describeApiError, flags, serverUrl, UsageError, type Command } from './common';

type Wire = { kind: Kind; metadata: { name: string; labels?: Record<string, string>; resourceVersion?: string; creationTimestamp?: string }; spec: Record<string, unknown> };
type Ref = { to: string; via: string };

export const describe: Command = {
  name: 'describe',
  usage: `meshlet describe KIND NAME [--server URL]

The resource, what it refers to (services, subsets, routes) and what refers to it, which
sidecars ACKed the policy version that holds it (or NACKed it, and why), and its traffic over
the last 60 s (requests, success rate, p99, by route rule).`,
  async run(argv) {
    const { values, positionals } = flags(argv, { server: { type: 'string' } }, true);
    const [kindArg, name, ...rest] = positionals;
    if (!kindArg || !name) throw new UsageError('KIND and NAME are required');
    if (rest.length) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
    const kind = kindFromName(kindArg);
    if (!kind) throw new UsageError(`unknown kind ${JSON.stringify(kindArg)}`);
    const server = serverUrl(values.server);
    const one = await api(server, 'GET', `/v1/${kind.toLowerCase()}/${encodeURIComponent(name)}`);
    if (one.status === 404) throw new CliError(`${kind} ${JSON.stringify(name)} not found`);
    if (one.status !== 200) throw new CliError(describeApiError(one));
    const r = one.body as Wire;
    const all: Wire[] = [];
    /** Kinds this credential may not list (TLSCertificates below admin): their references are not judged. */
    const hidden = new Set<string>();
    for (const k of KINDS) {
      const res = await api(server, 'GET', `/v1/${k.toLowerCase()}`);
      if (res.status === 200) all.push(...((res.body as { items: Wire[] }).items ?? []).map((i) => ({ ...i, kind: i.kind ?? k })));
      else if (res.status === 403) hidden.add(k);
    }
    const [statusRes, statsRes, snapRes] = await Promise.all([api(server, 'GET', '/v1/status'), api(server, 'GET', '/v1/stats'), api(server, 'GET', '/v1/snapshot')]);
    const endpoints = ((snapRes.body as { endpoints?: { service: string; labels: Record<string, string> }[] })?.endpoints ?? []) as { service: string; labels: Record<string, string> }[];

    const md = r.metadata;
    let out = `Name:         ${md.name}\nKind:         ${r.kind}\n`;
    out += `Labels:       ${Object.entries(md.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(', ') || '<none>'}\n`;
    out += `Version:      ${md.resourceVersion ?? '-'}\nCreated:      ${md.creationTimestamp ?? '-'} (${age(md.creationTimestamp)} ago)\n`;
    out += `Spec:\n${indent(stringify(r.spec), 2)}`;

    const refs = outgoing(r);
    out += `Refers to:\n`;
    if (refs.length === 0) out += '  <nothing>\n';
    for (const x of refs) {
      const svc = /^service (.+)$/.exec(x.to)?.[1];
      let note = '';
      if (svc !== undefined) {
        const n = endpoints.filter((e) => e.service === svc).length;
        const st = all.find((a) => a.kind === 'Service' && a.metadata.name === svc);
        const staticN = st ? ((st.spec.endpoints as unknown[]) ?? []).length : 0;
        note = n + staticN === 0 ? '  <- no endpoints' : ` (${n + staticN} endpoint${n + staticN === 1 ? '' : 's'})`;
      } else if (hidden.has(x.to.split('/')[0] as string)) note = '  (not listed: needs the admin role)';
      else if (!exists(all, x.to)) note = '  <- missing';
      let to = x.to;
      const dp = /^DestinationPolicy for service (\S+) \(subset (.+)\)$/.exec(x.to);
      if (dp) {
        const p = all.find((a) => a.kind === 'DestinationPolicy' && a.spec.service === dp[1]);
        const sub = p && ((p.spec.subsets as { name: string; labels: Record<string, string> }[]) ?? []).find((s) => s.name === dp[2]);
        to = p ? `DestinationPolicy/${p.metadata.name} subset ${dp[2]}${sub ? ` (${Object.entries(sub.labels).map(([k, v]) => `${k}=${v}`).join(',')})` : ''}` : x.to;
        if (!sub) note = '  <- missing';
      }
      out += `  ${to}  (${x.via})${note}\n`;
    }
    const incoming = all.filter((o) => !(o.kind === r.kind && o.metadata.name === r.metadata.name)).flatMap((o) => outgoing(o).filter((x) => pointsAt(x.to, r)).map((x) => ({ from: `${o.kind}/${o.metadata.name}`, via: x.via })));
    out += `Referred to by:\n${incoming.length ? incoming.map((i) => `  ${i.from}  (${i.via})\n`).join('') : '  <nothing>\n'}`;

    if (statusRes.status === 200) {
      const st = statusRes.body as { version: string; sidecars: { id: string; connected: boolean; ackedVersion?: string; expectedVersion?: string; ackedAt?: string; nackVersion?: string; nackedAt?: string; nackReason?: string }[] };
      const connected = st.sidecars.filter((s) => s.connected);
      // Each sidecar against its own view's version (scoped sidecars run their scope's).
      const current = (s: { ackedVersion?: string; expectedVersion?: string }) => s.ackedVersion === (s.expectedVersion ?? st.version);
      const acked = connected.filter(current);
      const nacked = connected.filter((s) => s.nackVersion && (!s.ackedAt || (s.nackedAt ?? '') > s.ackedAt));
      out += `Sidecars:     ${acked.length}/${connected.length} connected sidecars ACKed the policy version in force for them (mesh version ${st.version}; scoped sidecars: their view's)\n`;
      for (const s of nacked) out += `  NACK ${s.id}: ${(s.nackReason ?? '').split('\n').join('; ')}\n`;
      const stale = connected.filter((s) => !current(s) && !nacked.includes(s));
      if (stale.length) out += `  not yet: ${stale.map((s) => s.id).join(', ')}\n`;
    }
    if (statsRes.status === 200) {
      const stats = statsRes.body as MeshStats;
      const rows =
        r.kind === 'Route'
          ? stats.routes.filter((x) => (x.route ?? '').startsWith(`${md.name}/`))
          : typeof r.spec.service === 'string' || r.kind === 'Service'
            ? [...stats.services.filter((x) => x.service === (r.kind === 'Service' ? md.name : r.spec.service)), ...stats.routes.filter((x) => x.service === (r.kind === 'Service' ? md.name : r.spec.service))]
            : [];
      out += `Traffic (last 60 s):\n`;
      if (rows.length === 0) out += '  no requests\n';
      for (const x of rows)
        out += `  ${x.route ? `route ${x.route}` : `service ${x.service} (inbound)`}: ${x.requests} requests, ${x.successRate === null ? '-' : (x.successRate * 100).toFixed(2) + '%'} success, ${x.rps.toFixed(2)} rps, p99 ${x.p99Ms === null ? '-' : x.p99Ms + 'ms'}\n`;
    }
    process.stdout.write(out);
    return 0;
  },
};

function indent(s: string, n: number): string {
  return s.replace(/\n$/, '').split('\n').map((l) => ' '.repeat(n) + l).join('\n') + '\n';
}

function exists(all: Wire[], to: string): boolean {
  const m = /^([A-Za-z]+)\/(.+)$/.exec(to);
  return m ? all.some((a) => a.kind === m[1] && a.metadata.name === m[2]) : true;
}

function pointsAt(to: string, r: Wire): boolean {
  if (to === `${r.kind}/${r.metadata.name}`) return true;
  if (r.kind === 'Service' && to === `service ${r.metadata.name}`) return true;
  if (r.kind === 'DestinationPolicy' && to.startsWith('DestinationPolicy for service ') && to.slice(30).split(' ')[0] === r.spec.service) return true;
  return false;
}

/** What a resource refers to, with the field that does. */
function outgoing(r: Wire): Ref[] {
  const out: Ref[] = [];
  const s = r.spec;
  switch (r.kind) {
    case 'Route': {
      const rules = (s.rules as { name: string; backends?: { service: string; subset?: string }[]; mirror?: { service: string; subset?: string }; apiKeys?: { consumerRefs?: string[] } }[]) ?? [];
      const seen = new Set<string>();
      const add = (to: string, via: string): void => {
        if (seen.has(to)) return;
        seen.add(to);
        out.push({ to, via });
      };
      rules.forEach((rule, i) => {
        (rule.backends ?? []).forEach((b, j) => {
          add(`service ${b.service}`, `spec.rules[${i}].backends[${j}]`);
          if (b.subset) add(`DestinationPolicy for service ${b.service} (subset ${b.subset})`, `spec.rules[${i}].backends[${j}].subset`);
        });
        if (rule.mirror) add(`service ${rule.mirror.service}`, `spec.rules[${i}].mirror`);
        (rule.apiKeys?.consumerRefs ?? []).forEach((c, j) => add(`ApiConsumer/${c}`, `spec.rules[${i}].apiKeys.consumerRefs[${j}]`));
      });
      ((s.gateways as string[] | undefined) ?? []).forEach((g, i) => {
        if (g !== 'mesh') add(`Gateway/${g}`, `spec.gateways[${i}]`);
      });
      break;
    }
    case 'RateLimitPolicy':
      out.push({ to: `service ${s.service}`, via: 'spec.service' });
      ((s.limits as { routes?: string[] }[]) ?? []).forEach((l, i) =>
        (l.routes ?? []).forEach((rt, j) => out.push({ to: `Route/${rt.split('/')[0]}`, via: `spec.limits[${i}].routes[${j}]` })),
      );
      break;
    case 'DestinationPolicy':
    case 'GrpcTranscoding':
      out.push({ to: `service ${s.service}`, via: 'spec.service' });
      break;
    case 'AuthorizationPolicy':
    case 'PeerAuthentication':
      if (s.service !== undefined) out.push({ to: `service ${s.service}`, via: 'spec.service' });
      break;
    case 'Gateway':
      ((s.listeners as { tls?: { certificates?: { secret?: string }[] } }[]) ?? []).forEach((l, i) =>
        (l.tls?.certificates ?? []).forEach((c, j) => {
          if (c.secret !== undefined) out.push({ to: `TLSCertificate/${c.secret}`, via: `spec.listeners[${i}].tls.certificates[${j}].secret` });
        }),
      );
      break;
  }
  return out;
}
