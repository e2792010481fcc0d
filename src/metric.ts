// One Prometheus sample, as /metrics (health.ts) writes it and every part that reports one
// builds it. A leaf: device/, dataplane/ and the daemon use it without importing health.ts.
export interface Metric {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  value: number | bigint;
  labels?: Record<string, string>;
}
