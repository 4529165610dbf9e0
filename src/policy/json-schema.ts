/**
 * The published JSON Schema of each kind: the wire schema derived from schema.ts, without our
 * annotations. Written to deploy/schema/<kind>.json by scripts/gen-policy.js (editors validate
 * `meshlet.dev/v1` YAML with it) and served by the control plane at `GET /v1/schema/{kind}`.
 */
import { API_VERSION, META, resourceSchema, type Kind } from './schema';
import { wireSchema } from './wire-schema';

/** The file name of a kind's JSON Schema: `route.json`, `destinationpolicy.json`... */
export const schemaFileName = (kind: Kind): string => `${kind.toLowerCase()}.json`;

export function jsonSchema(kind: Kind): Record<string, unknown> {
  const s = JSON.parse(JSON.stringify(wireSchema(resourceSchema(kind)), (k, v: unknown) => (k === META ? undefined : v))) as Record<string, unknown>;
  return { $schema: 'https://json-schema.org/draft/2020-12/schema', title: `${API_VERSION} ${kind}`, ...s };
}

export function jsonSchemaText(kind: Kind): string {
  return `${JSON.stringify(jsonSchema(kind), null, 2)}\n`;
}
