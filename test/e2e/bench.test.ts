// `npm run bench -- quick`: runs the compiled suite as a child process (one short pass per
// contender) into a temporary results directory and checks the structure of what it writes:
// a finite number for every contender and every metric in latest.json (TCP 1/4/8 streams,
// reverse, bidirectional, pod to service, UDP rates, loss, jitter and loss-free rates, ping,
// request/response, CPU per Gbit on one basis with its split, RSS, idle baseline), iperf3's raw
// reports, machine facts, anomalies, the knb-style export, YAML and text on request, and the HTML
// report and SVG charts naming every contender. Structure, not speed: no number is compared
// with anything.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

import { leftovers, sh } from '../../lab/netns.js';
import { CHARTS } from '../../bench/charts.js';
import { METRICS, suiteContenders } from '../../bench/suite.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const runJs = join(root, 'dist', 'bench', 'run.js');

/** The contenders the issue asks for, in report order. */
const EXPECTED = [
  'host-gw', 'linen-host-gw', 'kernel-vxlan', 'c-ref-udp', 'c-flanneld-udp', 'linen-udp', 'linen-vxlan', 'linen-udp-nooffload', 'linen-vxlan-nooffload',
  'linen-udp-dgram', 'linen-vxlan-dgram', 'wireguard-go', 'linen-wireguard',
];
const SVGS = [
  ...CHARTS.map((c) => c.file), 'cpu-split.svg', 'ratio.svg', 'ratio-cost.svg',
  ...METRICS.filter((m) => m.ratio).map((m) => `ratio-${m.key}.svg`),
];
/** Thirteen contenders take 40-55 s each, quiet or beside stress-ng; the limit leaves room for a machine twice as busy. */
const LIMIT_MS = 1_500_000;
t.setTimeout(LIMIT_MS + 90_000);

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const cmd of ['ip', 'iperf3', 'ping', 'ss', 'timeout', 'iptables', 'ethtool', 'cc']) {
    try { sh('sh', ['-c', `command -v ${cmd}`]); } catch { return `needs ${cmd}`; }
  }
  return undefined;
}

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

