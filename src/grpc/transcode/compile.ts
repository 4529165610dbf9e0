/**
 * A GrpcTranscoding policy -> a Transcoder, once per snapshot (and cached by content, so that the
 * parser's validation and the sidecar's compile share the work): the protos loaded, every
 * exposed method's google.api.http bindings resolved against its request type, and a matcher
 * from (HTTP method, path) to a binding. The request path only matches and converts.
 */
import { createHash } from 'node:crypto';
import * as protobuf from 'protobufjs';
import { JsonMappingError, jsonToMessage, lookupField, messageToJson, UrlText, jsonName, type ToJsonOptions } from './json';
import { loadProtos, type ProtoSource } from './protos';
import { matchTemplate, parseTemplate, TemplateError, type PathTemplate } from './template';

export interface TranscodingConfig {
  protos: readonly ProtoSource[];
  /** Fully-qualified gRPC service names to expose. */
  services: readonly string[];
  ignoreUnknownQueryParameters: boolean;
  emitDefaults: boolean;
}

export interface ConfigError {
  /** Relative to the policy's spec, e.g. `protos[0].source`, `services[1]`. */
  path: string;
  message: string;
}

export interface Binding {
  /** `GET /v1/{name=shelves/*}` for logs and errors. */
  describe: string;
  httpMethod: string;
  template: PathTemplate;
  /** `/pkg.Service/Method`. */
  grpcPath: string;
  serverStreaming: boolean;
  /** Request JSON -> protobuf bytes; throws JsonMappingError (a 400). */
  encodeRequest(vars: readonly string[], query: string, body: unknown): Uint8Array;
  /** Whether the HTTP body maps to (part of) the request. */
  hasBody: boolean;
  /** One response message -> its JSON. */
  decodeResponse(bytes: Uint8Array): unknown;
}

export type MatchResult = { binding: Binding; vars: string[] } | { methodNotAllowed: string[] } | undefined;

export interface Transcoder {
  readonly bindings: readonly Binding[];
  match(method: string, path: string): MatchResult;
}

const cache = new Map<string, { ok: true; value: Transcoder } | { ok: false; errors: ConfigError[] }>();

export function compileTranscoder(cfg: TranscodingConfig): { ok: true; value: Transcoder } | { ok: false; errors: ConfigError[] } {
  const key = createHash('sha256').update(JSON.stringify(cfg)).digest('hex');
  let r = cache.get(key);
  if (!r) {
    r = build(cfg);
    if (cache.size >= 32) cache.delete(cache.keys().next().value as string);
    cache.set(key, r);
  }
  return r;
}

const STRINGY_WKT = new Set([
  '.google.protobuf.Timestamp',
  '.google.protobuf.Duration',
  '.google.protobuf.FieldMask',
  '.google.protobuf.DoubleValue',
  '.google.protobuf.FloatValue',
  '.google.protobuf.Int64Value',
  '.google.protobuf.UInt64Value',
  '.google.protobuf.Int32Value',
  '.google.protobuf.UInt32Value',
  '.google.protobuf.BoolValue',
  '.google.protobuf.StringValue',
  '.google.protobuf.BytesValue',
]);

interface RawRule {
  get?: string;
  put?: string;
  post?: string;
  delete?: string;
  patch?: string;
  custom?: { kind?: string; path?: string };
  body?: string;
  response_body?: string;
  additional_bindings?: RawRule | RawRule[];
}

