/** Validation of Kubernetes objects against the OpenAPI schema, through kubernetes-models. */
import * as apps from 'kubernetes-models/apps/v1';
import * as batch from 'kubernetes-models/batch/v1';
import * as core from 'kubernetes-models/v1';

type Ctor = new (data: never) => { validate(): void };
const MODELS: Record<string, Ctor> = {
  'v1/Pod': core.Pod,
  'v1/ReplicationController': core.ReplicationController,
  'v1/Service': core.Service,
  'v1/Namespace': core.Namespace,
  'apps/v1/Deployment': apps.Deployment,
  'apps/v1/StatefulSet': apps.StatefulSet,
  'apps/v1/DaemonSet': apps.DaemonSet,
  'apps/v1/ReplicaSet': apps.ReplicaSet,
  'batch/v1/Job': batch.Job,
  'batch/v1/CronJob': batch.CronJob,
};

/** Throws with the schema's message when `obj` is not a valid object of its kind. */
export function validate(obj: { apiVersion?: string; kind?: string; items?: unknown[] }): void {
  if (obj.apiVersion === 'v1' && obj.kind === 'List') {
    // kubernetes-models has no model for the generic List: check its shape, then every item.
    if (!Array.isArray(obj.items)) throw new Error('List without items');
    for (const it of obj.items) validate(it as never);
    return;
  }
  const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (!Model) throw new Error(`no model for ${obj.apiVersion}/${obj.kind}`);
  new Model(obj as never).validate();
}
