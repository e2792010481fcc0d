// Bad input from the network: a sender in a third namespace on the underlay floods host 1's
// VXLAN port with random bytes, truncated headers, bad flags, wrong VNIs, wrong MACs, non-IPv4
// frames, broken inner headers, spoofed senders and inner sources (with a raw socket posing as
// host 2) and oversized datagrams, from two flooder processes as fast as they can, while checksummed
// transfers between the two pods run. linend must not crash, its memory must stay flat, every
// bad datagram must be counted by reason in /metrics (or have been dropped by the kernel before
// linend saw it, which the kernel's own counters show), and the transfers must complete intact.
//
// LINEN_LONG_TESTS=1: 30 s of flood instead of 8 s.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildCluster, ETCD_PREFIX, type Cluster } from '../../lab/cluster.js';
import { startBounded } from '../../lab/traffic.js';
import { transfer, type TransferResult } from '../../lab/transfer.js';
import { LONG, delta, fdDiff, fdsAtRest, linkDrops, metrics, pidOf, rssKiB, snmp, bothWays } from '../helpers/reliability.js';
import { SIDE_EVENT_VERDICTS } from '../../src/dataplane/verdicts.js';

const FLOOD_S = LONG ? 30 : 8;
const FLOODER = fileURLToPath(new URL('../fixtures/flood.py', import.meta.url));

// What each category of the flooder must be counted as (test/fixtures/flood.py).
const EXPECT: Record<string, string> = {
  random: 'bad_vxlan_flags', truncated: 'malformed', bad_flags: 'bad_vxlan_flags', wrong_vni: 'wrong_vni', wrong_mac: 'wrong_mac',
  not_ipv4: 'not_ipv4', bad_ip: 'malformed', spoofed_sender: 'spoofed', oversized: 'bad_vxlan_flags', spoofed_inner: 'spoofed',
};
// (flood.py's ttl_expired category is left out: in VXLAN mode linen, like the kernel's VXLAN
// device, does not touch the inner TTL; host 1's IP forwarding expires such packets itself.)
/** Verdicts that are not drops: forwarded and the side events (linen_events_total). */
const NOT_DROPS = new Set<string>(['forwarded', ...SIDE_EVENT_VERDICTS]);

t.setTimeout((LONG ? 240 : 150) * 1000);

let c: Cluster;
t.before(async () => {
  c = await buildCluster({ hosts: 2, backend: 'vxlan' });
});
t.teardown(() => c?.destroy());

