'use strict';
/**
 * Configuration text for every process the bench starts: the upstream (nginx `return 200`),
 * nginx and haproxy as proxies, and the meshlet sidecar's static policy files.
 * Everything listens on 127.0.0.1 only and writes pid/log/temp files into the run's temp dir.
 */
const path = require('node:path');

/** The body the upstream answers with (small, fixed). */
const BODY = 'hello from upstream\n';

/** Directives every nginx instance needs so that it never touches /var or /run. */
function nginxCommon(dir, name) {
  return `
worker_processes 1;
master_process off;
daemon off;
pid ${path.join(dir, `${name}.pid`)};
error_log ${path.join(dir, `${name}.error.log`)} warn;
events { worker_connections 8192; multi_accept on; }
`;
}

function nginxHttpCommon(dir, name) {
  const t = (x) => path.join(dir, `${name}-${x}`);
  return `
  access_log off;
  keepalive_timeout 120s;
  keepalive_requests 100000000;
  client_body_temp_path ${t('body')};
  proxy_temp_path ${t('proxy')};
  fastcgi_temp_path ${t('fastcgi')};
  uwsgi_temp_path ${t('uwsgi')};
  scgi_temp_path ${t('scgi')};
`;
}

/**
 * The upstream: one nginx worker answering `return 200` on each of `ports` (HTTP/1.1) and, when
 * given, on `h2Port` with h2c (prior knowledge; nginx's `listen ... http2` without ssl), for the
 * `direct` row of the HTTP/2 column.
 *
 * `grpc` ({ ports, www, responseName }, lib/grpc.js writeFixtures): a second server, h2c on each
 * of `grpc.ports`, that is a gRPC unary server for the gRPC column (upstreamGrpcServer).
 */
function upstreamNginx(dir, ports, h2Port, grpc) {
  return `${nginxCommon(dir, 'upstream')}
http {
${nginxHttpCommon(dir, 'upstream')}
  default_type text/plain;
  server {
${ports.map((p) => `    listen 127.0.0.1:${p} reuseport backlog=4096;`).join('\n')}
${h2Port ? `    listen 127.0.0.1:${h2Port} http2 backlog=4096;` : ''}
    # Says which endpoint answered, so the harness can check that a split reaches both.
    add_header X-Upstream-Port $server_port;
    location / { return 200 ${JSON.stringify(BODY)}; }
  }
${grpc ? upstreamGrpcServer(grpc) : ''}}
`;
}

/**
 * nginx as a gRPC unary server: every request (any path) is answered 200 with the static file
 * `responseName` (one length-prefixed SimpleResponse) as `application/grpc`, then the trailer
 * `grpc-status: 0` (nginx sends trailers on HTTP/2). Three details make it a well-behaved one:
 *  - the request body is read in full before the answer (a `mirror` subrequest to an empty
 *    location does that): an answer sent first leaves the request's DATA frames to arrive on a
 *    closed stream, and nginx's own `grpc_pass` then fails the connection ("upstream sent frame
 *    for unknown stream") — grpc-js does not mind, nginx as a gRPC proxy does;
 *  - nginx's static handler answers a POST with 405, so `error_page 405 =200` serves the same file
 *    from an internal location as the 200 (a GET there, no second mirror);
 *  - `grpc-message` is not sent: nginx drops a header with an empty value, and gRPC makes it
 *    optional for status 0.
 */
function upstreamGrpcServer({ ports, www, responseName }) {
  const file = path.join(www, responseName);
  return `  server {
${ports.map((p) => `    listen 127.0.0.1:${p} http2 backlog=4096;`).join('\n')}
    types { }
    default_type application/grpc;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    location ~ ^/ {
      alias ${file};
      mirror /.bench-read-body;
      error_page 405 =200 /.bench-grpc-response;
    }
    location = /.bench-grpc-response {
      internal;
      alias ${file};
      add_trailer grpc-status 0 always;
    }
    location = /.bench-read-body { internal; return 204; }
  }
`;
}

/**
 * nginx as the proxy under test: 1 worker, keep-alive to the upstream. `h2Port`: a second listener
 * speaking h2c (prior knowledge) downstream; upstream stays HTTP/1.1. (nginx 1.22's `http2`
 * listen flag without ssl serves only h2c, hence the separate port; since 1.19.7 the number of
 * requests per h2 connection is `keepalive_requests`, set very high in nginxHttpCommon.)
 * `grpc` ({ port, upstreamPort }): a third listener, h2c, `grpc_pass` to the gRPC upstream over
 * kept-alive HTTP/2 connections.
 */
