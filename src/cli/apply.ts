import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { embedProtoFiles } from '../grpc/transcode/embed';
import { formatErrors } from '../core/result';
import { parseAll, parseDocuments, resourceKey, toWire } from '../policy/parse';
import { CliError, api, describeApiError, flags, readStdin, serverUrl, UsageError, type Command } from './common';

export const apply: Command = {
  name: 'apply',
  usage: `meshlet apply -f FILE|- [--server URL] [--dry-run]

Validates every document in FILE (YAML, multi-document, or JSON) and applies them together:
if any document is invalid, nothing is applied and every error is printed with its field path.
  -f, --filename FILE   the file, or - for standard input
  --server URL          the control plane (default $MESHLET_SERVER or http://127.0.0.1:15080)
  --dry-run             validate locally and print what would be applied`,
  async run(argv) {
    const { values } = flags(argv, { filename: { type: 'string', short: 'f' }, server: { type: 'string' }, 'dry-run': { type: 'boolean' } });
    if (!values.filename) throw new UsageError('-f FILE is required (use - for standard input)');
    let text: string;
    try {
      text = values.filename === '-' ? await readStdin() : await readFile(values.filename, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read ${values.filename}: ${(e as Error).message}`);
    }
    const docs = parseDocuments(text);
    if (!docs.ok) throw new CliError(`${values.filename} is not valid YAML or JSON:\n${formatErrors(docs.errors)}`);
    // Validate locally first, for the same messages without a round trip; the server checks again
    // against everything already stored (references to other resources).
    const embedded = embedProtoFiles(docs.value, values.filename === '-' ? process.cwd() : dirname(values.filename));
    if (!embedded.ok) throw new CliError(`invalid policy, nothing applied:\n${formatErrors(embedded.errors)}`);
    const local = parseAll(embedded.value);
    if (!local.ok) throw new CliError(`invalid policy, nothing applied:\n${formatErrors(local.errors)}`);
    if (values['dry-run']) {
      for (const r of local.value) process.stdout.write(`${resourceKey(r)} valid (dry run)\n`);
      return 0;
    }
    const res = await api(serverUrl(values.server), 'POST', '/v1/apply', { items: local.value.map(toWire) });
    if (res.status !== 200) throw new CliError(`apply failed, nothing applied: ${describeApiError(res)}`);
    const results = (res.body as { results?: { kind: string; name: string; action: string; resourceVersion?: string }[] }).results ?? [];
    for (const r of results) process.stdout.write(`${r.kind}/${r.name} ${r.action}\n`);
    return 0;
  },
};
