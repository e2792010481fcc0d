// Which peer leases may become routes: the rules that do not depend on where a lease came
// from. Every writer of leases (anyone with write access to etcd's subnets folder, or to a
// node's annotations in kube mode) is untrusted, so a lease is checked for what it would make
// this node do: route its own subnet elsewhere, send tunnel traffic to itself, to loopback, to
// a broadcast address or back into the overlay. A leaf (it knows addresses only), shared by
// the lease watcher and the peer set.
import { formatCIDR, formatIPv4, makeNet, netContains, netEqual, netLast, netOverlaps, type IPv4Net } from '../net.js';

/** Why a lease got no route (the label of linen_leases_refused_total). */
export const REFUSAL_REASONS = [
  'bad_key',               // a key under subnets/ that is not exactly <a.b.c.d>-<len>
  'alias_key',             // another key names a subnet whose key already holds it
  'bad_value',             // the value does not decode as a lease (or is too large or deep)
  'host_bits',             // the key's address has bits set below its prefix length
  'public_ip_unspecified', // PublicIP 0.0.0.0 or in 0.0.0.0/8 ("this network")
  'public_ip_loopback',    // PublicIP in 127.0.0.0/8
  'public_ip_multicast',   // PublicIP in 224.0.0.0/4
  'public_ip_broadcast',   // 255.255.255.255, or the broadcast address of this node's network
  'public_ip_reserved',    // PublicIP in 240.0.0.0/4
  'public_ip_in_network',  // PublicIP inside the cluster network: tunnel traffic would loop
  'public_ip_self',        // PublicIP is this node's own address
  'outside_network',       // the subnet is not inside the cluster network
  'own_subnet',            // the subnet overlaps this node's subnet
  'overlap',               // not a /SubnetLen lease and overlapping one
  'backend_data',          // lacks what the backend needs (VXLAN: a VtepMAC)
  'capacity',              // the data plane's route table is full
  'not_adjacent',          // host-gw: the PublicIP is not on a directly connected network
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** A refusal: the rule (metric label) and a sentence for the log. */
export interface Refusal {
  readonly reason: RefusalReason;
  readonly why: string;
}

/** What a lease is checked against. */
export interface AdmissionContext {
  /** The cluster network (the config's Network). */
  readonly network: IPv4Net;
  /** This node's subnet: no peer route may overlap it. */
  readonly ownSubnet: IPv4Net;
  /** This node's PublicIP (null: not checked). */
  readonly self: number | null;
  /** The networks of this node's external interface, whose broadcast addresses no peer may use. */
  readonly underlay?: readonly IPv4Net[];
}

/**
 * Whether a peer's PublicIP is something to send tunnel traffic to: a unicast address outside
 * the cluster network that is not this node. Returns why not, or null.
 */
export function publicIPRefusal(ip: number, ctx: Pick<AdmissionContext, 'network' | 'self' | 'underlay'>): Refusal | null {
  const a = ip >>> 24;
  const no = (reason: RefusalReason, what: string): Refusal => ({ reason, why: `its PublicIP ${formatIPv4(ip)} ${what}` });
  if (a === 0) return no('public_ip_unspecified', 'is in 0.0.0.0/8 ("this network"), no address to send to');
  if (a === 127) return no('public_ip_loopback', 'is a loopback address');
  if (a >= 224 && a <= 239) return no('public_ip_multicast', 'is a multicast address');
  if (ip >>> 0 === 0xffffffff) return no('public_ip_broadcast', 'is the broadcast address');
  if (a >= 240) return no('public_ip_reserved', 'is a reserved address (240.0.0.0/4)');
  for (const n of ctx.underlay ?? []) {
    if (n.prefixLen <= 30 && ip >>> 0 === netLast(n) >>> 0) {
      return no('public_ip_broadcast', `is the broadcast address of this node's network ${formatCIDR(n)}`);
    }
  }
  if (netContains(ctx.network, ip)) {
    return no('public_ip_in_network', `is inside the cluster network ${formatCIDR(ctx.network)}: tunnel packets to it would go back into the overlay`);
  }
  if (ctx.self !== null && ip >>> 0 === ctx.self >>> 0) return no('public_ip_self', "is this node's own address");
  return null;
}

/** Whether a subnet's address has host bits set (flannel never writes such a lease key). */
export const hasHostBits = (n: IPv4Net): boolean => !netEqual(makeNet(n.ip, n.prefixLen), n);

/**
 * The rules for one lease on its own (the peer set adds those that depend on the other
 * leases and on the backend): its subnet must be a network inside the cluster network and
 * apart from this node's, and its PublicIP one to tunnel to.
 */
export function leaseRefusal(subnet: IPv4Net, publicIP: number, ctx: AdmissionContext): Refusal | null {
  if (hasHostBits(subnet)) {
    return { reason: 'host_bits', why: `the address ${formatIPv4(subnet.ip)} has host bits set for a /${subnet.prefixLen} (the network would be ${formatCIDR(makeNet(subnet.ip, subnet.prefixLen))}); flannel never writes such a key` };
  }
  const bad = publicIPRefusal(publicIP, ctx);
  if (bad !== null) return bad;
  if (!netContains(ctx.network, subnet.ip) || subnet.prefixLen < ctx.network.prefixLen) {
    return { reason: 'outside_network', why: `${formatCIDR(subnet)} is outside the network ${formatCIDR(ctx.network)}` };
  }
  if (netOverlaps(subnet, ctx.ownSubnet)) {
    return { reason: 'own_subnet', why: `${formatCIDR(subnet)} overlaps this node's subnet ${formatCIDR(ctx.ownSubnet)}` };
  }
  return null;
}
