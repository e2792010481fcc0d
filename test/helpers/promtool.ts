// promtool (Debian's prometheus package; scripts/setup.sh installs it) and the metric names the
// shipped dashboard and alert rules query, for test/unit/promtool.test.ts and the live scrape
// in test/e2e/metrics.test.ts; and an engine's stats made up, to render /metrics without a data plane.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PACKET_VERDICTS, DIRECTIONS } from '../../src/dataplane/verdicts.js';
import { IO_STATS, type EngineStats, type IoStat } from '../../src/dataplane/engine.js';
import type { CounterSnapshot } from '../../src/dataplane/core.js';
import { parseIPv4 } from '../../src/net.js';

export const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));
export const DASHBOARD = `${DEPLOY}grafana-dashboard.json`;
export const ALERTS = `${DEPLOY}alerts.yml`;
export const ALERTS_TEST = `${DEPLOY}alerts.test.yml`;
export const README = fileURLToPath(new URL('../../README.md', import.meta.url));

export interface PromtoolResult { code: number | null; out: string; missing: boolean }

/** Runs promtool with the arguments, feeding `input` on stdin; `missing` when it is not installed. */
export function promtool(args: string[], input?: string): PromtoolResult {
  const r = spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 60_000 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return { code: null, out: '', missing: true };
  return { code: r.status, out: `${r.stdout}${r.stderr}`.trim(), missing: false };
}

/** linen's, process_ and nodejs_ metric names in a PromQL expression. */
export function metricNames(expr: string): string[] {
  // Label names appear in matchers ({...}) and in by/without/on/ignoring/group_* lists: drop those first.
  const bare = expr.replace(/\{[^}]*\}/g, '').replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  return [...new Set(bare.match(/\b(?:linen|process|nodejs)_[a-z0-9_]+\b/g) ?? [])];
}

interface Panel { title?: string; targets?: { expr?: string }[]; panels?: Panel[] }

/** The PromQL of every panel of the dashboard (and of its template variables), with the panel's title. */
export function dashboardQueries(): { title: string; expr: string }[] {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[]; templating: { list: { name: string; definition?: string }[] } };
  const out: { title: string; expr: string }[] = [];
  const walk = (ps: Panel[]): void => {
    for (const p of ps) {
      for (const q of p.targets ?? []) if (q.expr) out.push({ title: p.title ?? '?', expr: q.expr });
      walk(p.panels ?? []);
    }
  };
  walk(d.panels);
  for (const v of d.templating.list) if (v.definition) out.push({ title: `$${v.name}`, expr: v.definition });
  return out;
}

/** The expr of every alert rule in deploy/alerts.yml (read line by line: no YAML parser needed for this file's layout). */
export function alertQueries(): { title: string; expr: string }[] {
  const out: { title: string; expr: string }[] = [];
  const lines = readFileSync(ALERTS, 'utf8').split('\n');
  let alert = '?';
  for (let i = 0; i < lines.length; i++) {
    const a = /^\s*- alert: (\S+)/.exec(lines[i]!);
    if (a) alert = a[1]!;
    const e = /^(\s*)expr: (.*)$/.exec(lines[i]!);
    if (!e) continue;
    if (e[2] !== '|') {
      out.push({ title: alert, expr: e[2]! });
      continue;
    }
    const body: string[] = [];
    while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || lines[i + 1]!.search(/\S/) > e[1]!.length)) body.push(lines[++i]!);
    out.push({ title: alert, expr: body.join('\n') });
  }
  return out;
}

/**
 * The metric names README.md's "Health and metrics" list names, and those of them it says only
 * a node with direct routes (host-gw, DirectRouting) exports.
 */
export function documentedMetrics(): { all: Set<string>; directOnly: Set<string> } {
  const text = readFileSync(README, 'utf8');
  const start = text.indexOf('### Health and metrics');
  const end = text.indexOf('\nA scrape asks', start);
  if (start < 0 || end < 0) throw new Error('README.md: the "Health and metrics" list is not where it was');
  const all = new Set<string>();
  const directOnly = new Set<string>();
  for (const item of text.slice(start, end).split(/\n- /)) {
    const names = [...item.matchAll(/`((?:linen|process|nodejs)_[a-z0-9_]+)(?:\{[^}]*\})?`/g)].map((m) => m[1]!);
    for (const n of names) all.add(n);
    if (item.startsWith('direct routes')) for (const n of names) directOnly.add(n);
  }
  return { all, directOnly };
}

/** The sample names in a Prometheus text exposition. */
export function exposedNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[ {]/.exec(line);
    if (m && !line.startsWith('#')) out.add(m[1]!);
  }
  return out;
}

/** Engine stats with distinct counts: verdict i in direction d counted 100*d + i + 1 times. */
export function fakeStats(peers: number): EngineStats {
  const counters = {} as CounterSnapshot;
  DIRECTIONS.forEach((dir, d) => {
    const byVerdict = {} as CounterSnapshot[typeof dir];
    PACKET_VERDICTS.forEach((v, i) => { byVerdict[v] = { packets: BigInt(100 * d + i + 1), bytes: BigInt(1000 * (100 * d + i + 1)) }; });
    counters[dir] = byVerdict;
  });
  const io = Object.fromEntries(IO_STATS.map((s, i) => [s, BigInt(i + 1)])) as Record<IoStat, bigint>;
  return {
    counters, io, workers: 2, workerRestarts: 1,
    // Added in descending order, so "the lowest subnets" differs from "the first added".
    peers: Array.from({ length: peers }, (_, i) => ({ subnet: { ip: parseIPv4(`10.5.${peers - i}.0`)!, prefixLen: 24 }, txPackets: 1n, txBytes: 2n, rxPackets: 3n, rxBytes: 4n })),
  };
}

