import t from 'tap';
import { runCases, type Case } from './cases';
import { parseAll, parseDocuments, parseResource, validateReferences } from '../../../src/policy/parse';

const route = (spec: unknown, name = 'web') => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name }, spec });
const dp = (spec: unknown, name = 'catalog') => ({ apiVersion: 'meshlet.dev/v1', kind: 'DestinationPolicy', metadata: { name }, spec });
const rlp = (spec: unknown, name = 'limits') => ({ apiVersion: 'meshlet.dev/v1', kind: 'RateLimitPolicy', metadata: { name }, spec });
const svc = (spec: unknown, name = 'ext') => ({ apiVersion: 'meshlet.dev/v1', kind: 'Service', metadata: { name }, spec });
const rule = (extra: object = {}) => ({ backends: [{ service: 'catalog' }], ...extra });

const cases: Case[] = [
  // ---- envelope
  { name: 'minimal route', input: route({ hosts: ['catalog'], rules: [rule()] }), check: (r) => t.equal(r.kind, 'Route') },
  { name: 'not an object', input: 'hello', error: { path: '', message: /must be an object/ } },
  { name: 'wrong apiVersion', input: { ...route({ hosts: ['a'], rules: [rule()] }), apiVersion: 'v1' }, error: { path: 'apiVersion', message: /meshlet\.dev\/v1/ } },
  { name: 'missing apiVersion', input: { kind: 'Route', metadata: { name: 'a' }, spec: { hosts: ['a'], rules: [rule()] } }, error: { path: 'apiVersion', message: /required/ } },
  { name: 'unknown kind', input: { ...route({}), kind: 'Ingress' }, error: { path: 'kind', message: /one of Route/ } },
  { name: 'unknown top-level field', input: { ...route({ hosts: ['a'], rules: [rule()] }), status: {} }, error: { path: 'status', message: /unknown field/ } },
  { name: 'missing spec', input: { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'a' } }, error: { path: 'spec', message: /required/ } },
  { name: 'missing name', input: { ...route({ hosts: ['a'], rules: [rule()] }), metadata: {} }, error: { path: 'metadata.name', message: /required/ } },
  { name: 'bad name', input: route({ hosts: ['a'], rules: [rule()] }, 'Web_1'), error: { path: 'metadata.name', message: /lower-case/ } },
  { name: 'bad label key', input: { ...route({ hosts: ['a'], rules: [rule()] }), metadata: { name: 'a', labels: { 'bad key': 'x' } } }, error: { path: 'metadata.labels["bad key"]', message: /invalid label key/ } },
  { name: 'misspelt metadata field suggests', input: { ...route({ hosts: ['a'], rules: [rule()] }), metadata: { nmae: 'a', name: 'a' } }, error: { path: 'metadata.nmae', message: /did you mean "name"/ } },
  // ---- Route
  { name: 'hosts required', input: route({ rules: [rule()] }), error: { path: 'spec.hosts', message: /required/ } },
  { name: 'hosts empty', input: route({ hosts: [], rules: [rule()] }), error: { path: 'spec.hosts', message: /at least 1/ } },
  { name: 'bad host', input: route({ hosts: ['catalog', 'bad host'], rules: [rule()] }), error: { path: 'spec.hosts[1]', message: /invalid host/ } },
  { name: 'duplicate host', input: route({ hosts: ['a', 'A'], rules: [rule()] }), error: { path: 'spec.hosts[1]', message: /duplicate host/ } },
  { name: 'wildcard and port hosts', input: route({ hosts: ['*.example.com', 'catalog:8080', '*'], rules: [rule()] }), check: (r) => t.same((r as unknown as { spec: { hosts: string[] } }).spec.hosts, ['*.example.com', 'catalog:8080', '*']) },
  { name: 'rules required', input: route({ hosts: ['a'] }), error: { path: 'spec.rules', message: /required/ } },
  { name: 'unknown rule field', input: route({ hosts: ['a'], rules: [rule({ timout: '1s' })] }), error: { path: 'spec.rules[0].timout', message: /did you mean "timeout"/ } },
  { name: 'path exact', input: route({ hosts: ['a'], rules: [rule({ matches: [{ path: { exact: '/x' } }] })] }) },
  { name: 'path not starting with /', input: route({ hosts: ['a'], rules: [rule({ matches: [{ path: { prefix: 'api' } }] })] }), error: { path: 'spec.rules[0].matches[0].path.prefix', message: /start with "\/"/ } },
  { name: 'path two kinds', input: route({ hosts: ['a'], rules: [rule({ matches: [{ path: { exact: '/a', prefix: '/b' } }] })] }), error: { path: 'spec.rules[0].matches[0].path', message: /exactly one/ } },
  { name: 'invalid regex (the issue example)', input: route({ hosts: ['a'], rules: [rule({ matches: [{ path: { prefix: '/' } }, { path: { regex: '([a-z' } }] })] }), error: { path: 'spec.rules[0].matches[1].path.regex', message: /^invalid regular expression/ } },
  { name: 'method string', input: route({ hosts: ['a'], rules: [rule({ matches: [{ method: 'GET' }] })] }), check: (r) => t.same((r.spec as unknown as { rules: { matches: { methods: string[] }[] }[] }).rules[0].matches[0].methods, ['GET']) },
  { name: 'method lower-case', input: route({ hosts: ['a'], rules: [rule({ matches: [{ method: ['GET', 'post'] }] })] }), error: { path: 'spec.rules[0].matches[0].method[1]', message: /upper-case/ } },
  { name: 'header match without a kind', input: route({ hosts: ['a'], rules: [rule({ matches: [{ headers: [{ name: 'x-a' }] }] })] }), error: { path: 'spec.rules[0].matches[0].headers[0]', message: /exactly one of exact, regex, present/ } },
  { name: 'header bad name', input: route({ hosts: ['a'], rules: [rule({ matches: [{ headers: [{ name: 'x a', exact: '1' }] }] })] }), error: { path: 'spec.rules[0].matches[0].headers[0].name', message: /header name/ } },
  { name: 'header bad regex', input: route({ hosts: ['a'], rules: [rule({ matches: [{ headers: [{ name: 'x-a', regex: '*' }] }] })] }), error: { path: 'spec.rules[0].matches[0].headers[0].regex', message: /invalid regular expression/ } },
  { name: 'header present false', input: route({ hosts: ['a'], rules: [rule({ matches: [{ headers: [{ name: 'x-a', present: false }] }] })] }), error: { path: 'spec.rules[0].matches[0].headers[0].present', message: /invert/ } },
  { name: 'query param match', input: route({ hosts: ['a'], rules: [rule({ matches: [{ queryParams: [{ name: 'debug', exact: '1' }] }] })] }) },
  { name: 'query param missing name', input: route({ hosts: ['a'], rules: [rule({ matches: [{ queryParams: [{ exact: '1' }] }] })] }), error: { path: 'spec.rules[0].matches[0].queryParams[0].name', message: /required/ } },
  { name: 'neither backends nor redirect', input: route({ hosts: ['a'], rules: [{ timeout: '1s' }] }), error: { path: 'spec.rules[0].backends', message: /required/ } },
  { name: 'both backends and redirect', input: route({ hosts: ['a'], rules: [rule({ redirect: { path: '/x' } })] }), error: { path: 'spec.rules[0]', message: /not both/ } },
  { name: 'backend weight negative', input: route({ hosts: ['a'], rules: [{ backends: [{ service: 'a', weight: -1 }] }] }), error: { path: 'spec.rules[0].backends[0].weight', message: /between 0/ } },
  { name: 'all weights zero', input: route({ hosts: ['a'], rules: [{ backends: [{ service: 'a', weight: 0 }] }] }), error: { path: 'spec.rules[0].backends', message: /above 0/ } },
  { name: 'backend service missing', input: route({ hosts: ['a'], rules: [{ backends: [{ subset: 'v1' }] }] }), error: { path: 'spec.rules[0].backends[0].service', message: /required/ } },
  { name: 'redirect status', input: route({ hosts: ['a'], rules: [{ redirect: { path: '/x', statusCode: 304 } }] }), error: { path: 'spec.rules[0].redirect.statusCode', message: /301, 302/ } },
  { name: 'redirect pathPrefix needs prefix match', input: route({ hosts: ['a'], rules: [{ matches: [{ path: { exact: '/a' } }], redirect: { pathPrefix: '/b' } }] }), error: { path: 'spec.rules[0].redirect.pathPrefix', message: /path\.prefix/ } },
  { name: 'rewrite needs prefix match', input: route({ hosts: ['a'], rules: [rule({ rewrite: { pathPrefix: '/v2' } })] }), error: { path: 'spec.rules[0].rewrite.pathPrefix', message: /path\.prefix/ } },
  { name: 'grpc options', input: route({ hosts: ['a'], rules: [rule()], grpc: { maxMessageBytes: 1048576, allowOrigins: ['https://App.example.com:8443', '*'] } }), check: (r) => t.same((r.spec as { grpc?: unknown }).grpc, { maxMessageBytes: 1048576, allowOrigins: ['https://app.example.com:8443', '*'] }) },
  { name: 'grpc origin with a path', input: route({ hosts: ['a'], rules: [rule()], grpc: { allowOrigins: ['https://app.example.com/x'] } }), error: { path: 'spec.grpc.allowOrigins[0]', message: /must be "\*" or an origin/ } },
  { name: 'grpc maxMessageBytes zero', input: route({ hosts: ['a'], rules: [rule()], grpc: { maxMessageBytes: 0 } }), error: { path: 'spec.grpc.maxMessageBytes', message: /between 1/ } },
  { name: 'grpc unknown field', input: route({ hosts: ['a'], rules: [rule()], grpc: { allowOrigin: ['*'] } }), error: { path: 'spec.grpc.allowOrigin', message: /did you mean "allowOrigins"/ } },
  { name: 'websocket idle timeout', input: route({ hosts: ['a'], rules: [rule()], websocket: { idleTimeout: '90s' } }), check: (r) => t.same((r.spec as { websocket?: unknown }).websocket, { idleTimeoutMs: 90_000 }) },
  { name: 'websocket idle timeout invalid', input: route({ hosts: ['a'], rules: [rule()], websocket: { idleTimeout: 'forever' } }), error: { path: 'spec.websocket.idleTimeout' } },
  { name: 'rewrite with prefix', input: route({ hosts: ['a'], rules: [rule({ matches: [{ path: { prefix: '/api' } }], rewrite: { pathPrefix: '/' } })] }) },
  { name: 'header edits bad name', input: route({ hosts: ['a'], rules: [rule({ requestHeaders: { set: { 'bad header': 'x' } } })] }), error: { path: 'spec.rules[0].requestHeaders.set["bad header"]', message: /invalid header name/ } },
  { name: 'header edits bad value', input: route({ hosts: ['a'], rules: [rule({ responseHeaders: { add: { 'x-a': 'a\nb' } } })] }), error: { path: 'spec.rules[0].responseHeaders.add.x-a', message: /control characters/ } },
  { name: 'timeout bad', input: route({ hosts: ['a'], rules: [rule({ timeout: '5 seconds' })] }), error: { path: 'spec.rules[0].timeout', message: /invalid duration/ } },
  { name: 'timeout number', input: route({ hosts: ['a'], rules: [rule({ timeout: 5 })] }), error: { path: 'spec.rules[0].timeout', message: /duration string/ } },
  { name: 'timeout parsed', input: route({ hosts: ['a'], rules: [rule({ timeout: '1.5s' })] }), check: (r) => t.equal((r.spec as unknown as { rules: { timeoutMs: number }[] }).rules[0].timeoutMs, 1500) },
  { name: 'retries attempts required', input: route({ hosts: ['a'], rules: [rule({ retries: { perTryTimeout: '1s' } })] }), error: { path: 'spec.rules[0].retries.attempts', message: /required/ } },
  { name: 'retries unknown retryOn', input: route({ hosts: ['a'], rules: [rule({ retries: { attempts: 2, retryOn: ['5xx', 'sometimes'] } })] }), error: { path: 'spec.rules[0].retries.retryOn[1]', message: /must be one of/ } },
  { name: 'retries status codes needed', input: route({ hosts: ['a'], rules: [rule({ retries: { attempts: 2, retryOn: 'retriable-status-codes' } })] }), error: { path: 'spec.rules[0].retries.retriableStatusCodes', message: /required/ } },
  { name: 'retries too many', input: route({ hosts: ['a'], rules: [rule({ retries: { attempts: 11 } })] }), error: { path: 'spec.rules[0].retries.attempts', message: /between 0 and 10/ } },
  { name: 'retries backoff order', input: route({ hosts: ['a'], rules: [rule({ retries: { attempts: 2, backoff: { baseInterval: '1s', maxInterval: '10ms' } } })] }), error: { path: 'spec.rules[0].retries.backoff.maxInterval', message: /less than baseInterval/ } },
  { name: 'duplicate rule names', input: route({ hosts: ['a'], rules: [rule({ name: 'x' }), rule({ name: 'x' })] }), error: { path: 'spec.rules[1].name', message: /duplicate rule name/ } },
  // ---- DestinationPolicy
  { name: 'dp minimal', input: dp({ service: 'catalog' }), check: (r) => t.same((r.spec as { loadBalancer: unknown }).loadBalancer, { type: 'round-robin' }) },
  { name: 'dp http2Upgrade off', input: dp({ service: 'c', http2Upgrade: false }), check: (r) => t.equal((r.spec as { http2Upgrade?: boolean }).http2Upgrade, false) },
  { name: 'dp http2Upgrade not a boolean', input: dp({ service: 'c', http2Upgrade: 'no' }), error: { path: 'spec.http2Upgrade', message: /true or false/ } },
  { name: 'dp service required', input: dp({}), error: { path: 'spec.service', message: /required/ } },
  { name: 'dp lb type', input: dp({ service: 'c', loadBalancer: { type: 'fastest' } }), error: { path: 'spec.loadBalancer.type', message: /round-robin, least-request, random, ring-hash/ } },
  { name: 'dp ring-hash needs header', input: dp({ service: 'c', loadBalancer: { type: 'ring-hash' } }), error: { path: 'spec.loadBalancer.hashHeader', message: /required/ } },
  { name: 'dp hashHeader only for ring-hash', input: dp({ service: 'c', loadBalancer: { type: 'random', hashHeader: 'x-user' } }), error: { path: 'spec.loadBalancer.hashHeader', message: /only applies/ } },
  { name: 'dp subset needs labels', input: dp({ service: 'c', subsets: [{ name: 'v1' }] }), error: { path: 'spec.subsets[0].labels', message: /required/ } },
  { name: 'dp subset empty labels', input: dp({ service: 'c', subsets: [{ name: 'v1', labels: {} }] }), error: { path: 'spec.subsets[0].labels', message: /at least one/ } },
  { name: 'dp duplicate subset', input: dp({ service: 'c', subsets: [{ name: 'v1', labels: { a: 'b' } }, { name: 'v1', labels: { a: 'c' } }] }), error: { path: 'spec.subsets[1].name', message: /duplicate subset/ } },
  { name: 'retries budget and buffer', input: route({ hosts: ['a'], rules: [rule({ retries: { attempts: 2, budget: { percent: 10, minRetriesPerSecond: 5 }, bufferLimitBytes: 1024 } })] }), check: (r) => t.same((r.spec as any).rules[0].retries.budget, { percent: 10, minRetriesPerSecond: 5 }) },
  { name: 'retries default budget', input: route({ hosts: ['a'], rules: [rule({ retries: { attempts: 2 } })] }), check: (r) => t.same([(r.spec as any).rules[0].retries.budget, (r.spec as any).rules[0].retries.bufferLimitBytes], [{ percent: 20, minRetriesPerSecond: 10 }, 65536]) },
  { name: 'retries budget field', input: route({ hosts: ['a'], rules: [rule({ retries: { attempts: 2, budget: { percent: -1 } } })] }), error: { path: 'spec.rules[0].retries.budget.percent', message: /between 0 and 1000/ } },
  { name: 'retries budget unknown', input: route({ hosts: ['a'], rules: [rule({ retries: { attempts: 2, budget: { ratio: 1 } } })] }), error: { path: 'spec.rules[0].retries.budget.ratio', message: /unknown field/ } },
  { name: 'retries buffer limit type', input: route({ hosts: ['a'], rules: [rule({ retries: { attempts: 2, bufferLimitBytes: '64k' } })] }), error: { path: 'spec.rules[0].retries.bufferLimitBytes', message: /integer/ } },
  { name: 'breaker', input: route({ hosts: ['a'], rules: [rule({ breaker: { failureRateThreshold: 50, slowCallRateThreshold: 80, slowCallDuration: '2s', minimumCalls: 20, window: '30s', openDuration: '10s', halfOpenCalls: 5 } })] }), check: (r) => t.same((r.spec as any).rules[0].breaker, { failureRateThreshold: 50, slowCallRateThreshold: 80, slowCallDurationMs: 2000, minimumCalls: 20, windowMs: 30000, openDurationMs: 10000, halfOpenCalls: 5 }) },
  { name: 'breaker threshold required', input: route({ hosts: ['a'], rules: [rule({ breaker: { minimumCalls: 5 } })] }), error: { path: 'spec.rules[0].breaker.failureRateThreshold', message: /required/ } },
  { name: 'breaker threshold range', input: route({ hosts: ['a'], rules: [rule({ breaker: { failureRateThreshold: 0 } })] }), error: { path: 'spec.rules[0].breaker.failureRateThreshold', message: /between 1 and 100/ } },
  { name: 'breaker slow call pair', input: route({ hosts: ['a'], rules: [rule({ breaker: { failureRateThreshold: 50, slowCallRateThreshold: 50 } })] }), error: { path: 'spec.rules[0].breaker.slowCallDuration', message: /go together/ } },
  { name: 'breaker window', input: route({ hosts: ['a'], rules: [rule({ breaker: { failureRateThreshold: 50, window: '10ms' } })] }), error: { path: 'spec.rules[0].breaker.window', message: /at least 100ms/ } },
  { name: 'breaker on a redirect', input: route({ hosts: ['a'], rules: [{ redirect: { host: 'b', statusCode: 301 }, breaker: { failureRateThreshold: 50 } }] }), error: { path: 'spec.rules[0].breaker', message: /does not apply to a redirect/ } },
  { name: 'fault', input: route({ hosts: ['a'], rules: [rule({ fault: { delay: { fixed: '1s', percent: 10 }, abort: { grpcStatus: 14, percent: 5 }, header: 'X-Chaos' } })] }), check: (r) => t.same((r.spec as any).rules[0].fault, { delay: { fixedMs: 1000, percent: 10 }, abort: { grpcStatus: 14, percent: 5 }, header: 'x-chaos' }) },
  { name: 'fault needs delay or abort', input: route({ hosts: ['a'], rules: [rule({ fault: { header: 'x' } })] }), error: { path: 'spec.rules[0].fault', message: /set delay or abort/ } },
  { name: 'fault delay fixed required', input: route({ hosts: ['a'], rules: [rule({ fault: { delay: { percent: 5 } } })] }), error: { path: 'spec.rules[0].fault.delay.fixed', message: /required/ } },
  { name: 'fault abort status', input: route({ hosts: ['a'], rules: [rule({ fault: { abort: { percent: 5 } } })] }), error: { path: 'spec.rules[0].fault.abort', message: /httpStatus or grpcStatus/ } },
  { name: 'fault abort http range', input: route({ hosts: ['a'], rules: [rule({ fault: { abort: { httpStatus: 99 } } })] }), error: { path: 'spec.rules[0].fault.abort.httpStatus', message: /between 200 and 599/ } },
  { name: 'fault grpc range', input: route({ hosts: ['a'], rules: [rule({ fault: { abort: { grpcStatus: 0 } } })] }), error: { path: 'spec.rules[0].fault.abort.grpcStatus', message: /between 1 and 16/ } },
  { name: 'fault percent range', input: route({ hosts: ['a'], rules: [rule({ fault: { abort: { httpStatus: 503, percent: 101 } } })] }), error: { path: 'spec.rules[0].fault.abort.percent', message: /between 0 and 100/ } },
  { name: 'fault header', input: route({ hosts: ['a'], rules: [rule({ fault: { abort: { httpStatus: 503 }, header: 'bad header' } })] }), error: { path: 'spec.rules[0].fault.header', message: /valid header name/ } },
  { name: 'tracing sampling', input: route({ hosts: ['a'], rules: [rule({ tracing: { samplingPercent: 12.5 } })] }), check: (r) => t.equal((r.spec as any).rules[0].traceSamplingPercent, 12.5) },
  { name: 'tracing sampling required', input: route({ hosts: ['a'], rules: [rule({ tracing: {} })] }), error: { path: 'spec.rules[0].tracing.samplingPercent', message: /required/ } },
  { name: 'tracing sampling range', input: route({ hosts: ['a'], rules: [rule({ tracing: { samplingPercent: 101 } })] }), error: { path: 'spec.rules[0].tracing.samplingPercent', message: /between 0 and 100/ } },
  { name: 'tracing unknown field', input: route({ hosts: ['a'], rules: [rule({ tracing: { sampling: 5 } })] }), error: { path: 'spec.rules[0].tracing.sampling', message: /unknown field/ } },
  { name: 'mirror', input: route({ hosts: ['a'], rules: [rule({ mirror: { service: 'shadow', percent: 25 } })] }), check: (r) => t.same((r.spec as any).rules[0].mirror, { service: 'shadow', percent: 25 }) },
  { name: 'mirror service required', input: route({ hosts: ['a'], rules: [rule({ mirror: { percent: 25 } })] }), error: { path: 'spec.rules[0].mirror.service', message: /required/ } },
  { name: 'mirror subset name', input: route({ hosts: ['a'], rules: [rule({ mirror: { service: 's', subset: 'V_2' } })] }), error: { path: 'spec.rules[0].mirror.subset', message: /lower-case/ } },
  { name: 'dp health check http', input: dp({ service: 'c', healthCheck: { httpPath: '/healthz', interval: '2s', timeout: '500ms', unhealthyThreshold: 3, healthyThreshold: 2 } }), check: (r) => t.same((r.spec as any).healthCheck, { httpPath: '/healthz', intervalMs: 2000, timeoutMs: 500, unhealthyThreshold: 3, healthyThreshold: 2 }) },
  { name: 'dp health check grpc', input: dp({ service: 'c', healthCheck: { grpcService: '' } }), check: (r) => t.equal((r.spec as any).healthCheck.grpcService, '') },
  { name: 'dp health check one kind', input: dp({ service: 'c', healthCheck: { interval: '1s' } }), error: { path: 'spec.healthCheck', message: /exactly one of httpPath or grpcService/ } },
  { name: 'dp health check path', input: dp({ service: 'c', healthCheck: { httpPath: 'healthz' } }), error: { path: 'spec.healthCheck.httpPath', message: /starting with "\/"/ } },
  { name: 'dp health check threshold', input: dp({ service: 'c', healthCheck: { httpPath: '/h', unhealthyThreshold: 0 } }), error: { path: 'spec.healthCheck.unhealthyThreshold', message: /between 1 and 100/ } },
  { name: 'dp idle timeout', input: dp({ service: 'c', idleTimeout: '5s' }), check: (r) => t.equal((r.spec as any).idleTimeoutMs, 5000) },
  { name: 'dp idle timeout too short', input: dp({ service: 'c', idleTimeout: '1ms' }), error: { path: 'spec.idleTimeout', message: /at least 100ms/ } },
  { name: 'dp outlier panic threshold', input: dp({ service: 'c', outlierDetection: { consecutive5xx: 5, panicThreshold: 101 } }), error: { path: 'spec.outlierDetection.panicThreshold', message: /between 0 and 100/ } },
  { name: 'dp breaker field type', input: dp({ service: 'c', circuitBreaker: { maxRequests: 'lots' } }), error: { path: 'spec.circuitBreaker.maxRequests', message: /integer/ } },
  { name: 'dp breaker unknown field', input: dp({ service: 'c', circuitBreaker: { maxRequest: 1 } }), error: { path: 'spec.circuitBreaker.maxRequest', message: /did you mean "maxRequests"/ } },
  { name: 'dp outlier needs a trigger', input: dp({ service: 'c', outlierDetection: { interval: '1s' } }), error: { path: 'spec.outlierDetection', message: /at least one trigger/ } },
  { name: 'dp outlier percent range', input: dp({ service: 'c', outlierDetection: { consecutive5xx: 5, maxEjectionPercent: 150 } }), error: { path: 'spec.outlierDetection.maxEjectionPercent', message: /between 0 and 100/ } },
  { name: 'dp outlier failurePercentage threshold', input: dp({ service: 'c', outlierDetection: { failurePercentage: {} } }), error: { path: 'spec.outlierDetection.failurePercentage.threshold', message: /required/ } },
  { name: 'dp protocol', input: dp({ service: 'c', protocol: 'http3' }), error: { path: 'spec.protocol', message: /auto, http1, http2/ } },
  {
    name: 'dp full',
    input: dp({
      service: 'catalog',
      loadBalancer: { type: 'least-request', choiceCount: 3 },
      subsets: [{ name: 'v1', labels: { version: 'v1' } }],
      circuitBreaker: { maxConnections: 100, maxPendingRequests: 10, maxRequests: 1000, maxRetries: 3 },
      outlierDetection: { consecutive5xx: 5, interval: '5s', baseEjectionTime: '30s', maxEjectionPercent: 50 },
      protocol: 'http2',
      connectTimeout: '1s',
    }),
    check: (r) => t.equal((r.spec as { outlierDetection: { baseEjectionTimeMs: number } }).outlierDetection.baseEjectionTimeMs, 30_000),
  },
  // ---- RateLimitPolicy
  { name: 'rlp minimal', input: rlp({ service: 'catalog', limits: [{ requests: 100, per: '1s' }] }) },
  { name: 'rlp limits required', input: rlp({ service: 'catalog' }), error: { path: 'spec.limits', message: /required/ } },
  { name: 'rlp per required', input: rlp({ service: 'catalog', limits: [{ requests: 100 }] }), error: { path: 'spec.limits[0].per', message: /required/ } },
  { name: 'rlp bad descriptor', input: rlp({ service: 'c', limits: [{ requests: 1, per: '1s', descriptors: ['user'] }] }), error: { path: 'spec.limits[0].descriptors[0]', message: /source-service/ } },
  { name: 'rlp header descriptor', input: rlp({ service: 'c', limits: [{ requests: 1, per: '1s', descriptors: [{ header: 'X-Api-Key' }, 'remote-address'] }] }) },
  { name: 'rlp descriptor both', input: rlp({ service: 'c', limits: [{ requests: 1, per: '1s', descriptors: [{ header: 'x', key: 'path' }] }] }), error: { path: 'spec.limits[0].descriptors[0]', message: /exactly one of key, header/ } },
  { name: 'rlp global needs redis', input: rlp({ service: 'c', limits: [{ requests: 1, per: '1s', scope: 'global' }] }), error: { path: 'spec.redis', message: /scope global/ } },
  { name: 'rlp redis address', input: rlp({ service: 'c', limits: [{ requests: 1, per: '1s', scope: 'global' }], redis: { address: 'localhost' } }), error: { path: 'spec.redis.address', message: /host:port/ } },
  { name: 'rlp failureMode', input: rlp({ service: 'c', failureMode: 'maybe', limits: [{ requests: 1, per: '1s' }] }), error: { path: 'spec.failureMode', message: /open, closed/ } },
  {
    name: 'rlp global with redis',
    input: rlp({ service: 'c', failureMode: 'closed', redis: { address: '10.0.0.5:6380', timeout: '20ms' }, limits: [{ name: 'g', requests: 10, per: '1m', burst: 5, scope: 'global', descriptors: ['source-service'] }] }),
    check: (r) => t.same((r.spec as { redis: unknown }).redis, { address: '10.0.0.5:6380', timeoutMs: 20 }),
  },
  { name: 'rlp redis timeout default', input: rlp({ service: 'c', redis: { address: 'redis:6379' }, limits: [{ requests: 1, per: '1s', scope: 'global' }] }), check: (r) => t.equal((r.spec as { redis: { timeoutMs: number } }).redis.timeoutMs, 5) },
  { name: 'rlp redis timeout too long', input: rlp({ service: 'c', redis: { address: 'r:1', timeout: '1m' }, limits: [{ requests: 1, per: '1s' }] }), error: { path: 'spec.redis.timeout', message: /./ } },
  { name: 'rlp redis unknown field', input: rlp({ service: 'c', redis: { address: 'r:1', password: 'x' }, limits: [{ requests: 1, per: '1s' }] }), error: { path: 'spec.redis.password', message: /unknown field/ } },
  { name: 'rlp scope', input: rlp({ service: 'c', limits: [{ requests: 1, per: '1s', scope: 'cluster' }] }), error: { path: 'spec.limits[0].scope', message: /local, global/ } },
  { name: 'rlp burst negative', input: rlp({ service: 'c', limits: [{ requests: 1, per: '1s', burst: -1 }] }), error: { path: 'spec.limits[0].burst', message: /./ } },
  { name: 'rlp requests zero', input: rlp({ service: 'c', limits: [{ requests: 0, per: '1s' }] }), error: { path: 'spec.limits[0].requests', message: /./ } },
  { name: 'rlp routes pattern', input: rlp({ service: 'c', limits: [{ requests: 1, per: '1s', routes: ['a/b/c'] }] }), error: { path: 'spec.limits[0].routes[0]', message: /route\/rule/ } },
  { name: 'rlp duplicate limit names', input: rlp({ service: 'c', limits: [{ name: 'x', requests: 1, per: '1s' }, { name: 'x', requests: 2, per: '1s' }] }), error: { path: 'spec.limits[1].name', message: /duplicate/ } },
  // ---- Service
  { name: 'service static', input: svc({ endpoints: [{ address: '127.0.0.1', port: 8080 }] }) },
  { name: 'service port range', input: svc({ endpoints: [{ address: '127.0.0.1', port: 70000 }] }), error: { path: 'spec.endpoints[0].port', message: /between 1 and 65535/ } },
  { name: 'service endpoints or dependencies required', input: svc({}), error: { path: 'spec', message: /set endpoints .* or dependencies/ } },
  { name: 'service dependencies', input: svc({ dependencies: ['catalog', 'api.example.com:443', '*.example.org', '*'] }) },
  { name: 'service dependency not a host', input: svc({ dependencies: ['not a host'] }), error: { path: 'spec.dependencies[0]', message: /must be a service name, a host/ } },
  { name: 'service duplicate endpoint', input: svc({ endpoints: [{ address: 'a', port: 1 }, { address: 'a', port: 1 }] }), error: { path: 'spec.endpoints[1]', message: /duplicate endpoint/ } },
];

