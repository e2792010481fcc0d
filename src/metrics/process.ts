// Process-level metrics for /metrics, under the names Prometheus client libraries use
// (process_*, nodejs_*), so existing dashboards and alerts for them work on linend too; and
// linen_build_info. Read from /proc and Node's own counters at scrape time.
import { readFileSync, readdirSync } from 'node:fs';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { repoRoot } from '../paths.js';
import type { Metric } from '../metric.js';

/** linen's version from its package.json ("unknown" when it cannot be read). */
export function linenVersion(): string {
  try {
    return (JSON.parse(readFileSync(`${repoRoot()}/package.json`, 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The soft limit on open files ("Max open files" in /proc/self/limits); null if unlimited or unreadable. */
function maxFds(): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

function openFds(): number | null {
  try {
    // readdir opens the directory itself: that descriptor is not one of linend's.
    return readdirSync('/proc/self/fd').length - 1;
  } catch {
    return null;
  }
}

/** The event-loop sampling timer's interval: the histogram records the time between its firings. */
const LOOP_SAMPLE_MS = 10;

/**
 * Collects the process metrics. The event-loop delay is sampled all the time (a 10 ms timer
 * in libuv, negligible) and reported per scrape: mean, p99 and max since the previous scrape,
 * each less the timer's own interval, so an idle loop reads about 0.
 */
export class ProcessMetrics {
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: LOOP_SAMPLE_MS });
  private readonly startTime = Math.round(Date.now() / 1000 - process.uptime());
  private readonly version = linenVersion();

  constructor() {
    this.loopDelay.enable();
  }

  collect(): Metric[] {
    const cpu = process.cpuUsage();
    const out: Metric[] = [
      { name: 'linen_build_info', help: 'linen\'s version and the Node.js it runs on (value 1).', type: 'gauge', value: 1, labels: { version: this.version, nodejs_version: process.version } },
      { name: 'process_resident_memory_bytes', help: 'Resident memory size in bytes.', type: 'gauge', value: process.memoryUsage.rss() },
      { name: 'process_cpu_seconds_total', help: 'User and system CPU time of all of linend\'s threads, in seconds.', type: 'counter', value: (cpu.user + cpu.system) / 1e6 },
      { name: 'process_start_time_seconds', help: 'Start time of the process since the Unix epoch, in seconds.', type: 'gauge', value: this.startTime },
      { name: 'nodejs_heap_size_used_bytes', help: 'V8 heap in use by the main thread, in bytes.', type: 'gauge', value: process.memoryUsage().heapUsed },
    ];
    const open = openFds();
    if (open !== null) out.push({ name: 'process_open_fds', help: 'Open file descriptors.', type: 'gauge', value: open });
    const max = maxFds();
    if (max !== null) out.push({ name: 'process_max_fds', help: 'Limit on open file descriptors.', type: 'gauge', value: max });
    const h = this.loopDelay;
    // No samples yet (a scrape right after start): report 0 rather than the histogram's NaN/huge defaults.
    const sec = (ns: number): number => (h.count > 0 && Number.isFinite(ns) ? Math.max(0, ns / 1e9 - LOOP_SAMPLE_MS / 1000) : 0);
    out.push(
      { name: 'nodejs_eventloop_lag_seconds', help: 'Mean event-loop delay of the main thread since the previous scrape, in seconds.', type: 'gauge', value: sec(h.mean) },
      { name: 'nodejs_eventloop_lag_p99_seconds', help: '99th percentile of the event-loop delay since the previous scrape, in seconds.', type: 'gauge', value: sec(h.percentile(99)) },
      { name: 'nodejs_eventloop_lag_max_seconds', help: 'Largest event-loop delay since the previous scrape, in seconds.', type: 'gauge', value: sec(h.max) },
    );
    h.reset();
    return out;
  }

  stop(): void {
    this.loopDelay.disable();
  }
}
