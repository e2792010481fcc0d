// flannel's subnet leases in the lab's etcd, read and written with etcdctl: the one listing of
// the leases, a key's lease and TTL, fake peers' leases, and the routes they should give.
import { parseCIDR } from '../src/net.js';
import { makeSubnetKey } from '../src/subnet/lease.js';
import { ETCD_PREFIX, type Cluster, type ClusterNode } from './cluster.js';

/** The etcd key of the lease for a subnet given as CIDR text (`10.5.7.0/24`). */
export function leaseKey(cidr: string): string {
  const n = parseCIDR(cidr);
  if (n === null) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  return `${ETCD_PREFIX}/subnets/${makeSubnetKey(n)}`;
}

/** Every key under <prefix>/subnets with its value. */
export async function etcdLeases(c: Cluster): Promise<Map<string, string>> {
  const out = await c.etcd.ctl('get', '--prefix', `${ETCD_PREFIX}/subnets`);
  const lines = out.split('\n');
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) if (lines[i]) m.set(lines[i]!, lines[i + 1]!);
  return m;
}

/** The key's etcd lease id (hex, as etcdctl wants it) or null when it has none / is missing. */
export async function keyLease(c: Cluster, key: string): Promise<string | null> {
  const text = await c.etcd.ctl('get', key, '-w', 'json');
  const m = /"lease":(\d+)/.exec(text);
  return m ? BigInt(m[1]!).toString(16) : null;
}

/** Remaining and granted TTL of an etcd lease (hex id). */
export async function leaseTTL(c: Cluster, id: string): Promise<{ ttl: number; granted: number }> {
  const j = JSON.parse(await c.etcd.ctl('lease', 'timetolive', id, '-w', 'json')) as { ttl: number; 'granted-ttl': number };
  return { ttl: j.ttl, granted: j['granted-ttl'] };
}

/** `etcdctl lease grant N`: the new lease id (hex). */
export async function grantLease(c: Cluster, seconds: number): Promise<string> {
  const out = await c.etcd.ctl('lease', 'grant', String(seconds));
  const m = /lease ([0-9a-f]+) granted/.exec(out);
  if (!m) throw new Error(`etcdctl lease grant: ${out}`);
  return m[1]!;
}

/** Writes a lease as flanneld does (docs/flanneld-compat.md, "etcd leases and renewal" and
 * "etcd calls"): a fresh etcd lease of 86400 s
 * and the subnet's key put with it. Returns the etcd lease id (hex). */
export async function putFlannelLease(c: Cluster, subnet: string, value: string): Promise<string> {
  const id = await grantLease(c, 86400);
  await c.etcd.ctl('put', `--lease=${id}`, leaseKey(subnet), value);
  return id;
}

/** The current etcd revision. */
export async function etcdRevision(c: Cluster): Promise<number> {
  const j = JSON.parse(await c.etcd.ctl('get', `${ETCD_PREFIX}/config`, '-w', 'json')) as { header: { revision: number } };
  return j.header.revision;
}

/** A lease value in flanneld's format for a fake peer. */
export function leaseValue(backend: 'udp' | 'vxlan' | 'host-gw', publicIP: string, mac = '0a:58:0a:aa:bb:cc'): string {
  if (backend === 'host-gw') return `{"PublicIP":"${publicIP}","PublicIPv6":null,"BackendType":"host-gw"}`;
  return backend === 'udp'
    ? `{"PublicIP":"${publicIP}","PublicIPv6":null}`
    : `{"PublicIP":"${publicIP}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
}

/** The network config for many fake peers: 10.0.0.0/8 in /24 subnets (65,535 of them). */
export const WIDE_NETWORK = { Network: '10.0.0.0/8', SubnetLen: 24 } as const;

export interface FakeLease { key: string; value: string; /** The route linen should give it: "subnet via PublicIP". */ route: string }

/**
 * `count` fake vxlan peers' leases in WIDE_NETWORK, from SubnetMin (10.0.1.0) upward:
 * 10.<i/256>.<i%256>.0/24 at 198.18.<i/256>.<i%256> for i = 1..count, less the one for `skip`
 * (a subnet such as 10.0.7.0/24 that a real node already holds).
 */
export function wideFakeLeases(count: number, skip?: string): FakeLease[] {
  const out: FakeLease[] = [];
  for (let i = 1; i <= count; i++) {
    const net = `10.${i >> 8}.${i & 255}.0`;
    if (`${net}/24` === skip) continue;
    const ip = `198.18.${i >> 8}.${i & 255}`;
    const mac = `0a:58:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
    out.push({ key: `${ETCD_PREFIX}/subnets/${net}-24`, value: leaseValue('vxlan', ip, mac), route: `${net}/24 via ${ip}` });
  }
  return out;
}

/**
 * `count` host-gw leases in WIDE_NETWORK (as wideFakeLeases, passing over `skip`), their PublicIPs
 * cycling through .20 to .219 of the /24 `underlayNet` (directly connected, so each is routed;
 * no host needs to answer there for the kernel to take the route).
 */
export function hostGwFakeLeases(count: number, underlayNet: string, skip?: string): FakeLease[] {
  const base = underlayNet.replace(/\.0\/24$/, '');
  const out: FakeLease[] = [];
  for (let i = 1; out.length < count; i++) {
    const net = `10.${i >> 8}.${i & 255}.0`;
    if (`${net}/24` === skip) continue;
    const ip = `${base}.${20 + (i % 200)}`;
    out.push({ key: `${ETCD_PREFIX}/subnets/${net}-24`, value: leaseValue('host-gw', ip), route: `${net}/24 via ${ip}` });
  }
  return out;
}

/** 10.y.<third>.0/24 inside the cluster network, and its etcd key. */
export function fakeSubnet(c: Cluster, third: number): { subnet: string; key: string } {
  const subnet = `10.${c.network.split('.')[1]}.${third}.0/24`;
  return { subnet, key: leaseKey(subnet) };
}

/** What linen should route to: every valid peer lease in etcd except the node's own subnet, "subnet via ip". */
export async function expectedRoutes(c: Cluster, own: ClusterNode): Promise<string[]> {
  const ownSubnet = own.subnetEnv()?.['FLANNEL_SUBNET']?.replace(/\.1\/24$/, '.0/24');
  const out: string[] = [];
  for (const [k, v] of await etcdLeases(c)) {
    const m = /(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(k);
    if (!m) continue;
    const subnet = `${m[1]}/${m[2]}`;
    if (subnet === ownSubnet) continue;
    try {
      const j = JSON.parse(v) as { PublicIP?: unknown };
      if (typeof j.PublicIP === 'string') out.push(`${subnet} via ${j.PublicIP}`);
    } catch { /* not a lease */ }
  }
  return out.sort();
}
