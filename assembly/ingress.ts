// ingress(n): n datagrams received from the wire (IN_IN_DESC) become TUN writes and, for ICMP
// errors sent back to a peer, UDP sends.
import {
  BATCH, DESC_SIZE, D_ADDR, D_LENGTH, D_OFFSET, D_PORT, D_SEGSIZE, HEADROOM, IN_IN_DESC, IOV_CAP,
  R_PUBLIC_IP, R_RX_BYTES, R_RX_PACKETS, SEND_CAP, SLOT_STRIDE, SPLIT_AREA, SPLIT_PER_PACKET,
  SPLIT_SIZE, TUNW_CAP, VNET_HDR_LEN, VNET_SCRATCH, VXLAN_ENCAP_LEN, R_WG_PORT, WG_HEADER_LEN, WG_TAG_LEN, WG_S_ROUTE,
} from './ring';
import { wgAccept } from './wg';
import { setTunWrite2 } from './tables';
import { DIR_INGRESS, PacketVerdict, count } from './counters';
import {
  PROTO_TCP, PROTO_UDP, completePartialL4, ipDecrementTtl, ipDst, ipProto, ipSrc, ipTotalLen,
  ipTtl, isFragment, validateIpv4,
} from './ip';
import { routeAddr, routeLookup } from './routes';
import { vxlanCheck } from './vxlan';
import {
  ITEM_IOVS, VNET_GSO_TCPV4, gsoHeaderLen, mergeAppend, mergeCandidate, mergeCloseFlow,
  mergeFinishAll, mergeOpen, mergeUdpAppend, mergeUdpCandidate, mergeUdpOpen, splitSegments,
  tcpGsoHeader,
} from './gso';
import { CODE_TTL_EXCEEDED, ICMP_TIME_EXCEEDED, icmpErrorExempt } from './icmp';
import {
  MODE_UDP, MODE_VXLAN, MODE_WIREGUARD, hopInTunnel, localAddr, localMask, mergeOnIngress, mergeUdpOnIngress, mode,
  port, ttlFloor, tunnelMtu, vnetHdr,
} from './settings';
import { beginBatch, emitTun, icmpToPeer, nIov, nSend, nTunw, splitUsed } from './outputs';

// Bytes a UDP receive may write at an ingress input descriptor's offset.
export function ingressReadCapacity(): u32 { return SLOT_STRIDE - HEADROOM + ingressFraming(); }

// Bytes of a received datagram in front of the inner IP header.
export function ingressFraming(): u32 { return mode == MODE_VXLAN ? VXLAN_ENCAP_LEN : mode == MODE_WIREGUARD ? WG_HEADER_LEN : 0; }

// Room one received datagram may need in the output tables: a GRO batch is at most 64
// datagrams, and one oversized TCP packet cut here at most ~64 segments.
const INGRESS_ROOM_WRITES: u32 = 64;

// Processes the received datagrams [first, n). Stops early, before a datagram, when the output
// tables could overflow; returns the index to resume from after the outputs have been flushed.
export function ingress(n: u32, now: u32, first: u32): u32 {
  beginBatch(now);
  if (n > BATCH) n = BATCH;
  let cap = ingressReadCapacity();
  let i = first;
  for (; i < n; i++) {
    if (i > first && (nTunw + INGRESS_ROOM_WRITES > TUNW_CAP || nIov + 2 * INGRESS_ROOM_WRITES + ITEM_IOVS > IOV_CAP ||
        splitUsed + SPLIT_PER_PACKET > SPLIT_SIZE || nSend + INGRESS_ROOM_WRITES > SEND_CAP)) break;
    let d = IN_IN_DESC + i * DESC_SIZE;
    let off = load<u32>(d + D_OFFSET);
    let len = load<u32>(d + D_LENGTH);
    if (len > cap) len = cap;
    let src = bswap<u32>(load<u32>(d + D_ADDR));
    let fromPort = <u32>bswap<u16>(load<u16>(d + D_PORT));
    let seg = <u32>load<u16>(d + D_SEGSIZE);
    if (seg == 0 || seg >= len) {
      ingressDatagram(off, len, src, fromPort);
    } else {
      // UDP GRO handed us several datagrams of seg bytes back to back; the last may be shorter.
      let end = off + len;
      for (let p = off; p < end; p += seg) {
        ingressDatagram(p, min(seg, end - p), src, fromPort);
      }
    }
  }
  mergeFinishAll();
  return i;
}

