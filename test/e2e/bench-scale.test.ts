// `npm run bench -- scale --hosts 5 --leases 500`: the scale run as a child process, into a
// temporary results directory. Checks that latest-scale.json has a finite number for every figure
// (the control plane's at 500 leases too) and that the
// checks inside held: every node routes every other, every sampled pair answers, every node
// dropped the leaving node), the terminal table, and that nothing of the run is left; then a
// second run is interrupted with SIGINT during the join and must remove everything too.
// Structure, not speed: no time is compared with anything.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import { leftovers } from '../../lab/netns.js';
import { LEASE_FIGURES, SCALE_FIGURES, type ScaleResults } from '../../bench/cluster-join.js';
import { repoRoot } from '../../src/paths.js';

const HOSTS = 5;
const LEASES = 500;
const LIMIT_MS = 180_000;
const runJs = join(repoRoot(), 'dist', 'bench', 'run.js');

interface Bench { child: ChildProcess; output(): string; exited: Promise<number | string | null> }

function startScale(args: string[]): Bench {
  // env -u: tap preloads a module into every node it starts (NODE_OPTIONS) that listens for
  // SIGINT itself, which would hide how the bench behaves on its own.
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, runJs, 'scale', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | string | null>((r) => child.once('exit', (code, sig) => r(code ?? sig)));
  // SIGTERM first (the bench tears down), SIGKILL if that hangs.
  const term = setTimeout(() => child.kill('SIGTERM'), LIMIT_MS);
  const kill = setTimeout(() => child.kill('SIGKILL'), LIMIT_MS + 20_000);
  void exited.then(() => { clearTimeout(term); clearTimeout(kill); });
  return { child, output: () => out, exited };
}

/**
 * Processes of a run still alive: those whose command line names its cluster directory (every
 * linend's --subnet-file) or its etcd (named after the bench's pid).
 */
function processesOf(id: string, benchPid: number | undefined): number[] {
  const marks = [`linen-cluster-${id}-`, `--name=linen-${benchPid}-`];
  const pids: number[] = [];
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (marks.some((m) => cmd.includes(m))) pids.push(Number(p));
    } catch { /* gone */ }
  }
  return pids;
}

/** What is left of a run: namespaces, devices, processes and the cluster directory. */
function remains(id: string, benchPid: number | undefined): { namespaces: string[]; links: string[]; pids: number[]; dirs: string[] } {
  return { ...leftovers(id), pids: processesOf(id, benchPid), dirs: readdirSync(tmpdir()).filter((d) => d.startsWith(`linen-cluster-${id}-`)) };
}