function nginxProxy(dir, port, upstreamPort, h2Port, grpc) {
  return `${nginxCommon(dir, 'proxy')}
http {
${nginxHttpCommon(dir, 'proxy')}
  upstream up {
    server 127.0.0.1:${upstreamPort};
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
  }
${
  grpc
    ? `  upstream upgrpc {
    server 127.0.0.1:${grpc.upstreamPort};
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:${grpc.port} http2 backlog=4096;
    location / { grpc_pass grpc://upgrpc; }
  }
`
    : ''
}  server {
    listen 127.0.0.1:${port} backlog=4096;
${h2Port ? `    listen 127.0.0.1:${h2Port} http2 backlog=4096;` : ''}
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering on;
    }
  }
}
`;
}

/**
 * haproxy as the proxy under test: one thread, connection reuse always. `h2Port`: a second bind
 * speaking h2c (`proto h2`) downstream; the backend stays HTTP/1.1. `grpc` ({ port, upstreamPort }):
 * a second frontend, `proto h2`, whose backend speaks h2c (`proto h2`) to the gRPC upstream.
 */
function haproxy(dir, port, upstreamPort, h2Port, grpc) {
  return `global
  nbthread 1
  maxconn 4000
  pidfile ${path.join(dir, 'haproxy.pid')}

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 120s

frontend fe
  bind 127.0.0.1:${port}
${h2Port ? `  bind 127.0.0.1:${h2Port} proto h2\n` : ''}  default_backend be

backend be
  server up1 127.0.0.1:${upstreamPort}
${
  grpc
    ? `
frontend fe_grpc
  bind 127.0.0.1:${grpc.port} proto h2
  default_backend be_grpc

backend be_grpc
  server g1 127.0.0.1:${grpc.upstreamPort} proto h2
`
    : ''
}`;
}

// ------------------------------------------------------------------------- meshlet policy files

const doc = (o) => JSON.stringify(o);
const res = (kind, name, spec) => ({ apiVersion: 'meshlet.dev/v1', kind, metadata: { name }, spec });

/** A JSON array of resources (the sidecar's static loader accepts a JSON array). */
function toFile(resources) {
  return `[\n${resources.map(doc).join(',\n')}\n]\n`;
}

/** 1,000 Routes with distinct hosts that the benchmark traffic never uses. */
function decoyRoutes(n, service) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const id = String(i).padStart(4, '0');
    out.push(res('Route', `decoy-${id}`, { hosts: [`decoy-${id}.bench.local`], rules: [{ backends: [{ service }] }] }));
  }
  return out;
}

/**
 * The meshlet variants. Traffic is sent with `Host: upstream`.
 *  - off:     one Service, no Route: the implicit route to it.
 *  - routes:  off + 1,000 decoy Routes and an explicit Route for `upstream`, last.
 *  - split:   two endpoints labelled v1/v2, DestinationPolicy subsets, a 50/50 weighted split.
 *  - full:    everything the schema has today: 1,000 decoy Routes; the real Route last, with a
 *             non-matching header rule before a 50/50 weighted split between two subsets, retries,
 *             a timeout and a route breaker; a DestinationPolicy with least-request LB, subsets,
 *             circuitBreaker limits and outlierDetection; a RateLimitPolicy set far above the
 *             offered load.
 *             For the gRPC column, `off` and `full` also get a Service `grpc-upstream` (lib/grpc.js
 *             AUTHORITY) on the gRPC upstream's ports, `protocol: http2`: `off` with one endpoint and
 *             its implicit route, `full` the same chain as above for it (two endpoints, subsets,
 *             the DestinationPolicy, a RateLimitPolicy, a Route with a non-matching header rule
 *             before a 50/50 split with timeout, retries (gRPC UNAVAILABLE too) and a breaker).
 *  - timeout, retries, breaker, limits, outlier, fault, mirror: one resilience layer on top of
 *             `off`, to report each layer's CPU cost (fault: gated on a header the bench never
 *             sends; mirror: every request also copied to the second endpoint).
 */
