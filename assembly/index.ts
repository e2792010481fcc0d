// linen's dataplane core: the exported entry points the shell calls once per batch.
//
// egress(n):  n packets read from the TUN (descriptors at EG_IN_DESC) become UDP sends
//             (SEND_DESC) and, for ICMP errors, TUN writes (TUN_WRITES).
// ingress(n): n datagrams received from the wire (IN_IN_DESC) become TUN writes and, for ICMP
//             errors sent back to a peer, UDP sends.
// Nothing here allocates: all state lives at the fixed addresses of ring.ts.
import {
  BATCH, HEADROOM, SLOT_STRIDE, VNET_HDR_LEN, VXLAN_OVERHEAD, DESC_SIZE, D_OFFSET, D_LENGTH,
  D_ADDR, D_PORT, D_SEGSIZE, D_SRCPORT, TUNW_SIZE, IOV_SIZE, SEND_CAP, TUNW_CAP, IOV_CAP,
  ICMP_CAP, ICMP_STRIDE, COUNTERS, COUNTER_SLOTS, COUNTER_DIRS, EG_IN_DESC, IN_IN_DESC,
  SEND_DESC, TUN_WRITES, IOVECS, ZERO_VNET, VNET_SCRATCH, ICMP_AREA, EG_SLOTS, IN_SLOTS,
  SPLIT_AREA, SPLIT_SIZE, ROUTES, ROUTE_SIZE, MAX_ROUTES, REGION_END, egressSlot, ingressSlot,
} from './ring';
import { Verdict, count, resetCounters, DIR_EGRESS, DIR_INGRESS } from './counters';
import {
  ipVersion, ipHeaderLen, ipTotalLen, ipTtl, ipSrc, ipDst, hasDF, ipHeaderValid,
  ipDecrementTtl, load16be, sumBytes, fold, store16be,
} from './ip';
import {
  routeLookup, routeAddr, routesReset, R_PUBLIC_IP, R_TX_PACKETS, R_TX_BYTES, R_RX_PACKETS,
  R_RX_BYTES,
} from './routes';
import { vxlanFrame, vxlanCheck, vxlanSourcePort, vxlanConfigure } from './vxlan';
import { udpFrame } from './udp';
import {
  icmpBuild, icmpErrorExempt, flannelUnreachableExempt, ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED,
  CODE_NET_UNREACH, CODE_FRAG_NEEDED, CODE_TTL_EXCEEDED, FLANNEL_ICMP_TTL, ICMP_TTL,
} from './icmp';

export {
  BATCH, HEADROOM, SLOT_STRIDE, VNET_HDR_LEN, VXLAN_OVERHEAD, DESC_SIZE, TUNW_SIZE, IOV_SIZE,
  SEND_CAP, TUNW_CAP, IOV_CAP, COUNTERS, COUNTER_SLOTS, COUNTER_DIRS, EG_IN_DESC, IN_IN_DESC,
  SEND_DESC, TUN_WRITES, IOVECS, EG_SLOTS, IN_SLOTS, ROUTES, ROUTE_SIZE, MAX_ROUTES, REGION_END,
};
export { routeSet, routeRemove, routeFind, routesCount, routeLookup } from './routes';
export { checksum } from './ip';

export const MODE_UDP: u32 = 0;
export const MODE_VXLAN: u32 = 1;
export const VERDICT_COUNT: u32 = Verdict.Count;
// virtio_net_hdr flags and GSO types
const VNET_NEEDS_CSUM: u32 = 1;

// ICMP error budget: a burst of 50, refilled at 1000 per second (Linux's icmp_msgs_per_sec).
const ICMP_BURST: u32 = 50;
const ICMP_PER_SEC: u32 = 1000;

let mode: u32 = MODE_UDP;
let vnetHdr: bool = false;
let port: u32 = 8285;
let tunnelMtu: u32 = 1472;
let localAddr: u32 = 0; // own subnet's network address: source of our ICMP messages

let nSend: u32 = 0;
let nTunw: u32 = 0;
let nIov: u32 = 0;
let nIcmp: u32 = 0;
let icmpTokens: u32 = ICMP_BURST;
let icmpLastMs: u32 = 0;
let nowMs: u32 = 0;

