#!/usr/bin/env node
/**
 * The upstream HTTP/2 client alone, ours (src/http/h2/client.ts) vs node:http2's: CPU (user +
 * system) of this process per gRPC-shaped call (POST, 10-byte message, response with trailers)
 * through `UpstreamPools` to a node:http2 server in a child process, loopback, 32 calls in flight,
 * rounds alternating the two clients. Bounded: N calls per round (default 20000), R rounds (default 3).
 *
 *   npm run build && flock /tmp/meshlet-bench.lock taskset -c 1 node bench/h2-client-ab.js [N] [R]
 */
'use strict';
const { fork } = require('node:child_process');
const path = require('node:path');
const { Readable } = require('node:stream');

if (process.argv[2] === '--server') {
  const http2 = require('node:http2');
  const s = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
  const body = Buffer.from([0, 0, 0, 0, 5, 1, 2, 3, 4, 5]);
  s.on('stream', (st) => {
    st.on('error', () => {});
    st.on('data', () => {});
    st.on('end', () => {
      st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      st.on('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0', 'grpc-message': '' }));
      st.end(body);
    });
  });
  s.listen(0, '127.0.0.1', () => process.send(s.address().port));
  process.on('disconnect', () => process.exit(0));
  return;
}

const { UpstreamPools } = require(path.join(__dirname, '..', 'dist', 'src', 'http', 'upstream.js'));
const N = Number(process.argv[2] || 20000);
const ROUNDS = Number(process.argv[3] || 3);
const C = 32;

async function run(framing, port) {
  const pools = new UpstreamPools({ h2Framing: framing });
  const target = { key: `127.0.0.1:${port}`, address: '127.0.0.1', port, protocol: 'http2' };
  const msg = Buffer.from([0, 0, 0, 0, 5, 1, 2, 3, 4, 5]);
  const headers = ['content-type', 'application/grpc', 'te', 'trailers'];
  const one = () =>
    new Promise((res, rej) => {
      pools.send(target, { method: 'POST', path: '/pkg.Svc/Call', authority: 'up', headers, body: Readable.from([msg]) }, { onResponse() {}, onData: () => true, onEnd: res, onError: rej });
    });
  for (let i = 0; i < 500; i++) await one();
  const t0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  let left = N;
  await Promise.all(Array.from({ length: C }, async () => { while (left-- > 0) await one(); }));
  const d = process.cpuUsage(t0);
  const wall = Number(process.hrtime.bigint() - w0) / 1e6;
  await pools.close();
  return { us: (d.user + d.system) / N, sys: d.system / N, rps: Math.round((N / wall) * 1000) };
}

(async () => {
  const srv = fork(__filename, ['--server']);
  const port = await new Promise((r) => srv.once('message', r));
  const res = { node: [], meshlet: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const f of r % 2 ? ['meshlet', 'node'] : ['node', 'meshlet']) {
      const x = await run(f, port);
      res[f].push(x.us);
      console.log(`${f.padEnd(8)} ${x.us.toFixed(1)} us/call (system ${x.sys.toFixed(1)})  ${x.rps} calls/s`);
    }
  }
  const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
  console.log(`median: node ${med(res.node).toFixed(1)} us/call (${res.node.map((x) => x.toFixed(1)).join(' / ')}), meshlet ${med(res.meshlet).toFixed(1)} us/call (${res.meshlet.map((x) => x.toFixed(1)).join(' / ')})`);
  srv.disconnect();
  srv.kill();
})();
