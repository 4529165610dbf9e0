/**
 * `file:` entries of GrpcTranscoding policies -> embedded `source` text. The policy travels from
 * the control plane to every sidecar, so the protos travel inside it; users write paths in their
 * YAML (relative to the YAML file) and the tools that read YAML files from disk (`meshlet apply
 * -f`, `meshlet up`, `meshlet sidecar --config`) read and embed them before validation.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { FieldError } from '../../core/result';

type Obj = Record<string, unknown>;

/** Returns the documents with every `protos[].file` replaced by its `source` (and a default `name`). */
export function embedProtoFiles(docs: readonly unknown[], baseDir: string): { ok: true; value: unknown[] } | { ok: false; errors: FieldError[] } {
  const errors: FieldError[] = [];
  const out = docs.map((d, di) => {
    const doc = d as Obj | null;
    if (!doc || typeof doc !== 'object' || doc.kind !== 'GrpcTranscoding') return d;
    const spec = doc.spec as Obj | undefined;
    if (!spec || typeof spec !== 'object' || !Array.isArray(spec.protos)) return d;
    const label = typeof (doc.metadata as Obj | undefined)?.name === 'string' ? `GrpcTranscoding/${(doc.metadata as Obj).name as string}` : `document[${di}]`;
    const protos = spec.protos.map((p, i) => {
      const e = p as Obj | null;
      if (!e || typeof e !== 'object' || typeof e.file !== 'string' || e.source !== undefined) return p;
      const file = path.resolve(baseDir, e.file);
      try {
        const { file: _f, ...rest } = e;
        return { ...rest, name: typeof e.name === 'string' ? e.name : path.basename(e.file), source: readFileSync(file, 'utf8') };
      } catch (err) {
        errors.push({ path: `${label}: spec.protos[${i}].file`, message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
        return p;
      }
    });
    return { ...doc, spec: { ...spec, protos } };
  });
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value: out };
}
