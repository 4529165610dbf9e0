/** The Kubernetes kinds that carry a pod template, and where the template sits in each. */

export interface WorkloadKind {
  apiVersions: readonly string[];
  /** Path of the pod template (metadata + spec) inside the object; [] for a Pod itself. */
  template: readonly string[];
}

export const WORKLOADS: Readonly<Record<string, WorkloadKind>> = {
  Pod: { apiVersions: ['v1'], template: [] },
  ReplicationController: { apiVersions: ['v1'], template: ['spec', 'template'] },
  Deployment: { apiVersions: ['apps/v1'], template: ['spec', 'template'] },
  StatefulSet: { apiVersions: ['apps/v1'], template: ['spec', 'template'] },
  DaemonSet: { apiVersions: ['apps/v1'], template: ['spec', 'template'] },
  ReplicaSet: { apiVersions: ['apps/v1'], template: ['spec', 'template'] },
  Job: { apiVersions: ['batch/v1'], template: ['spec', 'template'] },
  CronJob: { apiVersions: ['batch/v1'], template: ['spec', 'jobTemplate', 'spec', 'template'] },
};

/** An object that carries a pod but is no kind we know (e.g. a CRD's rollout): we cannot inject it safely. */
export function looksLikeWorkload(obj: Record<string, unknown>): boolean {
  const spec = obj.spec as Record<string, unknown> | undefined;
  if (!spec || typeof spec !== 'object') return false;
  return 'template' in spec || 'jobTemplate' in spec || 'containers' in spec;
}

export function describe(obj: Record<string, unknown>): string {
  const meta = (obj.metadata ?? {}) as Record<string, unknown>;
  const kind = typeof obj.kind === 'string' ? obj.kind : '(no kind)';
  return typeof meta.name === 'string' ? `${kind}/${meta.name}` : kind;
}
