'use strict';
/**
 * The gRPC unary column: the messages (real protobuf, encoded by @grpc/grpc-js from the interop
 * test service in test/fixtures/grpc/test.proto), the grpc-js check that a port really is a gRPC
 * unary server (or a proxy to one), and h2load's summary for a gRPC run.
 *
 * The upstream is nginx answering every POST with one static file holding one length-prefixed
 * SimpleResponse, `content-type: application/grpc` and the trailer `grpc-status: 0`
 * (lib/configs.js, upstreamNginx); the check below proves a grpc-js client accepts that as a
 * successful UnaryCall.
 */
const fs = require('node:fs');
const path = require('node:path');
const { summary } = require('./h2load');

const ROOT = path.resolve(__dirname, '..', '..');
const PROTO = path.join(ROOT, 'test', 'fixtures', 'grpc', 'test.proto');
/** The method every gRPC request calls. */
const METHOD_PATH = '/grpc.testing.TestService/UnaryCall';
/** `:authority` of the gRPC load: the meshlet Service for the gRPC upstream has this name. */
const AUTHORITY = 'grpc-upstream';
/** Payload bytes each way, as in bench/grpc.js. */
const PAYLOAD = 100;

let service;
function testService() {
  if (!service) {
    const grpc = require('@grpc/grpc-js');
    const loader = require('@grpc/proto-loader');
    const def = loader.loadSync(PROTO, { defaults: true });
    service = { grpc, TestService: grpc.loadPackageDefinition(def).grpc.testing.TestService };
  }
  return service;
}

/** One gRPC length-prefixed message: flag byte 0 (not compressed), 4-byte big-endian length, bytes. */
function frame(msg) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

/**
 * Writes the request body h2load sends (one framed SimpleRequest) and the response body the
 * upstream serves (one framed SimpleResponse) into `dir`; returns their paths and sizes.
 */
function writeFixtures(dir) {
  const m = testService().TestService.service.UnaryCall;
  const request = frame(m.requestSerialize({ responseSize: PAYLOAD, payload: { body: Buffer.alloc(PAYLOAD, 0x61) } }));
  const response = frame(m.responseSerialize({ payload: { body: Buffer.alloc(PAYLOAD, 0x62) } }));
  const www = path.join(dir, 'grpc-www');
  fs.mkdirSync(www, { recursive: true });
  const out = { requestFile: path.join(dir, 'grpc-request.bin'), www, responseName: 'unary-response.bin', responseBytes: response.length };
  fs.writeFileSync(out.requestFile, request);
  fs.writeFileSync(path.join(www, out.responseName), response);
  return out;
}

/**
 * One UnaryCall with @grpc/grpc-js through `port` (h2c, `:authority` AUTHORITY): must end with
 * status OK and the upstream's 100-byte payload. Rejects with the reason otherwise.
 */
function checkGrpc(port, name, timeoutMs = 5000) {
  const { grpc, TestService } = testService();
  const client = new TestService(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': AUTHORITY });
  return new Promise((resolve, reject) => {
    client.unaryCall({ responseSize: PAYLOAD, payload: { body: Buffer.alloc(PAYLOAD, 0x61) } }, { deadline: Date.now() + timeoutMs }, (err, res) => {
      client.close();
      if (err) return reject(new Error(`${name}: a grpc-js UnaryCall through it failed: ${grpc.status[err.code] ?? err.code} ${err.details ?? err.message}`));
      const body = res?.payload?.body;
      if (!body || body.length !== PAYLOAD || body.some((b) => b !== 0x62)) return reject(new Error(`${name}: a grpc-js UnaryCall through it returned OK but not the upstream's message`));
      resolve();
    });
  });
}

/** h2load arguments for a gRPC unary run against `port`. */
function h2loadArgs(port, { clients, streams, ms, requestFile }) {
  return [
    ...['-t', '1', '-c', String(clients), '-m', String(streams), '-D', `${ms}ms`],
    ...['-d', requestFile, '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-H', `:authority: ${AUTHORITY}`],
    `http://127.0.0.1:${port}${METHOD_PATH}`,
  ];
}

/**
 * h2load's summary of a gRPC run. h2load counts HTTP statuses, not gRPC ones, and a proxy's own
 * gRPC errors are HTTP 200 trailers-only responses (no DATA). So besides h2c, no failed/errored/
 * timed-out requests and only 2xx, the DATA bytes received must hold one whole response message
 * per succeeded request: `messages` = data bytes ÷ the message size must reach `succeeded`.
 * Throws (the caller marks the cells FAILED) otherwise. `warmUp`: a short run that may end before
 * any call completes (a cold proxy: JIT, first upstream connection), so none succeeding is fine.
 */
function parseGrpcH2load(out, responseBytes, { warmUp = false } = {}) {
  const parsed = summary(out, { warmUp, traffic: true });
  if (!parsed) throw Object.assign(new Error('h2load (gRPC): cannot parse its output'), { output: out });
  const { r, problems } = parsed;
  r.messages = Math.floor(r.dataBytes / responseBytes);
  if (r.succeeded > 0 && r.messages < r.succeeded) problems.push(`only ${r.messages} response messages for ${r.succeeded} succeeded requests (${r.succeeded - r.messages} answered without a message: gRPC errors)`);
  if (problems.length) throw Object.assign(new Error(`h2load (gRPC): ${problems.join('; ')}`), { h2load: r, output: out });
  return r;
}

module.exports = { METHOD_PATH, AUTHORITY, PAYLOAD, writeFixtures, checkGrpc, h2loadArgs, parseGrpcH2load, frame };
