// Benchmark output: the results JSON (bench/results/<timestamp>.json and latest.json), the
// charts (charts.ts) and HTML report (html-report.ts) written beside it, and the terminal
// summary table.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../src/config/subnetenv.js';
import { charts } from './charts.js';
import { knbExport, toYaml } from './export.js';
import { digitsFor, fmtNum, fmtRatioDir } from './format.js';
import { htmlReport } from './html-report.js';
import type { BenchResults } from './results.js';
import { type ContenderResult, type MetricDef, METRICS, REFERENCE } from './suite.js';

function pad(s: string, w: number, left = false): string {
  return left ? s.padEnd(w) : s.padStart(w);
}

/** Digits for a metric's values in tables. */

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
