#!/usr/bin/env node
/**
 * A/B of the HTTP/2 server layer alone (issue 20): a tiny h2c server that answers every request
 * with a 12-byte body, served either by meshlet's own layer (src/http/h2/, `ours`) or by
 * node:http2's core API (`node`), one process, no proxy. Load it with h2load; the CPU it used
 * per request is printed on SIGTERM (counted from the start, or from the last SIGUSR2 so a
 * warm-up run can be left out).
 *
 *   npm run build
 *   node bench/h2-layer.js ours 18440 &
 *   flock /tmp/meshlet-bench.lock h2load -n 20000 -c 4 -m 32 http://127.0.0.1:18440/   # warm-up
 *   kill -USR2 %1
 *   flock /tmp/meshlet-bench.lock h2load -n 20000 -c 4 -m 32 http://127.0.0.1:18440/
 *   kill %1            # prints cpu_us and cpu_us_per_request (pass the request count as the 3rd argument)
 */
'use strict';
const net = require('node:net');
const http2 = require('node:http2');
const path = require('node:path');
const { serveH2 } = require(path.join(__dirname, '..', 'dist', 'src', 'http', 'h2', 'session.js'));

const mode = process.argv[2] === 'node' ? 'node' : 'ours';
const port = Number(process.argv[3] ?? 18440);
const requests = Number(process.argv[4] ?? 20000);
// The options src/http/listener.ts gives node:http2.
const opts = { maxHeaderListPairs: 512, settings: { maxHeaderListSize: 65536, initialWindowSize: 1 << 20, maxConcurrentStreams: 1000, enableConnectProtocol: true } };
const handle = (stream) => {
  stream.on('error', () => undefined);
  stream.respond({ ':status': 200, 'content-type': 'text/plain' });
  stream.end('hello world\n');
};
let server;
if (mode === 'ours') {
  server = net.createServer({ noDelay: true }, (s) => serveH2(s, opts, (session) => session.on('error', () => undefined), handle));
} else {
  const h2 = http2.createServer(opts);
  h2.on('stream', handle);
  server = net.createServer({ noDelay: true }, (s) => h2.emit('connection', s));
}
let t0 = process.cpuUsage();
server.listen(port, '127.0.0.1', () => {
  t0 = process.cpuUsage();
  console.log(`${mode} listening on ${port}`);
});
process.on('SIGUSR2', () => (t0 = process.cpuUsage()));
process.on('SIGTERM', () => {
  const u = process.cpuUsage(t0);
  const us = u.user + u.system;
  console.log(JSON.stringify({ mode, cpu_us: us, cpu_us_per_request: +(us / requests).toFixed(2) }));
  process.exit(0);
});
