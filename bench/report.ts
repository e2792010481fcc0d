// Benchmark output: the results JSON (bench/results/<timestamp>.json and latest.json), standalone
// SVG bar charts (throughput.svg, latency.svg, ratio.svg, udp.svg, cpu.svg and, with a scaling
// run, scaling-routes.svg and scaling-queues.svg), a self-contained HTML report (latest.html,
// the same charts inline), and the terminal summary table.

import { mkdirSync } from 'node:fs';
import { writeFileAtomic } from '../src/subnetenv.js';
import { join } from 'node:path';

import type { Anomaly } from './anomalies.js';
import { knbExport, toYaml } from './export.js';
import type { ScalingResults } from './scaling.js';
import { METRICS, REFERENCE, type ContenderResult, type MachineFacts, type MetricDef, type MetricKey, type SuiteSettings, type Summary } from './suite.js';

export interface BenchResults {
  /** 2: one CPU basis for every contender, the knb-style scenarios, anomalies. */
  schema: 1 | 2;
  /** What was run: `npm run bench` (full), `-- quick`, or `-- scaling` alone. */
  kind: 'full' | 'quick' | 'scaling';
  startedAt: string;
  finishedAt: string;
  durationSec: number;
  /** Arguments after `node dist/bench/run.js`. */
  argv: string[];
  machine: MachineFacts;
  settings?: SuiteSettings;
  metrics: readonly MetricDef[];
  reference: string;
  contenders: ContenderResult[];
  scaling?: ScalingResults;
  /** Scaling step failed as a whole (the rest of the run is still reported). */
  scalingError?: string;
  /** What looks wrong in this run's own figures (bench/anomalies.ts). */
  anomalies?: Anomaly[];
  notes: string[];
}

// ---------------------------------------------------------------------------------------------
// Formatting

export function fmtNum(x: number | null | undefined, digits = 2): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return 'n/a';
  const a = Math.abs(x);
  if (a >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(Math.min(digits, 1));
  return x.toFixed(a < 0.1 && x !== 0 ? Math.max(digits, 3) : digits);
}

export const fmtRatio = (r: number | null | undefined): string =>
  (r === null || r === undefined || !Number.isFinite(r) ? '–' : `${r.toFixed(r !== 0 && Math.abs(r) < 0.1 ? 3 : 2)}×`);

/** Axis tick labels: at most 3 significant digits, no trailing zeros. */
const tick = (x: number): string => (x === 0 ? '0' : String(Number(x.toPrecision(3))));

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function metricDef(key: MetricKey): MetricDef {
  return METRICS.find((m) => m.key === key)!;
}

// ---------------------------------------------------------------------------------------------
// SVG bar charts (horizontal, grouped, with min–max whiskers)

export interface ChartSeries {
  label: string;
  color: string;
}

export interface ChartRow {
  name: string;
  /** Shown instead of bars. */
  failed?: string;
  /** One entry per series: median and spread, or null (no value); color and label override the series'. */
  values: ({ median: number; min?: number; max?: number; color?: string; label?: string } | null)[];
}

export interface ChartSpec {
  title: string;
  subtitle?: string;
  unit: string;
  series: ChartSeries[];
  rows: ChartRow[];
  /** A vertical reference line (e.g. 1.0 for ratios). */
  refLine?: { value: number; label: string };
  /** Value labels on the bars. */
  format?: (x: number) => string;
  /** Axis tick labels. */
  tickFormat?: (x: number) => string;
  /**
   * 'auto' (default): logarithmic when the positive values span 30× or more (a bar of 0.01
   * beside one of 30 vanishes on a linear axis), linear otherwise.
   */
  scale?: 'linear' | 'log' | 'auto';
}

/** Whether 'auto' picks a log axis for these values: positive values spanning 30× or more. */
export function wantsLogScale(values: readonly number[]): boolean {
  const pos = values.filter((v) => Number.isFinite(v) && v > 0);
  if (pos.length < 2) return false;
  return Math.max(...pos) / Math.min(...pos) >= 30;
}

const COLORS = ['#3b6ea8', '#e08a2e', '#5a9e4b', '#b8473d', '#7d5ba6'];

