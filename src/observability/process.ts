/**
 * Process metrics, read at scrape time: CPU seconds, resident memory, start time, event-loop lag
 * p99 (perf_hooks.monitorEventLoopDelay, reset every scrape) and GC time (a PerformanceObserver
 * on `gc` entries, summed per kind). Names follow the Prometheus client libraries
 * (`process_*`, `nodejs_*`), so existing dashboards read them.
 */
import { monitorEventLoopDelay, PerformanceObserver, constants } from 'node:perf_hooks';
import type { Registry } from './metrics';

const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

export interface ProcessMetrics {
  stop(): void;
}

export function registerProcessMetrics(reg: Registry): ProcessMetrics {
  const cpu = reg.counter('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.');
  const cpuUser = reg.counter('process_cpu_user_seconds_total', 'User CPU time spent in seconds.');
  const cpuSystem = reg.counter('process_cpu_system_seconds_total', 'System CPU time spent in seconds.');
  const rss = reg.gauge('process_resident_memory_bytes', 'Resident memory size in bytes.');
  const heap = reg.gauge('nodejs_heap_used_bytes', 'V8 heap used, in bytes.');
  const start = reg.gauge('process_start_time_seconds', 'Start time of the process since unix epoch in seconds.');
  const lag = reg.gauge('nodejs_eventloop_lag_p99_seconds', 'The 99th percentile of event-loop delay since the previous scrape, in seconds.');
  const lagMax = reg.gauge('nodejs_eventloop_lag_max_seconds', 'The largest event-loop delay since the previous scrape, in seconds.');
  const gc = reg.counter('nodejs_gc_duration_seconds_total', 'Time spent in garbage collection, by kind, in seconds.', ['kind']);

  start.set(Math.round(Date.now() / 1000 - process.uptime()));
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const gcChildren = new Map<number, { inc(n: number): void }>();
  for (const [k, name] of Object.entries(GC_KINDS)) gcChildren.set(Number(k), gc.labels(name));
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0;
      gcChildren.get(kind)?.inc(e.duration / 1000);
    }
  });
  obs.observe({ entryTypes: ['gc'] });

  reg.beforeCollect(() => {
    const u = process.cpuUsage();
    cpuUser.labels().value = u.user / 1e6;
    cpuSystem.labels().value = u.system / 1e6;
    cpu.labels().value = (u.user + u.system) / 1e6;
    const m = process.memoryUsage();
    rss.set(m.rss);
    heap.set(m.heapUsed);
    if (delay.count > 0) {
      lag.set(delay.percentile(99) / 1e9);
      lagMax.set(delay.max / 1e9);
    }
    delay.reset();
  });
  return {
    stop() {
      delay.disable();
      obs.disconnect();
    },
  };
}
