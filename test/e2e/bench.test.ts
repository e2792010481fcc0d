// `npm run bench -- quick`: runs the compiled suite as a child process (one short pass per
// contender) into a temporary results directory and checks the structure of what it writes:
// a finite number for every contender and every metric in latest.json, machine facts, and the
// HTML report and SVG charts naming every contender. Structure, not speed: no number is
// compared with anything.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

import { leftovers, sh } from '../../lab/netns.js';
import { METRICS, suiteContenders } from '../../bench/suite.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const runJs = join(root, 'dist', 'bench', 'run.js');

/** The contenders the issue asks for, in report order. */
const EXPECTED = [
  'host-gw', 'linen-host-gw', 'kernel-vxlan', 'linen-udp', 'linen-vxlan', 'linen-udp-nooffload', 'linen-vxlan-nooffload',
  'linen-udp-dgram', 'linen-vxlan-dgram',
];
const SVGS = ['throughput.svg', 'latency.svg', 'ratio.svg', 'udp.svg', 'cpu.svg'];
const LIMIT_MS = 540_000;

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const cmd of ['ip', 'iperf3', 'ping', 'ss', 'timeout']) {
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

    const r = await runBench(['quick', '--runs', '1', '--duration', '2', '--out', out]);
    if (r.code !== 0) t.comment(`stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    t.equal(r.code, 0, 'bench exits 0 (every contender and measurement ran)');

    // Terminal: a progress line per step, and per contender its single-stream TCP and ratio.
    t.match(r.stdout, /\[\d\d:\d\d\] \(1\/9\) host-gw/, 'progress lines');
    for (const name of EXPECTED) {
      t.match(r.stdout, new RegExp(`^${name}: single-stream TCP [\\d.]+ Gbit/s, [\\d.]+× kernel VXLAN$`, 'm'), `quick prints ${name}'s Gbit/s and ratio`);
    }
    t.match(r.stdout, /total time: \d+ min \d+ s/, 'total time printed');

    const latest = join(out, 'latest.json');
    t.ok(existsSync(latest), 'latest.json written');
    const stamped = readdirSync(out).filter((f) => /^\d{4}-\d\d-\d\dT[\d-]+(-quick)?\.json$/.test(f));
    t.equal(stamped.length, 1, 'and a timestamped copy');
    const j = JSON.parse(readFileSync(latest, 'utf8')) as {
      kind: string; durationSec: number;
      machine: { kernel: string; cpuModel: string; cores: number; node: string; linenCommit: string };
      settings: { runs: number; durationSec: number; congestion: string };
      contenders: {
        name: string; status: string; error?: string; cpuBasis: string; info: { topology?: string };
        metrics: Record<string, { median: number; min: number; max: number; n: number } | null>;
        ratioToKernelVxlan: Record<string, number | null>;
        runs: { tcp1?: { congestion: string } }[];
      }[];
    };
    t.equal(j.kind, 'quick');
    t.ok(Number.isFinite(j.durationSec) && j.durationSec > 0, 'duration recorded');
    t.match(j.machine, { kernel: /\S/, cpuModel: /\S/, node: /^v\d+/, linenCommit: /^([0-9a-f]{40}|unknown)$/ }, 'machine facts');
    t.ok(j.machine.cores > 0, 'cores');
    t.match(j.settings, { runs: 1, durationSec: 2, congestion: 'cubic' }, 'settings');
    t.same(j.contenders.map((c) => c.name), EXPECTED, 'every contender, in order');
    for (const c of j.contenders) {
      t.equal(c.status, 'ok', `${c.name} ran${c.error ? `: ${c.error}` : ''}`);
      // linen's overlay modes are charged linend's own CPU; the kernel paths (linen's host-gw
      // included: linend only keeps routes there) the machine's softirq and system time.
      t.match(c.cpuBasis, /^linen-(udp|vxlan)/.test(c.name) ? /^linend/ : /softirq/, `${c.name}: CPU basis labelled`);
      for (const m of METRICS) {
        const s = c.metrics[m.key];
        t.ok(s && Number.isFinite(s.median) && Number.isFinite(s.min) && Number.isFinite(s.max) && s.n === 1,
          `${c.name} ${m.key}: finite (${s ? s.median : 'null'})`);
        if (m.ratio) t.ok(Number.isFinite(c.ratioToKernelVxlan[m.key]), `${c.name} ${m.key}: ratio to kernel-vxlan`);
      }
      t.equal(c.runs[0]?.tcp1?.congestion, 'cubic', `${c.name}: TCP ran with cubic`);
      if (c.info.topology) t.same(leftovers(c.info.topology), { namespaces: [], links: [] }, `${c.name}: topology removed`);
    }
    t.equal(j.contenders.find((c) => c.name === 'kernel-vxlan')?.ratioToKernelVxlan.tcp1Gbps, 1, 'the reference is 1×');

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