function niceMax(x: number): number {
  if (!(x > 0) || !Number.isFinite(x)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** A standalone SVG document (with xmlns), usable inline in HTML as well. */
export function barChartSvg(spec: ChartSpec): string {
  const fmt = spec.format ?? ((x: number) => fmtNum(x));
  const tickFmt = spec.tickFormat ?? tick;
  const subLines = spec.subtitle ? spec.subtitle.split('\n') : [];
  const W = 880;
  const labelW = 230;
  const valueW = 120;
  const plotW = W - labelW - valueW;
  const barH = 15;
  const gap = 3;
  const groupPad = 12;
  const top = 58 + subLines.length * 15;
  const groupH = spec.series.length * (barH + gap) - gap + groupPad;
  const plotH = spec.rows.length * groupH;
  const bottom = spec.refLine ? 56 : 40;
  const H = top + plotH + bottom;
  let vmax = 0;
  const all: number[] = [];
  for (const r of spec.rows) for (const v of r.values) if (v) {
    vmax = Math.max(vmax, v.max ?? v.median, v.median);
    all.push(v.median, v.min ?? v.median, v.max ?? v.median);
  }
  if (spec.refLine) { vmax = Math.max(vmax, spec.refLine.value); all.push(spec.refLine.value); }
  const log = spec.scale === 'log' || ((spec.scale ?? 'auto') === 'auto' && wantsLogScale(all));
  const pos = all.filter((v) => Number.isFinite(v) && v > 0);
  const lo = log && pos.length ? 10 ** Math.floor(Math.log10(Math.min(...pos))) : 0;
  let hi = log && pos.length ? 10 ** Math.ceil(Math.log10(Math.max(...pos) * 1.02)) : niceMax(vmax * 1.02);
  if (log && hi <= lo) hi = lo * 10;
  const xmax = hi;
  const frac = (v: number): number => (log ? (v > 0 ? (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) : 0) : v / xmax);
  const x = (v: number): number => labelW + Math.max(0, Math.min(1, frac(v))) * plotW;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12" role="img" aria-label="${esc(spec.title)}">`);
  out.push(`<title>${esc(spec.title)}</title>`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="12" y="22" font-size="15" font-weight="bold" fill="#222">${esc(spec.title)}</text>`);
  subLines.forEach((l, i) => out.push(`<text x="12" y="${40 + i * 15}" font-size="11" fill="#555">${esc(l)}</text>`));
  // Legend.
  let lx = labelW;
  const ly = top - 16;
  for (const s of spec.series) {
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${s.color}"/>`);
    out.push(`<text x="${lx + 16}" y="${ly}" fill="#333">${esc(s.label)}</text>`);
    lx += 28 + s.label.length * 7.2;
  }
  // Grid and axis: fifths of the range, or every power of ten on a log axis.
  const ticks: number[] = [];
  if (log) for (let v = lo; v <= hi * 1.0001; v *= 10) ticks.push(v);
  else for (let i = 0; i <= 5; i++) ticks.push((xmax * i) / 5);
  for (const v of ticks) {
    const gx = x(v).toFixed(1);
    out.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${top + plotH}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${gx}" y="${top + plotH + 16}" text-anchor="middle" fill="#555" font-size="11">${esc(tickFmt(v))}</text>`);
  }
  out.push(`<text x="${labelW + plotW / 2}" y="${top + plotH + bottom - 7}" text-anchor="middle" fill="#333">${esc(spec.unit + (log ? ' (log scale)' : ''))}</text>`);
  // Rows.
  spec.rows.forEach((row, ri) => {
    const gy = top + ri * groupH;
    const midY = gy + (groupH - groupPad) / 2;
    out.push(`<text x="${labelW - 8}" y="${(midY + 4).toFixed(1)}" text-anchor="end" fill="#222">${esc(row.name)}</text>`);
    if (row.failed !== undefined) {
      out.push(`<text x="${labelW + 6}" y="${(midY + 4).toFixed(1)}" fill="#b8473d" font-weight="bold">failed: ${esc(row.failed.split('\n')[0]!.slice(0, 90))}</text>`);
      return;
    }
    row.values.forEach((v, si) => {
      const by = gy + si * (barH + gap);
      const color = v?.color ?? spec.series[si]!.color;
      if (!v || !Number.isFinite(v.median)) {
        out.push(`<text x="${labelW + 6}" y="${by + barH - 3}" fill="#999">n/a</text>`);
        return;
      }
      const w = Math.max(1, x(v.median) - labelW);
      out.push(`<rect x="${labelW}" y="${by}" width="${w.toFixed(1)}" height="${barH}" fill="${color}"><title>${esc(`${row.name}, ${spec.series[si]!.label}: ${fmt(v.median)} ${spec.unit}`)}</title></rect>`);
      let textX = labelW + w;
      if (v.min !== undefined && v.max !== undefined && Number.isFinite(v.min) && Number.isFinite(v.max) && v.max > v.min) {
        const x1 = x(v.min).toFixed(1);
        const x2 = x(v.max).toFixed(1);
        const cy = by + barH / 2;
        out.push(`<line x1="${x1}" y1="${cy}" x2="${x2}" y2="${cy}" stroke="#222" stroke-width="1.2"/>`);
        out.push(`<line x1="${x1}" y1="${cy - 4}" x2="${x1}" y2="${cy + 4}" stroke="#222" stroke-width="1.2"/>`);
        out.push(`<line x1="${x2}" y1="${cy - 4}" x2="${x2}" y2="${cy + 4}" stroke="#222" stroke-width="1.2"/>`);
        textX = Math.max(textX, x(v.max));
      }
      out.push(`<text x="${(textX + 5).toFixed(1)}" y="${by + barH - 3}" fill="#222" font-size="11">${esc(v.label ?? fmt(v.median))}</text>`);
    });
  });
  if (spec.refLine) {
    const rx = x(spec.refLine.value).toFixed(1);
    out.push(`<line x1="${rx}" y1="${top - 4}" x2="${rx}" y2="${top + plotH}" stroke="#b8473d" stroke-width="1.5" stroke-dasharray="5,3"/>`);
    out.push(`<text x="${rx}" y="${top + plotH + 28}" text-anchor="middle" fill="#b8473d" font-size="11">${esc(spec.refLine.label)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// The charts of a run

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

/**
 * A ratio in words that cannot be misread: "0.52× worse" for a throughput below kernel VXLAN's,
 * "75× worse" for an RTT 75 times kernel VXLAN's; within 2 % of 1, just the ratio.
 */
export function fmtRatioDir(r: number | null | undefined, better: MetricDef['better']): string {
  if (r === null || r === undefined || !Number.isFinite(r)) return '–';
  if (Math.abs(r - 1) < 0.02) return fmtRatio(r);
  const good = better === 'higher' ? r > 1 : r < 1;
  return `${fmtRatio(r)} ${good ? 'better' : 'worse'}`;
}

/** Whether a ratio is on the good side of 1 for its metric (null: about even or none). */
export function ratioIsBetter(r: number | null | undefined, better: MetricDef['better']): boolean | null {
  if (r === null || r === undefined || !Number.isFinite(r) || Math.abs(r - 1) < 0.02) return null;
  return better === 'higher' ? r > 1 : r < 1;
}

const GOOD = '#5a9e4b';
const BAD = '#b8473d';
const EVEN = '#8a8a8a';

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

// ---------------------------------------------------------------------------------------------
// Terminal table

function pad(s: string, w: number, left = false): string {
  return left ? s.padEnd(w) : s.padStart(w);
}

/** Digits for a metric's values in tables. */
function digitsFor(d: MetricDef): number {
  return d.unit === 'ms' || d.unit === 'CPU s/Gbit' ? 3 : d.unit === '%' || d.unit === 'MiB' || d.unit.startsWith('%') ? 1 : 2;
}

/**
 * The summary: one table per chart group (contenders down, metrics across), each cell the
 * median and, for ratio metrics, "N× better/worse" than kernel VXLAN; then the spread when
 * there were several runs, the anomalies and the measurement errors.
 */
export function summaryTable(r: BenchResults): string[] {
  const lines: string[] = [];
  if (r.contenders.length) {
    const defs = r.metrics.length ? r.metrics : METRICS;
    const nameW = Math.max(10, ...r.contenders.map((c) => c.name.length)) + 1;
    const groups = [...new Set(defs.map((d) => d.chart ?? 'all'))];
    for (const g of groups) {
      const ds = defs.filter((d) => (d.chart ?? 'all') === g);
      const cellOf = (c: ContenderResult, d: MetricDef): string => {
        const v = fmtNum(c.metrics[d.key]?.median, digitsFor(d));
        return d.ratio && c.name !== REFERENCE ? `${v} (${fmtRatioDir(c.ratioToKernelVxlan[d.key], d.better)})` : v;
      };
      const widths = ds.map((d) => Math.max(d.key.length, ...r.contenders.map((c) => (c.status === 'failed' ? 0 : cellOf(c, d).length))));
      lines.push(`${pad(g, nameW, true)} ${ds.map((d, i) => pad(d.key, widths[i]!)).join('  ')}`);
      for (const c of r.contenders) {
        if (c.status === 'failed') {
          lines.push(`${pad(c.name, nameW, true)} FAILED: ${(c.error ?? '').split('\n')[0]!.slice(0, 140)}`);
          continue;
        }
        lines.push(`${pad(c.name, nameW, true)} ${ds.map((d, i) => pad(cellOf(c, d), widths[i]!)).join('  ')}`);
      }
      lines.push('');
    }
    lines.push('units: ' + defs.map((d) => `${d.key} ${d.unit}`).join(', '));
    lines.push(`ratios: median ÷ ${REFERENCE}'s median in this run, "better"/"worse" by each metric's direction`);
    if ((r.settings?.runs ?? 1) > 1) {
      lines.push('');
      lines.push('spread over runs (min–max):');
      for (const c of r.contenders) {
        if (c.status === 'failed') continue;
        const sp = (d: MetricDef): string => {
          const s = c.metrics[d.key];
          return s ? `${fmtNum(s.min, digitsFor(d))}–${fmtNum(s.max, digitsFor(d))}` : 'n/a';
        };
        lines.push(`${pad(c.name, nameW, true)} ${defs.map((d) => `${d.key} ${sp(d)}`).join('  ')}`);
      }
    }
    if (r.anomalies?.length) {
      lines.push('');
      lines.push('anomalies in this run:');
      for (const a of r.anomalies) lines.push(`  ${a.contender ?? 'machine'}: ${a.message}`);
    }
    const failures = r.contenders.flatMap((c) => c.errors.map((e) => `${c.name} run ${e.run} ${e.step}: ${e.error.split('\n')[0]!.slice(0, 160)}`));
    if (failures.length) {
      lines.push('');
      lines.push('measurement errors:');
      for (const f of failures) lines.push(`  ${f}`);
    }
  }
  const sc = r.scaling;
  if (sc) {
    lines.push('');
    lines.push(`route-table scaling (${sc.routeTable.note}):`);
    const sizes = [...new Set(sc.routeTable.points.map((p) => p.routes))].sort((a, b) => a - b);
    const modes = [...new Set(sc.routeTable.points.map((p) => p.mode))];
    lines.push(`  ${pad('peers', 7)} ${modes.map((m) => pad(`${m} ns/pkt`, 13)).join(' ')}`);
    for (const n of sizes) {
      lines.push(`  ${pad(String(n), 7)} ${modes.map((m) => pad(fmtNum(sc.routeTable.points.find((p) => p.mode === m && p.routes === n)?.nsPerPacket, 1), 13)).join(' ')}`);
    }
    lines.push(`workers (linen VXLAN, ${sc.queues.streams}-stream TCP, ${sc.queues.runs} run(s) of ${sc.queues.durationSec} s):`);
    for (const p of sc.queues.points) {
      lines.push(`  --queues ${p.queues}: ` + (p.tcp4Gbps
        ? `${fmtNum(p.tcp4Gbps.median)} Gbit/s [${fmtNum(p.tcp4Gbps.min)}–${fmtNum(p.tcp4Gbps.max)}], ${fmtNum(p.cpuPerGbit?.median, 3)} linend CPU s/Gbit`
        : `FAILED: ${(p.error ?? '').split('\n')[0]!.slice(0, 140)}`));
    }
  }
  if (r.scalingError) lines.push(`scaling FAILED: ${r.scalingError.split('\n')[0]}`);
  return lines;
}

// ---------------------------------------------------------------------------------------------
// HTML

function cell(s: Summary | null, digits: number, scale = 1): string {
  if (!s) return '<td class="na">n/a</td>';
  const spread = s.n > 1 ? `<span class="sp">${fmtNum(s.min * scale, digits)}–${fmtNum(s.max * scale, digits)}</span>` : '';
  return `<td>${fmtNum(s.median * scale, digits)}${spread}</td>`;
}

export function htmlReport(r: BenchResults, svgs: Record<string, string>): string {
  const m = r.machine;
  const s = r.settings;
  const h: string[] = [];
  h.push('<!doctype html><html lang="en"><head><meta charset="utf-8">');
  h.push(`<title>linen benchmark ${esc(r.startedAt)}</title>`);
  h.push(`<style>
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.name,th.name{text-align:left;font-weight:bold}
td.na{color:#999}.sp{display:block;color:#777;font-size:11px}
.failed{color:#b8473d;font-weight:bold}.err{font-family:monospace;font-size:12px;white-space:pre-wrap;text-align:left;color:#7a2a22}
.facts td{text-align:left}.note{color:#555;font-size:13px}figure{margin:12px 0}
</style></head><body>`);
  h.push(`<h1>linen benchmark: ${esc(r.kind)} run, ${esc(r.startedAt)}</h1>`);
  h.push(`<p class="note">Pod to pod across two simulated hosts (network namespaces joined by a veth pair, underlay MTU ${s?.underlayMtu ?? 1500}); ` +
    `every contender on a fresh topology, one after another. Ratios are to Linux kernel VXLAN measured in the same run. ` +
    `Total time ${r.durationSec.toFixed(0)} s.</p>`);
  h.push('<h2>Machine</h2><table class="facts">');
  const facts: [string, string][] = [
    ['kernel', m.kernel], ['CPU', m.cpuModel], ['CPU clock (MHz, /proc/cpuinfo)', fmtNum(m.cpuMHz, 0)], ['cores', String(m.cores)],
    ['RAM (MiB)', String(m.memTotalMiB ?? 'n/a')], ['virtualization', m.virtualization ?? 'n/a'],
    ['underlay offloads (veth, ethtool -k)', Object.entries(m.underlayOffloads ?? {}).map(([k, v]) => `${k} ${v}`).join(', ') || 'n/a'],
    ['Node', m.node],
    ['linen commit', `${m.linenCommit}${m.linenDirty ? ' (working tree has uncommitted changes)' : ''}`],
    ['iperf3', m.iperf3], ['default TCP congestion control', m.defaultCongestion],
    ['TCP congestion control used', s?.congestion ?? ''], ['load average at start', m.loadavgAtStart.join(' ')],
    ['load average at end', m.loadavgAtEnd?.join(' ') ?? 'n/a'], ['host', m.hostname],
  ];
  for (const [k, v] of facts) h.push(`<tr><th class="name">${esc(k)}</th><td>${esc(v)}</td></tr>`);
  h.push('</table>');
  if (s) {
    h.push('<h2>Settings</h2><table class="facts">');
    const rows: [string, string][] = [
      ['runs per measurement', String(s.runs)], ['iperf3 seconds per run', String(s.durationSec)],
      ['seconds of reverse, bidirectional, service and request/response runs', String(s.shortSec ?? 'n/a')],
      ['UDP loss-free search', s.searchSteps ? `up to ${s.searchSteps} probes of ${s.searchStepSec} s, pass below ${s.lossFreeMaxLossPct} % loss` : 'n/a'],
      ['idle baseline', s.idleSec ? `${s.idleSec} s per run` : 'n/a'],
      ['TCP streams', s.tcpStreams.join(', ')], ['UDP payloads (bytes)', s.udpPayloads.join(', ')],
      ['UDP bitrate (iperf3 -b)', s.udpBitrate === '0' ? '0 (unlimited)' : s.udpBitrate],
      ['UDP socket buffers (iperf3 -w)', s.udpSocketBuffer],
      ['pings per run', `${s.pingCount} at ${s.pingIntervalSec * 1000} ms intervals`], ['linend queues', String(s.linenQueues)],
      ['command', `npm run bench${r.argv.length ? ` -- ${r.argv.join(' ')}` : ''}`],
    ];
    for (const [k, v] of rows) h.push(`<tr><th class="name">${esc(k)}</th><td>${esc(v)}</td></tr>`);
    h.push('</table>');
  }
  if (r.contenders.length) {
    h.push('<h2>Contenders</h2><table><tr><th class="name">name</th><th class="name">what</th><th>pod MTU</th><th class="name">status</th></tr>');
    for (const c of r.contenders) {
      h.push(`<tr><td class="name">${esc(c.name)}</td><td class="name" style="font-weight:normal">${esc(c.description)}</td><td>${c.tunnelMtu}</td>` +
        (c.status === 'failed' ? `<td class="failed">failed</td>` : '<td class="name" style="font-weight:normal">ok</td>') + '</tr>');
    }
    h.push('</table>');
    h.push('<h2>Results (median, min–max below)</h2><table><tr><th class="name">contender</th>');
    for (const d of METRICS) h.push(`<th>${esc(d.label)}<br><small>${esc(d.unit)}</small></th>`);
    h.push('<th class="name">CPU basis</th></tr>');
    for (const c of r.contenders) {
      if (c.status === 'failed') {
        h.push(`<tr><td class="name">${esc(c.name)}</td><td colspan="${METRICS.length + 1}" class="err"><span class="failed">failed:</span> ${esc(c.error ?? '')}</td></tr>`);
        continue;
      }
      h.push(`<tr><td class="name">${esc(c.name)}</td>`);
      for (const d of METRICS) h.push(cell(c.metrics[d.key], digitsFor(d)));
      h.push(`<td class="name" style="font-weight:normal">${esc(c.cpuBasis)}</td></tr>`);
    }
    h.push('</table>');
    h.push('<h2>Ratio to kernel VXLAN (same run)</h2><p class="note">Contender median ÷ kernel VXLAN median, with "better" or "worse" ' +
      'by each metric\'s direction: above 1 is better for rates, worse for latency, jitter, CPU and memory.</p><table><tr><th class="name">contender</th>');
    const ratioMetrics = METRICS.filter((d) => d.ratio);
    for (const d of ratioMetrics) h.push(`<th>${esc(d.label)}<br><small>${esc(d.better)} is better</small></th>`);
    h.push('</tr>');
    for (const c of r.contenders) {
      h.push(`<tr><td class="name">${esc(c.name)}</td>`);
      for (const d of ratioMetrics) {
        const v = c.ratioToKernelVxlan[d.key];
        const good = ratioIsBetter(v, d.better);
        h.push(`<td style="color:${good === null ? '#333' : good ? GOOD : BAD}">${esc(fmtRatioDir(v, d.better))}</td>`);
      }
      h.push('</tr>');
    }
    h.push('</table>');
    if (r.anomalies?.length) {
      h.push('<h2>Anomalies in this run</h2><ul class="note">');
      for (const a of r.anomalies) h.push(`<li class="failed">${esc(a.contender ?? 'machine')}: ${esc(a.message)}</li>`);
      h.push('</ul>');
    }
    h.push('<h2>Where the CPU went (single-stream TCP, per run)</h2><p class="note">CPU seconds over the run, all cores together. ' +
      'cpuPerGbit divides the machine\'s busy time by the gigabits received; the split is detail.</p>' +
      '<table><tr><th class="name">contender</th><th>run</th><th>Gbit</th><th>busy</th><th>dataplane</th><th>iperf3</th><th>softirq</th><th>irq</th><th>rest</th><th>idle</th><th class="name">dataplane threads</th></tr>');
    for (const c of r.contenders) {
      for (const run of c.runs) {
        const sp = run.tcp1?.cpuSplit;
        if (!sp || !run.tcp1) continue;
        const threads = Object.entries(sp.dataplaneThreads).filter(([, v]) => v > 0.005).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ');
        h.push(`<tr><td class="name">${esc(c.name)}</td><td>${run.run}</td><td>${fmtNum((run.tcp1.bytesReceived * 8) / 1e9)}</td>` +
          [sp.busy, sp.dataplane, sp.iperf3, sp.softirq, sp.irq, sp.rest, sp.idle].map((x) => `<td>${fmtNum(x, 3)}</td>`).join('') +
          `<td class="name" style="font-weight:normal">${esc(threads)}</td></tr>`);
      }
    }
    h.push('</table>');
    h.push('<h2>UDP loss-free rate search</h2><table><tr><th class="name">contender</th><th>run</th><th>payload</th><th class="name">result</th><th class="name">probes (offered kpps: loss %, jitter ms)</th></tr>');
    for (const c of r.contenders) {
      for (const run of c.runs) {
        for (const [size, sr] of [[64, run.udp64Search], [1400, run.udp1400Search]] as const) {
          if (!sr) continue;
          h.push(`<tr><td class="name">${esc(c.name)}</td><td>${run.run}</td><td>${size} B</td>` +
            `<td class="name" style="font-weight:normal">${fmtNum(sr.lossFreePps / 1000, 1)} kpps (${esc(sr.foundBy)})</td>` +
            `<td class="name" style="font-weight:normal">${esc(sr.probes.map((p) => `${fmtNum(p.offeredPps / 1000, 1)}: ${fmtNum(p.lossPercent, 1)} %, ${fmtNum(p.jitterMs, 3)}`).join('; ') || 'unlimited rate already below the limit')}</td></tr>`);
        }
      }
    }
    h.push('</table>');
    h.push('<h2>Charts</h2>');
    for (const [f, svg] of Object.entries(svgs)) {
      if (!f.startsWith('scaling-')) h.push(`<figure id="${esc(f)}">${svg}<figcaption class="note">${esc(f)}</figcaption></figure>`);
    }
    const errs = r.contenders.flatMap((c) => c.errors.map((e) => ({ c: c.name, ...e })));
    if (errs.length) {
      h.push('<h2>Measurement errors</h2><table><tr><th class="name">contender</th><th>run</th><th class="name">step</th><th class="name">error</th></tr>');
      for (const e of errs) h.push(`<tr><td class="name">${esc(e.c)}</td><td>${e.run}</td><td class="name">${esc(e.step)}</td><td class="err">${esc(e.error)}</td></tr>`);
      h.push('</table>');
    }
    h.push('<h2>Per-run values</h2><table><tr><th class="name">contender</th><th>run</th>');
    for (const d of METRICS) h.push(`<th>${esc(d.label)}</th>`);
    h.push('</tr>');
    for (const c of r.contenders) {
      for (const run of c.runs) {
        h.push(`<tr><td class="name">${esc(c.name)}</td><td>${run.run}</td>`);
        for (const d of METRICS) h.push(`<td>${esc(fmtNum(run.values[d.key], 3))}</td>`);
        h.push('</tr>');
      }
    }
    h.push('</table>');
    const feats = r.contenders.filter((c) => Array.isArray(c.info.features));
    if (feats.length) {
      h.push('<h2>linend features reported at start</h2><table>');
      for (const c of feats) h.push(`<tr><td class="name">${esc(c.name)}</td><td class="err" style="color:#333">${esc((c.info.features as string[]).join('\n'))}</td></tr>`);
      h.push('</table>');
    }
  }
  const sc = r.scaling;
  if (sc) {
    h.push('<h2>Scaling: route-table size</h2>');
    h.push(`<p class="note">${esc(sc.routeTable.note)}.</p><table><tr><th>peers</th><th>mode</th><th>ns/packet (median)</th><th>p25–p75</th><th>min–max</th><th>harness ns/packet (subtracted)</th></tr>`);
    for (const p of sc.routeTable.points) {
      h.push(`<tr><td>${p.routes}</td><td>${p.mode}</td><td>${fmtNum(p.nsPerPacket, 1)}</td><td>${fmtNum(p.p25, 1)}–${fmtNum(p.p75, 1)}</td>` +
        `<td>${fmtNum(p.min, 1)}–${fmtNum(p.max, 1)}</td><td>${fmtNum(p.harnessNsPerPacket, 1)}</td></tr>`);
    }
    h.push('</table>');
    if (svgs['scaling-routes.svg']) h.push(`<figure>${svgs['scaling-routes.svg']}<figcaption class="note">scaling-routes.svg</figcaption></figure>`);
    h.push('<h2>Scaling: workers</h2>');
    h.push(`<table><tr><th>linend --queues</th><th>4-stream TCP Gbit/s</th><th>linend CPU s/Gbit</th><th class="name">status</th></tr>`);
    for (const p of sc.queues.points) {
      h.push(`<tr><td>${p.queues}</td>${cell(p.tcp4Gbps, 2)}${cell(p.cpuPerGbit, 3)}` +
        (p.tcp4Gbps ? '<td class="name" style="font-weight:normal">ok</td>' : `<td class="err"><span class="failed">failed:</span> ${esc(p.error ?? '')}</td>`) + '</tr>');
    }
    h.push('</table>');
    if (svgs['scaling-queues.svg']) h.push(`<figure>${svgs['scaling-queues.svg']}<figcaption class="note">scaling-queues.svg</figcaption></figure>`);
  }
  if (r.scalingError) h.push(`<h2>Scaling</h2><p class="err"><span class="failed">failed:</span> ${esc(r.scalingError)}</p>`);
  if (r.notes.length) {
    h.push('<h2>Notes</h2><ul class="note">');
    for (const n of r.notes) h.push(`<li>${esc(n)}</li>`);
    h.push('</ul>');
  }
  h.push('</body></html>\n');
  return h.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface Written {
  json: string;
  latest: string;
  html: string;
  svgs: string[];
  /** knb-style export (knb.json) and the extra formats asked for (latest.yaml, knb.yaml, latest.txt). */
  exports: string[];
}

/** Extra output formats beside the JSON (npm run bench -- --format yaml,text). */
export type ExtraFormat = 'yaml' | 'text';
export const EXTRA_FORMATS: readonly ExtraFormat[] = ['yaml', 'text'];

/** Writes the SVG charts and the HTML report of `r` into `dir` (latest.html; scaling alone: latest-scaling.html). */
export async function renderReport(r: BenchResults, dir: string): Promise<{ html: string; svgs: string[] }> {
  mkdirSync(dir, { recursive: true });
  const svgs = charts(r);
  const written: string[] = [];
  for (const [name, svg] of Object.entries(svgs)) {
    const p = join(dir, name);
    await writeFileAtomic(p, svg);
    written.push(p);
  }
  const html = join(dir, r.kind === 'scaling' ? 'latest-scaling.html' : 'latest.html');
  await writeFileAtomic(html, htmlReport(r, svgs));
  return { html, svgs: written };
}

/** JSON as the results files hold it: non-finite numbers (failed measurements) as null. */
function jsonText(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? null : x), 2) + '\n';
}

/**
 * Writes <dir>/<timestamp>[-quick|-scaling].json and <dir>/latest.json (a scaling-only run:
 * latest-scaling.json), then the charts and the HTML report (renderReport).
 */
export async function writeResults(r: BenchResults, dir: string, formats: readonly ExtraFormat[] = []): Promise<Written> {
  mkdirSync(dir, { recursive: true });
  const stamp = r.startedAt.replace(/[:]/g, '-').replace(/\..*$/, '');
  const text = jsonText(r);
  const json = join(dir, `${stamp}${r.kind === 'full' ? '' : `-${r.kind}`}.json`);
  await writeFileAtomic(json, text);
  const latest = join(dir, `${r.kind === 'scaling' ? 'latest-scaling' : 'latest'}.json`);
  await writeFileAtomic(latest, text);
  const exports = await writeExports(r, dir, formats);
  return { json, latest, ...(await renderReport(r, dir)), exports };
}

/** Writes knb.json (when the run has contenders) and the extra formats asked for; returns their paths. */
export async function writeExports(r: BenchResults, dir: string, formats: readonly ExtraFormat[] = []): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const base = r.kind === 'scaling' ? 'latest-scaling' : 'latest';
  const exports: string[] = [];
  const put = async (name: string, body: string): Promise<void> => {
    const p = join(dir, name);
    await writeFileAtomic(p, body);
    exports.push(p);
  };
  const knb = r.contenders.length ? knbExport(r) : undefined;
  if (knb) await put('knb.json', jsonText(knb));
  if (formats.includes('yaml')) {
    // Through JSON first: the same values, non-finite numbers as null.
    await put(`${base}.yaml`, toYaml(JSON.parse(jsonText(r))));
    if (knb) await put('knb.yaml', toYaml(JSON.parse(jsonText(knb))));
  }
  if (formats.includes('text')) await put(`${base}.txt`, summaryTable(r).join('\n') + '\n');
  return exports;
}
