// The benchmark's topology and the contenders that need no linen code, against the real
// kernel in throwaway namespaces: pods reach each other with host-gw and with kernel VXLAN set
// up as flanneld does it, the measurement runners return numbers, and nothing is left behind
// (also when the process is killed by SIGTERM or SIGINT). Structure, not speed.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

import { hostGwContender, kernelVxlanContender, startContender } from '../../bench/contenders.js';
import { linkCounters, linkDetails, linkErrorCount, subnetNetworkAddress } from '../../lab/kernel.js';
import { leftovers, listLinks, listNamespaces, sh } from '../../lab/netns.js';
import { buildTopology, type Topology } from '../../lab/topology.js';
import { CpuMeter, iperfTcp, iperfUdp, parsePing, percentile, ping, processCpuSeconds, reachable } from '../../lab/traffic.js';

const here = dirname(fileURLToPath(import.meta.url));
const topologyModule = pathToFileURL(join(here, '..', '..', 'lab', 'topology.ts')).href;
const trafficModule = pathToFileURL(join(here, '..', '..', 'lab', 'traffic.ts')).href;

/** True while a process exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const cmd of ['ip', 'bridge', 'iperf3', 'ping', 'ss', 'timeout']) {
    try { sh('sh', ['-c', `command -v ${cmd}`]); } catch { return `needs ${cmd}`; }
  }
  return undefined;
}

const skip = missing();
if (skip) {
  t.plan(0, skip);
} else {
  main();
}

function main(): void {
  t.test('parsers and CPU accounting', async (t) => {
    const out = [
      'PING 10.1.2.2 (10.1.2.2) 56(84) bytes of data.',
      '64 bytes from 10.1.2.2: icmp_seq=1 ttl=62 time=0.081 ms',
      '64 bytes from 10.1.2.2: icmp_seq=2 ttl=62 time=0.120 ms',
      '64 bytes from 10.1.2.2: icmp_seq=2 ttl=62 time=0.500 ms (DUP!)',
      '64 bytes from 10.1.2.2: icmp_seq=4 ttl=62 time=1.05 ms',
      '',
      '--- 10.1.2.2 ping statistics ---',
      '4 packets transmitted, 3 received, +1 duplicates, 25% packet loss, time 6ms',
      'rtt min/avg/max/mdev = 0.081/0.417/1.050/0.450 ms',
    ].join('\n');
    const p = parsePing(out);
    t.same(p.samples, [0.081, 0.12, 1.05]);
    t.equal(p.transmitted, 4);
    t.equal(p.received, 3);
    t.equal(p.lossPercent, 25);
    t.equal(p.rttMs.p50, 0.12);
    t.equal(p.rttMs.max, 1.05);
    const xs = Array.from({ length: 1000 }, (_, i) => i + 1);
    t.equal(percentile(xs, 50), 500);
    t.equal(percentile(xs, 99), 990);
    t.ok(Number.isNaN(percentile([], 50)));

    // Burn CPU until the kernel has charged at least 0.1 s to this process (bounded: 10 s of
    // wall time), so a loaded machine that deschedules the loop does not fail the check.
    const meter = new CpuMeter([process.pid]);
    const start = processCpuSeconds(process.pid);
    const giveUp = Date.now() + 10_000;
    while (processCpuSeconds(process.pid) - start < 0.1 && Date.now() < giveUp) {
      for (let i = 0; i < 1e6; i++) { /* burn CPU */ }
    }
    const cpu = meter.stop();
    t.ok(processCpuSeconds(process.pid) > 0);
    t.ok(cpu.processTotal >= 0.1, `the meter saw the busy loop's CPU time: ${cpu.processTotal} s`);
    t.ok(cpu.wallSeconds > 0);
    t.ok(cpu.system.busy > 0);
  });

  t.test('two hosts: host-gw and kernel VXLAN', async (t) => {
    const topo = buildTopology();
    t.teardown(() => topo.destroy());
    const [a, b] = topo.hosts as [Topology['hosts'][0], Topology['hosts'][0]];

    t.test('topology', async (t) => {
      t.equal(topo.hosts.length, 2);
      t.equal(topo.bridgeNs, undefined, 'two hosts: one veth pair, no bridge');
      t.match(topo.underlayNet, /^192\.168\.\d+\.0\/24$/);
      t.match(topo.clusterNet, /^10\.\d+\.0\.0\/16$/);
      const names = listNamespaces();
      for (const ns of topo.namespaces()) t.ok(names.includes(ns), `namespace ${ns} exists`);
      for (const h of topo.hosts) {
        t.equal(h.podSubnet, `${topo.clusterNet.split('.').slice(0, 2).join('.')}.${h.index}.0/24`);
        t.equal(topo.exec(h.ns, 'sysctl', ['-n', 'net.ipv4.ip_forward']).trim(), '1', `${h.ns}: ip_forward`);
        t.match(topo.ip(h.ns, '-4', 'addr', 'show', 'dev', h.underlayDev), `inet ${h.underlayCidr}`);
        t.match(topo.ip(h.ns, 'link', 'show', 'dev', h.underlayDev), /mtu 1500 /);
        t.match(topo.ip(h.pod.ns, 'route', 'show', 'default'), `default via ${h.pod.gateway} dev ${h.pod.dev}`);
        t.ok(await reachable(h.pod.ns, h.podGateway), `pod ${h.index} reaches its gateway`);
      }
      t.ok(await reachable(a.ns, b.underlayIP), 'underlay works');
      t.notOk(await reachable(a.pod.ns, b.pod.ip), 'no pod-to-pod path before a contender runs');
      t.same(listLinks().filter((l) => l.includes(topo.id)), [], 'nothing in the root namespace');
    });

    t.test('host-gw', async (t) => {
      const c = hostGwContender();
      const h = await startContender(c, topo);
      t.teardown(() => h.stop());
      t.equal(topo.podMtu, 1500);
      t.match(topo.ip(a.ns, 'route', 'show', b.podSubnet), `${b.podSubnet} via ${b.underlayIP} dev ${a.underlayDev}`);
      const p = await ping({ from: a.pod, to: b.pod, count: 300, intervalSec: 0.002, waitSec: 1, deadline: true });
      t.equal(p.received, 300, 'every ping answered');
      t.equal(p.samples.length, 300);
      t.ok(p.rttMs.p50 > 0 && p.rttMs.p99 >= p.rttMs.p50, `p50 ${p.rttMs.p50} ms, p99 ${p.rttMs.p99} ms`);
      const r = await iperfTcp({ from: a.pod, to: b.pod, seconds: 2, congestion: 'cubic' });
      t.equal(r.congestion, 'cubic');
      t.ok(r.gbps > 0, `host-gw TCP ${r.gbps.toFixed(2)} Gbit/s, ${r.retransmits} retransmits`);
      t.ok(r.seconds > 1.5);
      t.ok(Number.isInteger(r.retransmits));
      t.same(h.pids(), []);
      await h.stop();
      t.notMatch(topo.ip(a.ns, 'route', 'show'), b.podSubnet, 'stop() removes the routes');
      t.notOk(await reachable(a.pod.ns, b.pod.ip), 'pods cut off again after stop()');
    });

    t.test('kernel VXLAN as flanneld configures it', async (t) => {
      const c = kernelVxlanContender();
      t.equal(c.tunnelMtu, 1450);
      const h = await startContender(c, topo);
      t.teardown(() => h.stop());
      t.equal(topo.podMtu, 1450);
      t.match(topo.ip(a.pod.ns, 'link', 'show', 'dev', a.pod.dev), /mtu 1450 /);
      t.equal(h.nodes.length, 2);
      const [na, nb] = h.nodes as [typeof h.nodes[0], typeof h.nodes[0]];
      t.match(na.vtepMAC, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      t.ok((parseInt(na.vtepMAC.slice(0, 2), 16) & 0x03) === 0x02, 'VtepMAC is locally administered unicast');
      t.not(na.vtepMAC, nb.vtepMAC);

      const d = linkDetails(a.ns, 'flannel.1');
      t.match(d, /mtu 1450 /);
      t.match(d, /vxlan id 1 /);
      t.match(d, `local ${a.underlayIP} `);
      t.match(d, `dev ${a.underlayDev} `);
      t.match(d, /dstport 8472 /);
      t.match(d, /nolearning/);
      t.match(d, `link/ether ${na.vtepMAC} `);
      t.match(topo.ip(a.ns, '-4', 'addr', 'show', 'dev', 'flannel.1'), `inet ${subnetNetworkAddress(a.podSubnet)}/32 `);
      // Per-peer state, §7.2: neighbour G→M permanent, FDB M→P self permanent, route S via G onlink.
      const gB = subnetNetworkAddress(b.podSubnet);
      t.match(topo.ip(a.ns, 'neigh', 'show', 'dev', 'flannel.1'), `${gB} lladdr ${nb.vtepMAC} PERMANENT`);
      t.match(sh('bridge', ['-n', a.ns, 'fdb', 'show', 'dev', 'flannel.1']), `${nb.vtepMAC} dst ${b.underlayIP} self permanent`);
      t.match(topo.ip(a.ns, 'route', 'show', b.podSubnet), `${b.podSubnet} via ${gB} dev flannel.1 onlink`);
      t.notMatch(topo.ip(a.ns, 'route', 'show'), topo.clusterNet, 'no route for the whole Network');

      const before = linkCounters(a.ns, 'flannel.1');
      const p = await ping({ from: a.pod, to: b.pod, count: 300, intervalSec: 0.002, waitSec: 1, deadline: true });
      t.equal(p.received, 300, 'every ping answered');
      t.ok(p.rttMs.p50 > 0, `p50 ${p.rttMs.p50} ms, p99 ${p.rttMs.p99} ms`);
      const r = await iperfTcp({ from: a.pod, to: b.pod, seconds: 2 });
      t.ok(r.gbps > 0, `kernel VXLAN TCP ${r.gbps.toFixed(2)} Gbit/s, ${r.retransmits} retransmits`);
      const u = await iperfUdp({ from: a.pod, to: b.pod, seconds: 1, payloadBytes: 1000, bitrate: '100M' });
      t.ok(u.sentPackets > 0 && u.packetsPerSecond > 0, `UDP ${Math.round(u.packetsPerSecond)} packets/s, loss ${u.lossPercent.toFixed(2)}%`);
      t.ok(u.lossPercent >= 0 && u.lossPercent <= 100);
      const after = linkCounters(a.ns, 'flannel.1');
      t.ok(after.tx.packets - before.tx.packets >= 300, 'the traffic went through flannel.1');
      t.ok(after.rx.packets - before.rx.packets >= 300, 'and came back through it');
      for (const n of h.nodes) {
        const ctr = linkCounters(n.ns, n.dev);
        t.equal(linkErrorCount(ctr), 0, `${n.ns} ${n.dev}: no errors (ip -s link)`);
      }
      await h.stop();
      t.notOk(listLinks(a.ns).includes('flannel.1'), 'stop() deletes flannel.1');
      t.notOk(await reachable(a.pod.ns, b.pod.ip), 'pods cut off again after stop()');
    });

    t.test('destroy() removes everything', async (t) => {
      const namespaces = topo.namespaces();
      topo.destroy();
      topo.destroy(); // idempotent
      t.ok(topo.destroyed);
      const left = leftovers(topo.id);
      t.same(left, { namespaces: [], links: [] }, `nothing named ${topo.id} remains`);
      const all = listNamespaces();
      for (const ns of namespaces) t.notOk(all.includes(ns), `${ns} is gone`);
    });
  });

  t.test('three hosts on a bridge, kernel VXLAN mesh', async (t) => {
    const topo = buildTopology({ hosts: 3 });
    t.teardown(() => topo.destroy());
    t.ok(topo.bridgeNs, 'a bridge namespace joins the hosts');
    const h = await startContender(kernelVxlanContender(), topo);
    t.teardown(() => h.stop());
    for (const n of h.nodes) t.equal(n.peers().length, 2, `${n.ns} has two peers`);
    for (const from of topo.hosts) {
      for (const to of topo.hosts) {
        if (from !== to) t.ok(await reachable(from.pod.ns, to.pod.ip), `pod ${from.index} → pod ${to.index}`);
      }
    }
    await h.stop();
    topo.destroy();
    t.same(leftovers(topo.id), { namespaces: [], links: [] });
  });

  t.test('a process killed by a signal removes its topology', async (t) => {
    // A child Node process (with tap's TypeScript loader) builds a topology, starts a bounded
    // process outside it (a plain sleep), prints both and waits; the signal must remove
    // everything, kill the process and still end the child.
    const tsImport = process.execArgv.filter((a) => a.includes('@tapjs/typescript'));
    const script = `const m = await import(${JSON.stringify(topologyModule)});
      const tr = await import(${JSON.stringify(trafficModule)});
      const topo = m.buildTopology();
      const p = tr.startBounded(undefined, 'sleep', ['30'], { timeoutMs: 30000 });
      process.stdout.write(JSON.stringify({ id: topo.id, pid: p.pid }) + '\\n');
      setInterval(() => {}, 1000);`;
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      const child = spawn(process.execPath, [...tsImport, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
      child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
      const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) => child.once('exit', (c, s) => res([c, s])));
      // Generous: on a starved machine the TypeScript loader alone can take most of a minute.
      const timer = setTimeout(() => child.kill('SIGKILL'), 180_000);
      try {
        while (!out.includes('\n') && child.exitCode === null && child.signalCode === null) await new Promise((r) => setTimeout(r, 20));
        const { id, pid } = JSON.parse(out.split('\n')[0] || '{}') as { id?: string; pid?: number };
        t.ok(id, `child built a topology (${err.trim().slice(0, 500)})`);
        if (!id) continue;
        t.ok(leftovers(id).namespaces.length >= 4, 'its namespaces exist');
        t.ok(pid && alive(pid), 'its bounded process runs');
        child.kill(sig);
        const [code, signal] = await exited;
        t.equal(signal, sig, `the child still dies of ${sig} (code ${code})`);
        t.same(leftovers(id), { namespaces: [], links: [] }, `${sig}: nothing named ${id} remains`);
        for (let i = 0; i < 50 && pid && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
        t.notOk(pid && alive(pid), `${sig}: its bounded process is gone`);
      } finally {
        clearTimeout(timer);
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    }
  });
}
