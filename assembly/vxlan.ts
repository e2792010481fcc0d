// VXLAN framing (RFC 7348) as the Linux kernel builds and accepts it for flannel.<VNI>:
// [VXLAN 8: flags 0x08, 3 reserved, VNI 24 bits, 1 reserved][Ethernet 14: dst, src, 0x0800][IPv4]
import { VXLAN_ENCAP_LEN, R_MAC } from './ring';
import { PacketVerdict } from './counters';
import { load16be, load32be, store16be, store32be, ipProto, ipHeaderLen, isFragment, PROTO_TCP, PROTO_UDP } from './ip';

export const VXLAN_FLAG_VNI: u32 = 0x08;
export const ETHERTYPE_IPV4: u32 = 0x0800;

// Own VTEP MAC, big-endian bytes.
export const ownMac = memory.data(8);

let vni: u32 = 1;
let flowSeed: u32 = 0x2545f491;

export function vxlanConfigure(vniValue: u32, macHi: u32, macLo: u32, seed: u32): void {
  vni = vniValue & 0xffffff;
  store<u16>(ownMac, bswap<u16>(<u16>macHi));
  store<u32>(ownMac + 2, bswap<u32>(macLo));
  flowSeed = seed;
}

// Writes the VXLAN header and inner Ethernet header in the VXLAN_ENCAP_LEN bytes before ip.
@inline export function vxlanFrame(ip: u32, route: u32): u32 {
  let p = ip - VXLAN_ENCAP_LEN;
  store<u32>(p, VXLAN_FLAG_VNI);            // flags, reserved
  store32be(p + 4, vni << 8);              // VNI, reserved
  // inner Ethernet: dst = peer VTEP MAC, src = own MAC, ethertype IPv4
  store<u32>(p + 8, load<u32>(route + R_MAC));
  store<u16>(p + 12, load<u16>(route + R_MAC + 4));
  store<u16>(p + 14, load<u16>(ownMac));
  store<u32>(p + 16, load<u32>(ownMac + 2));
  store16be(p + 20, ETHERTYPE_IPV4);
  return p;
}

// Checks a received VXLAN datagram at p (length len, at least VXLAN_ENCAP_LEN). Returns
// PacketVerdict.Forwarded when the inner IPv4 packet at p + VXLAN_ENCAP_LEN may be processed.
export function vxlanCheck(p: u32): PacketVerdict {
  // Linux drops any flag or reserved bit other than I (GBP is not enabled by flannel).
  if (load<u32>(p) != VXLAN_FLAG_VNI || load<u8>(p + 7) != 0) return PacketVerdict.BadVxlanFlags;
  if ((load32be(p + 4) >> 8) != vni) return PacketVerdict.WrongVni;
  let eth = p + 8;
  if (load<u32>(eth) != load<u32>(ownMac) || load<u16>(eth + 4) != load<u16>(ownMac + 4)) return PacketVerdict.WrongMac;
  // A frame from our own MAC is a loop; a multicast source is invalid (kernel: is_valid_ether_addr).
  if (load<u16>(eth + 6) == load<u16>(ownMac) && load<u32>(eth + 8) == load<u32>(ownMac + 2)) return PacketVerdict.WrongMac;
  if ((load<u8>(eth + 6) & 1) != 0) return PacketVerdict.WrongMac;
  if (load16be(eth + 12) != ETHERTYPE_IPV4) return PacketVerdict.NotIpv4;
  return PacketVerdict.Forwarded;
}

// A flow's hash, stable per flow and spread across flows, for the descriptor's flowHash: the
// addon picks the send socket (so the outer source port) by it. Kept in ip_local_port_range
// [32768, 60999), as the kernel's udp_flow_src_port maps a flow hash to a VXLAN source port,
// so that a trace made from descriptors alone shows a plausible source port.
export function vxlanFlowHash(ip: u32): u32 {
  let h = flowSeed;
  h = mix(h, load<u32>(ip + 12));
  h = mix(h, load<u32>(ip + 16));
  let proto = ipProto(ip);
  h = mix(h, <u32>proto);
  if ((proto == PROTO_TCP || proto == PROTO_UDP) && !isFragment(ip)) {
    h = mix(h, load<u32>(ip + ipHeaderLen(ip)));
  }
  h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16;
  h ^= h << 16;
  return <u32>(((<u64>h * (60999 - 32768)) >> 32) + 32768);
}

@inline function mix(h: u32, k: u32): u32 {
  k *= 0xcc9e2d51; k = rotl<u32>(k, 15); k *= 0x1b873593;
  h ^= k; h = rotl<u32>(h, 13);
  return h * 5 + 0xe6546b64;
}
