/**
 * The push protocol's runtime side: loads `meshlet.proto` (next to this file, in src/ under
 * ts-node and in dist/ after the build copies it) and gives typed views of its messages, the
 * server definition and the client constructor.
 *
 * Field names are camelCase here (proto-loader's default): `inbound_port` is `inboundPort`.
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fail, ok, type FieldError, type Result } from '../core/result';
import type { Endpoint, WireSnapshot } from '../policy/types';
import { KINDS } from '../policy/constants';

export const PROTO_PATH = path.join(__dirname, 'meshlet.proto');
export const SERVICE_NAME = 'meshlet.v1.PolicyDiscovery';

// ------------------------------------------------------------------------------------ messages

export interface NodeMessage {
  id: string;
  service: string;
  /** Empty: the control plane uses the stream's peer address. */
  address: string;
  inboundPort: number;
  labels: Record<string, string>;
  buildVersion: string;
  /** The admin port (/metrics, /stats); 0 or absent: unknown. */
  adminPort?: number;
  /** The bootstrap credential (join token or ServiceAccount token); empty: none. */
  credential?: string;
  /** The sidecar applies deltas after its first complete snapshot. */
  acceptsDelta?: boolean;
  /** '' or absent: a sidecar; 'gateway': an edge gateway (listed by `meshlet status`, never an endpoint). */
  kind?: string;
}

export interface CertificateRequestMessage {
  csrPem: string;
}

export interface IdentityMessage {
  spiffeId: string;
  certificateChainPem: string;
  trustBundlePem: string;
  error: string;
}

export interface AckMessage {
  version: string;
  nonce: string;
}

export interface NackMessage {
  version: string;
  nonce: string;
  reason: string;
}

/** What a sidecar sends: exactly one of node (first message), ack, nack. */
export type SidecarMessage = { node: NodeMessage } | { ack: AckMessage } | { nack: NackMessage } | { leave: Record<string, never> } | { csr: CertificateRequestMessage };

/** A SidecarMessage as decoded: `kind` names the member that is set (proto-loader `oneofs`). */
export interface ReceivedSidecarMessage {
  kind?: 'node' | 'ack' | 'nack' | 'leave' | 'csr';
  csr?: CertificateRequestMessage | null;
  node?: NodeMessage | null;
  leave?: Record<string, never> | null;
  ack?: AckMessage | null;
  nack?: NackMessage | null;
}

export interface SnapshotMessage {
  version: string;
  nonce: string;
  resourcesJson: string;
  endpointsJson: string;
  /** Identity messages only (empty version, not answered). */
  identity?: IdentityMessage | null;
  /** Deltas only: the version the delta applies to. Empty or absent: a complete snapshot. */
  baseVersion?: string;
  /** Deltas: added or changed resources, one JSON document each. */
  resources?: string[];
  /** Deltas: removed resources, `Kind/name`. */
  removed?: string[];
  /** Deltas: JSON object, service -> its whole Endpoint array now, for the services whose endpoints changed. */
  endpointsByServiceJson?: string;
}

// ------------------------------------------------------------------------------ service, client

/** The server writes messages, or the bytes of one encoded once (encodeSnapshotMessage). */
export type PolicyDiscoveryStreamCall = grpc.ServerDuplexStream<ReceivedSidecarMessage, SnapshotMessage | Buffer>;
export type PolicyDiscoveryClientStream = grpc.ClientDuplexStream<SidecarMessage, SnapshotMessage>;

export interface PolicyDiscoveryHandlers extends grpc.UntypedServiceImplementation {
  Stream: grpc.handleBidiStreamingCall<ReceivedSidecarMessage, SnapshotMessage | Buffer>;
}

export interface PolicyDiscoveryClient extends grpc.Client {
  Stream(options?: grpc.CallOptions): PolicyDiscoveryClientStream;
  Stream(metadata: grpc.Metadata, options?: grpc.CallOptions): PolicyDiscoveryClientStream;
}

/** Snapshots carry every resource; allow far more than grpc's 4 MiB default. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * The largest message the push server sends (the sidecar's receive limit): MAX_MESSAGE_BYTES,
 * or less with MESHLET_MAX_PUSH_BYTES (tests use it to reach the limit without a 64 MiB snapshot).
 */
export function maxPushBytes(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.MESHLET_MAX_PUSH_BYTES);
  return Number.isInteger(v) && v > 0 && v < MAX_MESSAGE_BYTES ? v : MAX_MESSAGE_BYTES;
}

