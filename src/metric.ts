// One sample for /metrics, as the pieces that report them (daemon, control plane, process)
// hand it to the renderer in prometheus.ts.
import type { IPv4Net } from './net.js';

export interface Metric {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  value: number | bigint;
  labels?: Record<string, string>;
  /** The peer subnet of a per-peer series (also its `subnet` label): exported only within
   * --peer-metrics-limit. */
  peer?: IPv4Net;
}
