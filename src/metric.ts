// One sample for /metrics, as the pieces that report them (daemon, control plane, process)
// hand it to the renderer in health.ts.
export interface Metric {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  value: number | bigint;
  labels?: Record<string, string>;
  /** A series of one peer (labelled with its subnet): exported only within --peer-metrics-limit. */
  perPeer?: boolean;
}
