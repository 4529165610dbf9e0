#!/usr/bin/env node
'use strict';
/**
 * Contender: a bare reverse proxy on undici — node:http server in front, one undici Pool
 * (keep-alive, HTTP/1.1) behind, `pool.stream` writing the upstream body straight into the
 * response. Hop-by-hop headers are dropped both ways; nothing else is done.
 *
 *   node bench/contenders/undici-proxy.js --port P --upstream 127.0.0.1:U
 */
const http = require('node:http');
const { parseArgs } = require('node:util');
const { Pool } = require('undici');

const { values: a } = parseArgs({ options: { port: { type: 'string' }, upstream: { type: 'string' } } });
if (!a.port || !a.upstream) {
  process.stderr.write('usage: undici-proxy.js --port P --upstream HOST:PORT\n');
  process.exit(2);
}
const pool = new Pool(`http://${a.upstream}`, { connections: 256, pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

function strip(raw) {
  const out = {};
  for (const k in raw) if (!HOP.has(k)) out[k] = raw[k];
  return out;
}

const server = http.createServer((req, res) => {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool.stream(
    { method: req.method, path: req.url, headers: strip(req.headers), body: hasBody ? req : null },
    ({ statusCode, headers }) => {
      res.writeHead(statusCode, strip(headers));
      return res;
    },
    (err) => {
      if (!err) return;
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`bad gateway: ${err.message}\n`);
      } else res.destroy(err);
    },
  );
});
server.keepAliveTimeout = 65_000;
server.listen(Number(a.port), '127.0.0.1');
const stop = () => {
  server.close();
  pool.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
