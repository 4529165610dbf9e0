'use strict';
/**
 * The gRPC upstream for bench/transcode.js: a @grpc/grpc-js server (h2c) implementing
 * bench/fixtures/greeter.proto's unary Hello. Prints `listening PORT` once bound.
 *   node bench/contenders/grpc-greeter.js
 */
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ROOT = path.join(__dirname, '..', '..');
const def = protoLoader.loadSync(path.join(ROOT, 'bench', 'fixtures', 'greeter.proto'), {
  includeDirs: [path.join(ROOT, 'src', 'proto'), path.dirname(require.resolve('protobufjs/package.json'))],
  keepCase: true,
});
const pkg = grpc.loadPackageDefinition(def);
const server = new grpc.Server();
server.addService(pkg.bench.v1.Greeter.service, {
  Hello(call, cb) {
    cb(null, { text: `hello ${call.request.name}`, count: '1' });
  },
});
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stdout.write(`listening ${port}\n`);
});
process.on('SIGTERM', () => server.forceShutdown());
