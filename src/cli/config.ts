/**
 * The CLI's config file: named contexts (a control plane's address and, once the API has
 * authentication, a token), like kubectl's kubeconfig. `$MESHLET_CONFIG`, else
 * `$XDG_CONFIG_HOME/meshlet/config.yaml`, else `~/.config/meshlet/config.yaml`:
 *
 *   current-context: staging
 *   contexts:
 *     - {name: local, server: http://127.0.0.1:15080}
 *     - {name: staging, server: https://meshlet.staging.example:15080, token: ...}
 *
 * `meshlet config ...` reads and writes it; a missing file is an empty config.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse, stringify } from 'yaml';
import { CliError, flags, nearest, table, UsageError, type Command } from './common';

export interface Context {
  name: string;
  server: string;
  token?: string;
}

export interface CliConfig {
  currentContext?: string;
  contexts: Context[];
}

export function configPath(): string {
  if (process.env.MESHLET_CONFIG) return path.resolve(process.env.MESHLET_CONFIG);
  const base = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'meshlet', 'config.yaml');
}

export function loadConfig(file = configPath()): CliConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { contexts: [] };
    throw new CliError(`cannot read the config file ${file}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parse(text) ?? {};
  } catch (e) {
    throw new CliError(`${file} is not valid YAML: ${(e as Error).message}`);
  }
  const o = raw as { 'current-context'?: unknown; contexts?: unknown };
  const bad = (p: string, m: string): never => {
    throw new CliError(`${file}: ${p}: ${m}`);
  };
  if (typeof o !== 'object' || Array.isArray(o)) bad('(top)', 'must be a mapping with current-context and contexts');
  for (const k of Object.keys(o)) if (k !== 'current-context' && k !== 'contexts') bad(k, 'unknown field; allowed: current-context, contexts');
  const contexts: Context[] = [];
  if (o.contexts !== undefined && !Array.isArray(o.contexts)) bad('contexts', 'must be a list');
  ((o.contexts as unknown[]) ?? []).forEach((c, i) => {
    const x = c as Record<string, unknown>;
    if (!x || typeof x !== 'object') bad(`contexts[${i}]`, 'must be a mapping');
    if (typeof x.name !== 'string' || !x.name) bad(`contexts[${i}].name`, 'must be a non-empty string');
    if (typeof x.server !== 'string' || !x.server) bad(`contexts[${i}].server`, 'must be a URL');
    if (x.token !== undefined && typeof x.token !== 'string') bad(`contexts[${i}].token`, 'must be a string');
    for (const k of Object.keys(x)) if (!['name', 'server', 'token'].includes(k)) bad(`contexts[${i}].${k}`, 'unknown field; allowed: name, server, token');
    contexts.push({ name: x.name as string, server: x.server as string, ...(x.token ? { token: x.token as string } : {}) });
  });
  if (o['current-context'] !== undefined && typeof o['current-context'] !== 'string') bad('current-context', 'must be a string');
  return { currentContext: o['current-context'] as string | undefined, contexts };
}

export function saveConfig(cfg: CliConfig, file = configPath()): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const doc = { ...(cfg.currentContext ? { 'current-context': cfg.currentContext } : {}), contexts: cfg.contexts };
  const tmp = `${file}.${process.pid}.tmp`;
  // 0600: a context may hold a token.
  writeFileSync(tmp, stringify(doc), { mode: 0o600 });
  renameSync(tmp, file);
}

const SUB = ['view', 'get-contexts', 'current-context', 'use-context', 'set-context', 'delete-context'];

export const config: Command = {
  name: 'config',
  usage: `meshlet config view|get-contexts|current-context|use-context NAME|set-context NAME --server URL [--token T]|delete-context NAME

Named contexts in the config file ($MESHLET_CONFIG, else ~/.config/meshlet/config.yaml).
Client commands take the control plane from --server, else --context NAME, else $MESHLET_SERVER,
else the current context, else http://127.0.0.1:15080; $MESHLET_TOKEN (else the context's token)
is sent as a bearer token.
  --server URL    (set-context) the control plane's REST API
  --token T       (set-context) a bearer token for the API`,
  async run(argv) {
    const { values, positionals } = flags(argv, { server: { type: 'string' }, token: { type: 'string' } }, true);
    const [sub, name, ...rest] = positionals;
    if (!sub) throw new UsageError(`a sub-command is required: ${SUB.join(', ')}`);
    if (!SUB.includes(sub)) {
      const near = nearest(sub, SUB);
      throw new UsageError(`unknown sub-command ${JSON.stringify(sub)}${near ? `; did you mean \`${near}\`?` : ''}`);
    }
    if (rest.length) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
    if ((values.server !== undefined || values.token !== undefined) && sub !== 'set-context') throw new UsageError('--server and --token go with set-context');
    const file = configPath();
    const cfg = loadConfig(file);
    const needName = (): string => {
      if (!name) throw new UsageError(`${sub} needs a context NAME`);
      return name;
    };
    switch (sub) {
      case 'view': {
        const shown = { ...cfg, contexts: cfg.contexts.map((c) => (c.token ? { ...c, token: 'REDACTED' } : c)) };
        process.stdout.write(`# ${file}\n` + stringify({ ...(shown.currentContext ? { 'current-context': shown.currentContext } : {}), contexts: shown.contexts }));
        return 0;
      }
      case 'get-contexts': {
        if (cfg.contexts.length === 0) {
          process.stdout.write(`no contexts in ${file}; add one with \`meshlet config set-context NAME --server URL\`\n`);
          return 0;
        }
        const rows = [['CURRENT', 'NAME', 'SERVER']];
        for (const c of cfg.contexts) rows.push([c.name === cfg.currentContext ? '*' : '', c.name, c.server]);
        process.stdout.write(table(rows) + '\n');
        return 0;
      }
      case 'current-context':
        if (!cfg.currentContext) throw new CliError(`no current context in ${file}`);
        process.stdout.write(cfg.currentContext + '\n');
        return 0;
      case 'use-context': {
        const n = needName();
        if (!cfg.contexts.some((c) => c.name === n)) {
          const near = nearest(n, cfg.contexts.map((c) => c.name));
          throw new CliError(`no context ${JSON.stringify(n)} in ${file}${near ? `; did you mean ${JSON.stringify(near)}?` : ''}`);
        }
        saveConfig({ ...cfg, currentContext: n }, file);
        process.stdout.write(`switched to context ${JSON.stringify(n)}\n`);
        return 0;
      }
      case 'set-context': {
        const n = needName();
        const old = cfg.contexts.find((c) => c.name === n);
        const server = values.server ?? old?.server;
        if (!server) throw new UsageError('set-context of a new context needs --server URL');
        try {
          new URL(/^https?:\/\//.test(server) ? server : `http://${server}`);
        } catch {
          throw new UsageError(`--server: not a URL: ${JSON.stringify(server)}`);
        }
        const ctx: Context = { name: n, server, ...((values.token ?? old?.token) ? { token: (values.token ?? old?.token) as string } : {}) };
        const contexts = old ? cfg.contexts.map((c) => (c.name === n ? ctx : c)) : [...cfg.contexts, ctx];
        saveConfig({ currentContext: cfg.currentContext ?? n, contexts }, file);
        process.stdout.write(`context ${JSON.stringify(n)} ${old ? 'modified' : 'created'}${cfg.currentContext ? '' : ' and made current'}\n`);
        return 0;
      }
      case 'delete-context': {
        const n = needName();
        if (!cfg.contexts.some((c) => c.name === n)) throw new CliError(`no context ${JSON.stringify(n)} in ${file}`);
        saveConfig({ currentContext: cfg.currentContext === n ? undefined : cfg.currentContext, contexts: cfg.contexts.filter((c) => c.name !== n) }, file);
        process.stdout.write(`context ${JSON.stringify(n)} deleted\n`);
        return 0;
      }
    }
    return 0;
  },
};
