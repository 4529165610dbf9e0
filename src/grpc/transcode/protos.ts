/**
 * Embedded .proto sources -> a protobufjs Root, without touching the file system for user files:
 * the sources travel inside the GrpcTranscoding policy. Imports resolve to, in order: another
 * embedded file of the same policy (by its `name`), the google/api annotations shipped in
 * src/proto/google/api/, and the well-known google/protobuf/*.proto types bundled with protobufjs.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';

export interface ProtoSource {
  name: string;
  source: string;
}

export interface ProtoLoadError {
  /** Index into the list of sources, when the problem is in one of them. */
  index?: number;
  message: string;
}

const SHIPPED_DIR = path.join(__dirname, '..', '..', 'proto');
const SHIPPED = new Set(['google/api/http.proto', 'google/api/annotations.proto']);
let shippedText: Map<string, string> | undefined;

function shipped(name: string): string {
  shippedText ??= new Map();
  let s = shippedText.get(name);
  if (s === undefined) {
    s = readFileSync(path.join(SHIPPED_DIR, name), 'utf8');
    shippedText.set(name, s);
  }
  return s;
}

function bundledJson(name: string): protobuf.INamespace | undefined {
  if (name === 'google/protobuf/descriptor.proto') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('protobufjs/google/protobuf/descriptor.json') as protobuf.INamespace;
  }
  return protobuf.common.get(name) as protobuf.INamespace | undefined;
}

export function loadProtos(sources: readonly ProtoSource[]): { ok: true; root: protobuf.Root } | { ok: false; error: ProtoLoadError } {
  const root = new protobuf.Root();
  const byName = new Map<string, number>();
  sources.forEach((s, i) => byName.set(s.name, i));
  const loaded = new Set<string>();
  const load = (name: string, from: number | undefined): ProtoLoadError | undefined => {
    if (loaded.has(name)) return undefined;
    loaded.add(name);
    const idx = byName.get(name);
    let text: string;
    if (idx !== undefined) text = (sources[idx] as ProtoSource).source;
    else if (SHIPPED.has(name)) text = shipped(name);
    else {
      const json = bundledJson(name);
      if (json) {
        root.addJSON((json as { nested: Record<string, protobuf.AnyNestedObject> }).nested);
        return undefined;
      }
      return {
        index: from,
        message: `imports ${JSON.stringify(name)}, which is not one of the policy's protos (by name), google/api/{http,annotations}.proto or a google/protobuf well-known type`,
      };
    }
    let parsed: protobuf.IParserResult;
    try {
      (protobuf.parse as unknown as { filename: string | null }).filename = name;
      parsed = protobuf.parse(text, root, { keepCase: true, alternateCommentMode: true });
    } catch (err) {
      return { index: idx ?? from, message: (err as Error).message.replace(/^illegal/, 'syntax error: illegal') };
    } finally {
      (protobuf.parse as unknown as { filename: string | null }).filename = null;
    }
    for (const imp of [...(parsed.imports ?? []), ...(parsed.weakImports ?? [])]) {
      const e = load(imp, idx ?? from);
      if (e) return e;
    }
    return undefined;
  };
  for (let i = 0; i < sources.length; i++) {
    const e = load((sources[i] as ProtoSource).name, i);
    if (e) return { ok: false, error: e };
  }
  try {
    root.resolveAll();
  } catch (err) {
    return { ok: false, error: { message: (err as Error).message } };
  }
  return { ok: true, root };
}
