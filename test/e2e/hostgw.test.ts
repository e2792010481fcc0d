// flannel's host-gw backend and VXLAN DirectRouting in linend, on a cluster whose
// underlay has two IP subnets: hosts 1, 2 (and 4) on 192.168.x.0/24, host 3 on 172.31.x.0/24,
// with the bridge namespace routing between them (a router on a stick: host 3 is reached
// through a gateway, so it is not "directly connected" in flanneld's sense). A flanneld node
// is emulated as interop.test.ts does: its lease written by etcdctl byte for byte as flanneld
// writes it, and the routes (host-gw) or kernel VXLAN device and direct routes
// (DirectRouting) that flanneld would set up from the other nodes' leases.
import t, { type Test } from 'tap';
import { buildCluster, ETCD_PREFIX, HEALTH_PORT, startHttpProber, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import { putMany } from '../../lab/etcd.js';
import { configureKernelVxlanNode } from '../../lab/kernel.js';
import { hostGwFakeLeases, leaseKey, putFlannelLease, WIDE_NETWORK } from '../../lab/leases.js';
import { ping } from '../../lab/traffic.js';
import { Metrics, waitFor } from '../helpers/reliability.js';

async function cluster(t: Test, hosts: number): Promise<Cluster> {
  const c = await buildCluster({ hosts, backend: 'udp', start: false });
  t.teardown(() => c.destroy());
  return c;
}

async function putConfig(c: Cluster, backend: Record<string, unknown>): Promise<void> {
  await c.etcd.ctl('put', `${ETCD_PREFIX}/config`, JSON.stringify({ Network: c.network, Backend: backend }));
}

/** Moves host i onto a second underlay subnet behind the bridge namespace, which routes. */
function behindRouter(c: Cluster, i: number): string {
  const topo = c.topo;
  const br = topo.bridgeNs!;
  const far = `172.31.${topo.underlayNet.split('.')[2]}`;
  const router = topo.serviceAddress();
  topo.ip(br, 'addr', 'add', `${far}.254/24`, 'dev', `${topo.id}-br`);
  topo.exec(br, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.send_redirects=0', `net.ipv4.conf.${topo.id}-br.send_redirects=0`]);
  const h = topo.hosts[i]!;
  const addr = `${far}.${i + 1}`;
  topo.ip(h.ns, 'addr', 'del', h.underlayCidr, 'dev', h.underlayDev);
  topo.ip(h.ns, 'addr', 'add', `${addr}/24`, 'dev', h.underlayDev);
  topo.ip(h.ns, 'route', 'replace', 'default', 'via', `${far}.254`);
  for (const o of topo.hosts) if (o !== h) topo.ip(o.ns, 'route', 'replace', `${far}.0/24`, 'via', router);
  return addr;
}

async function leases(c: Cluster): Promise<Map<string, string>> {
  const lines = (await c.etcd.ctl('get', '--prefix', `${ETCD_PREFIX}/subnets`)).trim().split('\n').filter(Boolean);
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) m.set(lines[i]!.slice(lines[i]!.lastIndexOf('/') + 1).replace('-', '/'), lines[i + 1]!);
  return m;
}

/** The subnet a linen node leased (from its subnet.env). */
function subnetOf(n: ClusterNode): string {
  const m = /^(\d+\.\d+\.\d+)\.1\/24$/.exec(n.subnetEnv()?.['FLANNEL_SUBNET'] ?? '');
  if (!m) throw new Error(`host ${n.index + 1}: no FLANNEL_SUBNET`);
  return `${m[1]}.0/24`;
}

async function freeSubnet(c: Cluster): Promise<string> {
  const y = c.network.split('.')[1];
  const taken = await leases(c);
  for (let z = 200; z < 255; z++) if (!taken.has(`10.${y}.${z}.0/24`)) return `10.${y}.${z}.0/24`;
  throw new Error('out of subnets');
}

function addressPod(c: Cluster, i: number, subnet: string, mtu: number): string {
  const h = c.topo.hosts[i]!;
  const base = subnet.replace(/\.0\/24$/, '');
  c.topo.ip(h.ns, 'addr', 'flush', 'dev', h.podGatewayDev);
  c.topo.ip(h.ns, 'addr', 'add', `${base}.1/24`, 'dev', h.podGatewayDev);
  c.topo.ip(h.ns, 'link', 'set', 'dev', h.podGatewayDev, 'mtu', String(mtu));
  c.topo.ip(h.pod.ns, 'addr', 'flush', 'dev', h.pod.dev);
  c.topo.ip(h.pod.ns, 'link', 'set', 'dev', h.pod.dev, 'mtu', String(mtu));
  c.topo.ip(h.pod.ns, 'addr', 'add', `${base}.2/24`, 'dev', h.pod.dev);
  c.topo.ip(h.pod.ns, 'route', 'replace', 'default', 'via', `${base}.1`);
  return `${base}.2`;
}

async function metrics(n: ClusterNode): Promise<Metrics> {
  return Metrics.parse((await n.http('/metrics')).body);
}

/** The kernel's route to `subnet` in host i's namespace ('' when none). */
const kernelRoute = (c: Cluster, i: number, subnet: string): string => c.topo.ip(c.topo.hosts[i]!.ns, 'route', 'show', 'exact', subnet).trim();

t.test('host-gw: adjacent linen and flanneld nodes route to each other; the node behind a router is refused', async (t) => {
  const c = await cluster(t, 4);
  await putConfig(c, { Type: 'host-gw' });
  const farIp = behindRouter(c, 2);
  const [n1, n2, n3] = [c.nodes[0]!, c.nodes[1]!, c.nodes[2]!];
  const h = c.topo.hosts;
  for (const n of [n1, n2, n3]) await n.start();
  const [s1, s2, s3] = [subnetOf(n1), subnetOf(n2), subnetOf(n3)];

  // Lease and subnet.env exactly as flanneld's host-gw writes them; no overlay device.
  const all = await leases(c);
  t.equal(all.get(s1), `{"PublicIP":"${h[0]!.underlayIP}","PublicIPv6":null,"BackendType":"host-gw"}`, `lease ${s1}: ${all.get(s1)}`);
  t.equal(all.get(s3), `{"PublicIP":"${farIp}","PublicIPv6":null,"BackendType":"host-gw"}`);
  t.equal(n1.subnetEnv()?.['FLANNEL_MTU'], String(c.topo.underlayMtu), 'FLANNEL_MTU is the interface MTU');
  const links = c.topo.ip(h[0]!.ns, '-o', 'link', 'show');
  t.notMatch(links, /flannel/, 'no flannel0 or flannel.N device');

  // host-gw behind NAT (a PublicIP other than the interface's) is refused at start, as flanneld.
  const n4 = c.nodes[3]!;
  await n4.start({ wait: false, args: [`--public-ip=${c.topo.underlayNet.replace(/\.0\/24$/, '.77')}`] });
  const exited = await waitFor(() => !n4.alive(), 30000, 100);
  t.ok(exited >= 0, `linend with --public-ip ≠ interface address exits (${exited} ms)`);
  t.match(n4.log(), /differs from the interface IP .* NAT, which is not supported by the host-gw backend/, 'with flanneld\'s reason');

  // Host 4 as a flanneld host-gw node: lease by etcdctl, pod, routes to the adjacent nodes.
  const s4 = await freeSubnet(c);
  await putFlannelLease(c, s4, `{"PublicIP":"${h[3]!.underlayIP}","PublicIPv6":null,"BackendType":"host-gw"}`);
  const pod4 = addressPod(c, 3, s4, c.topo.underlayMtu);
  for (const [s, i] of [[s1, 0], [s2, 1]] as const) c.topo.ip(h[3]!.ns, 'route', 'replace', s, 'via', h[i]!.underlayIP, 'dev', h[3]!.underlayDev);

  const routed = await waitFor(() => kernelRoute(c, 0, s4) !== '', 10000, 100);
  t.ok(routed >= 0, `host 1 routes the flanneld node's ${s4} (${kernelRoute(c, 0, s4)}) after ${routed} ms`);
  t.equal(kernelRoute(c, 0, s2), `${s2} via ${h[1]!.underlayIP} dev ${h[0]!.underlayDev}`, 'the route is S via PublicIP on the external interface');
  t.equal(kernelRoute(c, 0, s3), '', 'no route at all to the node behind the router');
  t.match(n1.log(), new RegExp(`Ignoring lease \\S+/${s3.replace('/', '-').replace(/\./g, '\\.')}: its PublicIP ${farIp.replace(/\./g, '\\.')} is not on a directly connected network: it is reached through the gateway`),
    'host 1 says why host 3 is refused');
  t.match(n3.log(), /is not on a directly connected network/, 'and host 3 refuses the others');
  t.equal(kernelRoute(c, 2, s1), '', 'host 3 has no route to host 1\'s pods');

  for (const [from, to, what] of [[0, n2.podIp, 'linen 1 → linen 2'], [1, n1.podIp, 'linen 2 → linen 1'], [0, pod4, 'linen 1 → flanneld 4'], [3, n1.podIp, 'flanneld 4 → linen 1'], [3, n2.podIp, 'flanneld 4 → linen 2']] as const) {
    const p = await ping({ from: h[from]!.pod, to: to ?? '' });
    t.ok(p.ok, `ping ${what}: ${p.received}/3${p.ok ? '' : `\n${p.out}`}`);
  }
  const p13 = await ping({ from: h[0]!.pod, to: n3.podIp ?? '', count: 1 });
  t.notOk(p13.ok, 'host 3\'s pods are not reachable from host 1 (refused, not half-routed)');

  const m = await metrics(n1);
  t.equal(m.find('linen_peers'), 2, 'linen_peers: hosts 2 and 4');
  t.equal(m.find('linen_direct_routes'), 2, 'two direct routes (hosts 2 and 4)');
  t.equal(m.find('linen_leases_refused_total', { reason: 'not_adjacent' }), 1, 'one not_adjacent refusal');
  t.equal(m.find('linen_packets_total'), undefined, 'no packet counters: the kernel forwards');

  // Someone deletes a route: the 10 s check puts it back and counts it.
  c.topo.ip(h[0]!.ns, 'route', 'del', s2);
  const back = await waitFor(() => kernelRoute(c, 0, s2) !== '', 30000, 200);
  t.ok(back >= 0, `the deleted route to ${s2} is back after ${back} ms (check every 10 s)`);
  t.equal((await metrics(n1)).find('linen_routes_restored_total'), 1, 'linen_routes_restored_total 1');
  t.match(n1.log(), new RegExp(`Route recovered ${s2.replace(/\./g, '\\.')} via`));

  // The flanneld node's lease goes: so does its route.
  await c.etcd.ctl('del', leaseKey(s4));
  const gone = await waitFor(() => kernelRoute(c, 0, s4) === '', 10000, 100);
  t.ok(gone >= 0, `route to ${s4} removed with the lease after ${gone} ms`);
});

t.test('VXLAN DirectRouting: adjacent peers by plain routes, the one behind a router through linen; with a kernel flanneld node', async (t) => {
  const c = await cluster(t, 4);
  await putConfig(c, { Type: 'vxlan', DirectRouting: true });
  const farIp = behindRouter(c, 2);
  const [n1, n2, n3] = [c.nodes[0]!, c.nodes[1]!, c.nodes[2]!];
  const h = c.topo.hosts;
  for (const n of [n1, n2, n3]) await n.start();
  const [s1, s2, s3] = [subnetOf(n1), subnetOf(n2), subnetOf(n3)];
  const all = await leases(c);
  const macOf = (s: string): string => (JSON.parse(all.get(s) ?? '{}') as { BackendData?: { VtepMAC?: string } }).BackendData?.VtepMAC ?? '';

  // Host 4 as flanneld's VXLAN with DirectRouting: kernel flannel.1 with host 3 (behind the
  // router) as a VXLAN peer, plain routes to hosts 1 and 2 (adjacent), its vxlan lease.
  const s4 = await freeSubnet(c);
  const kernel = configureKernelVxlanNode({
    ns: h[3]!.ns, localIP: h[3]!.underlayIP, underlayDev: h[3]!.underlayDev, ownSubnet: s4,
    peers: [{ subnet: s3, publicIP: farIp, vtepMAC: macOf(s3) }],
  });
  t.teardown(() => kernel.destroy());
  for (const [s, i] of [[s1, 0], [s2, 1]] as const) c.topo.ip(h[3]!.ns, 'route', 'replace', s, 'via', h[i]!.underlayIP);
  const leaseId4 = await putFlannelLease(c, s4, `{"PublicIP":"${h[3]!.underlayIP}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${kernel.vtepMAC}"}}`);
  const pod4 = addressPod(c, 3, s4, kernel.mtu);

  const routed = await waitFor(() => kernelRoute(c, 0, s4) !== '', 10000, 100);
  t.ok(routed >= 0, `host 1 routes the kernel node's ${s4} directly after ${routed} ms`);
  t.equal(kernelRoute(c, 0, s2), `${s2} via ${h[1]!.underlayIP} dev ${h[0]!.underlayDev}`, 'adjacent linen peer: S via PublicIP');
  t.equal(kernelRoute(c, 0, s4), `${s4} via ${h[3]!.underlayIP} dev ${h[0]!.underlayDev}`, 'adjacent kernel peer: S via PublicIP');
  t.equal(kernelRoute(c, 0, s3), '', 'the peer behind the router has no direct route (the TUN\'s network route carries it)');
  const m1 = await metrics(n1);
  t.same(m1.routes(), [`${s3} via ${farIp}`], 'linen\'s data plane holds only the routed peer');
  t.equal(m1.find('linen_peers_direct'), 2);
  t.equal((await metrics(n3)).find('linen_peers_direct'), 0, 'host 3 has no adjacent peer');

  const egress = async (n: ClusterNode): Promise<number> => {
    await n.http('/metrics');
    return (await metrics(n)).get('linen_packets_total', { direction: 'egress' });
  };
  const pings = async (what: string, from: number, to: string): Promise<void> => {
    const p = await ping({ from: h[from]!.pod, to, count: 5 });
    t.ok(p.ok, `ping ${what}: ${p.received}/5${p.ok ? '' : `\n${p.out}`}`);
  };
  let before = await egress(n1);
  await pings('linen 1 → linen 2 (direct)', 0, n2.podIp ?? '');
  await pings('linen 1 → kernel 4 (direct)', 0, pod4);
  await pings('kernel 4 → linen 1 (direct)', 3, n1.podIp ?? '');
  let after = await egress(n1);
  t.equal(after - before, 0, `host 1's data plane saw none of the direct traffic (egress packets ${before} → ${after})`);
  before = after;
  await pings('linen 1 → linen 3 (VXLAN through the router)', 0, n3.podIp ?? '');
  after = await egress(n1);
  t.ok(after - before >= 5, `host 1's data plane encapsulated the routed traffic (${after - before} egress packets for 5 pings)`);
  await pings('kernel 4 → linen 3 (kernel VXLAN ↔ linen VXLAN through the router)', 3, n3.podIp ?? '');
  await pings('linen 3 → kernel 4', 2, pod4);

  // The kernel node's lease moves behind the router (a new PublicIP): host 1 moves its route
  // from the kernel into the data plane, and back when the lease comes back. (A live linend's
  // lease cannot be edited this way: its owner writes it back.)
  const moved = `172.31.${c.topo.underlayNet.split('.')[2]}.14`;
  const lease4 = (publicIP: string): string => `{"PublicIP":"${publicIP}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${kernel.vtepMAC}"}}`;
  await c.etcd.ctl('put', `--lease=${leaseId4}`, leaseKey(s4), lease4(moved));
  const wentRouted = await waitFor(async () => kernelRoute(c, 0, s4) === '' && (await metrics(n1)).routes().includes(`${s4} via ${moved}`), 10000, 100);
  t.ok(wentRouted >= 0, `a PublicIP change behind the router moves ${s4} from the kernel route into the data plane (${wentRouted} ms)`,
    wentRouted >= 0 ? {} : { diag: { route: kernelRoute(c, 0, s4), routes: (await metrics(n1)).routes() } });
  await c.etcd.ctl('put', `--lease=${leaseId4}`, leaseKey(s4), lease4(h[3]!.underlayIP));
  const wentDirect = await waitFor(async () => kernelRoute(c, 0, s4) !== '' && !(await metrics(n1)).routes().some((r) => r.startsWith(s4)), 10000, 100);
  t.ok(wentDirect >= 0, `and back: direct again (${wentDirect} ms)`);
  const p = await ping({ from: h[0]!.pod, to: pod4, count: 3 });
  t.ok(p.ok, `ping linen 1 → kernel 4 after the moves: ${p.received}/3`);
});

t.test('UDP with DirectRouting (a linen extension): the same split', async (t) => {
  const c = await cluster(t, 3);
  await putConfig(c, { Type: 'udp', DirectRouting: true });
  behindRouter(c, 2);
  const [n1, n2, n3] = [c.nodes[0]!, c.nodes[1]!, c.nodes[2]!];
  const h = c.topo.hosts;
  for (const n of [n1, n2, n3]) await n.start();
  t.equal(kernelRoute(c, 0, subnetOf(n2)), `${subnetOf(n2)} via ${h[1]!.underlayIP} dev ${h[0]!.underlayDev}`);
  t.equal(kernelRoute(c, 0, subnetOf(n3)), '');
  for (const [from, to] of [[0, n2.podIp], [0, n3.podIp], [2, n2.podIp]] as const) {
    const p = await ping({ from: h[from]!.pod, to: to ?? '' });
    t.ok(p.ok, `ping host ${from + 1} → ${to}: ${p.received}/3`);
  }
});

t.test('host-gw at 1,000 peers: every route in the kernel soon after the leases, /healthz answering throughout, a cheap check', async (t) => {
  const c = await cluster(t, 2);
  await c.etcd.ctl('put', `${ETCD_PREFIX}/config`, JSON.stringify({ ...WIDE_NETWORK, Backend: { Type: 'host-gw' } }));
  const n1 = c.nodes[0]!;
  const h = c.topo.hosts[0]!;
  await n1.start();
  const fakes = hostGwFakeLeases(1000, c.topo.underlayNet, subnetOf(n1));
  const routed = (): number => c.topo.ip(h.ns, '-4', 'route', 'show', 'dev', h.underlayDev).split('\n').filter((l) => l.startsWith('10.') && / via /.test(l)).length;
  // From before the write until well after the routing; the goal's bounds are the benchmark's.
  const prober = startHttpProber(h.ns, HEALTH_PORT, '/healthz', 60, 5);
  await new Promise((r) => setTimeout(r, 300));
  putMany(c.topo.bridgeNs!, [c.etcdEndpoint], fakes.map((f) => [f.key, f.value]));
  const after = await waitFor(() => routed() === fakes.length, 60_000, 20);
  t.ok(after >= 0, `all ${fakes.length} routes in the kernel ${after} ms after the write (goal 2 s; ${routed()} now)`);
  const probes = await prober.done;
  const slowest = Math.max(...probes.map((p) => p.sec * 1000));
  t.equal(probes.filter((p) => p.status !== 200).length, 0, `/healthz answered all ${probes.length} probes (slowest ${slowest.toFixed(0)} ms)`);
  const m = await metrics(n1);
  t.equal(m.find('linen_direct_routes'), fakes.length, 'linen_direct_routes');
  t.equal(m.find('linen_route_errors_total'), 0, 'no route refused');
  await new Promise((r) => setTimeout(r, 10_500));
  const checkMs = ((await metrics(n1)).find('linen_route_check_seconds') ?? NaN) * 1000;
  t.ok(checkMs < 500, `the 10 s check of ${fakes.length} routes took ${checkMs.toFixed(2)} ms of linend's main thread (goal 50 ms)`);
});
