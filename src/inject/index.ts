/** Sidecar injection: one plan (plan.ts), applied to YAML documents (yaml.ts) or as a JSONPatch (patch.ts). */
export { A as ANNOTATIONS, parseOverrides, type SidecarMode } from './annotations';
export { DEFAULT_OPTIONS, NAMES, PORTS, PROXY_UID, planPod, type InjectOptions, type Plan } from './plan';
export { jsonPatch, type PatchOp } from './patch';
export { injectYaml, type InjectOutput, type InjectReport } from './yaml';
export { WORKLOADS } from './workloads';