function runBench(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [runJs, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    // SIGTERM first: the suite's handlers remove its namespaces; SIGKILL if that hangs.
    const term = setTimeout(() => child.kill('SIGTERM'), LIMIT_MS);
    const kill = setTimeout(() => child.kill('SIGKILL'), LIMIT_MS + 15_000);
    child.once('close', (code, signal) => {
      clearTimeout(term);
      clearTimeout(kill);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const skip = missing();
if (skip) {
  t.plan(0, skip);
} else {
  t.test('npm run bench -- quick --runs 1: results JSON, HTML report and SVG charts', { timeout: LIMIT_MS + 60_000 }, async (t) => {
    t.ok(existsSync(runJs), `${runJs} exists (npx tsc -p tsconfig.json)`);
    t.same(suiteContenders().map((c) => c.name), EXPECTED, 'the suite runs the contenders of the issue, in order');
    const out = mkdtempSync(join(tmpdir(), 'linen-bench-'));
    t.teardown(() => rmSync(out, { recursive: true, force: true }));

    const r = await runBench(['quick', '--runs', '1', '--duration', '2', '--out', out, '--format', 'yaml,text']);
    if (r.code !== 0) t.comment(`stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    t.equal(r.code, 0, 'bench exits 0 (every contender and measurement ran)');

    // Terminal: a progress line per step, and per contender its single-stream TCP and ratio.
    t.match(r.stdout, new RegExp(`\\[\\d\\d:\\d\\d\\] \\(1/${EXPECTED.length}\\) host-gw`), 'progress lines');
    for (const name of EXPECTED) {
      t.match(r.stdout, new RegExp(`^${name}: single-stream TCP [\\d.]+ Gbit/s, [\\d.]+× kernel VXLAN$`, 'm'), `quick prints ${name}'s Gbit/s and ratio`);
    }
    const took = /total time: \d+ min \d+ s \((\d+) s\)/.exec(r.stdout);
    t.ok(took, 'total time printed');
    t.comment(`quick --runs 1 --duration 2 took ${took?.[1] ?? '?'} s`);

    const latest = join(out, 'latest.json');
    t.ok(existsSync(latest), 'latest.json written');
    const stamped = readdirSync(out).filter((f) => /^\d{4}-\d\d-\d\dT[\d-]+(-quick)?\.json$/.test(f));
    t.equal(stamped.length, 1, 'and a timestamped copy');
    type Split = Record<'busy' | 'dataplane' | 'iperf3' | 'softirq' | 'irq' | 'rest' | 'idle', number>;
    const j = JSON.parse(readFileSync(latest, 'utf8')) as {
      kind: string; durationSec: number; schema: number; anomalies: { kind: string; message: string }[];
      machine: {
        kernel: string; cpuModel: string; cores: number; node: string; linenCommit: string; memTotalMiB: number; cpuMHz: number | null;
        virtualization: string; loadavgAtStart: number[]; loadavgAtEnd: number[]; underlayOffloads: Record<string, string>;
      };
      settings: { runs: number; durationSec: number; congestion: string; tcpStreams: number[] };
      contenders: {
        name: string; status: string; error?: string; cpuBasis: string; info: { topology?: string };
        metrics: Record<string, { median: number; min: number; max: number; n: number } | null>;
        ratioToKernelVxlan: Record<string, number | null>;
        runs: {
          tcp1?: { congestion: string; raw: { end?: unknown }; cpuSplit: Split };
          tcp1Reverse?: { direction: string }; tcpBidir?: { direction: string; reverseGbps: number };
          svcTcp1?: { target: string }; udp64?: { raw: { end?: unknown } };
          udp64Search?: { foundBy: string }; rr?: { transactions: number };
          idle?: { cpuPct: { total: number } }; rss?: { rssMiB: number }[];
        }[];
      }[];
    };
    t.equal(j.kind, 'quick');
    t.ok(Number.isFinite(j.durationSec) && j.durationSec > 0, 'duration recorded');
    t.match(j.machine, { kernel: /\S/, cpuModel: /\S/, node: /^v\d+/, linenCommit: /^([0-9a-f]{40}|unknown)$/ }, 'machine facts');
    t.ok(j.machine.cores > 0, 'cores');
    t.ok(j.machine.memTotalMiB > 0, `RAM ${j.machine.memTotalMiB} MiB`);
    t.match(j.machine, { virtualization: /\S/ }, 'virtualization named');
    t.equal(j.machine.loadavgAtEnd.length, 3, 'load average at end');
    t.ok(Object.keys(j.machine.underlayOffloads).length > 0, 'underlay offloads read');
    t.equal(j.schema, 2, 'schema 2: one CPU basis');
    t.ok(Array.isArray(j.anomalies), `anomalies listed (${j.anomalies.length}: ${j.anomalies.map((a) => a.message).join('; ')})`);
    t.match(j.settings, { runs: 1, durationSec: 2, congestion: 'cubic', tcpStreams: [1, 4, 8] }, 'settings');
    const ref = j.contenders.find((c) => c.name === 'kernel-vxlan');
    t.same(j.contenders.map((c) => c.name), EXPECTED, 'every contender, in order');
    for (const c of j.contenders) {
      t.equal(c.status, 'ok', `${c.name} ran${c.error ? `: ${c.error}` : ''}`);
      // One CPU basis for every contender: the whole machine.
      t.match(c.cpuBasis, /^machine-wide/, `${c.name}: CPU basis is the machine`);
      for (const m of METRICS) {
        const s = c.metrics[m.key];
        t.ok(s && Number.isFinite(s.median) && Number.isFinite(s.min) && Number.isFinite(s.max) && s.n === 1,
          `${c.name} ${m.key}: finite (${s ? s.median : 'null'} ${m.unit})`);
        // A ratio to 0 (e.g. no jitter at all on kernel VXLAN) is not a number, by design.
        if (m.ratio && ref?.metrics[m.key]?.median !== 0) t.ok(Number.isFinite(c.ratioToKernelVxlan[m.key]), `${c.name} ${m.key}: ratio to kernel-vxlan`);
      }
      const run = c.runs[0];
      t.equal(run?.tcp1?.congestion, 'cubic', `${c.name}: TCP ran with cubic`);
      t.ok(run?.tcp1?.raw.end && run.udp64?.raw.end, `${c.name}: iperf3's raw reports kept`);
      const split = run?.tcp1?.cpuSplit;
      t.ok(split && Object.values(split).every((v) => typeof v !== 'number' || Number.isFinite(v)) && split.busy > 0,
        `${c.name}: CPU split (busy ${split?.busy}, dataplane ${split?.dataplane}, iperf3 ${split?.iperf3}, softirq ${split?.softirq})`);
      t.equal(run?.tcp1Reverse?.direction, 'reverse', `${c.name}: reverse run`);
      t.ok((run?.tcpBidir?.reverseGbps ?? 0) > 0, `${c.name}: bidirectional run moved data back`);
      t.equal(run?.svcTcp1?.target, 'service', `${c.name}: pod-to-service run`);
      t.match(run?.udp64Search?.foundBy, /^(unlimited|search|none)$/, `${c.name}: loss-free search ran`);
      t.ok((run?.rr?.transactions ?? 0) > 0, `${c.name}: request/response transactions`);
      // A forwarding process runs on both nodes for every linen contender (host-gw too) and for
      // the C forwarders; the kernel paths run none.
      t.equal(run?.rss?.length, c.name.startsWith('linen') || c.name.startsWith('c-') || c.name === 'wireguard-go' ? 2 : 0, `${c.name}: RSS of each forwarding process`);
      // Every linen contender's linend runs through the measurement (host-gw's too: it has no data
      // plane and once ended on an empty event loop, which read as RSS 0).
      if (c.name.startsWith('linen')) t.ok((c.metrics.dataplaneRssMiB?.median ?? 0) > 0, `${c.name}: linend RSS ${c.metrics.dataplaneRssMiB?.median} MiB > 0`);
      if (c.info.topology) t.same(leftovers(c.info.topology), { namespaces: [], links: [] }, `${c.name}: topology removed`);
    }
    t.equal(j.contenders.find((c) => c.name === 'kernel-vxlan')?.ratioToKernelVxlan.tcp1Gbps, 1, 'the reference is 1×');

    // The knb-style export: one document per contender, knb's scenario names, numbers in its units.
    interface KnbScenario { bandwidth: number; client: { cpu: { total: number }; ram: number } }
    const knb = JSON.parse(readFileSync(join(out, 'knb.json'), 'utf8')) as {
      results: { metadata: { name: string }; data: { idle: KnbScenario; pod2pod: Record<string, KnbScenario>; pod2svc: Record<string, KnbScenario> } }[];
    };
    t.same(knb.results.map((d) => d.metadata.name), EXPECTED.map((n) => `linen-bench-${n}`), 'knb.json: a document per contender');
    for (const d of knb.results) {
      for (const [scenario, proto] of [['pod2pod', 'tcp'], ['pod2pod', 'udp'], ['pod2svc', 'tcp'], ['pod2svc', 'udp']] as const) {
        const sc = d.data[scenario]?.[proto];
        t.ok(sc && sc.bandwidth > 0 && Number.isFinite(sc.client.cpu.total) && sc.client.ram > 0,
          `knb ${d.metadata.name} ${scenario}.${proto}: ${sc?.bandwidth} Mbit/s, ${sc?.client.cpu.total} % CPU, ${sc?.client.ram} MB`);
      }
      t.ok(Number.isFinite(d.data.idle.client.cpu.total), `knb ${d.metadata.name}: idle CPU`);
    }
    for (const f of ['latest.yaml', 'knb.yaml', 'latest.txt']) t.ok(existsSync(join(out, f)), `--format yaml,text: ${f} written`);
    t.match(readFileSync(join(out, 'latest.yaml'), 'utf8'), /^schema: 2\nkind: "quick"\n/, 'latest.yaml is YAML of the results');
    t.match(readFileSync(join(out, 'latest.txt'), 'utf8'), /kernel-vxlan/, 'latest.txt holds the summary');

    const html = join(out, 'latest.html');
    t.ok(existsSync(html), 'latest.html written');
    const page = readFileSync(html, 'utf8');
    t.match(page, /^<!doctype html>/, 'an HTML document');
    t.match(page, /<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/, 'with inline SVG charts');
    t.notMatch(page, /<script|<link |src="http/, 'self-contained');
    for (const name of EXPECTED) t.ok(page.includes(name), `the report names ${name}`);
    for (const f of SVGS) {
      const p = join(out, f);
      t.ok(existsSync(p), `${f} written`);
      const svg = existsSync(p) ? readFileSync(p, 'utf8') : '';
      t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"[^>]*>[\s\S]*<\/svg>\n$/, `${f} is a standalone SVG`);
      for (const name of EXPECTED) t.ok(svg.includes(`>${name}<`), `${f} names ${name}`);
    }
  });
}
