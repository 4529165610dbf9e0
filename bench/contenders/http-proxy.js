#!/usr/bin/env node
'use strict';
/**
 * Contender: a bare `http-proxy` reverse proxy with a keep-alive agent, no policy of any kind.
 *
 *   node bench/contenders/http-proxy.js --port P --upstream 127.0.0.1:U
 */
const http = require('node:http');
const { parseArgs } = require('node:util');
const httpProxy = require('http-proxy');

const { values: a } = parseArgs({ options: { port: { type: 'string' }, upstream: { type: 'string' } } });
if (!a.port || !a.upstream) {
  process.stderr.write('usage: http-proxy.js --port P --upstream HOST:PORT\n');
  process.exit(2);
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 256, keepAliveMsecs: 60_000 });
const proxy = httpProxy.createProxyServer({ target: `http://${a.upstream}`, agent, xfwd: false });
proxy.on('error', (err, _req, res) => {
  if (res && !res.headersSent && typeof res.writeHead === 'function') {
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`bad gateway: ${err.message}\n`);
  } else if (res && typeof res.destroy === 'function') res.destroy();
});
const server = http.createServer((req, res) => proxy.web(req, res));
server.keepAliveTimeout = 65_000;
server.listen(Number(a.port), '127.0.0.1');
const stop = () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 1000).unref();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
