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
}

// ------------------------------------------------------------------------------ service, client

export type PolicyDiscoveryStreamCall = grpc.ServerDuplexStream<ReceivedSidecarMessage, SnapshotMessage>;
export type PolicyDiscoveryClientStream = grpc.ClientDuplexStream<SidecarMessage, SnapshotMessage>;

export interface PolicyDiscoveryHandlers extends grpc.UntypedServiceImplementation {
  Stream: grpc.handleBidiStreamingCall<ReceivedSidecarMessage, SnapshotMessage>;
}

export interface PolicyDiscoveryClient extends grpc.Client {
  Stream(options?: grpc.CallOptions): PolicyDiscoveryClientStream;
  Stream(metadata: grpc.Metadata, options?: grpc.CallOptions): PolicyDiscoveryClientStream;
}

/** Snapshots carry every resource; allow far more than grpc's 4 MiB default. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

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
  loaded = { service: Client.service, Client };
  return loaded;
}

/** The definition to pass to `server.addService(def, handlers)`. */
export function policyDiscoveryService(): grpc.ServiceDefinition {
  return loadMeshletProto().service;
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
    adminPort: Number.isInteger(Number(node.adminPort)) && Number(node.adminPort) > 0 && Number(node.adminPort) <= 65535 ? Number(node.adminPort) : 0,
    ...(node.kind === 'gateway' ? { kind: 'gateway' } : {}),
  });
}
