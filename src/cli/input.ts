/**
 * Reading policy files for `apply`, `delete -f`, `diff` and `check`: several `-f` (files,
 * directories, `-` for standard input), `-R` for sub-directories. Each resource is checked on
 * its own here (syntax and fields, with field paths); references between resources are the
 * control plane's to check, against what it stores.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { formatErrors } from '../core/result';
import { embedProtoFiles } from '../grpc/transcode/embed';
import { parseDocuments, parseEach } from '../policy/parse';
import type { Resource } from '../policy/types';
import { CliError, readStdin, UsageError } from './common';

const EXTENSIONS = ['.yaml', '.yml', '.json'];

/** The files `-f` names: directories expand to their .yaml/.yml/.json files (recursively with -R), sorted. */
export async function expandFiles(args: readonly string[], recursive: boolean): Promise<string[]> {
  if (args.length === 0) throw new UsageError('-f FILE is required (a file, a directory, or - for standard input; repeat -f for several)');
  if (args.filter((a) => a === '-').length > 1) throw new UsageError('-f - (standard input) can be given once');
  const out: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    const entries = (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name));
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (recursive) await walk(p, depth + 1);
      } else if (EXTENSIONS.includes(path.extname(e.name))) out.push(p);
    }
  };
  for (const a of args) {
    if (a === '-') {
      out.push('-');
      continue;
    }
    let st;
    try {
      st = await fsp.stat(a);
    } catch (e) {
      throw new CliError(`cannot read ${a}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`);
    }
    if (st.isDirectory()) {
      const before = out.length;
      await walk(a, 0);
      if (out.length === before) throw new CliError(`${a}: no .yaml, .yml or .json files${recursive ? '' : ' (sub-directories need -R)'}`);
    } else out.push(a);
  }
  return out;
}

export interface Input {
  /** Every resource, in file order. */
  resources: Resource[];
  /** Which file each resource came from (by index). */
  sources: string[];
}

/**
 * Reads and checks every file: all errors of all files are reported together (each prefixed by
 * its file when there are several), and nothing is returned unless all are valid on their own.
 */
export async function readResources(args: readonly string[], recursive: boolean): Promise<Input> {
  const files = await expandFiles(args, recursive);
  const resources: Resource[] = [];
  const sources: string[] = [];
  const problems: string[] = [];
  const label = (f: string): string => (f === '-' ? 'standard input' : f);
  for (const f of files) {
    let text: string;
    try {
      text = f === '-' ? await readStdin() : await fsp.readFile(f, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read ${label(f)}: ${(e as Error).message}`);
    }
    const prefix = files.length > 1 ? `${label(f)}: ` : '';
    const docs = parseDocuments(text);
    if (!docs.ok) {
      problems.push(`${label(f)} is not valid YAML or JSON:\n${indent(formatErrors(docs.errors), prefix)}`);
      continue;
    }
    const embedded = embedProtoFiles(docs.value, f === '-' ? process.cwd() : path.dirname(f));
    if (!embedded.ok) {
      problems.push(indent(formatErrors(embedded.errors), prefix));
      continue;
    }
    const each = parseEach(embedded.value);
    if (!each.ok) {
      problems.push(indent(formatErrors(each.errors), prefix));
      continue;
    }
    for (const r of each.value) {
      resources.push(r);
      sources.push(label(f));
    }
  }
  if (problems.length > 0) throw new CliError(`invalid policy, nothing applied:\n${problems.join('\n')}`);
  const seen = new Map<string, string>();
  for (let i = 0; i < resources.length; i++) {
    const r = resources[i] as Resource;
    const key = `${r.kind}/${r.metadata.name}`;
    if (seen.has(key)) throw new CliError(`invalid policy, nothing applied:\n${key} is defined twice (${seen.get(key)} and ${sources[i]})`);
    seen.set(key, sources[i] as string);
  }
  return { resources, sources };
}

function indent(text: string, prefix: string): string {
  return prefix ? text.split('\n').map((l) => prefix + l).join('\n') : text;
}

/** Accepts `--dry-run` alone (as `client`, like kubectl's old form) and `--dry-run=client|server|none`. */
export function normaliseDryRun(argv: string[]): string[] {
  return argv.map((a) => (a === '--dry-run' ? '--dry-run=client' : a));
}

export function dryRunMode(v: string | undefined): 'none' | 'client' | 'server' {
  if (v === undefined || v === 'none') return 'none';
  if (v === 'client' || v === 'server') return v;
  throw new UsageError(`--dry-run must be client, server or none; got ${JSON.stringify(v)}`);
}
