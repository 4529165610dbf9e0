/**
 * The mutating admission webhook's logic, with no server attached: an `admission.k8s.io/v1`
 * AdmissionReview in, the AdmissionReview to answer out, the patch computed by the very same
 * plan as `meshlet inject` (plan.ts -> patch.ts).
 *
 * - a Pod CREATE that gets the sidecar: allowed, with a base64 JSONPatch;
 * - anything else (other kinds or operations, `meshlet.dev/inject: disabled`, hostNetwork): allowed, unchanged;
 * - a pod whose meshlet annotations are wrong: refused with the field errors, so `kubectl apply`
 *   shows them (the same messages as `meshlet inject`);
 * - a malformed review: HTTP 400 with a message saying what is wrong; the webhook never throws.
 */
import { formatErrors } from '../core/result';
import { jsonPatch } from './patch';
import { planPod, type InjectOptions, type PodTemplate } from './plan';

export interface AdmissionAnswer {
  /** 200 with an AdmissionReview, or 400 for a review we cannot even answer. */
  status: number;
  body: unknown;
}

function record(v: unknown): Record<string, unknown> | undefined {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function malformed(message: string): AdmissionAnswer {
  return { status: 400, body: { code: 'MALFORMED_REVIEW', message: `malformed AdmissionReview: ${message}` } };
}

export function review(raw: unknown, options: InjectOptions): AdmissionAnswer {
  const r = record(raw);
  if (!r) return malformed('expected a JSON object');
  if (r.apiVersion !== 'admission.k8s.io/v1' || r.kind !== 'AdmissionReview')
    return malformed(`expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got ${JSON.stringify(r.apiVersion)} ${JSON.stringify(r.kind)} (set admissionReviewVersions: ["v1"])`);
  const req = record(r.request);
  if (!req) return malformed('request: expected an object');
  if (typeof req.uid !== 'string' || req.uid === '') return malformed('request.uid: expected a non-empty string');
  const uid = req.uid;
  const answer = (response: Record<string, unknown>): AdmissionAnswer => ({
    status: 200,
    body: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, ...response } },
  });
  const kind = record(req.kind);
  if (kind?.group !== '' || kind?.kind !== 'Pod' || (req.operation !== undefined && req.operation !== 'CREATE')) {
    return answer({ allowed: true, warnings: [`meshlet injects Pods on CREATE only; ${String(kind?.kind ?? '?')} ${String(req.operation ?? '')} left unchanged`] });
  }
  const pod = record(req.object);
  if (!pod) return answer({ allowed: false, status: { code: 400, message: 'request.object: expected the Pod' } });
  const name = String(record(pod.metadata)?.name ?? req.name ?? record(pod.metadata)?.generateName ?? '');
  const plan = planPod(pod as PodTemplate, { at: '', fallbackName: name.replace(/-$/, '') || undefined }, options);
  if (!plan.ok) {
    return answer({ allowed: false, status: { code: 400, reason: 'BadRequest', message: `meshlet cannot inject this pod:\n${formatErrors(plan.errors)}` } });
  }
  if (plan.value.action === 'skip') return answer({ allowed: true });
  const patch = jsonPatch(pod as never, plan.value);
  return answer({ allowed: true, patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(patch)).toString('base64') });
}
