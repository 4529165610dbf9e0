export { RateLimitLayer, type DenyFn, type LimitRequest, type RateLimitLayerOptions } from './layer';
export { ROUTE_HEADER, SOURCE_HEADER, stampIdentity } from './identity';
export { TokenBuckets, type BucketSpec, type TakeResult } from './token-bucket';
export { RedisLimiter, type GlobalOutcome } from './redis-limiter';
export { limitedHeaders, policyHeader } from './headers';
