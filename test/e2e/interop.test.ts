// linen against things that are not linen, on the wire and in etcd:
//   1. a Linux kernel VXLAN node configured exactly as flanneld configures flannel.1;
//   2. CNI: the flannel plugin's delegation from subnet.env to Debian's bridge + host-local plugins
//      reading linen's subnet.env;
//   3. an independent flanneld-UDP peer (test/fixtures/udp-peer.py, Python stdlib only).
// The foreign node's lease is written to etcd by hand, byte for byte as flanneld writes it,
// with a 24 h etcd lease as flanneld grants. Everything runs in the namespaces of one
// lab/cluster.ts topology and is removed in the test's teardown.
import t, { type Test } from 'tap';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { testCluster } from '../helpers/cluster.js';
import { buildCluster, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import { configureKernelVxlanNode, linkCounters, linkErrorCount } from '../../lab/kernel.js';
import { leaseKey, putFlannelLease } from '../../lab/leases.js';
import { transfer } from '../../lab/transfer.js';
import { ping, type PingResult } from '../../lab/traffic.js';
import { Metrics, etcdLeases, snmp, waitFor } from '../helpers/reliability.js';

const UDP_PEER = fileURLToPath(new URL('../fixtures/udp-peer.py', import.meta.url));
const BRIDGE_CNI = '/usr/lib/cni/bridge';
const CNI_PATH = '/usr/lib/cni';
const MB = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers

interface LeaseAttrs { PublicIP: string; PublicIPv6: null; BackendType?: string; BackendData?: { VNI: number; VtepMAC: string } }

/** linend's own lease: subnet (from its subnet.env) and the attributes it wrote to etcd. */
async function linenLease(c: Cluster, n: ClusterNode): Promise<{ subnet: string; attrs: LeaseAttrs; raw: string }> {
  const m = /^(\d+\.\d+\.\d+)\.1\/24$/.exec(n.subnetEnv()?.['FLANNEL_SUBNET'] ?? '');
  if (!m) throw new Error(`host ${n.index + 1}: no FLANNEL_SUBNET in ${n.subnetFile}`);
  const raw = (await etcdLeases(c)).get(leaseKey(`${m[1]}.0/24`));
  if (!raw) throw new Error(`host ${n.index + 1}: no lease for ${m[1]}.0/24 in etcd`);
  return { subnet: `${m[1]}.0/24`, attrs: JSON.parse(raw) as LeaseAttrs, raw };
}

/** The lowest /24 of the cluster network from SubnetMin (.1.0) that no lease overlaps. */
async function freeSubnet(c: Cluster): Promise<string> {
  const y = c.network.split('.')[1];
  const taken = new Set([...(await etcdLeases(c)).keys()].map((k) => k.slice(k.lastIndexOf('/') + 1)));
  for (let z = 1; z < 255; z++) if (!taken.has(`10.${y}.${z}.0-24`)) return `10.${y}.${z}.0/24`;
  throw new Error('out of subnets');
}

/** Addresses host i's pod in `subnet` (gateway .1 on the host side, pod .2), as attachPod does. */
function addressPod(c: Cluster, i: number, subnet: string, mtu: number): string {
  const h = c.topo.hosts[i]!;
  const base = subnet.replace(/\.0\/24$/, '');
  const gateway = `${base}.1`;
  const pod = `${base}.2`;
  c.topo.ip(h.ns, 'addr', 'flush', 'dev', h.podGatewayDev);
  c.topo.ip(h.ns, 'addr', 'add', `${gateway}/24`, 'dev', h.podGatewayDev);
  c.topo.ip(h.ns, 'link', 'set', 'dev', h.podGatewayDev, 'mtu', String(mtu));
  c.topo.ip(h.pod.ns, 'addr', 'flush', 'dev', h.pod.dev);
  c.topo.ip(h.pod.ns, 'link', 'set', 'dev', h.pod.dev, 'mtu', String(mtu));
  c.topo.ip(h.pod.ns, 'addr', 'add', `${pod}/24`, 'dev', h.pod.dev);
  c.topo.ip(h.pod.ns, 'route', 'replace', 'default', 'via', gateway);
  return pod;
}

/** Waits until linend on `n` has a data-plane route to `subnet` via `publicIP` (its /metrics). */
async function waitPeerRoute(n: ClusterNode, subnet: string, publicIP: string, timeoutMs = 5000): Promise<boolean> {
  const line = `linen_peer_route{subnet="${subnet}",public_ip="${publicIP}"} 1`;
  return (await waitFor(async () => (await n.http('/metrics')).body.includes(line), timeoutMs, 100)) >= 0;
}

function run(cmd: string, args: string[], timeoutMs: number, opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', env: opts.env, maxBuffer: 16 * MB }, (e, stdout, stderr) => {
      const code = e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Lines of a tshark capture in `ns`: start it, wait until it captures, run `during`, stop it. */
async function capture(t: Test, ns: string, dev: string, filter: string, during: () => Promise<void>): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'linen-interop-pcap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'capture.pcapng');
  // -a duration and -c bound the capture even if the stop below never happens.
  const child = spawn('ip', ['netns', 'exec', ns, 'tshark', '-q', '-n', '-i', dev, '-f', filter, '-a', 'duration:30', '-c', '2000', '-w', file],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const started = (await waitFor(() => /Capturing on/.test(err) || child.exitCode !== null, 15000, 50)) >= 0;
  if (!started || child.exitCode !== null) throw new Error(`tshark did not start: ${err}`);
  await during();
  await sleep(300);
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
  return file;
}

// ---------------------------------------------------------------------------------------------
// 1. linen VXLAN <-> Linux kernel VXLAN node

/** TCP InCsumErrors of a namespace (/proc/net/snmp): segments its stack dropped for a bad checksum. */
function tcpInCsumErrors(ns: string): number {
  return snmp(ns)['Tcp.InCsumErrors'] ?? 0;
}

const hasEthtool = ['/usr/sbin/ethtool', '/sbin/ethtool', '/usr/bin/ethtool'].some((p) => existsSync(p));

const FRAME_FIELDS = ['ip.src', 'ip.dst', 'ip.ttl', 'udp.dstport', 'vxlan.flags', 'vxlan.vni', 'eth.dst', 'eth.src', 'eth.type', 'ip.proto',
  'tcp.checksum.status', '_ws.malformed'] as const;
type Frame = Record<(typeof FRAME_FIELDS)[number], string[]>;

/** Every frame of a capture, decoded with 8472 as VXLAN; each field: outer value first, then inner. */
function decodeVxlan(pcap: string): Frame[] {
  const out = execFileSync('tshark', ['-n', '-r', pcap, '-d', 'udp.port==8472,vxlan', '-o', 'tcp.check_checksum:TRUE', '-T', 'fields',
    '-E', 'occurrence=a', '-E', 'aggregator=,', ...FRAME_FIELDS.flatMap((f) => ['-e', f])],
  { encoding: 'utf8', timeout: 30000, stdio: ['ignore', 'pipe', 'ignore'] });
  return out.split('\n').filter(Boolean).map((line) => {
    const cols = line.split('\t');
    return Object.fromEntries(FRAME_FIELDS.map((f, i) => [f, cols[i] ? cols[i]!.split(',') : []])) as Frame;
  });
}

t.test('vxlan: linend and a Linux kernel VXLAN node set up as flanneld does', async (t) => {
  const c = await testCluster(t, { hosts: 2, backend: 'vxlan', start: false });
  const [h1, h2] = [c.topo.hosts[0]!, c.topo.hosts[1]!];
  const linen = c.nodes[0]!;
  await linen.start();
  const own = await linenLease(c, linen);
  t.equal(own.attrs.BackendType, 'vxlan', `linen's lease: ${own.raw}`);
  const linenMac = own.attrs.BackendData?.VtepMAC ?? '';

  // Host 2 as a flanneld VXLAN node: device first (its MAC is the VtepMAC), then the lease,
  // then the peers it learns from etcd (here: linen's lease, read back from etcd).
  const subnet2 = await freeSubnet(c);
  const kernel = configureKernelVxlanNode({
    ns: h2.ns, vni: 1, port: 0 /* flannel's default: no port attribute, kernel default 8472 */,
    localIP: h2.underlayIP, underlayDev: h2.underlayDev, ownSubnet: subnet2,
    peers: [{ subnet: own.subnet, publicIP: own.attrs.PublicIP, vtepMAC: linenMac }],
  });
  t.teardown(() => kernel.destroy());
  const value = `{"PublicIP":"${h2.underlayIP}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${kernel.vtepMAC}"}}`;
  const leaseId = await putFlannelLease(c, subnet2, value);
  t.match(await c.etcd.ctl('lease', 'timetolive', leaseId, '--keys'), /remaining\(\d+s\).*subnets\/10\.\d+\.\d+\.0-24/, 'the kernel node\'s key is attached to a 24 h etcd lease');
  const pod2 = addressPod(c, 1, subnet2, kernel.mtu);
  const pod1 = linen.podIp ?? '';
  t.ok(await waitPeerRoute(linen, subnet2, h2.underlayIP), `linend installed a route to the kernel node's ${subnet2} from its lease`);

  // Ping both ways and a short TCP exchange, capturing on host 1's underlay.
  const pings: Record<string, PingResult> = {};
  const pcap = await capture(t, h1.ns, h1.underlayDev, 'udp port 8472', async () => {
    pings['linen→kernel'] = await ping({ from: h1.pod, to: pod2 });
    pings['kernel→linen'] = await ping({ from: h2.pod, to: pod1 });
    await transfer(h1.pod.ns, h2.pod.ns, pod2, 256 << 10, 6000).catch(() => null);
  });
  for (const [dir, p] of Object.entries(pings)) {
    t.ok(p.ok, `ping ${dir}: ${p.received}/3 replies${p.ok ? `, reply ttl=${p.ttl}` : `\n${p.out}`}`);
  }

  // What linen put on the wire, decoded by Wireshark's VXLAN dissector (8472 is not its
  // default port, hence -d).
  const frames = decodeVxlan(pcap);
  const fromLinen = frames.filter((f) => f['ip.src'][0] === h1.underlayIP);
  const fromKernel = frames.filter((f) => f['ip.src'][0] === h2.underlayIP);
  t.ok(fromLinen.length >= 6, `captured ${fromLinen.length} frames from linen, ${fromKernel.length} from the kernel node`);
  const ownNet = own.subnet.replace(/\.0\/24$/, '.');
  const bad = fromLinen.filter((f) => !(f['ip.dst'][0] === h2.underlayIP && f['udp.dstport'][0] === '8472' && f['vxlan.flags'][0] === '0x0800' &&
    f['vxlan.vni'][0] === '1' && f['eth.dst'][1] === kernel.vtepMAC && f['eth.src'][1] === linenMac && f['eth.type'][1] === '0x0800' &&
    f['ip.src'][1]?.startsWith(ownNet) && f['_ws.malformed'].length === 0));
  t.same(bad, [], `every frame from linen: to ${h2.underlayIP}:8472, VXLAN flags 0x08 (I), VNI 1, inner dst ${kernel.vtepMAC} (kernel VtepMAC), inner src ${linenMac}, IPv4`);
  const linenTcp = fromLinen.filter((f) => f['ip.proto'][1] === '6');
  t.same(linenTcp.filter((f) => f['tcp.checksum.status'][0] !== '1').length, 0, `linen's ${linenTcp.length} TCP frames carry complete inner TCP checksums`);
  const icmpTtl = (fs: Frame[]): string => [...new Set(fs.filter((f) => f['ip.proto'][1] === '1').map((f) => f['ip.ttl'][1]))].join(', ');
  const kernelTcp = fromKernel.filter((f) => f['ip.proto'][1] === '6');
  const partial = kernelTcp.filter((f) => f['tcp.checksum.status'][0] === '0').length;
  t.equal(icmpTtl(fromLinen), icmpTtl(fromKernel), `inner TTL of ICMP frames as the kernel's (pods send 64): linen ${icmpTtl(fromLinen)}, kernel ${icmpTtl(fromKernel)}`);
  t.comment(`kernel node's TCP frames with an unfinished inner TCP checksum (CHECKSUM_PARTIAL over veth): ${partial} of ${kernelTcp.length}`);

  // Checksummed TCP transfers both ways. First over the veth underlay as it is: the kernel
  // node leaves inner TCP checksums to "hardware" (CHECKSUM_PARTIAL), as between containers or
  // VMs on one host; a kernel VXLAN receiver copes with that.
  const transfers = async (label: string, timeoutMs: number): Promise<void> => {
    const before = tcpInCsumErrors(h1.pod.ns);
    for (const [from, to, ip, what] of [[h1.pod.ns, h2.pod.ns, pod2, 'linen→kernel'], [h2.pod.ns, h1.pod.ns, pod1, 'kernel→linen']] as const) {
      const r = await transfer(from, to, ip, 64 * MB, timeoutMs).catch((e: Error) => e);
      if (r instanceof Error) t.fail(`${label}: 64 MB ${what}: ${r.message}`);
      else t.equal(r.received, r.sent, `${label}: 64 MB ${what}: SHA-256 matches (${(r.bytes * 8 / r.seconds / 1e6).toFixed(0)} Mbit/s)`);
    }
    const csum = tcpInCsumErrors(h1.pod.ns) - before;
    t.equal(csum, 0, `${label}: host 1's pod dropped ${csum} TCP segments with a bad checksum (TcpInCsumErrors) that linen wrote into its TUN`);
  };
  await transfers('veth underlay with checksum offload', 20000);
  // Then with the kernel node finishing every checksum itself before the wire, as a physical
  // NIC delivers it.
  if (hasEthtool) {
    c.topo.exec(h2.ns, 'ethtool', ['-K', h2.underlayDev, 'tx', 'off']);
    await transfers('kernel node with tx checksum offload off', 30000);
  } else {
    t.fail('ethtool is not installed (scripts/setup.sh installs it)');
  }

  const k = linkCounters(h2.ns, kernel.dev);
  t.equal(linkErrorCount(k), 0, `kernel ${kernel.dev}: no errors (rx ${k.rx.packets} packets, ${k.rx.dropped} dropped; tx ${k.tx.packets}, ${k.tx.dropped} dropped)`);
  t.ok(k.rx.packets > 0 && k.tx.packets > 0, `kernel ${kernel.dev}: received and sent packets`);
  const m = Metrics.parse((await linen.http('/metrics')).body);
  const ingress = m.verdicts('ingress');
  t.ok((m.verdicts('egress')['forwarded'] ?? 0) > 0 && (ingress['forwarded'] ?? 0) > 0, 'linen forwarded packets both ways');
  t.comment(`linen counters: ${JSON.stringify({ egress: m.verdicts('egress'), ingress })}`);
  t.ok((ingress['checksum_completed'] ?? 0) > 0, `linen completed the kernel node's partial inner checksums (${ingress['checksum_completed'] ?? 0})`);
  const rejected = Object.fromEntries(['malformed', 'spoofed', 'wrong_vni', 'bad_vxlan_flags', 'wrong_mac', 'not_ipv4'].map((v) => [v, ingress[v] ?? -1]));
  t.same(rejected, { malformed: 0, spoofed: 0, wrong_vni: 0, bad_vxlan_flags: 0, wrong_mac: 0, not_ipv4: 0 }, 'linen rejected none of the kernel\'s frames');
});

// ---------------------------------------------------------------------------------------------
// 2. The flannel CNI plugin against linen's subnet.env

interface CniResult {
  cniVersion: string;
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: { version?: string; address: string; gateway?: string; interface?: number }[];
  routes?: { dst: string; gw?: string }[];
}

// Debian bookworm's containernetworking-plugins no longer ships the flannel plugin (it moved out
// of containernetworking/plugins at v1.0.0) and Debian packages it nowhere else. What that
// plugin does is small and documented: read subnet.env, build a bridge + host-local
// configuration from it, and delegate. The test does that step itself and runs Debian's real
// bridge and host-local plugins, so what is checked is that linen's subnet.env wires a pod the
// way a flannel CNI setup does.
function flannelDelegate(env: Record<string, string>, name: string, ipamDir: string): Record<string, unknown> {
  // host-local wants the network form of FLANNEL_SUBNET (10.5.7.1/24 -> 10.5.7.0/24), as the plugin parses it
  const sn = /^(\d+\.\d+\.\d+)\.\d+\/24$/.exec(env['FLANNEL_SUBNET'] ?? '');
  const subnet = sn ? `${sn[1]}.0/24` : env['FLANNEL_SUBNET'];
  return {
    cniVersion: '0.3.1', name, type: 'bridge',
    // the flannel plugin's defaults, then the delegate options of the standard kube-flannel config
    mtu: Number(env['FLANNEL_MTU']), isGateway: true, ipMasq: env['FLANNEL_IPMASQ'] !== 'true',
    hairpinMode: true, isDefaultGateway: true,
    ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet }]], routes: [{ dst: env['FLANNEL_NETWORK'] }] },
  };
}