t.test(`${FLOOD_S} s flood of bad VXLAN datagrams during transfers: no crash, flat memory, every datagram counted by reason, transfers intact`, async (t) => {
  const [a, b] = c.nodes;
  const topo = c.topo;
  const id = topo.id;
  // The flooder: a third namespace with a veth into the underlay bridge.
  const fl = `${id}-fl`;
  topo.addNamespace(fl);
  const x = topo.underlayNet.split('.')[2];
  topo.ip(fl, 'link', 'add', `${id}-f`, 'type', 'veth', 'peer', 'name', `${id}-bf`, 'netns', topo.bridgeNs!);
  topo.ip(topo.bridgeNs!, 'link', 'set', `${id}-bf`, 'master', `${id}-br`);
  topo.ip(topo.bridgeNs!, 'link', 'set', `${id}-bf`, 'up');
  topo.ip(fl, 'addr', 'add', `192.168.${x}.200/24`, 'dev', `${id}-f`);
  topo.ip(fl, 'link', 'set', `${id}-f`, 'up');

  const ownKey = `${ETCD_PREFIX}/subnets/${a.subnetEnv()?.['FLANNEL_SUBNET']?.replace(/\.1\/24$/, '.0-24')}`;
  const lease = JSON.parse(await c.etcd.ctl('get', ownKey, '--print-value-only')) as { BackendData: { VtepMAC: string } };
  const y = c.network.split('.')[1];

  const pid = pidOf(a);
  const fds0 = await fdsAtRest(pid);
  const devs = (): number => {
    const l = [linkDrops(fl, `${id}-f`), linkDrops(topo.bridgeNs!, `${id}-bf`), linkDrops(topo.bridgeNs!, `${id}-b1`), linkDrops(a.host.ns, a.host.underlayDev)];
    return l.reduce((s, d) => s + d.rx + d.tx, 0);
  };
  const softnetDrops = (): number => topo.exec(a.host.ns, 'cat', ['/proc/net/softnet_stat']).trim().split('\n')
    .reduce((s, l) => s + parseInt(l.split(/\s+/)[1] ?? '0', 16), 0);
  const m0 = await metrics(a);
  const snmp0 = snmp(a.host.ns);
  const dev0 = devs();
  const soft0 = softnetDrops();

  // Legitimate traffic: back-to-back 30 MB transfers from pod 2 to pod 1 (into host 1's flooded
  // port) for as long as the flood lasts.
  let flooding = true;
  const transfers: TransferResult[] = [];
  const legit = (async () => {
    while (flooding) transfers.push(await transfer(b.host.pod.ns, a.host.pod.ns, a.podIp!, 30_000_000, 90_000));
  })();

  const floods = [1, 2].map((seed) => startBounded(fl, 'python3', [FLOODER, '--dst', a.host.underlayIP, '--port', '8472', '--vni', '1',
    '--mac', lease.BackendData.VtepMAC, '--inner-dst', a.podIp!, '--inner-src', b.podIp!, '--peer', b.host.underlayIP,
    '--foreign-src', `10.${y}.250.9`, '--only', Object.keys(EXPECT).join(','), '--seed', String(seed),
    '--duration', String(FLOOD_S), '--max', '20000000'], { timeoutMs: FLOOD_S * 1000 + 30_000 }));
  // RSS after warm-up (2 s into the flood), then at the end.
  await sleep(2000);
  const rssWarm = rssKiB(pid);
  let rssMax = rssWarm;
  const sampler = setInterval(() => { try { rssMax = Math.max(rssMax, rssKiB(pid)); } catch { /* exited */ } }, 250);
  const frs = await Promise.all(floods.map((f) => f.done));
  clearInterval(sampler);
  flooding = false;
  await legit;
  await sleep(500); // counters are published every 100 ms
  const rssEnd = rssKiB(pid);

  const report = { sent: {} as Record<string, number>, errors: 0, seconds: 0 };
  for (const fr of frs) {
    t.equal(fr.code, 0, `flooder finished: ${fr.stderr.slice(-300)}`);
    const r = JSON.parse(fr.stdout) as { sent: Record<string, number>; errors: number; seconds: number };
    for (const [k, n] of Object.entries(r.sent)) report.sent[k] = (report.sent[k] ?? 0) + n;
    report.errors += r.errors;
    report.seconds = Math.max(report.seconds, r.seconds);
  }
  const sentTotal = Object.values(report.sent).reduce((s, n) => s + n, 0);
  t.ok(a.alive() && b.alive(), 'linend kept running on both hosts');
  t.ok(transfers.length >= 1 && transfers.every((r) => r.received === r.sent), `${transfers.length} transfers of 30 MB pod 2 -> pod 1 during the flood, all checksums match`);

  const m1 = await metrics(a);
  const got = delta(m0.verdicts('ingress'), m1.verdicts('ingress'));
  const s1 = snmp(a.host.ns);
  const kernel = {
    udpInErrors: s1['Udp.InErrors']! - snmp0['Udp.InErrors']!, // includes RcvbufErrors and InCsumErrors
    udpRcvbufErrors: s1['Udp.RcvbufErrors']! - snmp0['Udp.RcvbufErrors']!,
    ipReasmFails: s1['Ip.ReasmFails']! - snmp0['Ip.ReasmFails']!,
    ipInDiscards: s1['Ip.InDiscards']! - snmp0['Ip.InDiscards']!,
    linkDrops: devs() - dev0,
    softnetDrops: softnetDrops() - soft0,
  };
  const kernelDrops = Object.entries(kernel).filter(([k]) => k !== 'udpRcvbufErrors').reduce((s, [, v]) => s + v, 0);

  // Per verdict: what the flooder sent for it, what linen counted.
  const want: Record<string, number> = {};
  for (const [cat, n] of Object.entries(report.sent)) want[EXPECT[cat]!] = (want[EXPECT[cat]!] ?? 0) + n;
  const counted = Object.entries(got).filter(([v]) => !NOT_DROPS.has(v)).reduce((s, [, n]) => s + n, 0);
  t.comment(`sent by category: ${JSON.stringify(report.sent)} (${sentTotal} in ${report.seconds} s, ${Math.round(sentTotal / report.seconds)}/s, send errors ${report.errors})`);
  t.comment(`linen counted (ingress): ${JSON.stringify(got)}`);
  t.comment(`kernel drops before linen: ${JSON.stringify(kernel)}`);
  for (const [v, n] of Object.entries(want)) {
    t.ok((got[v] ?? 0) <= n, `${v}: counted ${got[v] ?? 0} <= sent ${n} (nothing else counted as ${v})`);
    t.ok((got[v] ?? 0) >= n - kernelDrops, `${v}: counted ${got[v] ?? 0} >= sent ${n} - kernel drops ${kernelDrops}`);
  }
  t.same(Object.keys(got).filter((v) => !NOT_DROPS.has(v) && !(v in want)), [], 'no drop reason that the flood did not ask for');
  t.ok(counted <= sentTotal && counted + kernelDrops >= sentTotal,
    `the numbers add up: ${counted} counted + ${kernelDrops} dropped by the kernel >= ${sentTotal} sent >= ${counted} counted`);
  if (kernelDrops === 0) t.equal(counted, sentTotal, 'no kernel drops: every datagram counted');
  t.equal(got['icmp_sent'] ?? 0, 0, 'linen answered none of it (no ICMP to reflect at anyone)');
  const ioErrors = (op: string): number => m1.get('linen_io_errors_total', { op }) - m0.get('linen_io_errors_total', { op });
  const io = { send_errors: ioErrors('udp_sends'), tun_write_errors: ioErrors('tun_writes') };
  t.same(io, { send_errors: 0, tun_write_errors: 0 }, 'no send or TUN write errors');

  const growth = (rssEnd - rssWarm) / rssWarm;
  t.ok(growth < 0.2, `RSS ${(rssWarm / 1024).toFixed(1)} MiB after warm-up, ${(rssEnd / 1024).toFixed(1)} MiB at the end (max ${(rssMax / 1024).toFixed(1)}): ${(growth * 100).toFixed(1)}% growth`);
  const fds = await fdsAtRest(pid);
  t.equal(fds.count, fds0.count, `open descriptors at rest unchanged (${fds0.count} -> ${fds.count}: ${fdDiff(fds0.targets, fds.targets)})`);
  t.equal(m1.get('linen_worker_restarts_total'), 0, 'no worker restarted');
  t.ok(await bothWays(c, 0, 1), 'pods reach each other after the flood');
  t.comment(`figures: flood_s=${report.seconds} sent=${sentTotal} rate_per_s=${Math.round(sentTotal / report.seconds)} counted=${counted} kernel_drops=${kernelDrops} rcvbuf_errors=${kernel.udpRcvbufErrors} rss_warm_kib=${rssWarm} rss_end_kib=${rssEnd} rss_growth_pct=${(growth * 100).toFixed(1)} transfers=${transfers.length} icmp_sent=${got['icmp_sent'] ?? 0} icmp_rate_limited=${got['icmp_rate_limited'] ?? 0}`);
});
