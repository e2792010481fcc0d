// What looks wrong in a run's own figures, flagged in the results and the report so that a
// reader does not take a disturbed run at face value: more TCP streams moving less than one
// (streams share the same path, so fewer bytes with more of them means the machine was busy
// elsewhere), spreads over runs above 50 % of the median, a machine busier than its cores at start or end, and a
// contender's process that exited while it was measured.
import type { ContenderResult, MachineFacts, MetricDef, MetricKey } from './suite.js';

export interface Anomaly {
  kind: 'streams' | 'spread' | 'load' | 'exited';
  /** The contender concerned; absent for the machine. */
  contender?: string;
  metric?: MetricKey;
  message: string;
}

/** Spread (max − min) above this share of the median is flagged. */
export const SPREAD_LIMIT = 0.5;

export function findAnomalies(contenders: readonly ContenderResult[], metrics: readonly MetricDef[], machine: MachineFacts): Anomaly[] {
  const out: Anomaly[] = [];
  const f = (x: number): string => x.toFixed(2);
  for (const c of contenders) {
    if (c.status === 'failed') continue;
    const one = c.metrics.tcp1Gbps?.median;
    for (const k of ['tcp4Gbps', 'tcp8Gbps'] as const) {
      const many = c.metrics[k]?.median;
      if (one !== undefined && many !== undefined && many < one) {
        out.push({ kind: 'streams', contender: c.name, metric: k,
          message: `${k === 'tcp4Gbps' ? 4 : 8}-stream TCP ${f(many)} Gbit/s below 1-stream ${f(one)} Gbit/s` });
      }
    }
    const gone = new Set(c.runs.flatMap((r) => [...(r.idle?.rss ?? []), ...(r.rss ?? [])].filter((p) => p.exited).map((p) => p.pid)));
    if (gone.size) {
      out.push({ kind: 'exited', contender: c.name, metric: 'dataplaneRssMiB',
        message: `its process(es) ${[...gone].join(', ')} had exited during the measurements (RSS counted as 0)` });
    }
    for (const m of metrics) {
      const s = c.metrics[m.key];
      if (!s || s.n < 2 || !(s.median > 0)) continue;
      const spread = (s.max - s.min) / s.median;
      if (spread > SPREAD_LIMIT) {
        out.push({ kind: 'spread', contender: c.name, metric: m.key,
          message: `${m.key} spread ${(spread * 100).toFixed(0)} % of the median (${s.min.toPrecision(3)}–${s.max.toPrecision(3)} ${m.unit})` });
      }
    }
  }
  const load = (when: string, l: readonly number[] | undefined): void => {
    if (l?.[0] !== undefined && l[0] > machine.cores) {
      out.push({ kind: 'load', message: `load average ${l.join(' ')} at ${when} is above the ${machine.cores} cores: the figures are disturbed` });
    }
  };
  load('start', machine.loadavgAtStart);
  load('end', machine.loadavgAtEnd);
  return out;
}
