// Counters of the control plane for /metrics: etcd reconnects, lease renewals and their
// failures, iptables resyncs. Each part exposes its own counts through a small getter; this
// turns them into samples. A part not running yet counts 0, so every series exists from the
// first scrape (increase() and rate() need a first sample).
import type { Metric } from '../metric.js';

export interface ControlPlaneParts {
  etcd: { reconnects(): number } | null;
  lease: { renewals(): { readonly renewed: number; readonly failed: number } } | null;
  rules: { resyncs(): { readonly restored: number; readonly failed: number } } | null;
}

export function controlPlaneMetrics(p: ControlPlaneParts): Metric[] {
  const renewals = p.lease?.renewals() ?? { renewed: 0, failed: 0 };
  const resyncs = p.rules?.resyncs() ?? { restored: 0, failed: 0 };
  return [
    { name: 'linen_etcd_reconnects_total', help: 'Times the etcd connection came back after being lost.', type: 'counter', value: p.etcd?.reconnects() ?? 0 },
    { name: 'linen_lease_renewals_total', help: 'Subnet lease renewals that succeeded.', type: 'counter', value: renewals.renewed },
    { name: 'linen_lease_renewal_failures_total', help: 'Subnet lease renewals that failed (each is retried).', type: 'counter', value: renewals.failed },
    { name: 'linen_iptables_restores_total', help: 'iptables checks (--iptables-resync) that found rules missing and put them back.', type: 'counter', value: resyncs.restored },
    { name: 'linen_iptables_resync_failures_total', help: 'iptables checks (--iptables-resync) that failed.', type: 'counter', value: resyncs.failed },
  ];
}
