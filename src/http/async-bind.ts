/**
 * A cheaper `AsyncResource.prototype.bind` for Node 20, installed once by the upstream pools.
 *
 * node:http2's `ClientHttp2Session.request()` calls `AsyncResource.bind()` once per request, and
 * Node 20's `bind()` creates two `util.deprecate` wrappers each time for the deprecated
 * `asyncResource` accessor of the bound function (DEP0172): measured at 5-8 % of a sidecar's CPU
 * on the gRPC and mesh-hop paths (docs/performance.md). This version keeps what `bind()` does —
 * the same bound function (runs `fn` in the resource's async scope), its `length`, and the
 * `asyncResource` accessor with its one-time DEP0172 warning — but shares one pair of deprecated
 * accessors between all bound functions (the resource is kept in a WeakMap) instead of making two
 * new ones per call. Node versions whose `bind()` does not build deprecate wrappers are left alone.
 */
import { AsyncResource } from 'node:async_hooks';
import { deprecate } from 'node:util';

const resources = new WeakMap<object, unknown>();
const DEP = 'The asyncResource property on bound functions is deprecated';
const accessor = {
  configurable: true,
  enumerable: true,
  get: deprecate(function (this: object) {
    return resources.get(this);
  }, DEP, 'DEP0172'),
  set: deprecate(function (this: object, v: unknown) {
    resources.set(this, v);
  }, DEP, 'DEP0172'),
};

let installed = false;

export function installCheapAsyncBind(): void {
  if (installed) return;
  installed = true;
  const original = AsyncResource.prototype.bind;
  if (!/deprecate\(/.test(Function.prototype.toString.call(original))) return;
  AsyncResource.prototype.bind = function bind<Func extends (...args: never[]) => unknown>(this: AsyncResource, fn: Func, thisArg?: unknown): Func {
    if (typeof fn !== 'function') return (original as (...a: unknown[]) => unknown).call(this, fn, thisArg) as Func;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const resource = this;
    const bound =
      thisArg === undefined
        ? function (this: unknown, ...args: unknown[]): unknown {
            return resource.runInAsyncScope(fn as never, this, ...(args as never[]));
          }
        : resource.runInAsyncScope.bind(resource, fn as never, thisArg);
    Object.defineProperty(bound, 'length', { configurable: true, enumerable: false, value: fn.length, writable: false });
    Object.defineProperty(bound, 'asyncResource', accessor);
    resources.set(bound, resource);
    return bound as unknown as Func;
  } as typeof AsyncResource.prototype.bind;
}