const skip = process.getuid?.() !== 0 ? 'needs root' : !existsSync('/usr/bin/etcd') ? 'needs etcd' : undefined;
if (skip) {
  t.plan(0, skip);
} else {
  t.test(`bench scale --hosts ${HOSTS} --leases ${LEASES}: a number for every figure, and nothing left`, { timeout: LIMIT_MS + 60_000 }, async (t) => {
    const out = mkdtempSync(join(tmpdir(), 'linen-bench-scale-'));
    t.teardown(() => rmSync(out, { recursive: true, force: true }));
    const b = startScale(['--hosts', String(HOSTS), '--leases', String(LEASES), '--out', out]);
    const code = await b.exited;
    if (code !== 0) t.comment(b.output());
    t.equal(code, 0, 'exits 0 (every check of the run held)');
    t.match(b.output(), /every node routes every other [\d.]+ s after the start/, 'join progress line');
    t.match(b.output(), /scale run: 5 hosts, linen vxlan \(native engine\), etcd Version: /, 'table heading');
    for (const f of [...SCALE_FIGURES, ...LEASE_FIGURES]) {
      const row = `^  ${f.label.replace(/[()]/g, '\\$&')}\\s+[\\d.]+[kM]?${f.unit ? ` ${f.unit}` : ''}$`;
      t.match(b.output(), new RegExp(row, 'm'), `table row: ${f.label}`);
    }

    const latest = join(out, 'latest-scale.json');
    t.ok(existsSync(latest), 'latest-scale.json written');
    t.equal(readdirSync(out).filter((f) => /^\d{4}-\d\d-\d\dT[\d-]+-scale\.json$/.test(f)).length, 1, 'and a timestamped copy');
    const r = JSON.parse(readFileSync(latest, 'utf8')) as ScaleResults;
    t.equal(r.kind, 'scale');
    t.same(r.errors, [], 'no errors recorded');
    for (const f of SCALE_FIGURES) {
      const v = r.figures[f.key];
      t.ok(typeof v === 'number' && Number.isFinite(v), `${f.key}: a number (${v} ${f.unit})`);
    }
    for (const f of LEASE_FIGURES) {
      const v = r.controlPlane?.[f.key];
      t.ok(typeof v === 'number' && Number.isFinite(v), `controlPlane.${f.key}: a number (${v} ${f.unit})`);
    }
    t.ok(r.controlPlane?.leases === LEASES || r.controlPlane?.leases === LEASES - 1, 'the leases asked for (less the running node\'s own subnet)');
    const fig = r.figures;
    t.equal(fig.hosts, HOSTS);
    t.equal(fig.nodesRoutingAll, HOSTS, 'every node reports hosts-1 peers');
    t.equal(fig.leasesInEtcd, HOSTS, 'one lease per host');
    t.equal(fig.subnetsHeldTwice, 0, 'no subnet held twice');
    t.equal(fig.nodesWithoutLease, 0, 'every node got a lease');
    t.equal(fig.leaseRacesResolved, fig.leaseRacesLost, 'every race lost was resolved');
    t.equal(fig.reachPairs, HOSTS * 3, 'each host pings 3 others');
    t.equal(fig.reachOk, fig.reachPairs, 'every sampled pair answers');
    t.equal(fig.nodesDroppedRoute, HOSTS - 1, 'every other node dropped the leaving node');
    t.ok(fig.joinNodeP50Sec! <= fig.joinAllRoutedSec!, 'the median node is not later than the last');
    t.ok(fig.etcdPeakRssMiB! >= fig.etcdRssMiB! * 0.99, 'etcd peak RSS at least its RSS');
    t.equal(r.nodes.length, HOSTS, 'a record per node');
    t.same(r.leftovers, { namespaces: [], links: [] }, 'the run found nothing of itself left');
    t.same(remains(r.settings.topology, b.child.pid), { namespaces: [], links: [], pids: [], dirs: [] }, 'no namespace, device, process or directory of the run left');
  });

  t.test('bench scale interrupted with SIGINT during the join: everything is removed', { timeout: LIMIT_MS + 60_000 }, async (t) => {
    const out = mkdtempSync(join(tmpdir(), 'linen-bench-scale-'));
    t.teardown(() => rmSync(out, { recursive: true, force: true }));
    const b = startScale(['--hosts', String(HOSTS), '--out', out]);
    const deadline = Date.now() + 120_000;
    while (!/started \d+ linend/.test(b.output()) && b.child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const id = /cluster (lb[a-z0-9]{5}) built/.exec(b.output())?.[1] ?? '';
    if (!id || !/started \d+ linend/.test(b.output())) {
      b.child.kill('SIGKILL');
      t.fail(`the run did not reach the join:\n${b.output()}`);
      return;
    }
    t.not(leftovers(id).namespaces.length, 0, `cluster ${id}: its namespaces exist while it runs`);
    b.child.kill('SIGINT');
    t.equal(await b.exited, 130, 'exits 130 after tearing down');
    t.match(b.output(), /Interrupted: tearing down/);
    t.same(remains(id, b.child.pid), { namespaces: [], links: [], pids: [], dirs: [] }, 'no namespace, device, process or directory of the run left');
  });
}