/** Options for the server: keepalive pings find sidecars that vanished without a FIN. */
export const SERVER_OPTIONS: grpc.ServerOptions = {
  'grpc.max_receive_message_length': 1024 * 1024,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
};

/** Options for a sidecar's channel: keepalive pings find a control plane that vanished. */
export const CLIENT_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
};

interface Loaded {
  service: grpc.ServiceDefinition;
  Client: grpc.ServiceClientConstructor;
  encode: (m: SnapshotMessage) => Buffer;
}

let loaded: Loaded | undefined;

/** Loads and caches the proto. Throws only if meshlet.proto is missing (a broken install). */
export function loadMeshletProto(): Loaded {
  if (loaded) return loaded;
  const def = protoLoader.loadSync(PROTO_PATH, {
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    meshlet: { v1: { PolicyDiscovery: grpc.ServiceClientConstructor } };
  };
  const Client = pkg.meshlet.v1.PolicyDiscovery;
  // The server may write a message it encoded once (encodeSnapshotMessage) to many streams:
  // a Buffer passes through unchanged, anything else is encoded as usual.
  const stream = Client.service.Stream as grpc.MethodDefinition<unknown, SnapshotMessage>;
  const encode = stream.responseSerialize as (m: SnapshotMessage) => Buffer;
  const service: grpc.ServiceDefinition = {
    ...Client.service,
    Stream: { ...stream, responseSerialize: (m: SnapshotMessage | Buffer) => (Buffer.isBuffer(m) ? m : encode(m)) },
  };
  loaded = { service, Client, encode };
  return loaded;
}

/** The definition to pass to `server.addService(def, handlers)`. */
export function policyDiscoveryService(): grpc.ServiceDefinition {
  return loadMeshletProto().service;
}

/** The protobuf encoding of a message, for writing the same bytes to many streams (the server only). */
export function encodeSnapshotMessage(m: SnapshotMessage): Buffer {
  return loadMeshletProto().encode(m);
}

/** A client for `target` ("host:port"). Insecure by default; mTLS later passes credentials. */
export function createPolicyDiscoveryClient(
  target: string,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  options: grpc.ChannelOptions = {},
): PolicyDiscoveryClient {
  const { Client } = loadMeshletProto();
  return new Client(target, credentials, { ...CLIENT_OPTIONS, ...options }) as unknown as PolicyDiscoveryClient;
}

// ------------------------------------------------------------------------------- (de)serialise

export function encodeSnapshot(snapshot: WireSnapshot, nonce: string): SnapshotMessage {
  return {
    version: snapshot.version,
    nonce,
    resourcesJson: JSON.stringify(snapshot.resources),
    endpointsJson: JSON.stringify(snapshot.endpoints),
  };
}

/**
 * The wire snapshot inside a message. Checks the JSON and that both parts are arrays; the
 * resources and endpoints themselves are for the policy parser to judge.
 */
export function decodeSnapshot(msg: SnapshotMessage): Result<WireSnapshot> {
  const errors: FieldError[] = [];
  const version = typeof msg.version === 'string' ? msg.version : '';
  if (version === '') errors.push({ path: 'version', message: 'must not be empty' });
  const resources = parseArray(msg.resourcesJson, 'resources_json', errors);
  const endpoints = parseArray(msg.endpointsJson, 'endpoints_json', errors);
  if (errors.length > 0 || !resources || !endpoints) return fail(errors);
  return ok({ version, resources, endpoints: endpoints as Endpoint[] });
}

/** Whether a message is a delta (applies to `baseVersion`) rather than a complete snapshot. */
export function isDelta(msg: SnapshotMessage): boolean {
  return typeof msg.baseVersion === 'string' && msg.baseVersion !== '';
}

/** `Kind/name`: how a delta names a resource. */
export function resourceKey(r: unknown): string | undefined {
  if (r === null || typeof r !== 'object') return undefined;
  const o = r as { kind?: unknown; metadata?: { name?: unknown } };
  return typeof o.kind === 'string' && typeof o.metadata?.name === 'string' ? `${o.kind}/${o.metadata.name}` : undefined;
}

/**
 * A delta applied to the snapshot it was made against: the resources it carries replace (or join)
 * those of the same `Kind/name`, removed ones leave, and each service it names gets the endpoint
 * set it carries. The base must be the snapshot of version `baseVersion` (else: a gap, refused;
 * the control plane answers the NACK with a complete snapshot). The base is not modified.
 */
export function applyDelta(base: WireSnapshot, msg: SnapshotMessage): Result<WireSnapshot> {
  const errors: FieldError[] = [];
  const version = typeof msg.version === 'string' ? msg.version : '';
  if (version === '') errors.push({ path: 'version', message: 'must not be empty' });
  if (msg.baseVersion !== base.version)
    return fail([{ path: 'base_version', message: `version gap: this delta applies to ${msg.baseVersion}, the last good snapshot here is ${base.version}; a complete snapshot is needed` }]);
  const byKey = new Map<string, unknown>();
  for (const r of base.resources) byKey.set(resourceKey(r) ?? `?${byKey.size}`, r);
  for (const k of msg.removed ?? []) byKey.delete(k);
  (msg.resources ?? []).forEach((text, i) => {
    let r: unknown;
    try {
      r = JSON.parse(text);
    } catch (err) {
      errors.push({ path: `resources[${i}]`, message: `invalid JSON: ${(err as Error).message}` });
      return;
    }
    const k = resourceKey(r);
    if (!k) errors.push({ path: `resources[${i}]`, message: 'must be a resource with kind and metadata.name' });
    else byKey.set(k, r);
  });
  let endpoints = base.endpoints;
  if (msg.endpointsByServiceJson) {
    let changed: unknown;
    try {
      changed = JSON.parse(msg.endpointsByServiceJson);
    } catch (err) {
      errors.push({ path: 'endpoints_by_service_json', message: `invalid JSON: ${(err as Error).message}` });
    }
    if (changed !== undefined && (changed === null || typeof changed !== 'object' || Array.isArray(changed)))
      errors.push({ path: 'endpoints_by_service_json', message: 'must be a JSON object of service -> endpoints' });
    else if (changed !== undefined) {
      const m = changed as Record<string, unknown>;
      const bad = Object.keys(m).find((k) => !Array.isArray(m[k]));
      if (bad !== undefined) errors.push({ path: `endpoints_by_service_json.${bad}`, message: 'must be a JSON array' });
      else endpoints = [...base.endpoints.filter((e) => !Object.prototype.hasOwnProperty.call(m, e.service)), ...Object.values(m).flat() as Endpoint[]];
    }
  }
  if (errors.length > 0) return fail(errors);
  // The store's order (kinds in KINDS order, then by name), which route precedence follows.
  const rank = (k: string) => {
    const i = (KINDS as readonly string[]).indexOf(k.slice(0, k.indexOf('/')));
    return i < 0 ? KINDS.length : i;
  };
  const resources = [...byKey.entries()]
    .sort((a, b) => rank(a[0]) - rank(b[0]) || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map((e) => e[1]);
  return ok({ version, resources, endpoints });
}

function parseArray(text: unknown, path: string, errors: FieldError[]): unknown[] | undefined {
  if (typeof text !== 'string' || text === '') {
    errors.push({ path, message: 'must be a JSON array, got nothing' });
    return undefined;
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    errors.push({ path, message: `invalid JSON: ${(err as Error).message}` });
    return undefined;
  }
  if (!Array.isArray(v)) {
    errors.push({ path, message: `must be a JSON array, got ${v === null ? 'null' : typeof v}` });
    return undefined;
  }
  return v;
}

/** The node carried by a decoded message's `node`, with its fields checked. */
export function checkNode(node: NodeMessage | null | undefined): Result<NodeMessage> {
  if (!node) return fail([{ path: 'node', message: 'the first message must carry the node' }]);
  const errors: FieldError[] = [];
  if (!node.id) errors.push({ path: 'node.id', message: 'must not be empty' });
  if (!node.service) errors.push({ path: 'node.service', message: 'must not be empty' });
  const port = Number(node.inboundPort);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    errors.push({ path: 'node.inbound_port', message: `must be between 1 and 65535, got ${node.inboundPort}` });
  if (errors.length > 0) return fail(errors);
  return ok({
    id: node.id,
    service: node.service,
    address: node.address ?? '',
    inboundPort: port,
    labels: { ...(node.labels ?? {}) },
    buildVersion: node.buildVersion ?? '',
    credential: node.credential ?? '',
    acceptsDelta: node.acceptsDelta === true,
    adminPort: Number.isInteger(Number(node.adminPort)) && Number(node.adminPort) > 0 && Number(node.adminPort) <= 65535 ? Number(node.adminPort) : 0,
    ...(node.kind === 'gateway' ? { kind: 'gateway' } : {}),
  });
}