function meshletPolicies(variant, upstreamPorts, grpcPorts) {
  const [p1, p2] = upstreamPorts;
  // protocol http1: the upstream ports speak HTTP/1.1 only. (`auto`, the default, keeps the
  // downstream's protocol, so h2c downstream would go to the upstream as h2c.) HTTP/1.1 traffic
  // takes the same path either way.
  const oneEndpoint = res('Service', 'upstream', { protocol: 'http1', endpoints: [{ address: '127.0.0.1', port: p1 }] });
  const twoEndpoints = res('Service', 'upstream', {
    protocol: 'http1',
    endpoints: [
      { address: '127.0.0.1', port: p1, labels: { version: 'v1' } },
      { address: '127.0.0.1', port: p2, labels: { version: 'v2' } },
    ],
  });
  const subsets = [
    { name: 'v1', labels: { version: 'v1' } },
    { name: 'v2', labels: { version: 'v2' } },
  ];
  const split = [
    { service: 'upstream', subset: 'v1', weight: 50 },
    { service: 'upstream', subset: 'v2', weight: 50 },
  ];
  // One resilience layer at a time, on top of `off` (one Route to the one endpoint).
  const rule = (extra) => res('Route', 'upstream', { hosts: ['upstream'], rules: [{ name: 'r', backends: [{ service: 'upstream' }], ...extra }] });
  const dest = (extra) => res('DestinationPolicy', 'upstream', { service: 'upstream', ...extra });
  const features = {
    timeout: [oneEndpoint, rule({ timeout: '5s' })],
    retries: [oneEndpoint, rule({ retries: { attempts: 2, perTryTimeout: '2s', retryOn: ['connect-failure', 'gateway-error', 'reset'] } })],
    breaker: [oneEndpoint, rule({ breaker: { failureRateThreshold: 50, slowCallRateThreshold: 90, slowCallDuration: '2s' } })],
    limits: [oneEndpoint, dest({ circuitBreaker: { maxConnections: 100000, maxPendingRequests: 100000, maxRequests: 100000, maxRetries: 1000 } })],
    outlier: [oneEndpoint, dest({ outlierDetection: { consecutive5xx: 5, consecutiveGatewayErrors: 5, interval: '10s', baseEjectionTime: '30s', maxEjectionPercent: 50 } })],
    fault: [oneEndpoint, rule({ fault: { abort: { httpStatus: 503, percent: 100 }, header: 'x-bench-chaos' } })],
    mirror: [twoEndpoints, dest({ subsets }), rule({ backends: [{ service: 'upstream', subset: 'v1' }], mirror: { service: 'upstream', subset: 'v2', percent: 100 } })],
  };
  // The gRPC upstream (h2c): one Service per chain, as for HTTP. Only for `off` and `full`.
  const G = 'grpc-upstream';
  const grpcOne = () => (grpcPorts ? [res('Service', G, { protocol: 'http2', endpoints: [{ address: '127.0.0.1', port: grpcPorts[0] }] })] : []);
  const grpcFull = () => {
    if (!grpcPorts) return [];
    const [g1, g2] = grpcPorts;
    return [
      res('Service', G, {
        protocol: 'http2',
        endpoints: [
          { address: '127.0.0.1', port: g1, labels: { version: 'v1' } },
          { address: '127.0.0.1', port: g2, labels: { version: 'v2' } },
        ],
      }),
      res('DestinationPolicy', G, {
        service: G,
        loadBalancer: { type: 'least-request', choiceCount: 2 },
        subsets,
        circuitBreaker: { maxConnections: 100000, maxPendingRequests: 100000, maxRequests: 100000, maxRetries: 1000 },
        outlierDetection: { consecutive5xx: 5, consecutiveGatewayErrors: 5, interval: '10s', baseEjectionTime: '30s', maxEjectionPercent: 50 },
        connectTimeout: '1s',
      }),
      res('RateLimitPolicy', G, {
        service: G,
        failureMode: 'open',
        limits: [{ name: 'very-high', requests: 1_000_000_000, per: '1s', descriptors: ['destination-service'] }],
      }),
      res('Route', G, {
        hosts: [G],
        rules: [
          { name: 'canary', matches: [{ headers: [{ name: 'x-bench-canary', exact: 'true' }] }], backends: [{ service: G, subset: 'v2' }] },
          {
            name: 'split',
            backends: [
              { service: G, subset: 'v1', weight: 50 },
              { service: G, subset: 'v2', weight: 50 },
            ],
            timeout: '5s',
            retries: { attempts: 2, perTryTimeout: '2s', retryOn: ['connect-failure', 'reset', 'unavailable'] },
            breaker: { failureRateThreshold: 50, slowCallRateThreshold: 90, slowCallDuration: '2s' },
          },
        ],
      }),
    ];
  };
  if (features[variant]) return toFile(features[variant]);
  switch (variant) {
    case 'obs-none':
    case 'obs-metrics':
    case 'obs-tracing':
    case 'obs-accesslog':
    case 'obs-all':
      return toFile([oneEndpoint]);
    case 'off':
      return toFile([oneEndpoint, ...grpcOne()]);
    case 'routes':
      return toFile([oneEndpoint, ...decoyRoutes(1000, 'upstream'), res('Route', 'upstream', { hosts: ['upstream'], rules: [{ backends: [{ service: 'upstream' }] }] })]);
    case 'split':
      return toFile([
        twoEndpoints,
        res('DestinationPolicy', 'upstream', { service: 'upstream', loadBalancer: { type: 'round-robin' }, subsets }),
        res('Route', 'upstream', { hosts: ['upstream'], rules: [{ name: 'split', backends: split }] }),
      ]);
    case 'full':
      return toFile([
        twoEndpoints,
        ...decoyRoutes(1000, 'upstream'),
        res('DestinationPolicy', 'upstream', {
          service: 'upstream',
          loadBalancer: { type: 'least-request', choiceCount: 2 },
          subsets,
          circuitBreaker: { maxConnections: 100000, maxPendingRequests: 100000, maxRequests: 100000, maxRetries: 1000 },
          outlierDetection: { consecutive5xx: 5, consecutiveGatewayErrors: 5, interval: '10s', baseEjectionTime: '30s', maxEjectionPercent: 50 },
          connectTimeout: '1s',
        }),
        res('RateLimitPolicy', 'upstream', {
          service: 'upstream',
          failureMode: 'open',
          limits: [{ name: 'very-high', requests: 1_000_000_000, per: '1s', descriptors: ['destination-service'] }],
        }),
        res('Route', 'upstream', {
          hosts: ['upstream'],
          rules: [
            { name: 'canary', matches: [{ headers: [{ name: 'x-bench-canary', exact: 'true' }] }], backends: [{ service: 'upstream', subset: 'v2' }] },
            {
              name: 'split',
              backends: split,
              timeout: '5s',
              retries: { attempts: 2, perTryTimeout: '2s', retryOn: ['connect-failure', 'gateway-error', 'reset'] },
              breaker: { failureRateThreshold: 50, slowCallRateThreshold: 90, slowCallDuration: '2s' },
            },
          ],
        }),
        ...grpcFull(),
      ]);
    // Inbound variants: the load goes to the sidecar's inbound listener (--service upstream,
    // --app-port U1), where RateLimitPolicy is enforced. `inbound`: no policy at all;
    // `ratelimit`: two local limits far above the offered load (one bucket for everyone, one per
    // remote address), so every request pays for the checks and none is limited.
    case 'inbound':
      // No policy for this service (a file needs one resource: a Service nobody calls).
      return toFile([res('Service', 'unused', { endpoints: [{ address: '127.0.0.1', port: p1 }] })]);
    case 'ratelimit':
      return toFile([
        res('RateLimitPolicy', 'upstream', {
          service: 'upstream',
          failureMode: 'open',
          limits: [
            { name: 'all', requests: 1_000_000_000, per: '1s' },
            { name: 'per-peer', requests: 1_000_000_000, per: '1s', descriptors: ['remote-address'] },
          ],
        }),
      ]);
    default:
      throw new Error(`unknown meshlet variant ${variant}`);
  }
}

