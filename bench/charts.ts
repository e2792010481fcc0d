// The charts of a run (throughput.svg, latency.svg, ratio.svg, udp.svg, cpu.svg and, with a
// scaling run, scaling-routes.svg and scaling-queues.svg), each as SVG text.
import { BAD, EVEN, fmtNum, fmtRatio, fmtRatioDir, GOOD, ratioIsBetter, tick } from './format.js';
import type { BenchResults } from './results.js';
import { type ContenderResult, type MetricDef, type MetricKey, METRICS, REFERENCE, type Summary } from './suite.js';
import { barChartSvg, COLORS, type ChartRow } from './svg-chart.js';

function sum(s: Summary | null, scale = 1): { median: number; min: number; max: number } | null {
  return s ? { median: s.median * scale, min: s.min * scale, max: s.max * scale } : null;
}

function contenderRows(r: BenchResults, pick: (c: ContenderResult) => ChartRow['values']): ChartRow[] {
  return r.contenders.map((c) => (c.status === 'failed'
    ? { name: c.name, failed: c.error ?? 'failed', values: [] }
    : { name: c.name, values: pick(c) }));
}

function subtitle(r: BenchResults): string {
  const s = r.settings;
  const runs = s ? `${s.runs} run${s.runs === 1 ? '' : 's'} of ${s.durationSec} s, median with min–max` : '';
  return [runs, `${r.machine.cpuModel}, ${r.machine.cores} cores, kernel ${r.machine.kernel}`, `${r.startedAt.slice(0, 16).replace('T', ' ')} UTC`]
    .filter(Boolean).join(' · ');
}


/** The absolute charts: file, title, unit, scale for display, and the metrics drawn as series. */
export const CHARTS: readonly { file: string; title: string; unit: string; scale?: number; digits?: number; keys: MetricKey[] }[] = [
  { file: 'throughput.svg', title: 'Pod-to-pod TCP throughput (iperf3, cubic)', unit: 'Gbit/s',
    keys: ['tcp1Gbps', 'tcp4Gbps', 'tcp8Gbps', 'tcp1ReverseGbps', 'tcpBidirGbps'] },
  { file: 'service.svg', title: 'Pod to service (ClusterIP, iptables DNAT on the sending host) beside pod to pod, TCP', unit: 'Gbit/s',
    keys: ['tcp1Gbps', 'svcTcp1Gbps', 'tcp8Gbps', 'svcTcp8Gbps'] },
  { file: 'udp.svg', title: 'UDP packet rate received (iperf3 -u, unlimited bitrate)', unit: 'thousand packets/s', scale: 1e-3,
    keys: ['udp64Pps', 'udp1400Pps', 'svcUdp1400Pps'] },
  { file: 'lossfree.svg', title: 'UDP: highest rate with < 1 % loss, beside the unlimited-rate receive rate', unit: 'thousand packets/s', scale: 1e-3,
    keys: ['udp64LossFreePps', 'udp64Pps', 'udp1400LossFreePps', 'udp1400Pps'] },
  { file: 'loss.svg', title: 'UDP loss at an unlimited offered rate (lower is better)', unit: '%', digits: 1, keys: ['udp64LossPct', 'udp1400LossPct'] },
  { file: 'jitter.svg', title: 'UDP jitter at an unlimited offered rate (lower is better)', unit: 'ms', digits: 3, keys: ['udp64JitterMs', 'udp1400JitterMs'] },
  { file: 'latency.svg', title: 'Pod-to-pod round-trip time (ping; lower is better)', unit: 'ms', digits: 3, keys: ['rttP50Ms', 'rttP99Ms'] },
  { file: 'rr.svg', title: 'TCP request/response, one connection, 1-byte messages (netperf TCP_RR-like)', unit: 'transactions/s', digits: 0, keys: ['rrTps'] },
  { file: 'cpu.svg', title: 'CPU seconds per gigabit, single-stream TCP (lower is better)', unit: 'CPU s/Gbit', digits: 3, keys: ['cpuPerGbit', 'kernelCpuPerGbit'] },
  { file: 'memory.svg', title: 'Memory: forwarding processes\' RSS (all nodes) and the machine\'s memory used at idle', unit: 'MiB', digits: 1,
    keys: ['dataplaneRssMiB', 'idleMemMiB'] },
  { file: 'idle.svg', title: 'Idle baseline: machine CPU busy with the contender up and no traffic (lower is better)', unit: '% of all cores', digits: 1, keys: ['idleCpuPct'] },
  { file: 'retransmits.svg', title: 'TCP retransmits in the single-stream run (lower is better)', unit: 'segments', digits: 0, keys: ['tcpRetransmits'] },
];