// Sets up the instance. Must be called before anything else; may be called again to reset.
// Returns 0, or -1 when the memory is too small for the layout.
export function init(modeValue: u32, useVnetHdr: bool): i32 {
  if (<usize>memory.size() << 16 < <usize>REGION_END || __heap_base > <usize>EG_IN_DESC - 65536) return -1;
  mode = modeValue;
  vnetHdr = useVnetHdr;
  resetCounters();
  routesReset();
  memory.fill(ZERO_VNET, 0, 16);
  // Input descriptors point at fixed slots so that the IP header lands at slot + HEADROOM.
  let eRead = HEADROOM - (vnetHdr ? VNET_HDR_LEN : 0);
  let iRead = HEADROOM - (mode == MODE_VXLAN ? VXLAN_OVERHEAD : 0);
  for (let i: u32 = 0; i < BATCH; i++) {
    let e = EG_IN_DESC + i * DESC_SIZE;
    memory.fill(e, 0, DESC_SIZE);
    store<u32>(e + D_OFFSET, egressSlot(i) + eRead);
    let g = IN_IN_DESC + i * DESC_SIZE;
    memory.fill(g, 0, DESC_SIZE);
    store<u32>(g + D_OFFSET, ingressSlot(i) + iRead);
  }
  icmpTokens = ICMP_BURST;
  return 0;
}

// Bytes a TUN read or UDP receive may write at an input descriptor's offset.
export function egressReadCapacity(): u32 { return SLOT_STRIDE - HEADROOM + (vnetHdr ? VNET_HDR_LEN : 0); }
export function ingressReadCapacity(): u32 { return SLOT_STRIDE - HEADROOM + (mode == MODE_VXLAN ? VXLAN_OVERHEAD : 0); }

// Local settings: the UDP port peers listen on, the largest inner packet the tunnel carries,
// the own subnet's network address (ICMP source), and for VXLAN the VNI, own VTEP MAC and a
// random seed for flow hashing.
export function configure(portValue: u32, mtu: u32, local: u32, vni: u32, macHi: u32, macLo: u32, seed: u32): void {
  port = portValue;
  tunnelMtu = mtu;
  localAddr = local;
  vxlanConfigure(vni, macHi, macLo, seed);
}

export function sendCount(): u32 { return nSend; }
export function tunWriteCount(): u32 { return nTunw; }
export function counterAddr(dir: u32, verdict: u32): u32 { return COUNTERS + (dir * COUNTER_SLOTS + verdict) * 16; }
export function routeCounterAddr(index: i32): u32 { return routeAddr(index) + R_TX_PACKETS; }

function beginBatch(now: u32): void {
  nSend = 0; nTunw = 0; nIov = 0; nIcmp = 0;
  let elapsed = now - nowMs;
  nowMs = now;
  if (elapsed > 0) {
    let add = <u64>elapsed * ICMP_PER_SEC / 1000;
    let t = <u64>icmpTokens + add;
    icmpTokens = t > <u64>ICMP_BURST ? ICMP_BURST : <u32>t;
  }
}

// --- outputs ---------------------------------------------------------------------------

// Queues a datagram to a peer. The payload starts at ip (the inner IPv4 packet of totalLen
// bytes); the mode's framing goes in front of it.
function emitSend(dir: u32, ip: u32, totalLen: u32, route: u32): bool {
  if (nSend >= SEND_CAP) { count(dir, Verdict.NoRoom, totalLen); return false; }
  let d = SEND_DESC + nSend * DESC_SIZE;
  let start: u32;
  let srcPort: u32 = 0;
  if (mode == MODE_VXLAN) {
    srcPort = vxlanSourcePort(ip);
    start = vxlanFrame(ip, route);
  } else {
    start = udpFrame(ip);
  }
  store<u32>(d + D_OFFSET, start);
  store<u32>(d + D_LENGTH, totalLen + (ip - start));
  store<u32>(d + D_ADDR, bswap<u32>(load<u32>(route + R_PUBLIC_IP)));
  store<u16>(d + D_PORT, bswap<u16>(<u16>port));
  store<u16>(d + D_SEGSIZE, 0);
  store<u16>(d + D_SRCPORT, <u16>srcPort);
  store<u32>(d + 18, 0);
  store<u16>(d + 22, 0);
  nSend++;
  return true;
}

// Queues one TUN write of [ip, ip + len), behind a zero virtio_net_hdr when the TUN has one.
function emitTun(dir: u32, ip: u32, len: u32): bool {
  let need: u32 = vnetHdr ? 2 : 1;
  if (nTunw >= TUNW_CAP || nIov + need > IOV_CAP) { count(dir, Verdict.NoRoom, len); return false; }
  let w = TUN_WRITES + nTunw * TUNW_SIZE;
  store<u32>(w, nIov);
  store<u32>(w + 4, need);
  let v = IOVECS + nIov * IOV_SIZE;
  if (vnetHdr) {
    store<u32>(v, ZERO_VNET);
    store<u32>(v + 4, VNET_HDR_LEN);
    v += IOV_SIZE;
  }
  store<u32>(v, ip);
  store<u32>(v + 4, len);
  nIov += need;
  nTunw++;
  return true;
}

