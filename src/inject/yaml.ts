/**
 * `meshlet inject` on YAML text: every workload in every document (and every List item) gets
 * the plan of plan.ts applied to its pod template through the `yaml` package's Document API,
 * so comments, key order and everything the injector does not touch survive. Documents that
 * change nothing are copied byte for byte. All or nothing: any error (invalid YAML, a kind
 * that carries a pod we cannot inject, a bad annotation) fails the whole input.
 */
import { type Document, isMap, isSeq, LineCounter, parseAllDocuments, type YAMLSeq } from 'yaml';
import { fail, ok, type FieldError, type Result } from '../core/result';
import { namespaceInject } from './annotations';
import { isOurs, LISTS, planPod, type InjectOptions, type Plan, type PodTemplate } from './plan';
import { describe, looksLikeWorkload, WORKLOADS } from './workloads';

export interface InjectReport {
  /** `document 2, Deployment/web` */
  where: string;
  action: 'injected' | 'skipped';
  detail: string;
}

export interface InjectOutput {
  text: string;
  reports: InjectReport[];
}

interface Target {
  /** Node path of the object in its document: [] or ['items', i]. */
  path: (string | number)[];
  obj: Record<string, unknown>;
}

function record(v: unknown): Record<string, unknown> | undefined {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function objectsOf(value: Record<string, unknown>): Target[] {
  if (value.kind === 'List' && Array.isArray(value.items)) {
    return value.items.flatMap((it, i) => {
      const r = record(it);
      return r ? [{ path: ['items', i], obj: r }] : [];
    });
  }
  return [{ path: [], obj: value }];
}

export function injectYaml(text: string, options: InjectOptions): Result<InjectOutput> {
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, uniqueKeys: true });
  const list: Document.Parsed[] = Array.isArray(docs) ? docs : [];
  const errors: FieldError[] = [];
  const values: (Record<string, unknown> | undefined)[] = [];
  list.forEach((d, i) => {
    const where = `document ${i + 1}`;
    if (d.errors.length) {
      const pos = lc.linePos(d.errors[0].pos[0]);
      errors.push({ path: where, message: `invalid YAML (line ${pos.line}, column ${pos.col}): ${d.errors[0].message.split('\n')[0]}` });
      values.push(undefined);
      return;
    }
    let v: unknown;
    try {
      v = d.toJS({ maxAliasCount: 100 });
    } catch (e) {
      errors.push({ path: where, message: (e as Error).message });
    }
    if (v !== null && v !== undefined && !record(v)) errors.push({ path: where, message: 'expected a Kubernetes object (a mapping with apiVersion and kind)' });
    values.push(record(v));
  });
  if (errors.length) return fail(errors);
  if (values.every((v) => v === undefined)) return fail([{ path: '', message: 'no documents found' }]);

  // Namespaces in the same input steer injection of the workloads in them.
  const namespaces = new Map<string, 'enabled' | 'disabled' | undefined>();
  values.forEach((v, i) => {
    for (const t of v ? objectsOf(v) : []) {
      if (t.obj.kind !== 'Namespace' || t.obj.apiVersion !== 'v1') continue;
      const meta = record(t.obj.metadata) ?? {};
      const r = namespaceInject(meta, `document ${i + 1}, ${describe(t.obj)}: metadata`);
      if (!r.ok) errors.push(...r.errors);
      else if (typeof meta.name === 'string') namespaces.set(meta.name, r.value);
    }
  });

  const reports: InjectReport[] = [];
  const changed = new Set<number>();
  const edits: { doc: number; path: (string | number)[]; plan: Extract<Plan, { action: 'inject' }> }[] = [];
  values.forEach((v, i) => {
    for (const t of v ? objectsOf(v) : []) {
      const where = `document ${i + 1}${t.path.length ? `, items[${t.path[1]}]` : ''}, ${describe(t.obj)}`;
      const kind = typeof t.obj.kind === 'string' ? t.obj.kind : undefined;
      if (!kind || typeof t.obj.apiVersion !== 'string') {
        errors.push({ path: where, message: 'not a Kubernetes object: apiVersion and kind are required' });
        continue;
      }
      const w = WORKLOADS[kind];
      if (!w) {
        if (looksLikeWorkload(t.obj))
          errors.push({ path: where, message: `kind ${kind} (${t.obj.apiVersion}) carries a pod the injector does not know how to reach; injectable kinds: ${Object.keys(WORKLOADS).join(', ')}` });
        continue; // Services, ConfigMaps, ... pass through untouched
      }
      if (!w.apiVersions.includes(t.obj.apiVersion)) {
        errors.push({ path: where, message: `apiVersion ${t.obj.apiVersion} of ${kind} is not supported: use ${w.apiVersions.join(' or ')}` });
        continue;
      }
      let tpl: unknown = t.obj;
      for (const k of w.template) tpl = record(tpl)?.[k];
      if (!record(tpl)) {
        errors.push({ path: `${where}: ${w.template.join('.')}`, message: 'missing pod template' });
        continue;
      }
      const ns = typeof record(t.obj.metadata)?.namespace === 'string' ? (record(t.obj.metadata)!.namespace as string) : undefined;
      const r = planPod(tpl as PodTemplate, { at: w.template.join('.'), namespaceInject: ns ? namespaces.get(ns) : undefined, fallbackName: String(record(t.obj.metadata)?.name ?? '') || undefined }, options);
      if (!r.ok) {
        errors.push(...r.errors.map((e) => ({ path: `${where}: ${e.path}`, message: e.message })));
        continue;
      }
      if (r.value.action === 'skip') {
        reports.push({ where, action: 'skipped', detail: r.value.reason });
        continue;
      }
      edits.push({ doc: i, path: [...t.path, ...w.template], plan: r.value });
      const jobNote = r.value.mode === 'classic' && (kind === 'Job' || kind === 'CronJob') ? '; the app must POST http://127.0.0.1:15000/quitquitquit when done, or the pod never completes' : '';
      reports.push({ where, action: 'injected', detail: `${r.value.mode} sidecar${jobNote}` });
      changed.add(i);
    }
  });
  if (errors.length) return fail(errors);

  for (const e of edits) applyToDocument(list[e.doc], e.path, e.plan);

  // Unchanged documents are copied as they were; changed ones are printed from their nodes.
  const bounds = list.map((d, i) => (i === 0 ? 0 : d.range[0]));
  bounds.push(text.length);
  let out = '';
  list.forEach((d, i) => {
    if (!changed.has(i)) {
      out += text.slice(bounds[i], bounds[i + 1]);
      return;
    }
    if (out !== '' && !out.endsWith('\n')) out += '\n';
    out += d.toString({ lineWidth: 0, flowCollectionPadding: false });
  });
  return ok({ text: out, reports });
}

