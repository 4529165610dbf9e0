/** The client's config file (~/.config/meshlet/config.yaml or $MESHLET_CONFIG): named contexts. */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CliError } from './errors';

export interface Context {
  name: string;
  server: string;
  token?: string;
  /** A PEM file with the roots that verify the server's TLS certificate (https servers). */
  certificateAuthority?: string;
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
    // yaml is loaded only when there is a file to read (~25-45 ms of a command's start).
    raw = (require('yaml') as typeof import('yaml')).parse(text) ?? {};
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
    if (x['certificate-authority'] !== undefined && typeof x['certificate-authority'] !== 'string') bad(`contexts[${i}].certificate-authority`, 'must be a file name');
    for (const k of Object.keys(x)) if (!['name', 'server', 'token', 'certificate-authority'].includes(k)) bad(`contexts[${i}].${k}`, 'unknown field; allowed: name, server, token, certificate-authority');
    contexts.push({
      name: x.name as string,
      server: x.server as string,
      ...(x.token ? { token: x.token as string } : {}),
      ...(x['certificate-authority'] ? { certificateAuthority: x['certificate-authority'] as string } : {}),
    });
  });
  if (o['current-context'] !== undefined && typeof o['current-context'] !== 'string') bad('current-context', 'must be a string');
  return { currentContext: o['current-context'] as string | undefined, contexts };
}

export function saveConfig(cfg: CliConfig, file = configPath()): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const contexts = cfg.contexts.map(({ certificateAuthority, ...c }) => ({ ...c, ...(certificateAuthority ? { 'certificate-authority': certificateAuthority } : {}) }));
  const doc = { ...(cfg.currentContext ? { 'current-context': cfg.currentContext } : {}), contexts };
  const tmp = `${file}.${process.pid}.tmp`;
  // 0600: a context may hold a token.
  writeFileSync(tmp, (require('yaml') as typeof import('yaml')).stringify(doc), { mode: 0o600 });
  renameSync(tmp, file);
}