function build(cfg: TranscodingConfig): { ok: true; value: Transcoder } | { ok: false; errors: ConfigError[] } {
  const loaded = loadProtos(cfg.protos);
  if (!loaded.ok) return { ok: false, errors: [{ path: loaded.error.index === undefined ? 'protos' : `protos[${loaded.error.index}].source`, message: loaded.error.message }] };
  const root = loaded.root;
  const errors: ConfigError[] = [];
  const bindings: Binding[] = [];
  const opts: ToJsonOptions = { emitDefaults: cfg.emitDefaults };
  cfg.services.forEach((name, si) => {
    let svc: protobuf.Service;
    try {
      svc = root.lookupService(name.replace(/^\./, ''));
    } catch {
      const known: string[] = [];
      const walk = (ns: protobuf.NamespaceBase) => {
        for (const n of ns.nestedArray) {
          if (n instanceof protobuf.Service) known.push(n.fullName.slice(1));
          else if (n instanceof protobuf.Namespace || n instanceof protobuf.Type) walk(n as protobuf.NamespaceBase);
        }
      };
      walk(root);
      errors.push({ path: `services[${si}]`, message: `service ${JSON.stringify(name)} is not defined by the protos${known.length ? ` (they define ${known.join(', ')})` : ''}` });
      return;
    }
    for (const m of svc.methodsArray) {
      m.resolve();
      const where = `services[${si}]`;
      const grpcPath = `/${svc.fullName.slice(1)}/${m.name}`;
      const reqType = m.resolvedRequestType as protobuf.Type;
      const resType = m.resolvedResponseType as protobuf.Type;
      if (m.requestStream) continue; // client and bidi streaming are not transcoded (no JSON form for a request stream)
      const rules = httpRules(m);
      const list: RawRule[] = rules ?? [{ post: grpcPath, body: '*' }];
      for (const rule of list) {
        try {
          bindings.push(makeBinding(rule, grpcPath, m, reqType, resType, cfg, opts));
        } catch (err) {
          errors.push({ path: where, message: `${grpcPath}: ${(err as Error).message}` });
        }
      }
    }
  });
  const seen = new Map<string, string>();
  for (const b of bindings) {
    const k = `${b.httpMethod} ${b.template.source}`;
    const prev = seen.get(k);
    if (prev) errors.push({ path: 'services', message: `${k} is bound to both ${prev} and ${b.grpcPath}` });
    else seen.set(k, b.grpcPath);
  }
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: makeMatcher(bindings) };
}

/** The method's google.api.http rule and its additional_bindings, flattened; undefined without one. */
function httpRules(m: protobuf.Method): RawRule[] | undefined {
  const parsed = (m.parsedOptions ?? []) as Record<string, unknown>[];
  const opt = parsed.find((o) => o['(google.api.http)'] !== undefined)?.['(google.api.http)'] as RawRule | undefined;
  if (!opt) return undefined;
  const { additional_bindings: extra, ...main } = opt;
  const more = extra === undefined ? [] : Array.isArray(extra) ? extra : [extra];
  for (const x of more) if (x.additional_bindings !== undefined) throw new Error(`${m.name}: additional_bindings must not nest`);
  return [main, ...more];
}

