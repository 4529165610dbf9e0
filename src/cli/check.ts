/**
 * `meshlet check [-f FILE]` (like `istioctl analyze`): the findings of src/policy/analyze.ts on
 * the stored policies, the mesh's endpoints and the sidecars' ACK/NACK, or on the files' resources
 * laid over the stored ones (what the mesh would be after `apply`). Exit 1 when any finding is an
 * error.
 */
import { formatErrors } from '../core/result';
import { analyze, CODES, DEFAULT_CERT_EXPIRY_MS, DEFAULT_EJECTED_FOR_MS, DEFAULT_REPEATED_EJECTIONS, type AuthzCount, type CertificateReport, type EjectionReport, type Finding, type SidecarReport, type StoredCertificate } from '../policy/analyze';
import { describeLeaf } from '../security/tls-material';
import { parseDuration } from '../policy/validate';
import { parseEach, resourceKey } from '../policy/parse';
import type { Endpoint, Resource } from '../policy/types';
import { api, CliError, describeApiError, flags, outputFormat, serverUrl, table, UsageError, type Command } from './common';
import { readResources } from './input';

interface Stored {
  resources: Resource[];
  endpoints: Endpoint[];
  sidecars: SidecarReport[];
  ejections: EjectionReport[];
  ejectionWindowMs?: number;
  authz?: AuthzCount[];
  certificates: CertificateReport[];
  storedCertificates: StoredCertificate[];
}

async function stored(server: string): Promise<Stored> {
  const authzCounts = async (): Promise<AuthzCount[] | undefined> => {
    // The sidecars' AuthorizationPolicy counts (for dryRun policies that would deny); optional.
    try {
      const r = await api(server, 'GET', '/v1/stats');
      return r.status === 200 ? (r.body as { authz?: AuthzCount[] }).authz : undefined;
    } catch {
      return undefined;
    }
  };
  const [snap, status, ej, certs] = await Promise.all([api(server, 'GET', '/v1/snapshot'), api(server, 'GET', '/v1/status'), api(server, 'GET', '/v1/ejections'), api(server, 'GET', '/v1/certificates')]);
  if (snap.status !== 200) throw new CliError(describeApiError(snap));
  const b = snap.body as { resources: unknown[]; endpoints: Endpoint[] };
  // TLSCertificates come back with their keys redacted: judged from their certificate alone.
  const isSecret = (x: unknown): boolean => (x as { kind?: unknown } | null)?.kind === 'TLSCertificate';
  const storedCertificates = (b.resources ?? []).filter(isSecret).flatMap((x): StoredCertificate[] => {
    const w = x as { metadata?: { name?: string }; spec?: { certificate?: unknown } };
    const leaf = typeof w.spec?.certificate === 'string' ? describeLeaf(w.spec.certificate) : undefined;
    return leaf && w.metadata?.name ? [{ name: w.metadata.name, subject: leaf.subject, names: leaf.names, notBefore: new Date(leaf.notBefore).toISOString(), notAfter: new Date(leaf.notAfter).toISOString() }] : [];
  });
  const parsed = parseEach((b.resources ?? []).filter((x) => !isSecret(x)));
  if (!parsed.ok) throw new CliError(`the control plane's snapshot does not parse here (a client older than the control plane?):\n${formatErrors(parsed.errors)}`);
  // An older control plane has no /v1/ejections: no ejection findings then.
  const e = ej.status === 200 ? (ej.body as { ejections?: EjectionReport[]; retentionMs?: number }) : {};
  // Asked only when there are policies: /v1/stats makes the control plane ask every sidecar.
  const authz = parsed.value.some((r) => r.kind === 'AuthorizationPolicy') ? await authzCounts() : undefined;
  return {
    resources: parsed.value,
    storedCertificates,
    endpoints: b.endpoints ?? [],
    sidecars: status.status === 200 ? ((status.body as { sidecars: SidecarReport[] }).sidecars ?? []) : [],
    ejections: e.ejections ?? [],
    ejectionWindowMs: e.retentionMs,
    // An older control plane has no /v1/certificates: no certificate findings then.
    certificates: certs.status === 200 ? ((certs.body as { certificates?: CertificateReport[] }).certificates ?? []) : [],
    ...(authz ? { authz } : {}),
  };
}

/** The findings on what is stored now (used by `apply` to warn). */
export async function storedFindings(server: string): Promise<Finding[]> {
  return analyze(await stored(server));
}