function ingressDatagram(p: u32, len: u32, outerSrc: u32, outerPort: u32): void {
  let ip = p;
  let plen = len;
  // flanneld's UDP backend sends from the port it listens on; the kernel's VXLAN picks a
  // source port per flow.
  if (mode == MODE_UDP && outerPort != port) { count(DIR_INGRESS, PacketVerdict.WrongSourcePort, len); return; }
  if (mode == MODE_VXLAN) {
    if (len < VXLAN_ENCAP_LEN + 20) { count(DIR_INGRESS, PacketVerdict.Malformed, len); return; }
    let v = vxlanCheck(p);
    if (v != PacketVerdict.Forwarded) { count(DIR_INGRESS, v, len); return; }
    ip = p + VXLAN_ENCAP_LEN;
    plen = len - VXLAN_ENCAP_LEN;
  }
  // WireGuard: only what authenticated under a live session and is no replay goes on; the
  // peer is the session's, wherever the datagram came from (endpoints roam).
  let wgRoute: i32 = -1;
  if (mode == MODE_WIREGUARD) {
    let s = wgAccept(p, len);
    if (s == 0) return;
    wgRoute = load<i32>(s + WG_S_ROUTE);
    if (wgRoute >= 0) {
      store<u32>(routeAddr(wgRoute) + R_PUBLIC_IP, outerSrc);
      store<u32>(routeAddr(wgRoute) + R_WG_PORT, outerPort);
    }
    ip = p + WG_HEADER_LEN;
    plen = len - WG_HEADER_LEN - WG_TAG_LEN;
    if (plen == 0) { count(DIR_INGRESS, PacketVerdict.WgKeepalive, 0); return; }
  }
  let t = validateIpv4(ip, plen);
  if (t < 0) { count(DIR_INGRESS, <PacketVerdict>(-t), plen); return; }
  let total = <u32>t;
  // Anti-spoofing: the inner source must lie in a subnet owned by the peer that sent it.
  let r = routeLookup(ipSrc(ip));
  if (r < 0 || (mode == MODE_WIREGUARD ? r != wgRoute : load<u32>(routeAddr(r) + R_PUBLIC_IP) != outerSrc)) {
    count(DIR_INGRESS, PacketVerdict.Spoofed, total);
    return;
  }
  // A peer delivers only to this node's pods: never to other networks (metadata address, the
  // node's own services, the internet through masquerading) nor to another peer's subnet.
  if ((ipDst(ip) & localMask) != localAddr) {
    count(DIR_INGRESS, PacketVerdict.ForeignDestination, total);
    return;
  }
  let route = routeAddr(r);
  if (ipTtl(ip) <= ttlFloor) {
    count(DIR_INGRESS, PacketVerdict.TtlExpired, total);
    if (hopInTunnel && !icmpErrorExempt(ip, total)) icmpToPeer(ICMP_TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0, ip, total, route);
    return;
  }
  if (hopInTunnel) ipDecrementTtl(ip);
  if (completePartialL4(ip, total)) count(DIR_INGRESS, PacketVerdict.ChecksumCompleted, 0);
  if (total > tunnelMtu && ipProto(ip) == PROTO_TCP && !isFragment(ip)) {
    // A peer's kernel may hand over an unsegmented TCP super-packet (kernel VXLAN with GSO
    // over veth or a virtual switch): cut it back to the tunnel MTU for the pod.
    if (oversizeTcpToTun(ip, total)) countRx(route, total);
    return;
  }
  if (mergeOnIngress && ipProto(ip) == PROTO_TCP && mergeTcp(ip, total)) {
    countRx(route, total);
    return;
  }
  if (mergeUdpOnIngress && ipProto(ip) == PROTO_UDP && mergeUdp(ip, total)) {
    countRx(route, total);
    return;
  }
  if (emitTun(DIR_INGRESS, ip, total)) countRx(route, total);
}

