// A standalone SVG bar chart: horizontal, grouped, with min–max whiskers.
import { esc, fmtNum, tick } from './format.js';


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

export const COLORS = ['#3b6ea8', '#e08a2e', '#5a9e4b', '#b8473d', '#7d5ba6'];

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

