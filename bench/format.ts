// Number and ratio formatting shared by the charts, the HTML report and the terminal table.
import { type MetricDef, type MetricKey, METRICS } from './suite.js';

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


export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function metricDef(key: MetricKey): MetricDef {
  return METRICS.find((m) => m.key === key)!;
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

/** Axis tick labels: at most 3 significant digits, no trailing zeros. */
export const tick = (x: number): string => (x === 0 ? '0' : String(Number(x.toPrecision(3))));

// Colours of a ratio on the good side of 1, the bad side, and about even.
export const GOOD = '#5a9e4b';
export const BAD = '#b8473d';
export const EVEN = '#8a8a8a';

export function digitsFor(d: MetricDef): number {
  return d.unit === 'ms' || d.unit === 'CPU s/Gbit' ? 3 : d.unit === '%' || d.unit === 'MiB' || d.unit.startsWith('%') ? 1 : 2;
}
