// npm run bench -- [full|quick|scaling|micro] [--runs N] [--duration S] [--only a,b] [--out DIR] [--no-reference]
//                   [--format yaml,text]
//
//   full (default)  every contender, 3 runs of every measurement, then the scaling runs
//   quick           one short pass per contender (1 run, short secondary runs): every figure of
//                   the full run; prints single-stream TCP and the ratio to kernel VXLAN for each
//   scaling         route-table size against wasm egress ns/packet, and linend --queues 1/2
//                   against 4-stream TCP (linen VXLAN)
//   micro           ns/packet of the wasm core (bench/micro.ts)
//   scale --hosts N N nodes join one etcd at once: join time, lease races, etcd and RSS (bench/cluster-join.ts)
//   report [FILE]   re-renders the charts and HTML from a results JSON (default <out>/latest.json)
//
// Results go to bench/results/ (git-ignored): <timestamp>.json, latest.json (iperf3's own JSON
// reports included), knb.json (knb's scenario names and units, bench/export.ts), latest.html and
// the SVG charts (charts.ts CHARTS, ratio-*.svg, scaling-*.svg); --format yaml adds latest.yaml
// and knb.yaml, --format text latest.txt (the summary tables).
// Exit status: 0 when everything ran, 1 when a contender or measurement failed (the results are
// still written), 2 on bad usage.

import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { runMicro } from './micro.js';
import { findAnomalies } from './anomalies.js';
import { EXTRA_FORMATS, renderReport, summaryTable, writeExports, writeResults, type ExtraFormat } from './report.js';
import { fmtRatio } from './format.js';
import type { BenchResults } from './results.js';
import { runScale } from './cluster-join.js';
import { runQueueScaling, runRouteScaling, type ScalingResults } from './dataplane-scaling.js';
import { machineFacts, METRICS, REFERENCE, resolveSettings, runSuite, suiteContenders, type SuiteOptions } from './suite.js';
import { repoRoot } from '../src/paths.js';

const USAGE = 'usage: npm run bench -- [full|quick|scaling|micro|report [FILE]|scale --hosts N] [--runs N] [--duration S] [--only a,b] ' +
  '[--out DIR] [--no-reference] [--format yaml,text]';

function fail(msg: string): never {
  console.error(`bench: ${msg}\n${USAGE}`);
  process.exit(2);
}

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) fail(`--${name} must be a positive integer, got "${v}"`);
  return n;
}

function clock(ms: number): string {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
}

/**
 * Commands that are not the suite, one line each: each gets the arguments after its name and
 * parses its own flags; resolves to the exit status.
 */