/**
 * Sidecar flags per variant. The observability variants (policies as `off`) switch metrics,
 * tracing and the access log on one at a time, against `obs-none` with all three off:
 *  - obs-metrics:   per-request metrics (counters, histogram, hdr window) only.
 *  - obs-tracing:   trace-context propagation, a span per request (100% sampled), exported in
 *                   batches to a collector that is not there (so every batch is formatted, then
 *                   dropped and counted: the worst case for the proxy).
 *  - obs-accesslog: one JSON access-log line per request (to the run's log file).
 *  - obs-all:       all three.
 * The other contenders run with the defaults users get (metrics on, tracing on at 1% with no collector, access log off).
 */
function meshletArgs(variant, deadCollectorPort) {
  const collector = ['--trace-sampling', '100', '--trace-collector', `http://127.0.0.1:${deadCollectorPort}/api/v2/spans`];
  switch (variant) {
    case 'obs-none':
      return ['--metrics', 'off', '--tracing', 'off', '--access-log', '0'];
    case 'obs-metrics':
      return ['--metrics', 'on', '--tracing', 'off', '--access-log', '0'];
    case 'obs-tracing':
      return ['--metrics', 'off', '--tracing', 'on', ...collector, '--access-log', '0'];
    case 'obs-accesslog':
      return ['--metrics', 'off', '--tracing', 'off', '--access-log', '1'];
    case 'obs-all':
      return ['--metrics', 'on', '--tracing', 'on', ...collector, '--access-log', '1'];
    default:
      return [];
  }
}

module.exports = { BODY, upstreamNginx, nginxProxy, haproxy, meshletPolicies, meshletArgs };