/** Every chart of the run: file name → SVG. */
export function charts(r: BenchResults): Record<string, string> {
  const out: Record<string, string> = {};
  if (r.contenders.length) {
    const sub = subtitle(r);
    const defs = r.metrics.length ? r.metrics : METRICS;
    const def = (k: MetricKey): MetricDef | undefined => defs.find((m) => m.key === k);
    for (const ch of CHARTS) {
      const keys = ch.keys.filter((k) => def(k));
      if (!keys.length) continue;
      out[ch.file] = barChartSvg({
        title: ch.title,
        subtitle: ch.file === 'cpu.svg'
          ? `${sub}\nall CPU = every process and the kernel on the whole machine (user+nice+system+irq+softirq+steal), the same basis for every contender`
          : sub,
        unit: ch.unit,
        series: keys.map((k, i) => ({ label: def(k)!.label, color: COLORS[i % COLORS.length]! })),
        rows: contenderRows(r, (c) => keys.map((k) => sum(c.metrics[k] ?? null, ch.scale ?? 1))),
        format: (x) => fmtNum(x, ch.digits ?? 2),
      });
    }
    // Where the single-stream run's CPU went, per Gbit.
    const splitKinds = ['dataplane', 'iperf3', 'softirq', 'rest'] as const;
    out['cpu-split.svg'] = barChartSvg({
      title: 'Where the CPU went, single-stream TCP, per Gbit (median run)',
      subtitle: `${sub}\ndataplane = linend (all threads; 0 for kernel paths); iperf3 = both ends (its own report); softirq from /proc/stat;\nrest = busy minus those (negative when softirq work in a process's context is counted twice: in the process and in softirq)`,
      unit: 'CPU s/Gbit',
      series: splitKinds.map((k, i) => ({ label: k, color: COLORS[i]! })),
      rows: contenderRows(r, (c) => {
        const runs = c.runs.filter((x) => x.tcp1);
        const mid = runs.sort((p, q) => p.tcp1!.gbps - q.tcp1!.gbps)[runs.length >> 1]?.tcp1;
        if (!mid?.cpuSplit) return splitKinds.map(() => null);
        const gbit = (mid.bytesReceived * 8) / 1e9;
        return splitKinds.map((k) => (gbit > 0 ? { median: mid.cpuSplit[k] / gbit } : null));
      }),
      format: (x) => fmtNum(x, 3),
    });
    const ref = r.contenders.find((c) => c.name === REFERENCE && c.status === 'ok');
    const ratio = (c: ContenderResult, k: MetricKey, colored: boolean): ChartRow['values'][number] => {
      const v = c.ratioToKernelVxlan[k];
      const m = c.metrics[k];
      const base = ref?.metrics[k]?.median;
      const d = def(k);
      if (v === null || v === undefined || !m || !base || !d) return null;
      const good = ratioIsBetter(v, d.better);
      return {
        median: v, min: m.min / base, max: m.max / base, label: fmtRatioDir(v, d.better),
        ...(colored ? { color: good === null ? EVEN : good ? GOOD : BAD } : {}),
      };
    };
    const ratioDefs = defs.filter((d) => d.ratio);
    // Two overview charts: the rates, and the costs (where above 1 reads worse).
    const overviewChart = (better: MetricDef['better'], title: string, unit: string): string => {
      const shown = ratioDefs.filter((d) => d.better === better);
      return barChartSvg({
        title, subtitle: sub, unit,
        series: shown.map((d, i) => ({ label: d.key, color: COLORS[i % COLORS.length]! })),
        rows: contenderRows(r, (c) => shown.map((d) => ratio(c, d.key, false))),
        refLine: { value: 1, label: 'kernel VXLAN = 1' }, format: fmtRatio, tickFormat: (x) => `${tick(x)}×`,
      });
    };
    out['ratio.svg'] = overviewChart('higher', 'Ratio to Linux kernel VXLAN, same run: rates (higher is better)',
      '× kernel VXLAN (median ÷ kernel VXLAN median)');
    out['ratio-cost.svg'] = overviewChart('lower', 'Ratio to Linux kernel VXLAN, same run: costs (latency, CPU, jitter, idle; LOWER is better)',
      '× kernel VXLAN (median ÷ kernel VXLAN median; above 1 = worse)');
    // One ratio chart per metric, bars green where better than kernel VXLAN, red where worse.
    for (const d of ratioDefs) {
      out[`ratio-${d.key}.svg`] = barChartSvg({
        title: `${d.label}: ratio to kernel VXLAN (${d.better} is better)`,
        subtitle: `${sub}\ngreen: better than kernel VXLAN; red: worse; grey: within 2 %`,
        unit: `× kernel VXLAN (${d.unit} ÷ kernel VXLAN's)`,
        series: [{ label: d.label, color: EVEN }],
        rows: contenderRows(r, (c) => [ratio(c, d.key, true)]),
        refLine: { value: 1, label: 'kernel VXLAN = 1' }, format: fmtRatio, tickFormat: (x) => `${tick(x)}×`,
      });
    }
  }
  const sc = r.scaling;
  if (sc) {
    const sizes = [...new Set(sc.routeTable.points.map((p) => p.routes))].sort((a, b) => a - b);
    const modes = [...new Set(sc.routeTable.points.map((p) => p.mode))];
    out['scaling-routes.svg'] = barChartSvg({
      title: 'wasm core egress cost against route-table size',
      subtitle: `egress, batches of ${sc.routeTable.batch} ${sc.routeTable.packetBytes}-byte packets, /24 routes, random destinations among all N peers\n` +
        `median of timed samples, whiskers p25–p75 · ${r.machine.cpuModel}, Node ${r.machine.node}`,
      unit: 'ns per packet (wasm core only)',
      series: modes.map((m, i) => ({ label: `${m} mode`, color: COLORS[i]! })),
      rows: sizes.map((n) => ({
        name: `${n.toLocaleString('en-US')} peers`,
        values: modes.map((m) => {
          const p = sc.routeTable.points.find((q) => q.mode === m && q.routes === n);
          return p ? { median: p.nsPerPacket, min: p.p25 ?? p.min, max: p.p75 ?? p.max } : null;
        }),
      })),
      format: (x) => fmtNum(x, 1),
    });
    out['scaling-queues.svg'] = barChartSvg({
      title: 'linen VXLAN: workers (linend --queues) against 4-stream TCP',
      subtitle: `${sc.queues.runs} run(s) of ${sc.queues.durationSec} s, median with min–max, ${r.machine.cores} cores`,
      unit: 'Gbit/s',
      series: [{ label: '4 streams', color: COLORS[1]! }],
      rows: sc.queues.points.map((p) => (p.status === 'failed' && !p.tcp4Gbps
        ? { name: `--queues ${p.queues}`, failed: p.error ?? 'failed', values: [] }
        : { name: `--queues ${p.queues}`, values: [sum(p.tcp4Gbps)] })),
    });
  }
  return out;
}