function applyToDocument(doc: Document.Parsed, at: (string | number)[], plan: Extract<Plan, { action: 'inject' }>): void {
  for (const [k, v] of Object.entries(plan.annotations)) doc.setIn([...at, 'metadata', 'annotations', k], v);
  const spec = doc.getIn([...at, 'spec'], true);
  if (!isMap(spec)) return; // planPod checked there is one
  for (const name of LISTS) {
    const edit = plan.lists[name];
    const node = spec.get(name, true);
    const fresh = [...edit.prepend, ...edit.append].length > 0;
    if (!isSeq(node)) {
      if (fresh) spec.set(name, doc.createNode([...edit.prepend, ...edit.append]));
      continue;
    }
    const seq = node as YAMLSeq;
    seq.items = seq.items.filter((n) => !isOurs(nameOf(n)));
    if (edit.prepend.length && seq.items.length && seq.commentBefore) {
      // A comment above the first entry stays with that entry, not with ours.
      const first = seq.items[0] as { commentBefore?: string };
      first.commentBefore = first.commentBefore ? `${seq.commentBefore}\n${first.commentBefore}` : seq.commentBefore;
      seq.commentBefore = undefined;
    }
    seq.items.unshift(...edit.prepend.map((c) => doc.createNode(c)));
    seq.items.push(...edit.append.map((c) => doc.createNode(c)));
    if (seq.items.length && seq.flow) seq.flow = false;
  }
}

function nameOf(n: unknown): unknown {
  return isMap(n) ? { name: n.get('name') } : undefined;
}