function icmpAllowed(dir: u32): bool {
  if (nIcmp >= ICMP_CAP) { count(dir, Verdict.NoRoom, 0); return false; }
  if (icmpTokens == 0) { count(dir, Verdict.IcmpRateLimited, 0); return false; }
  icmpTokens--;
  return true;
}

// ICMP error written back into the TUN, towards a local sender.
function icmpToTun(type: u32, code: u32, rest: u32, orig: u32, origLen: u32, ttl: u32): void {
  if (!icmpAllowed(DIR_EGRESS)) return;
  let out = ICMP_AREA + nIcmp * ICMP_STRIDE + HEADROOM;
  nIcmp++;
  let len = icmpBuild(out, type, code, rest, orig, origLen, localAddr, ttl);
  if (emitTun(DIR_EGRESS, out, len)) count(DIR_EGRESS, Verdict.IcmpSent, len);
}

// ICMP error sent through the tunnel to the peer that owns the offending packet's source.
function icmpToPeer(type: u32, code: u32, rest: u32, orig: u32, origLen: u32, route: u32): void {
  if (!icmpAllowed(DIR_INGRESS)) return;
  let out = ICMP_AREA + nIcmp * ICMP_STRIDE + HEADROOM;
  nIcmp++;
  let len = icmpBuild(out, type, code, rest, orig, origLen, localAddr, ICMP_TTL);
  if (emitSend(DIR_INGRESS, out, len, route)) count(DIR_INGRESS, Verdict.IcmpSent, len);
}

// --- validation ------------------------------------------------------------------------

// Validates the IPv4 packet at ip with avail readable bytes. Returns its total length, or a
// negative Verdict.
function validateIpv4(ip: u32, avail: u32): i32 {
  if (avail < 20) return -<i32>Verdict.Malformed;
  if (ipVersion(ip) != 4) return -<i32>Verdict.NotIpv4;
  let hlen = ipHeaderLen(ip);
  if (hlen < 20 || hlen > avail) return -<i32>Verdict.Malformed;
  let total = ipTotalLen(ip);
  if (total < hlen || total > avail) return -<i32>Verdict.Malformed;
  if (!ipHeaderValid(ip, hlen)) return -<i32>Verdict.Malformed;
  return <i32>total;
}

// Completes a partial L4 checksum (virtio NEEDS_CSUM): the field holds the pseudo-header sum.
function completeChecksum(ip: u32, total: u32, start: u32, offset: u32): bool {
  if (start < ipHeaderLen(ip) || start + offset + 2 > total) return false;
  let field = ip + start + offset;
  let seed = <u64>load<u16>(field);
  store<u16>(field, 0);
  let sum = (~fold(sumBytes(ip + start, total - start, seed))) & 0xffff;
  store16be(field, sum);
  return true;
}

// --- egress: TUN -> wire ----------------------------------------------------------------

export function egress(n: u32, now: u32): void {
  beginBatch(now);
  if (n > BATCH) n = BATCH;
  for (let i: u32 = 0; i < n; i++) {
    let d = EG_IN_DESC + i * DESC_SIZE;
    let off = load<u32>(d + D_OFFSET);
    let len = load<u32>(d + D_LENGTH);
    if (len > egressReadCapacity()) len = egressReadCapacity();
    if (vnetHdr) {
      if (len < VNET_HDR_LEN) { count(DIR_EGRESS, Verdict.Malformed, len); continue; }
      let flags = <u32>load<u8>(off);
      let gsoType = <u32>load<u8>(off + 1);
      let ip = off + VNET_HDR_LEN;
      let plen = len - VNET_HDR_LEN;
      if (gsoType != 0) { count(DIR_EGRESS, Verdict.Unsupported, plen); continue; }
      let total = validateIpv4(ip, plen);
      if (total < 0) { count(DIR_EGRESS, <Verdict>(-total), plen); continue; }
      if ((flags & VNET_NEEDS_CSUM) != 0 &&
          !completeChecksum(ip, <u32>total, <u32>load<u16>(off + 6), <u32>load<u16>(off + 8))) {
        count(DIR_EGRESS, Verdict.Malformed, plen);
        continue;
      }
      forwardEgress(ip, <u32>total);
    } else {
      let total = validateIpv4(off, len);
      if (total < 0) { count(DIR_EGRESS, <Verdict>(-total), len); continue; }
      forwardEgress(off, <u32>total);
    }
  }
}