function makeBinding(rule: RawRule, grpcPath: string, m: protobuf.Method, reqType: protobuf.Type, resType: protobuf.Type, cfg: TranscodingConfig, opts: ToJsonOptions): Binding {
  const patterns = (['get', 'put', 'post', 'delete', 'patch'] as const).filter((k) => rule[k] !== undefined);
  let httpMethod: string;
  let pathText: string;
  if (rule.custom) {
    if (patterns.length > 0) throw new Error('an http rule sets custom and another pattern');
    if (!rule.custom.kind || !rule.custom.path) throw new Error('custom needs kind and path');
    httpMethod = rule.custom.kind.toUpperCase();
    pathText = rule.custom.path;
  } else {
    if (patterns.length !== 1) throw new Error('an http rule needs exactly one of get, put, post, delete, patch, custom');
    httpMethod = (patterns[0] as string).toUpperCase();
    pathText = rule[patterns[0] as 'get'] as string;
  }
  let template: PathTemplate;
  try {
    template = parseTemplate(pathText);
  } catch (err) {
    throw new Error(err instanceof TemplateError ? err.message : String(err));
  }
  const varChains = template.variables.map((v) => {
    const chain = resolveChain(reqType, v.fieldPath, `path variable {${v.fieldPath.join('.')}}`);
    const last = chain[chain.length - 1] as protobuf.Field;
    if (last.repeated || last.map) throw new Error(`path variable {${v.fieldPath.join('.')}} must not be a repeated or map field`);
    if (last.resolvedType instanceof protobuf.Type && !STRINGY_WKT.has(last.resolvedType.fullName))
      throw new Error(`path variable {${v.fieldPath.join('.')}} is a message (${last.resolvedType.fullName.slice(1)}), not a scalar`);
    return chain;
  });
  const body = rule.body ?? '';
  let bodyField: protobuf.Field | undefined;
  if (body !== '' && body !== '*') {
    const chain = resolveChain(reqType, body.split('.'), `body "${body}"`);
    if (chain.length !== 1) throw new Error(`body "${body}" must name a top-level field of ${reqType.fullName.slice(1)}`);
    bodyField = chain[0];
  }
  let responseField: protobuf.Field | undefined;
  if (rule.response_body) {
    const f = lookupField(resType, rule.response_body);
    if (!f) throw new Error(`response_body "${rule.response_body}" is not a field of ${resType.fullName.slice(1)}`);
    responseField = f;
  }
  const decode = (bytes: Uint8Array): unknown => {
    const json = messageToJson(resType, bytes, opts);
    if (!responseField) return json;
    const v = (json as Record<string, unknown>)[jsonName(responseField)];
    return v === undefined ? null : v;
  };
  const ignoreUnknown = cfg.ignoreUnknownQueryParameters;
  const encodeRequest = (vars: readonly string[], query: string, bodyJson: unknown): Uint8Array => {
    let obj: Record<string, unknown> = {};
    if (body === '*') {
      if (bodyJson !== undefined) {
        if (bodyJson === null || typeof bodyJson !== 'object' || Array.isArray(bodyJson))
          throw new JsonMappingError('', `the body must be a JSON object (${reqType.fullName.slice(1)})`);
        obj = { ...(bodyJson as Record<string, unknown>) };
      }
    } else if (bodyField) {
      if (bodyJson !== undefined) obj[bodyField.name] = bodyJson;
    }
    const fromPath = new Set<string>();
    varChains.forEach((chain, i) => {
      setAt(obj, chain, new UrlText(vars[i] as string));
      fromPath.add(chain.map((f) => f.name).join('.'));
    });
    if (query && body !== '*') applyQuery(obj, reqType, query, bodyField, fromPath, ignoreUnknown);
    else if (query && !ignoreUnknown) {
      const first = new URLSearchParams(query).keys().next();
      if (!first.done) throw new JsonMappingError(first.value, 'unknown query parameter: this method takes all of its fields from the body');
    }
    return jsonToMessage(reqType, obj);
  };
  return {
    describe: `${httpMethod} ${pathText}`,
    httpMethod,
    template,
    grpcPath,
    serverStreaming: !!m.responseStream,
    encodeRequest,
    hasBody: body !== '',
    decodeResponse: decode,
  };
}

function resolveChain(t: protobuf.Type, names: readonly string[], what: string): protobuf.Field[] {
  const chain: protobuf.Field[] = [];
  let cur: protobuf.Type | undefined = t;
  for (const n of names) {
    if (!cur) throw new Error(`${what}: ${chain.map((f) => f.name).join('.')} is not a message`);
    const f: protobuf.Field | undefined = cur.fields[n] ?? lookupField(cur, n);
    if (!f) throw new Error(`${what}: ${cur.fullName.slice(1)} has no field ${JSON.stringify(n)}`);
    f.resolve();
    chain.push(f);
    cur = f.resolvedType instanceof protobuf.Type && !f.repeated && !f.map ? f.resolvedType : undefined;
  }
  return chain;
}

/** Sets a value at a field chain in a JSON-shaped object, replacing the field under either of its names. */
function setAt(obj: Record<string, unknown>, chain: readonly protobuf.Field[], value: unknown): void {
  let cur = obj;
  chain.forEach((f, i) => {
    const names = [f.name, jsonName(f)];
    if (i === chain.length - 1) {
      for (const n of names) delete cur[n];
      cur[f.name] = value;
      return;
    }
    let next: unknown;
    for (const n of names) {
      if (cur[n] !== undefined) next = cur[n];
      delete cur[n];
    }
    if (next === undefined || next === null) next = {};
    if (typeof next !== 'object' || Array.isArray(next) || next instanceof UrlText)
      throw new JsonMappingError(chain.slice(0, i + 1).map((x) => x.name).join('.'), 'expected an object');
    const copy = { ...(next as Record<string, unknown>) };
    cur[f.name] = copy;
    cur = copy;
  });
}