export const check: Command = {
  name: 'check',
  usage: `meshlet check [-f FILE|DIR|- ...] [-R] [-o json|yaml] [--codes] [--server URL]

Finds what is valid but probably wrong: routes to services with no endpoints, subsets that
select no endpoint, rules shadowed by an earlier catch-all, all-zero weights, retries that cannot
fit in the rule timeout, rate limits on routes that do not exist, sidecars that NACK, gateway
certificates about to expire... Each
finding has a code, a severity, the resource and field, and a fix. With -f, the files'
resources are checked as if applied over what is stored. Exit 1 when there is an error.
  -f, --filename FILE   check these resources over the stored ones; repeatable
  -R, --recursive       with a directory: its sub-directories too
  -o, --output FORMAT   json or yaml: the findings as data
  --ejected-for DUR     an endpoint ejected by outlier detection for longer than DUR is a finding
                        (MC0015; default 5m; the control plane samples the sidecars every few seconds)
  --ejections N         an endpoint ejected N times or more in the sampled window (15m) is a
                        finding (MC0016; default 3)
  --cert-expiry DUR     a certificate a Gateway listener serves (a file, or a TLSCertificate in the
                        store) that expires within DUR is a warning (MC0017; default 14d); an
                        expired one is an error (MC0018)
  --codes               list every finding code and what it means`,
  async run(argv) {
    const { values } = flags(argv, {
      filename: { type: 'string', short: 'f', multiple: true },
      recursive: { type: 'boolean', short: 'R' },
      output: { type: 'string', short: 'o' },
      codes: { type: 'boolean' },
      'ejected-for': { type: 'string' },
      ejections: { type: 'string' },
      'cert-expiry': { type: 'string' },
      server: { type: 'string' },
    });
    let ejectedForMs = DEFAULT_EJECTED_FOR_MS;
    if (values['ejected-for'] !== undefined) {
      const d = parseDuration(values['ejected-for']);
      if (d === undefined || d <= 0) throw new UsageError(`--ejected-for: expected a duration such as 90s or 5m, got ${JSON.stringify(values['ejected-for'])}`);
      ejectedForMs = d;
    }
    let repeatedEjections = DEFAULT_REPEATED_EJECTIONS;
    if (values.ejections !== undefined) {
      if (!/^\d{1,6}$/.test(values.ejections) || Number(values.ejections) < 1) throw new UsageError(`--ejections: expected a positive integer, got ${JSON.stringify(values.ejections)}`);
      repeatedEjections = Number(values.ejections);
    }
    let certExpiryMs = DEFAULT_CERT_EXPIRY_MS;
    if (values['cert-expiry'] !== undefined) {
      const v = values['cert-expiry'];
      const days = /^(\d{1,5})d$/.exec(v.trim());
      const d = days ? Number(days[1]) * 86_400_000 : parseDuration(v);
      if (d === undefined || d < 0) throw new UsageError(`--cert-expiry: expected a duration such as 30d, 72h or 0s, got ${JSON.stringify(v)}`);
      certExpiryMs = d;
    }
    const thresholds = { ejectedForMs, repeatedEjections, certExpiryMs };
    const output = outputFormat(values.output, ['json', 'yaml'] as const);
    if (values.codes) {
      process.stdout.write(table([['CODE', 'SEVERITY', 'MEANING'], ...Object.entries(CODES).map(([c, v]) => [c, v.severity, v.title])]) + '\n');
      return 0;
    }
    const server = serverUrl(values.server);
    const st = await stored(server);
    let scope: Set<string> | undefined;
    if (values.filename) {
      const { resources } = await readResources(values.filename, values.recursive === true);
      const keys = new Set(resources.map(resourceKey));
      st.resources = [...st.resources.filter((r) => !keys.has(resourceKey(r))), ...resources];
      scope = keys;
    }
    let findings = analyze({ ...st, ...thresholds });
    // With -f: the files' findings, and those of stored resources the files make wrong.
    if (scope) {
      const before = new Set(analyze({ ...(await stored(server)), ...thresholds }).map((x) => `${x.code} ${x.resource} ${x.field ?? ''}`));
      findings = findings.filter((x) => scope.has(x.resource) || !before.has(`${x.code} ${x.resource} ${x.field ?? ''}`));
    }
    const errors = findings.filter((x) => x.severity === 'error').length;
    if (output === 'json') process.stdout.write(JSON.stringify({ findings }, null, 2) + '\n');
    else if (output === 'yaml') process.stdout.write((await import('yaml')).stringify({ findings }));
    else if (findings.length === 0) process.stdout.write(`no problems found in ${st.resources.length} resource(s), ${st.endpoints.length} endpoint(s), ${st.sidecars.length} sidecar(s)\n`);
    else {
      for (const x of findings) {
        const sev = x.severity === 'error' ? 'Error' : x.severity === 'warning' ? 'Warning' : 'Info';
        process.stdout.write(`${sev} [${x.code}] ${x.resource}${x.field ? ` ${x.field}` : ''}: ${x.message}\n${x.fix ? `  fix: ${x.fix}\n` : ''}`);
      }
      const warnings = findings.filter((x) => x.severity === 'warning').length;
      process.stdout.write(`\n${errors} error(s), ${warnings} warning(s), ${findings.length - errors - warnings} info\n`);
    }
    return errors > 0 ? 1 : 0;
  },
};
