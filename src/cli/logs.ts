/**
 * `meshlet logs SERVICE`: the JSON log lines (sidecar log and access log) of a service's sidecars
 * in the local mesh, from the files `meshlet up` writes under DATA_DIR/logs/SERVICE/. `-f` keeps
 * following them. On Kubernetes the sidecar logs to stdout: use `kubectl logs -c meshlet`.
 */
import { promises as fsp, type Stats } from 'node:fs';
import * as path from 'node:path';
import { CliError, flags, UsageError, type Command } from './common';
import { runUntilSignal } from './process';

export const logs: Command = {
  name: 'logs',
  usage: `meshlet logs SERVICE [-f] [--access] [--data-dir DIR]

  -f, --follow      keep printing new lines until Ctrl-C
  --access          access-log lines only
  --data-dir DIR    the directory \`meshlet up\` runs in (default .meshlet)`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      { follow: { type: 'boolean', short: 'f' }, access: { type: 'boolean' }, 'data-dir': { type: 'string' } },
      true,
    );
    if (positionals.length !== 1) throw new UsageError('name exactly one SERVICE');
    const service = positionals[0] as string;
    if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(service)) throw new UsageError(`not a service name: ${JSON.stringify(service)}`);
    const dir = path.join(path.resolve(values['data-dir'] ?? '.meshlet'), 'logs', service);
    let files: string[];
    try {
      files = (await fsp.readdir(dir)).filter((f) => f.endsWith('.log')).sort();
    } catch {
      throw new CliError(`no logs for service ${JSON.stringify(service)} under ${dir}: is \`meshlet up\` running (with this --data-dir)?`);
    }
    if (files.length === 0) throw new CliError(`no logs for service ${JSON.stringify(service)} under ${dir}`);
    const offsets = new Map<string, number>();
    const partial = new Map<string, string>();
    const emit = (id: string, text: string): void => {
      const lines = ((partial.get(id) ?? '') + text).split('\n');
      partial.set(id, lines.pop() ?? '');
      for (const l of lines) {
        if (!l) continue;
        if (values.access && !l.includes('"log":"access"')) continue;
        process.stdout.write(files.length > 1 ? `[${id}] ${l}\n` : `${l}\n`);
      }
    };
    const readNew = async (f: string): Promise<void> => {
      const file = path.join(dir, f);
      let st: Stats;
      try {
        st = await fsp.stat(file);
      } catch {
        return;
      }
      let from = offsets.get(f) ?? 0;
      if (st.size < from) from = 0; // truncated: a new `meshlet up`
      if (st.size === from) return;
      const h = await fsp.open(file, 'r');
      try {
        const buf = Buffer.alloc(st.size - from);
        await h.read(buf, 0, buf.length, from);
        offsets.set(f, st.size);
        emit(f.replace(/\.log$/, ''), buf.toString('utf8'));
      } finally {
        await h.close();
      }
    };
    for (const f of files) await readNew(f);
    if (!values.follow) return 0;
    let timer: NodeJS.Timeout | undefined;
    const poll = async (): Promise<void> => {
      for (const f of (await fsp.readdir(dir).catch(() => [] as string[])).filter((x) => x.endsWith('.log'))) {
        if (!files.includes(f)) files.push(f);
        await readNew(f);
      }
      timer = setTimeout(() => void poll(), 250);
    };
    timer = setTimeout(() => void poll(), 250);
    return runUntilSignal(async () => clearTimeout(timer));
  },
};