t.test('CNI on a linend node: the flannel delegation from subnet.env wires a pod that reaches the other host; DEL cleans up', async (t) => {
  const c = await buildCluster({ hosts: 2, backend: 'udp', start: false });
  // A pod left behind by a failed step is deleted with CNI DEL before the namespaces go.
  let cleanupCni: (() => Promise<unknown>) | null = null;
  t.teardown(async () => {
    await cleanupCni?.().catch(() => null);
    await c.destroy();
  });
  const [h1, h2] = [c.topo.hosts[0]!, c.topo.hosts[1]!];
  const [linen1, linen2] = [c.nodes[0]!, c.nodes[1]!];
  // Host 1's pods come from CNI here: take the topology's stand-in gateway address off, so
  // that cni0 alone owns the subnet's .1.
  c.topo.ip(h1.ns, 'addr', 'flush', 'dev', h1.podGatewayDev);
  await linen1.start({ wait: false });
  t.ok((await waitFor(async () => linen1.alive() && (await linen1.http('/readyz')).status === 200, 60000, 100)) >= 0, `linend on host 1 ready\n${linen1.alive() ? '' : linen1.log()}`);
  await linen2.start();
  const env = linen1.subnetEnv() ?? {};
  const subnet = env['FLANNEL_SUBNET'] ?? '';
  const base = /^(\d+\.\d+\.\d+)\.1\/24$/.exec(subnet)?.[1];
  if (!base) throw new Error(`no FLANNEL_SUBNET in ${linen1.subnetFile}`);
  t.ok(await waitPeerRoute(linen1, `${/^(\d+\.\d+\.\d+)\./.exec(linen2.podIp ?? '')?.[1]}.0/24`, h2.underlayIP), 'host 1 has a route to host 2');

  const dir = mkdtempSync(join(tmpdir(), 'linen-interop-cni-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ipamDir = join(dir, 'ipam');
  // host-local's dataDir in a temp dir so nothing is left in /var/lib/cni.
  const conf = JSON.stringify(flannelDelegate(env, 'cbr0', ipamDir));
  writeFileSync(join(dir, '10-cbr0.conf'), conf);
  const podNs = `${c.topo.id}-cni`;
  c.topo.addNamespace(podNs);
  const containerId = `linen-interop-${c.topo.id}`;
  const cni = (command: 'ADD' | 'DEL'): Promise<{ code: number; stdout: string; stderr: string }> =>
    run('ip', ['netns', 'exec', h1.ns, 'env', `CNI_COMMAND=${command}`, `CNI_CONTAINERID=${containerId}`,
      `CNI_NETNS=/var/run/netns/${podNs}`, 'CNI_IFNAME=eth0', `CNI_PATH=${CNI_PATH}`, BRIDGE_CNI], 30000, { input: conf });
  const add = await cni('ADD');
  if (add.code === 0) cleanupCni = () => cni('DEL');
  t.equal(add.code, 0, `CNI ADD exits 0${add.code ? `\n${add.stdout}\n${add.stderr}` : ''}`);
  if (add.code !== 0) return;
  const result = JSON.parse(add.stdout) as CniResult;
  t.equal(result.cniVersion, '0.3.1', 'result in the requested CNI version');
  const ip = result.ips?.[0];
  const podIp = ip?.address.split('/')[0] ?? '';
  t.match(ip?.address ?? '', new RegExp(`^${base.replace(/\./g, '\\.')}\\.(\\d+)/24$`), `pod address ${ip?.address} inside linen's subnet ${subnet}`);
  t.not(podIp, `${base}.1`, 'not the gateway address');
  t.equal(ip?.gateway, `${base}.1`, 'gateway is the subnet\'s .1');
  t.ok(result.routes?.some((r) => r.dst === env['FLANNEL_NETWORK']), `route for FLANNEL_NETWORK ${env['FLANNEL_NETWORK']}`);
  t.ok(result.routes?.some((r) => r.dst === '0.0.0.0/0' && r.gw === `${base}.1`), 'default route via .1 (isDefaultGateway)');
  t.ok(result.interfaces?.some((i) => i.name === 'eth0' && i.sandbox === `/var/run/netns/${podNs}`), 'eth0 in the pod\'s netns');

  // What the delegates did in the namespaces.
  const bridge = JSON.parse(c.topo.ip(h1.ns, '-j', 'addr', 'show', 'dev', 'cni0')) as { mtu: number; addr_info: { family: string; local: string; prefixlen: number }[] }[];
  t.same(bridge[0]?.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), [subnet], `cni0 holds FLANNEL_SUBNET ${subnet}`);
  const eth0 = JSON.parse(c.topo.ip(podNs, '-j', 'addr', 'show', 'dev', 'eth0')) as { mtu: number; addr_info: { family: string; local: string }[] }[];
  t.equal(eth0[0]?.mtu, Number(env['FLANNEL_MTU']), `pod eth0 MTU = FLANNEL_MTU ${env['FLANNEL_MTU']}`);
  t.match(c.topo.ip(podNs, 'route', 'show', 'default'), new RegExp(`default via ${base.replace(/\./g, '\\.')}\\.1 dev eth0`), 'pod default route via .1');
  const ports = (): string[] => (JSON.parse(c.topo.ip(h1.ns, '-j', 'link', 'show', 'master', 'cni0')) as { ifname: string }[]).map((l) => l.ifname);
  t.equal(ports().length, 1, `one veth on cni0 (${ports().join(', ')})`);
  t.ok(existsSync(join(ipamDir, 'cbr0', podIp)), 'host-local recorded the allocation');

  // Traffic through linen to host 2's pod and back.
  const pod2 = linen2.podIp ?? '';
  const there = await ping({ from: { ns: podNs }, to: pod2 });
  t.ok(there.ok, `ping CNI pod → host 2's pod ${pod2}${there.ok ? '' : `\n${there.out}`}`);
  const back = await ping({ from: h2.pod, to: podIp });
  t.ok(back.ok, `ping host 2's pod → CNI pod ${podIp}${back.ok ? '' : `\n${back.out}`}`);
  for (const [from, to, dst, what] of [[podNs, h2.pod.ns, pod2, 'CNI pod → host 2'], [h2.pod.ns, podNs, podIp, 'host 2 → CNI pod']] as const) {
    const r = await transfer(from, to, dst, 4 * MB, 30000);
    t.equal(r.received, r.sent, `4 MB ${what}: SHA-256 matches`);
  }

  // DEL: veth, address, IPAM reservation, scratch netconf and the bridge plugin's masquerade
  // rules (FLANNEL_IPMASQ=false, so the plugin asked bridge for ipMasq) all gone.
  t.match(execFileSync('ip', ['netns', 'exec', h1.ns, 'iptables-save', '-t', 'nat'], { encoding: 'utf8' }), containerId, 'ipMasq rule for the container present before DEL');
  const del = await cni('DEL');
  t.equal(del.code, 0, `CNI DEL exits 0${del.code ? `\n${del.stdout}\n${del.stderr}` : ''}`);
  if (del.code === 0) cleanupCni = null;
  t.same(ports(), [], 'no veth left on cni0');
  t.notOk(c.topo.ip(podNs, '-o', 'link', 'show').includes('eth0'), 'no eth0 left in the pod netns');
  t.notOk(existsSync(join(ipamDir, 'cbr0', podIp)), `IPAM released ${podIp}`);
  t.notMatch(execFileSync('ip', ['netns', 'exec', h1.ns, 'iptables-save', '-t', 'nat'], { encoding: 'utf8' }), containerId, 'no iptables rule for the container left');
  const again = await cni('DEL');
  t.equal(again.code, 0, 'a second DEL succeeds (idempotent)');
  t.ok(linen1.alive() && linen2.alive(), 'both linend still running');
});

// ---------------------------------------------------------------------------------------------
// 3. An independent flanneld-UDP peer

interface PeerStats {
  tun_rx: number; udp_tx: number; udp_rx: number; tun_tx: number; no_route: number; ttl_drop: number; short: number;
  send_errors: number; tun_write_errors: number; oversize: number; bad_inner: number; bad_l4: number; unknown_sender: number;
}

t.test('udp: linend and an independent flanneld-UDP peer (Python, no shared code)', async (t) => {
  const c = await testCluster(t, { hosts: 2, backend: 'udp', start: false });
  const [h1, h2] = [c.topo.hosts[0]!, c.topo.hosts[1]!];
  const linen = c.nodes[0]!;
  await linen.start();
  const own = await linenLease(c, linen);
  t.equal(own.raw, `{"PublicIP":"${h1.underlayIP}","PublicIPv6":null}`, 'linen\'s UDP lease as flanneld writes it');

  const subnet2 = await freeSubnet(c);
  await putFlannelLease(c, subnet2, `{"PublicIP":"${h2.underlayIP}","PublicIPv6":null}`);

  const peer: ChildProcess = c.topo.spawn(h2.ns, 'python3', [UDP_PEER, '--tun', 'flannel0', '--bind', h2.underlayIP, '--port', '8285',
    '--mtu', '1472', '--peer', `${own.subnet}=${own.attrs.PublicIP}`, '--duration', '150'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { peer.kill('SIGKILL'); });
  let out = '';
  let err = '';
  peer.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
  peer.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
  const peerExit = new Promise<number | null>((r) => peer.once('exit', (code) => r(code)));
  t.ok((await waitFor(() => out.includes('"ready"') || peer.exitCode !== null, 15000, 50)) >= 0, `Python peer ready: ${out.trim()}${err}`);
  // flannel0 as flanneld configures it (docs/flanneld-compat.md, "UDP backend").
  const net2 = subnet2.replace(/\.0\/24$/, '.0/32');
  c.topo.ip(h2.ns, 'addr', 'add', net2, 'dev', 'flannel0');
  c.topo.ip(h2.ns, 'link', 'set', 'dev', 'flannel0', 'mtu', '1472', 'up');
  c.topo.ip(h2.ns, 'route', 'add', c.network, 'dev', 'flannel0');
  const pod2 = addressPod(c, 1, subnet2, 1472);
  const pod1 = linen.podIp ?? '';
  t.ok(await waitPeerRoute(linen, subnet2, h2.underlayIP), `linend installed a route to ${subnet2} from the hand-written lease`);

  // Pod → host (kernel forward, −1) → flannel0 sender (−1) → flannel0 receiver (−1) → host
  // (kernel forward, −1) → pod: a reply leaves with 64 and arrives with 60 when linen and the
  // peer each decrement once per direction as flanneld does.
  for (const [from, dst, what] of [[h1.pod.ns, pod2, 'linen → Python peer'], [h2.pod.ns, pod1, 'Python peer → linen']] as const) {
    const p = await ping({ from: { ns: from }, to: dst });
    t.ok(p.ok, `ping ${what}: ${p.received}/3${p.ok ? '' : `\n${p.out}`}`);
    t.equal(p.ttl, 60, `ping ${what}: reply TTL 60 (each tunnel end decrements once)`);
  }
  for (const [from, to, ip, what] of [[h1.pod.ns, h2.pod.ns, pod2, 'linen → Python peer'], [h2.pod.ns, h1.pod.ns, pod1, 'Python peer → linen']] as const) {
    const r = await transfer(from, to, ip, 8 * MB, 60000);
    t.equal(r.received, r.sent, `8 MB ${what}: SHA-256 matches (${r.seconds.toFixed(1)} s)`);
  }

  const m = Metrics.parse((await linen.http('/metrics')).body);
  const [eg, ing] = [m.verdicts('egress'), m.verdicts('ingress')];
  t.ok((eg['forwarded'] ?? 0) > 5000, `linen egress forwarded ${eg['forwarded']} packets`);
  t.ok((ing['forwarded'] ?? 0) > 5000, `linen ingress forwarded ${ing['forwarded']} packets`);
  t.same({ spoofed: ing['spoofed'], malformed: ing['malformed'], egress_malformed: eg['malformed'] }, { spoofed: 0, malformed: 0, egress_malformed: 0 },
    'no spoofed or malformed packets');

  peer.kill('SIGTERM');
  const code = await Promise.race([peerExit, sleep(5000).then(() => 'timeout' as const)]);
  t.equal(code, 0, `Python peer exits 0 on SIGTERM${err ? `\n${err}` : ''}`);
  const lines = out.trim().split('\n');
  const stats = JSON.parse(lines[lines.length - 1] ?? '{}') as PeerStats;
  t.comment(`Python peer: ${JSON.stringify(stats)}`);
  t.ok(stats.udp_rx > 5000 && stats.udp_tx > 5000, 'the peer received from and sent to linen');
  t.same({ bad_inner: stats.bad_inner, bad_l4: stats.bad_l4, oversize: stats.oversize, unknown_sender: stats.unknown_sender, tun_write_errors: stats.tun_write_errors, send_errors: stats.send_errors },
    { bad_inner: 0, bad_l4: 0, oversize: 0, unknown_sender: 0, tun_write_errors: 0, send_errors: 0 },
    'every datagram from linen: one whole IPv4 packet, correct IP and TCP/UDP checksums, ≤ MTU, from linen\'s PublicIP');
});