runCases(cases);

t.test('every error is reported at once', async (t) => {
  const r = parseResource(route({ hosts: ['bad host'], rules: [{ matches: [{ path: { regex: '(' } }], backends: [{ service: 'A' }], timeout: 'soon' }] }));
  t.notOk(r.ok);
  if (r.ok) return;
  t.same(r.errors.map((e) => e.path).sort(), ['spec.hosts[0]', 'spec.rules[0].backends[0].service', 'spec.rules[0].matches[0].path.regex', 'spec.rules[0].timeout']);
});

t.test('references', async (t) => {
  const parse = (raws: unknown[]) => {
    const out = parseAll(raws);
    return out;
  };
  const catalogDp = dp({ service: 'catalog', subsets: [{ name: 'v1', labels: { version: 'v1' } }] });
  const split = route({ hosts: ['catalog'], rules: [{ backends: [{ service: 'catalog', subset: 'v1', weight: 90 }, { service: 'catalog', subset: 'v3', weight: 10 }] }] }, 'catalog');
  const r = parse([catalogDp, split]);
  t.notOk(r.ok);
  if (!r.ok) {
    t.same(r.errors.map((e) => e.path), ['Route/catalog: spec.rules[0].backends[1].subset']);
    t.match(r.errors[0].message, /subset "v3" is not defined by DestinationPolicy "catalog"/);
  }
  const noDp = parse([split]);
  t.notOk(noDp.ok);
  if (!noDp.ok) t.match(noDp.errors[0].message, /needs a DestinationPolicy/);

  const twoDps = parse([catalogDp, dp({ service: 'catalog' }, 'other')]);
  t.notOk(twoDps.ok);
  if (!twoDps.ok) t.equal(twoDps.errors[0].path, 'DestinationPolicy/other: spec.service');

  const hostClash = parse([route({ hosts: ['a'], rules: [rule()] }, 'r1'), route({ hosts: ['b', 'a'], rules: [rule()] }, 'r2')]);
  t.notOk(hostClash.ok);
  if (!hostClash.ok) t.equal(hostClash.errors[0].path, 'Route/r2: spec.hosts[1]');

  const badMirror = parse([catalogDp, route({ hosts: ['m'], rules: [rule({ mirror: { service: 'catalog', subset: 'v9' } })] }, 'm')]);
  t.notOk(badMirror.ok);
  if (!badMirror.ok) t.same(badMirror.errors.map((e) => e.path), ['Route/m: spec.rules[0].mirror.subset'], 'a mirror subset must exist too');

  const limitRef = parse([route({ hosts: ['a'], rules: [rule({ name: 'read' })] }, 'r1'), rlp({ service: 'catalog', limits: [{ requests: 1, per: '1s', routes: ['r1/read', 'r1/write', 'nope'] }] })]);
  t.notOk(limitRef.ok);
  if (!limitRef.ok) t.same(limitRef.errors.map((e) => e.path), ['RateLimitPolicy/limits: spec.limits[0].routes[1]', 'RateLimitPolicy/limits: spec.limits[0].routes[2]']);

  const good = parse([catalogDp, route({ hosts: ['catalog'], rules: [{ backends: [{ service: 'catalog', subset: 'v1' }] }] })]);
  t.ok(good.ok);
  t.same(validateReferences([]), []);

  const badDoc = parse([route({ hosts: ['a'], rules: [rule({ timeout: 'x' })] }, 'named'), { kind: 'Route' }]);
  t.notOk(badDoc.ok);
  if (!badDoc.ok) {
    t.ok(badDoc.errors.some((e) => e.path === 'Route/named: spec.rules[0].timeout'));
    t.ok(badDoc.errors.some((e) => e.path.startsWith('document[1]: ')));
  }
});

t.test('parseDocuments', async (t) => {
  const yaml = `apiVersion: meshlet.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {endpoints: [{address: 127.0.0.1, port: 1}]}\n---\n---\napiVersion: meshlet.dev/v1\nkind: Service\nmetadata: {name: b}\nspec: {endpoints: [{address: 127.0.0.1, port: 2}]}\n`;
  const r = parseDocuments(yaml);
  t.ok(r.ok);
  if (r.ok) t.equal(r.value.length, 2);
  const json = parseDocuments(JSON.stringify([svc({ endpoints: [{ address: 'x', port: 1 }] })]));
  t.ok(json.ok && json.value.length === 1);
  const list = parseDocuments(JSON.stringify({ kind: 'List', items: [1, 2] }));
  t.ok(list.ok && list.value.length === 2);
  const bad = parseDocuments('a: b\n---\nkey: [unclosed\n');
  t.notOk(bad.ok);
  if (!bad.ok) {
    t.equal(bad.errors[0].path, 'document[1]');
    t.match(bad.errors[0].message, /invalid YAML \(line \d+/);
  }
  const dup = parseDocuments('a: 1\na: 2\n');
  t.notOk(dup.ok, 'duplicate keys are an error');
  t.notOk(parseDocuments('   ').ok);
});
