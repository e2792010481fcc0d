// linend's Prometheus /metrics as the tests and the demo read it: samples by name and labels,
// the peer routes, packets and side events by verdict.
import type { ClusterNode } from './cluster.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export class Metrics {
  constructor(readonly samples: Sample[]) {}

  static parse(text: string): Metrics {
    const out: Sample[] = [];
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m) continue;
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) labels[l[1]!] = l[2]!;
      out.push({ name: m[1]!, labels, value: Number(m[3]) });
    }
    return new Metrics(out);
  }

  /** The first sample of `name` whose labels include `labels`, or undefined when there is none. */
  find(name: string, labels: Record<string, string> = {}): number | undefined {
    return this.samples.find((s) => s.name === name && Object.entries(labels).every(([k, want]) => s.labels[k] === want))?.value;
  }

  /** Sum of the samples of `name` whose labels include `labels`. */
  get(name: string, labels: Record<string, string> = {}): number {
    let v = 0;
    for (const s of this.samples) {
      if (s.name !== name) continue;
      if (Object.entries(labels).every(([k, want]) => s.labels[k] === want)) v += s.value;
    }
    return v;
  }

  /** The peer routes as "subnet via public_ip", sorted. */
  routes(): string[] {
    return this.samples.filter((s) => s.name === 'linen_peer_route' && s.value === 1)
      .map((s) => `${s.labels.subnet} via ${s.labels.public_ip}`).sort();
  }

  /**
   * Counts by verdict for one direction: the packets' outcomes (linen_packets_total{verdict})
   * and the side events (linen_events_total{event}), in one record keyed by verdict name.
   */
  verdicts(direction: 'egress' | 'ingress'): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.samples) {
      if (s.labels.direction !== direction) continue;
      if (s.name === 'linen_packets_total') out[s.labels.verdict!] = s.value;
      else if (s.name === 'linen_events_total') out[s.labels.event!] = s.value;
    }
    return out;
  }
}

export async function metrics(n: ClusterNode): Promise<Metrics> {
  const r = await n.http('/metrics');
  if (r.status !== 200) throw new Error(`host ${n.index + 1}: /metrics answered ${r.status}`);
  return Metrics.parse(r.body);
}

/** Per-verdict difference b - a. */
export function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] ?? 0) - (a[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}