const STANDALONE: Record<string, ((args: string[]) => Promise<number>) | undefined> = {
  micro: async () => { runMicro(); return 0; },
  scale: runScale,
};

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const standalone = argv[0] !== undefined ? STANDALONE[argv[0]] : undefined;
  if (standalone) return standalone(argv.slice(1));
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: {
        runs: { type: 'string' }, duration: { type: 'string' }, only: { type: 'string' }, out: { type: 'string' },
        'no-reference': { type: 'boolean' }, format: { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    fail((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const what = positionals[0] ?? 'full';
  if (positionals.length > (what === 'report' ? 2 : 1)) fail(`one command at a time, got: ${positionals.join(' ')}`);
  const formats = (values.format ?? '').split(',').map((f) => f.trim()).filter((f) => f && f !== 'json');
  const badFormat = formats.filter((f) => !(EXTRA_FORMATS as readonly string[]).includes(f));
  if (badFormat.length) fail(`--format: unknown ${badFormat.join(', ')} (json is always written; extra: ${EXTRA_FORMATS.join(', ')})`);
  if (what === 'report') {
    const dir = values.out ?? join(repoRoot(), 'bench', 'results');
    const file = positionals[1] ?? join(dir, 'latest.json');
    const r = JSON.parse(readFileSync(file, 'utf8')) as BenchResults;
    const w = await renderReport(r, dir);
    const ex = await writeExports(r, dir, formats as ExtraFormat[]);
    for (const l of summaryTable(r)) console.log(l);
    console.log(`report:  ${w.html}\ncharts:  ${w.svgs.join(' ')}\nexports: ${ex.join(' ')}`);
    return 0;
  }
  if (!['full', 'quick', 'scaling'].includes(what)) fail(`unknown command "${what}"`);
  if (process.getuid?.() !== 0) fail('needs root (network namespaces)');

  const runs = positiveInt('runs', values.runs);
  const duration = positiveInt('duration', values.duration);
  const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
  const outDir = values.out ?? join(repoRoot(), 'bench', 'results');
  const quick = what === 'quick';
  const log = (l: string): void => console.log(l);

  const opts: SuiteOptions = {
    quick, runs, durationSec: duration, only, noReference: values['no-reference'] ?? false, log,
  };
  const settings = resolveSettings(opts);
  if (only) {
    // Validate names before any work.
    const known = suiteContenders().map((c) => c.name);
    const bad = only.filter((n) => !known.includes(n));
    if (bad.length) fail(`unknown contender(s): ${bad.join(', ')}; known: ${known.join(', ')}`);
  }

  const t0 = Date.now();
  const startedAt = new Date(t0).toISOString();
  const machine = machineFacts();
  console.log(`linen bench ${what}: ${machine.cpuModel}, ${machine.cores} cores, kernel ${machine.kernel}, Node ${machine.node}, ` +
    `linen ${machine.linenCommit.slice(0, 12)}${machine.linenDirty ? '+dirty' : ''}`);
  console.log(`settings: ${settings.runs} run(s), iperf3 ${settings.durationSec} s, TCP congestion ${settings.congestion}, ` +
    `UDP -b ${settings.udpBitrate === '0' ? 'unlimited' : settings.udpBitrate} -w ${settings.udpSocketBuffer}, ${settings.pingCount} pings` +
    (machine.loadavgAtStart[0]! > 0.5 ? ` (load average ${machine.loadavgAtStart.join(' ')}: the numbers will be noisy)` : ''));

  const results: BenchResults = {
    schema: 2, kind: what as BenchResults['kind'], startedAt, finishedAt: '', durationSec: 0, argv, machine,
    ...(what === 'scaling' ? {} : { settings }),
    metrics: METRICS, reference: REFERENCE, contenders: [], notes: [
      'CPU per Gbit (cpuPerGbit) is measured over the single-stream TCP run on one basis for every contender: all busy CPU time ' +
      'of the machine (user+nice+system+irq+softirq+steal from /proc/stat: both dataplanes, both iperf3 ends, the kernel, and ' +
      'anything else running), divided by the gigabits received. The split (linend threads, iperf3, softirq, irq, rest) is ' +
      'kept as detail per run (runs[].tcp1.cpuSplit). kernelCpuPerGbit is the machine\'s softirq+sys time alone.',
      'Idle baseline: each run starts with the contender up and no traffic for a few seconds: machine CPU busy (percent of all ' +
      'cores) and memory in use (MemTotal − MemAvailable). dataplaneRssMiB is the forwarding processes\' RSS (linend on every ' +
      'node, 0 for kernel paths) after the TCP and UDP load.',
      'UDP loss-free rate: iperf3 -u at offered rates chosen by a bounded bisection from the unlimited-rate run, ' +
      `${settings.searchSteps} probes of ${settings.searchStepSec} s at most; the figure is the received rate of the highest probe ` +
      `with < ${settings.lossFreeMaxLossPct} % loss (0 if none passed). Jitter is iperf3's, at the unlimited rate.`,
      'Pod to service: a ClusterIP (10.96.0.10) programmed as kube-proxy does in iptables mode (nat PREROUTING → KUBE-SERVICES → ' +
      'KUBE-SVC → KUBE-SEP DNAT) on the sending host, measured after the pod-to-pod runs so that its conntrack never touches them.',
      'Request/response: one TCP connection, 1-byte request and response, back to back (lab/tcp-rr.c, C, the same for every contender).',
      `UDP packet rate: iperf3 -u at an unlimited bitrate (-b 0) with ${settings.udpSocketBuffer} socket buffers (-w); ` +
      'packets/s as received by the server, loss as counted by iperf3. On the kernel paths the sender does the forwarding work ' +
      'in its own send calls, so the sender is usually the limit there; on linen paths, loss is packets the dataplane dropped.',
      `TCP congestion control is pinned to ${settings.congestion} (iperf3 -C); the machine default is ${machine.defaultCongestion || 'unknown'}.`,
      'Everything (both dataplanes, both iperf3 ends) shares this machine\'s cores; a veth underlay flatters offloads for every ' +
      'contender alike, so same-run ratios are the fair comparison.',
    ],
  };

  let failed = false;
  if (what !== 'scaling') {
    const suite = await runSuite(opts);
    results.contenders = suite.contenders;
    failed ||= suite.contenders.some((c) => c.status === 'failed' || c.errors.length > 0);
  }
  if (what === 'full' || what === 'scaling') {
    const st = Date.now();
    const scalingRuns = runs ?? 3;
    const scalingDuration = duration ?? 5;
    try {
      console.log(`[scaling] route-table size against wasm egress ns/packet`);
      const routeTable = runRouteScaling({ log: (l) => console.log(`[scaling]   ${l}`) });
      console.log(`[scaling] linen VXLAN, linend --queues 1 and 2, 4-stream TCP, ${scalingRuns} run(s) of ${scalingDuration} s`);
      const queues = await runQueueScaling({
        runs: scalingRuns, durationSec: scalingDuration, settings: resolveSettings({ ...opts, runs: scalingRuns, durationSec: scalingDuration }),
        log: (l) => console.log(`[scaling]   ${l}`),
      });
      const sc: ScalingResults = { routeTable, queues, seconds: (Date.now() - st) / 1000 };
      results.scaling = sc;
      failed ||= queues.points.some((p) => p.status === 'failed');
    } catch (e) {
      results.scalingError = (e as Error).stack ?? String(e);
      console.log(`[scaling] FAILED: ${(e as Error).message}`);
      failed = true;
    }
  }

  results.machine.loadavgAtEnd = loadavg().map((x) => Math.round(x * 100) / 100);
  const offloads = results.contenders.find((c) => c.info.underlayOffloads)?.info.underlayOffloads;
  if (offloads) results.machine.underlayOffloads = offloads as Record<string, string>;
  results.anomalies = findAnomalies(results.contenders, METRICS, results.machine);
  results.finishedAt = new Date().toISOString();
  results.durationSec = (Date.now() - t0) / 1000;
  const w = await writeResults(results, outDir, formats as ExtraFormat[]);
  console.log('');
  for (const l of summaryTable(results)) console.log(l);
  console.log('');
  if (quick) {
    for (const c of results.contenders) {
      const g = c.metrics.tcp1Gbps?.median;
      const ratio = c.ratioToKernelVxlan.tcp1Gbps;
      console.log(`${c.name}: ` + (c.status === 'failed' ? 'FAILED'
        : `single-stream TCP ${g !== undefined ? g.toFixed(g < 0.1 ? 3 : 2) : 'n/a'} Gbit/s, ${ratio !== null ? fmtRatio(ratio) : 'n/a'} kernel VXLAN`));
    }
    console.log('');
  }
  console.log(`results: ${w.json}`);
  console.log(`         ${w.latest}`);
  console.log(`report:  ${w.html}`);
  console.log(`charts:  ${w.svgs.join(' ')}`);
  console.log(`exports: ${w.exports.join(' ')}`);
  console.log(`total time: ${clock(Date.now() - t0)} (${results.durationSec.toFixed(0)} s)`);
  return failed ? 1 : 0;
}

// Exit explicitly: the exit hooks (lab/topology.ts) still remove whatever is left.
main().then((code) => process.exit(code), (e: unknown) => {
  console.error(`bench: ${(e as Error).stack ?? String(e)}`);
  process.exit(1);
});