function applyQuery(obj: Record<string, unknown>, t: protobuf.Type, query: string, bodyField: protobuf.Field | undefined, fromPath: ReadonlySet<string>, ignoreUnknown: boolean): void {
  const params = new URLSearchParams(query);
  const repeated = new Map<string, { chain: protobuf.Field[]; values: UrlText[] }>();
  const single = new Set<string>();
  for (const [key, value] of params) {
    let chain: protobuf.Field[];
    try {
      chain = resolveChain(t, key.split('.'), 'query parameter');
    } catch (err) {
      if (ignoreUnknown) continue;
      throw new JsonMappingError(key, `unknown query parameter (${(err as Error).message.replace(/^query parameter: /, '')})`);
    }
    const protoPath = chain.map((f) => f.name).join('.');
    if (bodyField && chain[0] === bodyField) throw new JsonMappingError(key, `is taken from the body ("${bodyField.name}"), not a query parameter`);
    if (fromPath.has(protoPath)) throw new JsonMappingError(key, 'is already set by the path');
    const last = chain[chain.length - 1] as protobuf.Field;
    if (last.map || (last.resolvedType instanceof protobuf.Type && !STRINGY_WKT.has(last.resolvedType.fullName)))
      throw new JsonMappingError(key, 'a message or map field cannot be set from a query parameter');
    if (last.repeated) {
      let r = repeated.get(protoPath);
      if (!r) repeated.set(protoPath, (r = { chain, values: [] }));
      r.values.push(new UrlText(value));
    } else {
      if (single.has(protoPath)) throw new JsonMappingError(key, 'given more than once, but the field is not repeated');
      single.add(protoPath);
      setAt(obj, chain, new UrlText(value));
    }
  }
  for (const r of repeated.values()) setAt(obj, r.chain, r.values);
}

function makeMatcher(bindings: Binding[]): Transcoder {
  const byMethod = new Map<string, Binding[]>();
  for (const b of bindings) {
    let l = byMethod.get(b.httpMethod);
    if (!l) byMethod.set(b.httpMethod, (l = []));
    l.push(b);
  }
  // Most specific first: more literal segments, no trailing `**`, more segments, a verb.
  const rank = (b: Binding) => [b.template.literals, b.template.hasRest ? 0 : 1, b.template.segments.length, b.template.verb ? 1 : 0];
  for (const l of byMethod.values())
    l.sort((a, b) => {
      const ra = rank(a);
      const rb = rank(b);
      for (let i = 0; i < ra.length; i++) if (ra[i] !== rb[i]) return (rb[i] as number) - (ra[i] as number);
      return 0;
    });
  const frozen = Object.freeze([...bindings]);
  return Object.freeze({
    bindings: frozen,
    match(method: string, path: string): MatchResult {
      const l = byMethod.get(method);
      if (l)
        for (const b of l) {
          const vars = matchTemplate(b.template, path);
          if (vars) return { binding: b, vars };
        }
      const allowed: string[] = [];
      for (const [m, list] of byMethod) if (m !== method && list.some((b) => matchTemplate(b.template, path))) allowed.push(m);
      return allowed.length > 0 ? { methodNotAllowed: allowed } : undefined;
    },
  });
}

/** What the sidecar compiles from a GrpcTranscoding policy (one per destination service). */
export interface CompiledTranscoding {
  /** The policy's name, for logs. */
  name: string;
  transcoder: Transcoder;
  /** What to do with a non-gRPC request no binding matches. */
  unknownMethods: 'reject' | 'passthrough';
  maxRequestBytes: number;
  maxResponseBytes: number;
}