// Routes one valid IPv4 packet from the TUN to its peer.
function forwardEgress(ip: u32, total: u32): void {
  let r = routeLookup(ipDst(ip));
  if (r < 0) {
    count(DIR_EGRESS, Verdict.NoRoute, total);
    if (!flannelUnreachableExempt(ip)) {
      icmpToTun(ICMP_DEST_UNREACH, CODE_NET_UNREACH, 0, ip, total, FLANNEL_ICMP_TTL);
    }
    return;
  }
  if (ipTtl(ip) <= 1) {
    count(DIR_EGRESS, Verdict.TtlExpired, total);
    if (!icmpErrorExempt(ip, total)) icmpToTun(ICMP_TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0, ip, total, ICMP_TTL);
    return;
  }
  if (total > tunnelMtu && hasDF(ip)) {
    count(DIR_EGRESS, Verdict.TooBig, total);
    if (!icmpErrorExempt(ip, total)) icmpToTun(ICMP_DEST_UNREACH, CODE_FRAG_NEEDED, tunnelMtu, ip, total, ICMP_TTL);
    return;
  }
  ipDecrementTtl(ip);
  let route = routeAddr(r);
  if (emitSend(DIR_EGRESS, ip, total, route)) {
    count(DIR_EGRESS, Verdict.Forwarded, total);
    store<u64>(route + R_TX_PACKETS, load<u64>(route + R_TX_PACKETS) + 1);
    store<u64>(route + R_TX_BYTES, load<u64>(route + R_TX_BYTES) + <u64>total);
  }
}

// --- ingress: wire -> TUN ---------------------------------------------------------------

export function ingress(n: u32, now: u32): void {
  beginBatch(now);
  if (n > BATCH) n = BATCH;
  let cap = ingressReadCapacity();
  for (let i: u32 = 0; i < n; i++) {
    let d = IN_IN_DESC + i * DESC_SIZE;
    let off = load<u32>(d + D_OFFSET);
    let len = load<u32>(d + D_LENGTH);
    if (len > cap) len = cap;
    let src = bswap<u32>(load<u32>(d + D_ADDR));
    let seg = <u32>load<u16>(d + D_SEGSIZE);
    if (seg == 0 || seg >= len) {
      ingressDatagram(off, len, src);
    } else {
      // UDP GRO handed us several datagrams of seg bytes back to back; the last may be shorter.
      let end = off + len;
      for (let p = off; p < end; p += seg) {
        ingressDatagram(p, min(seg, end - p), src);
      }
    }
  }
}

function ingressDatagram(p: u32, len: u32, outerSrc: u32): void {
  let ip = p;
  let plen = len;
  if (mode == MODE_VXLAN) {
    if (len < VXLAN_OVERHEAD + 20) { count(DIR_INGRESS, Verdict.Malformed, len); return; }
    let v = vxlanCheck(p);
    if (v != Verdict.Forwarded) { count(DIR_INGRESS, v, len); return; }
    ip = p + VXLAN_OVERHEAD;
    plen = len - VXLAN_OVERHEAD;
  }
  let t = validateIpv4(ip, plen);
  if (t < 0) { count(DIR_INGRESS, <Verdict>(-t), plen); return; }
  let total = <u32>t;
  // Anti-spoofing: the inner source must lie in a subnet owned by the peer that sent it.
  let r = routeLookup(ipSrc(ip));
  if (r < 0 || load<u32>(routeAddr(r) + R_PUBLIC_IP) != outerSrc) {
    count(DIR_INGRESS, Verdict.Spoofed, total);
    return;
  }
  let route = routeAddr(r);
  if (ipTtl(ip) <= 1) {
    count(DIR_INGRESS, Verdict.TtlExpired, total);
    if (!icmpErrorExempt(ip, total)) icmpToPeer(ICMP_TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0, ip, total, route);
    return;
  }
  ipDecrementTtl(ip);
  if (emitTun(DIR_INGRESS, ip, total)) {
    count(DIR_INGRESS, Verdict.Forwarded, total);
    store<u64>(route + R_RX_PACKETS, load<u64>(route + R_RX_PACKETS) + 1);
    store<u64>(route + R_RX_BYTES, load<u64>(route + R_RX_BYTES) + <u64>total);
  }
}
