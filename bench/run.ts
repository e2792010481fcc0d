// npm run bench -- [full|quick|scaling|micro] [--runs N] [--duration S] [--only a,b] [--out DIR] [--no-reference]
//
//   full (default)  every contender, 3 runs of every measurement, then the scaling runs
//   quick           one short pass per contender (1 run); prints single-stream TCP and the
//                   ratio to kernel VXLAN for each
//   scaling         route-table size against wasm egress ns/packet, and linend --queues 1/2
//                   against 4-stream TCP (linen VXLAN)
//   micro           ns/packet of the wasm core (bench/micro.ts)
//   scale --hosts N N nodes join one etcd at once: join time, lease races, etcd and RSS (bench/scale.ts)
//   report [FILE]   re-renders the charts and HTML from a results JSON (default <out>/latest.json)
//
// Results go to bench/results/ (git-ignored): <timestamp>.json, latest.json, latest.html and
// the SVG charts (throughput.svg, latency.svg, ratio.svg, udp.svg, cpu.svg, scaling-*.svg).
// Exit status: 0 when everything ran, 1 when a contender or measurement failed (the results are
// still written), 2 on bad usage.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { runMicro } from './micro.js';
import { runScale } from './scale.js';
import { fmtRatio, renderReport, summaryTable, writeResults, type BenchResults } from './report.js';
import { runQueueScaling, runRouteScaling, type ScalingResults } from './scaling.js';
import { machineFacts, METRICS, REFERENCE, resolveSettings, runSuite, suiteContenders, type SuiteOptions } from './suite.js';
import { repoRoot } from '../src/paths.js';

const USAGE = 'usage: npm run bench -- [full|quick|scaling|micro|report [FILE]|scale --hosts N] [--runs N] [--duration S] [--only a,b] [--out DIR] [--no-reference]';

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

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv[0] === 'scale') return runScale(argv.slice(1));
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: {
        runs: { type: 'string' }, duration: { type: 'string' }, only: { type: 'string' }, out: { type: 'string' },
        'no-reference': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
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
  if (what === 'micro') {
    runMicro();
    return 0;
  }
  if (what === 'report') {
    const dir = values.out ?? join(repoRoot(), 'bench', 'results');
    const file = positionals[1] ?? join(dir, 'latest.json');
    const r = JSON.parse(readFileSync(file, 'utf8')) as BenchResults;
    const w = await renderReport(r, dir);
    for (const l of summaryTable(r)) console.log(l);
    console.log(`report:  ${w.html}\ncharts:  ${w.svgs.join(' ')}`);
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
    schema: 1, kind: what as BenchResults['kind'], startedAt, finishedAt: '', durationSec: 0, argv, machine,
    ...(what === 'scaling' ? {} : { settings }),
    metrics: METRICS, reference: REFERENCE, contenders: [], notes: [
      'CPU per Gbit is measured over the single-stream TCP run. For linen it is the CPU time (user+system, all threads) of the ' +
      'linend processes on both hosts; for the kernel paths (host-gw, kernel-vxlan) it is the machine-wide softirq+sys time, ' +
      'which also includes iperf3\'s own kernel time and anything else running on the machine. kernelCpuPerGbit is that ' +
      'machine-wide figure for every contender.',
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

  results.finishedAt = new Date().toISOString();
  results.durationSec = (Date.now() - t0) / 1000;
  const w = await writeResults(results, outDir);
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
  console.log(`total time: ${clock(Date.now() - t0)} (${results.durationSec.toFixed(0)} s)`);
  return failed ? 1 : 0;
}

// Exit explicitly: the exit hooks (lab/topology.ts) still remove whatever is left.
main().then((code) => process.exit(code), (e: unknown) => {
  console.error(`bench: ${(e as Error).stack ?? String(e)}`);
  process.exit(1);
});