@inline function countRx(route: u32, total: u32): void {
  count(DIR_INGRESS, PacketVerdict.Forwarded, total);
  store<u64>(route + R_RX_PACKETS, load<u64>(route + R_RX_PACKETS) + 1);
  store<u64>(route + R_RX_BYTES, load<u64>(route + R_RX_BYTES) + <u64>total);
}

// Writes a TCP packet larger than the tunnel MTU to the TUN in MTU-sized segments: with a GSO
// virtio_net_hdr when the TUN has one (the kernel segments, nothing is copied), otherwise cut
// here into the split area. Returns false when it was dropped (counted).
function oversizeTcpToTun(ip: u32, total: u32): bool {
  let hdrLen = gsoHeaderLen(ip, total, VNET_GSO_TCPV4);
  if (hdrLen == 0 || hdrLen >= tunnelMtu) { count(DIR_INGRESS, PacketVerdict.Malformed, total); return false; }
  let gsoSize = tunnelMtu - hdrLen;
  if (vnetHdr) {
    if (nTunw >= TUNW_CAP || nIov + 2 > IOV_CAP) { count(DIR_INGRESS, PacketVerdict.NoRoom, total); return false; }
    let vnet = VNET_SCRATCH + nTunw * 16;
    tcpGsoHeader(vnet, ip, total, hdrLen, gsoSize);
    setTunWrite2(nTunw, nIov, vnet, VNET_HDR_LEN, ip, total);
    nIov += 2;
    nTunw++;
    return true;
  }
  let out = SPLIT_AREA + splitUsed;
  let nseg = splitSegments(ip, total, hdrLen, gsoSize, VNET_GSO_TCPV4, out, SPLIT_SIZE - splitUsed, 0);
  if (nseg == 0) { count(DIR_INGRESS, PacketVerdict.NoRoom, total); return false; }
  let p = out;
  for (let i: u32 = 0; i < nseg; i++) {
    let segLen = ipTotalLen(p);
    if (!emitTun(DIR_INGRESS, p, segLen)) return false;
    p += segLen;
  }
  splitUsed += (p - out + 15) & ~15;
  return true;
}

// Adds a UDP datagram to the batch's merge items. Returns false when it must be written alone.
function mergeUdp(ip: u32, total: u32): bool {
  if (!mergeUdpCandidate(ip, total)) { mergeCloseFlow(ip); return false; }
  if (mergeUdpAppend(ip, total)) return true;
  return mergeItemFree() && mergeUdpOpen(ip, total, nTunw, nIov, VNET_SCRATCH + nTunw * 16) && takeMergeItem();
}

// Adds a TCP segment to the batch's merge items. Returns false when it must be written alone.
function mergeTcp(ip: u32, total: u32): bool {
  let thlen = mergeCandidate(ip, total);
  if (thlen == 0) { mergeCloseFlow(ip); return false; }
  if (mergeAppend(ip, total, thlen)) return true;
  return mergeItemFree() && mergeOpen(ip, total, thlen, nTunw, nIov, VNET_SCRATCH + nTunw * 16) && takeMergeItem();
}

// A new merge item opens in the next TUN write and its ITEM_IOVS iovecs (and the write's slot
// of VNET_SCRATCH): is there room for them, and, once it opened, they are taken.
@inline function mergeItemFree(): bool { return nTunw < TUNW_CAP && nIov + ITEM_IOVS <= IOV_CAP; }
@inline function takeMergeItem(): bool {
  nTunw++;
  nIov += ITEM_IOVS;
  return true;
}
