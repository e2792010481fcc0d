// Switching a node from flanneld to linen in place, and back.
//
// Three hosts: A starts out exactly as flanneld leaves it (its device, lease in flanneld's
// JSON, iptables rules, subnet.env), B is another flanneld node (kernel VXLAN, or a flanneld-UDP
// peer), C runs linen. linend starts on A and takes the node over; then linend stops and
// flanneld (emulated as in interop.test.ts: what it puts in the kernel, in etcd and in
// iptables) starts on A again. Pods on B and C ping A's pod every 0.1 s throughout: the missing
// replies are the forwarding gap, printed, never bounded tightly.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCluster, ETCD_PREFIX, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import { leaseKey, putFlannelLease } from '../../lab/leases.js';
import { configureKernelVxlanNode, subnetNetworkAddress, type KernelVxlanNode, type VxlanPeer } from '../../lab/kernel.js';
import type { HostInfo } from '../../lab/topology.js';
import { ping } from '../../lab/traffic.js';
import { randomVtepMAC } from '../../src/backend/index.js';
import { formatMAC } from '../../src/net.js';
import { Metrics, waitFor } from '../helpers/reliability.js';

const UDP_PEER = fileURLToPath(new URL('../fixtures/udp-peer.py', import.meta.url));
const PING_INTERVAL_S = 0.1;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// flanneld's footprint on a node, written the way flanneld writes it

async function leases(c: Cluster): Promise<Map<string, string>> {
  const lines = (await c.etcd.ctl('get', '--prefix', `${ETCD_PREFIX}/subnets`)).trim().split('\n').filter(Boolean);
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) m.set(lines[i]!, lines[i + 1]!);
  return m;
}

const vxlanLease = (ip: string, mac: string): string =>
  `{"PublicIP":"${ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
const udpLease = (ip: string): string => `{"PublicIP":"${ip}","PublicIPv6":null}`;

/** flanneld's rules (docs/flanneld-compat.md, "iptables rules") as `iptables -S` prints them, per table. */
function flanneldRules(network: string, subnet: string): { nat: string[]; filter: string[] } {
  const mc = '-m comment --comment "flanneld masq"';
  const fc = '-m comment --comment "flanneld forward"';
  return {
    nat: [
      `-A POSTROUTING ${mc} -j FLANNEL-POSTRTG`,
      `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 ${mc} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${subnet} -d ${network} ${mc} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${network} -d ${subnet} ${mc} -j RETURN`,
      `-A FLANNEL-POSTRTG ! -s ${network} -d ${subnet} ${mc} -j RETURN`,
      `-A FLANNEL-POSTRTG -s ${network} ! -d 224.0.0.0/4 ${mc} -j MASQUERADE --random-fully`,
      `-A FLANNEL-POSTRTG ! -s ${network} -d ${network} ${mc} -j MASQUERADE --random-fully`,
    ],
    filter: [
      `-A FORWARD ${fc} -j FLANNEL-FWD`,
      `-A FLANNEL-FWD -s ${network} ${fc} -j ACCEPT`,
      `-A FLANNEL-FWD -d ${network} ${fc} -j ACCEPT`,
    ],
  };
}

/** flanneld's bootstrap: one iptables-restore --noflush per table, chains declared first. */
function installFlanneldRules(c: Cluster, h: HostInfo, subnet: string): void {
  const r = flanneldRules(c.network, subnet);
  const input = `*nat\n:FLANNEL-POSTRTG - [0:0]\n${r.nat.join('\n')}\nCOMMIT\n*filter\n:FLANNEL-FWD - [0:0]\n${r.filter.join('\n')}\nCOMMIT\n`;
  c.topo.exec(h.ns, 'iptables-restore', ['--noflush', '--wait'], { input });
}

/** How often each of flanneld's rules is in the namespace, and how many flanneld lines there are. */
function ruleCounts(c: Cluster, h: HostInfo, subnet: string): { counts: Record<string, number>; total: number; chains: string[] } {
  const r = flanneldRules(c.network, subnet);
  const lines = [...c.topo.exec(h.ns, 'iptables', ['--wait', '-t', 'nat', '-S']).split('\n'), ...c.topo.exec(h.ns, 'iptables', ['--wait', '-t', 'filter', '-S']).split('\n')];
  const counts: Record<string, number> = {};
  for (const want of [...r.nat, ...r.filter]) counts[want] = lines.filter((l) => l === want).length;
  return { counts, total: lines.filter((l) => l.includes('flanneld')).length, chains: lines.filter((l) => /^-N FLANNEL-/.test(l)) };
}

function checkRulesOnce(t: Test, c: Cluster, h: HostInfo, subnet: string, when: string): void {
  const { counts, total, chains } = ruleCounts(c, h, subnet);
  const bad = Object.entries(counts).filter(([, n]) => n !== 1);
  t.same(bad, [], `${when}: each of flanneld's 10 rules present exactly once`);
  t.equal(total, 10, `${when}: no other flanneld rule (${total} lines)`);
  t.same(chains.sort(), ['-N FLANNEL-FWD', '-N FLANNEL-POSTRTG'], `${when}: chains FLANNEL-POSTRTG and FLANNEL-FWD`);
}

