/** Load-balancing algorithms register here by name (like grpc-js's registerLoadBalancerType). */
import type { EndpointStats, Picker } from './picker';
import type { Endpoint, LoadBalancer } from '../policy/types';

export interface PickerContext {
  endpoints: readonly Endpoint[];
  config: LoadBalancer;
  stats: EndpointStats;
  /** A random source in [0, 1); injectable for tests. */
  random: () => number;
}

export type PickerFactory = (ctx: PickerContext) => Picker;

const factories = new Map<string, PickerFactory>();

export function registerPicker(type: string, factory: PickerFactory): void {
  factories.set(type, factory);
}

const none: Picker = { pick: () => undefined };

export function buildPicker(ctx: PickerContext): Picker {
  if (ctx.endpoints.length === 0) return none;
  const f = factories.get(ctx.config.type);
  if (!f) throw new Error(`no load balancer registered for type ${ctx.config.type}`);
  return f(ctx);
}
