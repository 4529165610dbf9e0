import { resourceKey, toWire } from '../policy/parse';
import { CliError, api, describeApiError, flags, outputFormat, serverUrl, type Command } from './common';
import { dryRunMode, normaliseDryRun, readResources } from './input';

export const apply: Command = {
  name: 'apply',
  usage: `meshlet apply -f FILE|DIR|- [-f ...] [-R] [--dry-run=client|server] [-o name|json] [--server URL]

Creates or updates every resource in the files, all together: if any is refused, nothing is
applied and every error is printed with its field path. Each resource is checked on its own here;
the control plane then checks the references between them and what it already stores (a Route's
subsets against the stored DestinationPolicy, a RateLimitPolicy's routes...), and its errors are
printed as they come. Findings of \`meshlet check\` about the result are printed as warnings.
  -f, --filename FILE   a file (YAML, multi-document, or JSON), a directory, or - for standard input; repeatable
  -R, --recursive       with a directory: its sub-directories too
  --dry-run=client      check the files here only, write nothing
  --dry-run=server      the control plane checks everything against what it stores, writes nothing
  -o, --output FORMAT   name (KIND/NAME per line) or json (the control plane's answer)`,
  async run(argv) {
    const { values } = flags(normaliseDryRun(argv), {
      filename: { type: 'string', short: 'f', multiple: true },
      recursive: { type: 'boolean', short: 'R' },
      server: { type: 'string' },
      'dry-run': { type: 'string' },
      output: { type: 'string', short: 'o' },
    });
    const mode = dryRunMode(values['dry-run']);
    const output = outputFormat(values.output, ['name', 'json'] as const);
    const server = mode === 'client' ? '' : serverUrl(values.server);
    const { resources } = await readResources(values.filename ?? [], values.recursive === true);
    if (mode === 'client') {
      for (const r of resources) process.stdout.write(output === 'name' ? `${resourceKey(r)}\n` : `${resourceKey(r)} valid (dry run)\n`);
      return 0;
    }
    const res = await api(server, 'POST', `/v1/apply${mode === 'server' ? '?dryRun=true' : ''}`, { items: resources.map(toWire) });
    if (res.status !== 200) throw new CliError(`apply failed, nothing applied: ${describeApiError(res)}`);
    if (output === 'json') {
      process.stdout.write(JSON.stringify(res.body, null, 2) + '\n');
    } else {
      const results = (res.body as { results?: { kind: string; name: string; action: string }[] }).results ?? [];
      for (const r of results) process.stdout.write(output === 'name' ? `${r.kind}/${r.name}\n` : `${r.kind}/${r.name} ${r.action}${mode === 'server' ? ' (dry run: server)' : ''}\n`);
    }
    if (mode === 'none') await warnFindings(server, resources.map(resourceKey));
    return 0;
  },
};

/** `meshlet check`'s findings about what was just applied, as warnings on stderr (never fatal). */
async function warnFindings(server: string, keys: string[]): Promise<void> {
  try {
    const { storedFindings } = await import('./check');
    const findings = (await storedFindings(server)).filter((f) => keys.includes(f.resource));
    for (const f of findings) process.stderr.write(`warning: ${f.code} ${f.resource}${f.field ? ` ${f.field}` : ''}: ${f.message}${f.fix ? ` (fix: ${f.fix})` : ''}\n`);
  } catch {
    // Warnings are best effort: the apply itself succeeded.
  }
}