function writeFlanneldSubnetEnv(n: ClusterNode, network: string, subnet: string, mtu: number): void {
  writeFileSync(n.subnetFile, `FLANNEL_NETWORK=${network}\nFLANNEL_SUBNET=${subnetNetworkAddress(subnet).replace(/\.0$/, '.1')}/24\nFLANNEL_MTU=${mtu}\nFLANNEL_IPMASQ=true\n`);
}

/** The pod veth's MTU on both ends (what the CNI plugin takes from FLANNEL_MTU). */
function setPodMtu(c: Cluster, h: HostInfo, mtu: number): void {
  c.topo.ip(h.ns, 'link', 'set', 'dev', h.podGatewayDev, 'mtu', String(mtu));
  c.topo.ip(h.pod.ns, 'link', 'set', 'dev', h.pod.dev, 'mtu', String(mtu));
}

function linkKind(c: Cluster, h: HostInfo, dev: string): string | null {
  try {
    const l = (JSON.parse(c.topo.ip(h.ns, '-d', '-j', 'link', 'show', 'dev', dev)) as { linkinfo?: { info_kind?: string } }[])[0];
    return l?.linkinfo?.info_kind ?? '';
  } catch {
    return null;
  }
}

/** The peers flanneld on a node learns from etcd: every vxlan lease but its own. */
async function vxlanPeersOf(c: Cluster, ownSubnet: string): Promise<VxlanPeer[]> {
  const out: VxlanPeer[] = [];
  for (const [key, value] of await leases(c)) {
    const subnet = key.slice(key.lastIndexOf('/') + 1).replace('-', '/');
    if (subnet === ownSubnet) continue;
    const v = JSON.parse(value) as { PublicIP: string; BackendData?: { VtepMAC?: string } };
    if (v.BackendData?.VtepMAC) out.push({ subnet, publicIP: v.PublicIP, vtepMAC: v.BackendData.VtepMAC });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The forwarding gap: a ping every 0.1 s, the replies that never came

interface Gap { sent: number; missing: number; longestS: number; seconds: number }

function startPinger(t: Test, ns: string, ip: string): { replies(): number; stop(): Promise<Gap> } {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, 'ping', '-n', '-i', String(PING_INTERVAL_S), '-W', '1', '-w', '110', ip],
    { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const seqs = (): number[] => [...out.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
  return {
    replies: () => seqs().length,
    async stop() {
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
      const got = new Set(seqs());
      const last = Math.max(0, ...got);
      // Only sequence numbers before the last reply count: later ones may just be in flight.
      let missing = 0;
      let run = 0;
      let longest = 0;
      for (let s = 1; s <= last; s++) {
        if (got.has(s)) { run = 0; continue; }
        missing++;
        longest = Math.max(longest, ++run);
      }
      const sent = Number(/(\d+) packets transmitted/.exec(out)?.[1] ?? 0);
      return { sent, missing, longestS: longest * PING_INTERVAL_S, seconds: missing * PING_INTERVAL_S };
    },
  };
}

async function pingersRunning(t: Test, ...ps: { replies(): number }[]): Promise<void> {
  const before = ps.map((p) => p.replies());
  const ok = (await waitFor(() => ps.every((p, i) => p.replies() >= before[i]! + 5), 15000, 50)) >= 0;
  t.ok(ok, 'pings flow before the switch');
}

/** Seconds from the first step's log line to each later one (klog's time of day). */
function stepTimes(log: string, steps: string[]): string {
  const at = (step: string): number | null => {
    const lines = log.split('\n').filter((l) => l.includes(step));
    const m = /(\d\d):(\d\d):(\d\d\.\d+)/.exec(lines[lines.length - 1] ?? '');
    return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]) : null;
  };
  const t0 = at(steps[0]!);
  return steps.slice(1).map((s) => {
    const t1 = at(s);
    return `${s} +${t0 === null || t1 === null ? '?' : (t1 - t0).toFixed(2)} s`;
  }).join(', ') + ` after "${steps[0]}"`;
}

const fmtGap = (g: Gap): string => `${g.seconds.toFixed(1)} s (${g.missing} of ${g.sent} replies missing, longest run ${g.longestS.toFixed(1)} s)`;

async function reaches(ns: string, ip: string, timeoutMs = 20000): Promise<boolean> {
  return (await waitFor(async () => (await ping({ from: { ns }, to: ip, count: 1 })).ok, timeoutMs, 100)) >= 0;
}

async function buildThree(t: Test, backend: 'udp' | 'vxlan'): Promise<Cluster> {
  const c = await buildCluster({ hosts: 3, backend, start: false, args: ['--ip-masq'] });
  t.teardown(() => c.destroy());
  return c;
}

/** A's lease value and how many leases carry A's PublicIP. */
async function leaseOf(c: Cluster, subnet: string, publicIP: string): Promise<{ value: string | undefined; sameIp: number }> {
  const all = await leases(c);
  const sameIp = [...all.values()].filter((v) => (JSON.parse(v) as { PublicIP: string }).PublicIP === publicIP).length;
  return { value: all.get(leaseKey(subnet)), sameIp };
}

// ---------------------------------------------------------------------------------------------

t.test('vxlan: linend takes over a flanneld node (kernel flannel.1 left behind) and hands it back', async (t) => {
  const c = await buildThree(t, 'vxlan');
  const [hA, hB, hC] = [c.topo.hosts[0]!, c.topo.hosts[1]!, c.topo.hosts[2]!];
  const [nodeA, nodeC] = [c.nodes[0]!, c.nodes[2]!];
  const [subnetA, subnetB] = [hA.podSubnet, hB.podSubnet];
  const [macA, macB] = [formatMAC(randomVtepMAC()), formatMAC(randomVtepMAC())];

  // etcd as two flanneld VXLAN nodes left it, then linen on C allocates its own subnet.
  await putFlannelLease(c, subnetA, vxlanLease(hA.underlayIP, macA));
  await putFlannelLease(c, subnetB, vxlanLease(hB.underlayIP, macB));
  await nodeC.start();
  const kernelNode = async (h: HostInfo, subnet: string, mac: string): Promise<KernelVxlanNode> => {
    const k = configureKernelVxlanNode({ ns: h.ns, vni: 1, port: 0, localIP: h.underlayIP, underlayDev: h.underlayDev, ownSubnet: subnet, mac, peers: await vxlanPeersOf(c, subnet) });
    setPodMtu(c, h, k.mtu);
    return k;
  };
  const kB = await kernelNode(hB, subnetB, macB);
  t.teardown(() => kB.destroy());
  // A: flanneld's device with its peers, rules and subnet.env; flanneld itself has stopped,
  // which changes nothing in the kernel.
  await kernelNode(hA, subnetA, macA);
  installFlanneldRules(c, hA, subnetA);
  writeFlanneldSubnetEnv(nodeA, c.network, subnetA, 1450);
  const [podA, podB, podC] = [hA.pod.ip, hB.pod.ip, nodeC.podIp!];
  for (const [from, to, what] of [[hB.pod.ns, podA, 'B → A'], [hA.pod.ns, podC, 'A → C'], [hC.pod.ns, podA, 'C → A'], [hB.pod.ns, podC, 'B → C']] as const) {
    t.ok(await reaches(from, to), `before: ${what} through flanneld's kernel VXLAN`);
  }

  // While flanneld still runs on A (here a stand-in process of that name), linend leaves its
  // device alone.
  const dir = mkdtempSync(join(tmpdir(), 'linen-takeover-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  copyFileSync('/bin/sleep', join(dir, 'flanneld'));
  const fake = c.topo.spawn(hA.ns, join(dir, 'flanneld'), ['60'], { stdio: 'ignore' });
  t.teardown(() => { fake.kill('SIGKILL'); });
  await nodeA.start({ wait: false });
  t.ok((await waitFor(() => !nodeA.alive(), 30000, 100)) >= 0, 'linend exits while flanneld runs on A');
  t.match(nodeA.log(), `device flannel.1 belongs to flanneld, which is still running (pid ${fake.pid})`, 'and says why');
  t.equal(linkKind(c, hA, 'flannel.1'), 'vxlan', 'flanneld\'s device untouched');
  fake.kill('SIGKILL');
  await new Promise((r) => (fake.exitCode !== null || fake.signalCode !== null ? r(null) : fake.once('exit', r)));

  // Takeover.
  const fromB = startPinger(t, hB.pod.ns, podA);
  const fromC = startPinger(t, hC.pod.ns, podA);
  await pingersRunning(t, fromB, fromC);
  await nodeA.start();
  t.ok(await reaches(hA.pod.ns, podB) && await reaches(hA.pod.ns, podC), 'after takeover: A reaches B (kernel VXLAN) and C (linen)');
  await sleep(1000);
  const gapB = await fromB.stop();
  const gapC = await fromC.stop();
  t.comment(`takeover gap, kernel VXLAN peer B → A: ${fmtGap(gapB)}`);
  t.comment(`takeover gap, linen peer C → A: ${fmtGap(gapC)}`);
  t.ok(gapB.sent > 0 && gapB.missing < gapB.sent, 'B reaches A again after the takeover');
  t.ok(gapC.sent > 0 && gapC.missing < gapC.sent, 'C reaches A again after the takeover');

  const log = nodeA.log();
  t.comment(`linend on A: ${stepTimes(log, ['Replaced flannel.1', 'Data path up', 'Installed iptables rules', 'Running:'])}`);
  const line = /Replaced flannel\.1 left behind by flanneld: deleted vxlan device \(VNI 1, [^)]*MAC ([0-9a-f:]+)\) with address\(es\) ([^,]+), (\d+) route\(s\) \([^)]*\), (\d+) neighbour entr\w+, (\d+) FDB entr\w+/.exec(log);
  t.ok(line, `linend logs what it removed: ${line?.[0] ?? log.slice(-2000)}`);
  t.same(line?.slice(1), [macA, `${subnetNetworkAddress(subnetA)}/32`, '2', '2', '2'], 'the old device: its MAC, its .0/32 address, 2 routes, 2 neighbours, 2 FDB entries (peers B and C)');
  t.equal(linkKind(c, hA, 'flannel.1'), 'tun', 'flannel.1 on A is now linen\'s TUN');
  t.equal(nodeA.subnetEnv()?.['FLANNEL_SUBNET'], `${subnetNetworkAddress(subnetA).replace(/\.0$/, '.1')}/24`, 'A keeps its subnet (subnet.env)');
  t.match(log, `Found lease (ip: ${subnetA}) for current IP (${hA.underlayIP}), reusing`, 'A reused flanneld\'s lease by its PublicIP');
  const la = await leaseOf(c, subnetA, hA.underlayIP);
  t.equal(la.value, vxlanLease(hA.underlayIP, macA), 'A\'s lease keeps flanneld\'s VtepMAC, so B\'s FDB and neighbour entries stay valid');
  t.equal(la.sameIp, 1, 'one lease for A\'s PublicIP');
  const ingress = Metrics.parse((await nodeA.http('/metrics')).body).verdicts('ingress');
  t.ok((ingress['forwarded'] ?? 0) > 0 && ingress['wrong_mac'] === 0, `linend on A forwarded B's frames addressed to the old VtepMAC, none dropped for their MAC (${JSON.stringify(ingress)})`);
  checkRulesOnce(t, c, hA, subnetA, 'linend on A');

  // Rollback: linend stops, flanneld starts. Its new device gets a new random MAC, which it
  // publishes; B's flanneld (emulated) and C's linend update their entries from the watch.
  const backB = startPinger(t, hB.pod.ns, podA);
  const backC = startPinger(t, hC.pod.ns, podA);
  await pingersRunning(t, backB, backC);
  t.equal(await nodeA.stop('SIGTERM'), 0, 'linend on A exits 0');
  t.equal(linkKind(c, hA, 'flannel.1'), null, 'flannel.1 gone with linend');
  const macA2 = formatMAC(randomVtepMAC());
  const kA = await kernelNode(hA, subnetA, macA2);
  t.teardown(() => kA.destroy());
  await putFlannelLease(c, subnetA, vxlanLease(hA.underlayIP, macA2));
  installFlanneldRules(c, hA, subnetA);
  writeFlanneldSubnetEnv(nodeA, c.network, subnetA, kA.mtu);
  kB.addPeer(kA.asPeer());
  t.ok(await reaches(hA.pod.ns, podB) && await reaches(hA.pod.ns, podC), 'after rollback: A (flanneld) reaches B and C');
  t.ok(await reaches(hB.pod.ns, podA) && await reaches(hC.pod.ns, podA), 'after rollback: B and C reach A');
  await sleep(1000);
  const rbB = await backB.stop();
  const rbC = await backC.stop();
  t.comment(`rollback gap, kernel VXLAN peer B → A: ${fmtGap(rbB)}`);
  t.comment(`rollback gap, linen peer C → A: ${fmtGap(rbC)}`);
  checkRulesOnce(t, c, hA, subnetA, 'flanneld back on A');
  t.equal((await leaseOf(c, subnetA, hA.underlayIP)).sameIp, 1, 'still one lease for A\'s PublicIP');
});

t.test('udp: linend takes over a flanneld-UDP node and hands it back', async (t) => {
  const c = await buildThree(t, 'udp');
  const [hA, hB, hC] = [c.topo.hosts[0]!, c.topo.hosts[1]!, c.topo.hosts[2]!];
  const [nodeA, nodeC] = [c.nodes[0]!, c.nodes[2]!];
  const [subnetA, subnetB] = [hA.podSubnet, hB.podSubnet];
  await putFlannelLease(c, subnetA, udpLease(hA.underlayIP));
  await putFlannelLease(c, subnetB, udpLease(hB.underlayIP));
  await nodeC.start();
  const subnetC = `${nodeC.subnetEnv()!['FLANNEL_SUBNET']!.replace(/\.1\/24$/, '.0')}/24`;
  const [podA, podB, podC] = [hA.pod.ip, hB.pod.ip, nodeC.podIp!];

  // flanneld's UDP backend (test/fixtures/udp-peer.py: flannel0 opened as flanneld opens it),
  // with flannel0 configured as flanneld configures it.
  const flanneldUdp = async (h: HostInfo, subnet: string, peers: [string, string][]): Promise<{ stop(): Promise<void> }> => {
    // flanneld configures flannel0 before it reads its socket; the fixture reads at once and
    // exits on EIO from a TUN that is not up yet, so datagrams wait outside until it is.
    const hold = ['INPUT', '-p', 'udp', '--dport', '8285', '-j', 'DROP'];
    c.topo.exec(h.ns, 'iptables', ['--wait', '-I', ...hold]);
    const p = c.topo.spawn(h.ns, 'python3', [UDP_PEER, '--tun', 'flannel0', '--bind', h.underlayIP, '--port', '8285', '--mtu', '1472',
      ...peers.flatMap(([s, ip]) => ['--peer', `${s}=${ip}`]), '--duration', '110'], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => { p.kill('SIGKILL'); });
    let out = '';
    p.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    if ((await waitFor(() => out.includes('"ready"') || p.exitCode !== null, 15000, 50)) < 0 || p.exitCode !== null) throw new Error(`udp peer on ${h.ns} did not start: ${out}`);
    c.topo.ip(h.ns, 'addr', 'add', `${subnetNetworkAddress(subnet)}/32`, 'dev', 'flannel0');
    c.topo.ip(h.ns, 'link', 'set', 'dev', 'flannel0', 'mtu', '1472', 'up');
    c.topo.ip(h.ns, 'route', 'add', c.network, 'dev', 'flannel0');
    setPodMtu(c, h, 1472);
    c.topo.exec(h.ns, 'iptables', ['--wait', '-D', ...hold]);
    return { stop: async () => { p.kill('SIGTERM'); await exited; } };
  };
  const peersOf = (self: string): [string, string][] => ([[subnetA, hA.underlayIP], [subnetB, hB.underlayIP], [subnetC, hC.underlayIP]] as [string, string][]).filter(([s]) => s !== self);
  await flanneldUdp(hB, subnetB, peersOf(subnetB));
  const flanneldA = await flanneldUdp(hA, subnetA, peersOf(subnetA));
  installFlanneldRules(c, hA, subnetA);
  writeFlanneldSubnetEnv(nodeA, c.network, subnetA, 1472);
  for (const [from, to, what] of [[hB.pod.ns, podA, 'B → A'], [hA.pod.ns, podC, 'A → C'], [hC.pod.ns, podA, 'C → A']] as const) {
    t.ok(await reaches(from, to), `before: ${what} through flanneld-UDP`);
  }

  // While flanneld runs, its flannel0 is a TUN held open: linend refuses to touch it.
  await nodeA.start({ wait: false });
  t.ok((await waitFor(() => !nodeA.alive(), 30000, 100)) >= 0, 'linend exits while flanneld still holds flannel0');
  t.match(nodeA.log(), /device flannel0 already exists and is a TUN that a running process holds open/, 'and says why');
  t.ok(await reaches(hB.pod.ns, podA), 'flanneld on A still forwards');

  const fromB = startPinger(t, hB.pod.ns, podA);
  const fromC = startPinger(t, hC.pod.ns, podA);
  await pingersRunning(t, fromB, fromC);
  await flanneldA.stop();
  t.equal(linkKind(c, hA, 'flannel0'), null, 'flanneld-UDP leaves no device: flannel0 (not persistent) went with it');
  await nodeA.start();
  t.ok(await reaches(hA.pod.ns, podB) && await reaches(hA.pod.ns, podC), 'after takeover: A reaches B (flanneld-UDP) and C (linen)');
  await sleep(1000);
  const gapB = await fromB.stop();
  const gapC = await fromC.stop();
  t.comment(`takeover gap (flanneld stopped → linend forwarding), flanneld-UDP peer B → A: ${fmtGap(gapB)}`);
  t.comment(`takeover gap, linen peer C → A: ${fmtGap(gapC)}`);
  t.ok(gapB.missing < gapB.sent && gapC.missing < gapC.sent, 'B and C reach A again');
  t.comment(`linend on A: ${stepTimes(nodeA.log(), ['starting', 'Data path up', 'Installed iptables rules', 'Running:'])}`);
  t.equal(nodeA.subnetEnv()?.['FLANNEL_SUBNET'], `${subnetNetworkAddress(subnetA).replace(/\.0$/, '.1')}/24`, 'A keeps its subnet');
  const la = await leaseOf(c, subnetA, hA.underlayIP);
  t.equal(la.value, udpLease(hA.underlayIP), 'A\'s lease as flanneld wrote it');
  t.equal(la.sameIp, 1, 'one lease for A\'s PublicIP');
  checkRulesOnce(t, c, hA, subnetA, 'linend on A');

  // A persistent flannel0 (left by `ip tuntap add`, say) is replaced, not attached to.
  await nodeA.stop('SIGTERM');
  c.topo.ip(hA.ns, 'tuntap', 'add', 'dev', 'flannel0', 'mode', 'tun');
  await nodeA.start();
  t.match(nodeA.log(), /Replaced flannel0 left behind by flanneld: deleted tun device \(tun, persistent\)/, 'a persistent flannel0 is deleted and logged');
  t.ok(await reaches(hB.pod.ns, podA), 'B reaches A through linend');

  // Rollback: linend stops (its flannel0 and rules go), flanneld starts.
  const backB = startPinger(t, hB.pod.ns, podA);
  const backC = startPinger(t, hC.pod.ns, podA);
  await pingersRunning(t, backB, backC);
  t.equal(await nodeA.stop('SIGTERM'), 0, 'linend on A exits 0');
  t.equal(linkKind(c, hA, 'flannel0'), null, 'flannel0 gone with linend: flanneld gets flannel0, not flannel1');
  await flanneldUdp(hA, subnetA, peersOf(subnetA));
  await putFlannelLease(c, subnetA, udpLease(hA.underlayIP));
  installFlanneldRules(c, hA, subnetA);
  t.ok(await reaches(hA.pod.ns, podB) && await reaches(hA.pod.ns, podC), 'after rollback: A (flanneld-UDP) reaches B and C');
  await sleep(1000);
  const rbB = await backB.stop();
  const rbC = await backC.stop();
  t.comment(`rollback gap, flanneld-UDP peer B → A: ${fmtGap(rbB)}`);
  t.comment(`rollback gap, linen peer C → A: ${fmtGap(rbC)}`);
  checkRulesOnce(t, c, hA, subnetA, 'flanneld back on A');
});
