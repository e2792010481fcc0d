// linen's dataplane core: the exported entry points the shell calls once per batch.
//
// egress(n):  n packets read from the TUN (descriptors at EG_IN_DESC) become UDP sends
//             (SEND_DESC) and, for ICMP errors, TUN writes (TUN_WRITES).
// ingress(n): n datagrams received from the wire (IN_IN_DESC) become TUN writes and, for ICMP
//             errors sent back to a peer, UDP sends.
// Nothing here allocates: all state lives at the fixed addresses of ring.ts.
import {
  BATCH, HEADROOM, SLOT_STRIDE, VNET_HDR_LEN, VXLAN_ENCAP_LEN, DESC_SIZE, D_OFFSET, D_LENGTH,
  D_ADDR, D_PORT, D_SEGSIZE, D_SRCPORT, D_STATUS, D_SPARE, TUNW_CAP, IOV_CAP,
  ICMP_CAP, ICMP_STRIDE, COUNTERS, COUNTER_SLOTS, EG_IN_DESC, IN_IN_DESC,
  SEND_DESC, ZERO_VNET, VNET_SCRATCH, ICMP_AREA, SPLIT_AREA, SPLIT_PER_PACKET, REGION_END,
  R_PUBLIC_IP, R_COUNTERS, R_TX_PACKETS, R_TX_BYTES, R_RX_PACKETS, R_RX_BYTES,
} from './ring';
import { egressSlot, ingressSlot, setTunWrite, setTunWrite2, setIovec } from './tables';
import { Verdict, count, resetCounters, DIR_EGRESS, DIR_INGRESS } from './counters';
import {
  ipVersion, ipHeaderLen, ipTotalLen, ipTtl, ipSrc, ipDst, hasDF, ipHeaderValid,
  ipDecrementTtl, ipProto, PROTO_TCP, PROTO_UDP, completePartialL4, completeChecksum, isFragment,
} from './ip';
import { routeLookup, routeAddr, routesReset, maskOf } from './routes';
import { vxlanFrame, vxlanCheck, vxlanSourcePort, vxlanConfigure } from './vxlan';
import { udpFrame } from './udp';
import {
  gsoHeaderLen, splitSegments, mergeCandidate, mergeAppend, mergeOpen, mergeFinishAll,
  mergeUdpCandidate, mergeUdpAppend, mergeUdpOpen,
  mergeReset, mergeCloseFlow, tcpGsoHeader, ITEM_IOVS, VNET_GSO_TCPV4, VNET_GSO_UDP_L4, VNET_F_NEEDS_CSUM,
} from './gso';
import {
  icmpBuild, icmpErrorExempt, flannelUnreachableExempt, ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED,
  CODE_NET_UNREACH, CODE_FRAG_NEEDED, CODE_TTL_EXCEEDED, FLANNEL_ICMP_TTL, ICMP_TTL,
} from './icmp';

// The whole layout (ring.ts) and the verdict enum, as globals: scripts/gen-abi.mjs turns these
// exports into native/linen_abi.h and src/dataplane/abi.ts.
export * from './ring';
export { Verdict } from './counters';
export { routeSet, routeRemove, routeFind, routesCount, routeLookup } from './routes';
export { checksum } from './ip';

export const MODE_UDP: u32 = 0;
export const MODE_VXLAN: u32 = 1;

// ICMP error budget per destination (the offending packet's source): a burst of 50, refilled
// at 1000 per second (Linux's icmp_msgs_per_sec), so one pod's flood cannot use up the path-MTU
// messages of the others. Sources share ICMP_BUCKETS buckets by a seeded hash: no allocation,
// and a pod cannot pick addresses that collide with a given victim's bucket.
const ICMP_BURST: u32 = 50;
const ICMP_PER_SEC: u32 = 1000;
const ICMP_BUCKET_BITS: u32 = 10;
const ICMP_BUCKETS: u32 = 1 << ICMP_BUCKET_BITS;
const icmpBuckets = memory.data(ICMP_BUCKETS * 8); // [tokens u32, last refill ms u32]

let mode: u32 = MODE_UDP;
// flanneld's UDP backend counts the tunnel as a hop and decrements the TTL at both ends; the
// kernel's VXLAN device does not. TTL 0 is never forwarded.
let hopInTunnel: bool = true;
let ttlFloor: u32 = 1;
let vnetHdr: bool = false;
let mergeOnIngress: bool = false;
let mergeUdpOnIngress: bool = false;
let splitUsed: u32 = 0;
// A UDP_SEGMENT send carries at most 64 datagrams (UDP_MAX_SEGMENTS before Linux 6.9) and
// 65,507 payload bytes.
const MAX_GSO_SEGMENTS: u32 = 64;
const MAX_GSO_BYTES: u32 = 65507;
let port: u32 = 8285;
let tunnelMtu: u32 = 1472;
let localAddr: u32 = 0; // own subnet's network address: source of our ICMP messages
let localMask: u32 = 0xffffff00; // own subnet's mask: ingress delivers only inside it
// The cluster network: ICMP errors go only to sources inside it (own subnet included).
let clusterAddr: u32 = 0;
let clusterMask: u32 = 0;
let icmpSeed: u32 = 0;

let nSend: u32 = 0;
let nTunw: u32 = 0;
let nIov: u32 = 0;
let nIcmp: u32 = 0;
let nowMs: u32 = 0;

// Sets up the instance. Must be called before anything else; may be called again to reset.
// Returns 0, or -1 when the memory is too small for the layout.
// With a virtio_net_hdr on the TUN, egress splits TSO/USO super-packets and ingress merges TCP
// segments into super-packets (unless merging is turned off).
export function init(modeValue: u32, useVnetHdr: bool): i32 {
  if (<usize>memory.size() << 16 < <usize>REGION_END || __heap_base > <usize>EG_IN_DESC - 65536) return -1;
  mode = modeValue;
  hopInTunnel = mode == MODE_UDP;
  ttlFloor = hopInTunnel ? 1 : 0;
  vnetHdr = useVnetHdr;
  mergeOnIngress = useVnetHdr;
  mergeUdpOnIngress = false;
  resetCounters();
  routesReset();
  memory.fill(ZERO_VNET, 0, 16);
  // Input descriptors point at fixed slots so that the IP header lands at slot + HEADROOM.
  let eRead = HEADROOM - (vnetHdr ? VNET_HDR_LEN : 0);
  let iRead = HEADROOM - (mode == MODE_VXLAN ? VXLAN_ENCAP_LEN : 0);
  for (let i: u32 = 0; i < BATCH; i++) {
    let e = EG_IN_DESC + i * DESC_SIZE;
    memory.fill(e, 0, DESC_SIZE);
    store<u32>(e + D_OFFSET, egressSlot(i) + eRead);
    let g = IN_IN_DESC + i * DESC_SIZE;
    memory.fill(g, 0, DESC_SIZE);
    store<u32>(g + D_OFFSET, ingressSlot(i) + iRead);
  }
  for (let b: u32 = 0; b < ICMP_BUCKETS; b++) {
    store<u32>(icmpBuckets + b * 8, ICMP_BURST);
    store<u32>(icmpBuckets + b * 8 + 4, 0);
  }
  return 0;
}

// Bytes a TUN read or UDP receive may write at an input descriptor's offset.
export function egressReadCapacity(): u32 { return SLOT_STRIDE - HEADROOM + (vnetHdr ? VNET_HDR_LEN : 0); }
export function ingressReadCapacity(): u32 { return SLOT_STRIDE - HEADROOM + (mode == MODE_VXLAN ? VXLAN_ENCAP_LEN : 0); }

// Local settings: the UDP port peers listen on (and, in UDP mode, send from), the largest inner
// packet the tunnel carries, the own subnet (its network address is the ICMP source), the
// cluster network, and for VXLAN the VNI and own VTEP MAC; the random seed keys the flow and
// ICMP bucket hashes.
export function configure(portValue: u32, mtu: u32, local: u32, localLen: u32, cluster: u32, clusterLen: u32,
                          vni: u32, macHi: u32, macLo: u32, seed: u32): void {
  port = portValue;
  tunnelMtu = mtu;
  localMask = maskOf(min(localLen, 32));
  localAddr = local & localMask;
  clusterMask = maskOf(min(clusterLen, 32));
  clusterAddr = cluster & clusterMask;
  icmpSeed = seed;
  vxlanConfigure(vni, macHi, macLo, seed);
}

// Turns the ingress TCP merge on or off (it needs the TUN's virtio_net_hdr).
export function setIngressMerge(on: bool): void { mergeOnIngress = on && vnetHdr; }

// Turns the ingress UDP merge on or off: only for a TUN that takes USO writes (TUN_F_USO4,
// Linux 6.2+); older kernels refuse them.
export function setIngressUdpMerge(on: bool): void { mergeUdpOnIngress = on && vnetHdr; }

export function sendCount(): u32 { return nSend; }
export function tunWriteCount(): u32 { return nTunw; }
export function counterAddr(dir: u32, verdict: u32): u32 { return COUNTERS + (dir * COUNTER_SLOTS + verdict) * 16; }
export function routeCounterAddr(index: i32): u32 { return routeAddr(index) + R_COUNTERS; }

function beginBatch(now: u32): void {
  nSend = 0; nTunw = 0; nIov = 0; nIcmp = 0; splitUsed = 0;
  mergeReset();
  nowMs = now;
}

// --- outputs ---------------------------------------------------------------------------

// Queues a send of [start, start + len) to the peer of route: one datagram, or with segSize
// non-zero a UDP_SEGMENT burst of datagrams of segSize bytes (the last may be shorter).
function queueSend(dir: u32, start: u32, len: u32, segSize: u32, route: u32, srcPort: u32): bool {
  if (nSend >= SEND_CAP) { count(dir, Verdict.NoRoom, len); return false; }
  let d = SEND_DESC + nSend * DESC_SIZE;
  store<u32>(d + D_OFFSET, start);
  store<u32>(d + D_LENGTH, len);
  store<u32>(d + D_ADDR, bswap<u32>(load<u32>(route + R_PUBLIC_IP)));
  store<u16>(d + D_PORT, bswap<u16>(<u16>port));
  store<u16>(d + D_SEGSIZE, <u16>segSize);
  store<u16>(d + D_SRCPORT, <u16>srcPort);
  store<u16>(d + D_STATUS, 0);
  store<u32>(d + D_SPARE, 0);
  nSend++;
  return true;
}

// Queues a datagram carrying the inner IPv4 packet at ip (totalLen bytes) to the peer of route,
// with the mode's framing written in front of it.
function emitSend(dir: u32, ip: u32, totalLen: u32, route: u32): bool {
  if (mode == MODE_VXLAN) {
    let srcPort = vxlanSourcePort(ip);
    return queueSend(dir, vxlanFrame(ip, route), totalLen + VXLAN_ENCAP_LEN, 0, route, srcPort);
  }
  return queueSend(dir, udpFrame(ip), totalLen, 0, route, 0);
}

// Queues one TUN write of [ip, ip + len), behind a zero virtio_net_hdr when the TUN has one.
function emitTun(dir: u32, ip: u32, len: u32): bool {
  let need: u32 = vnetHdr ? 2 : 1;
  if (nTunw >= TUNW_CAP || nIov + need > IOV_CAP) { count(dir, Verdict.NoRoom, len); return false; }
  if (vnetHdr) {
    setTunWrite2(nTunw, nIov, ZERO_VNET, VNET_HDR_LEN, ip, len);
  } else {
    setTunWrite(nTunw, nIov, 1);
    setIovec(nIov, ip, len);
  }
  nIov += need;
  nTunw++;
  return true;
}

// Whether an ICMP error may go to the source of the packet at orig: only inside the cluster
// network (never to a forged outside address), and within that source's bucket.
function icmpAllowed(dir: u32, orig: u32): bool {
  let to = ipSrc(orig);
  if ((to & clusterMask) != clusterAddr) return false;
  if (nIcmp >= ICMP_CAP) { count(dir, Verdict.NoRoom, 0); return false; }
  let b = icmpBuckets + ((((to ^ icmpSeed) * 0x9e3779b1) >> (32 - ICMP_BUCKET_BITS)) << 3);
  let tokens = load<u32>(b);
  let elapsed = nowMs - load<u32>(b + 4);
  if (elapsed > 0) {
    let t = <u64>tokens + <u64>elapsed * ICMP_PER_SEC / 1000;
    tokens = t > <u64>ICMP_BURST ? ICMP_BURST : <u32>t;
    store<u32>(b + 4, nowMs);
  }
  if (tokens == 0) { count(dir, Verdict.IcmpRateLimited, 0); return false; }
  store<u32>(b, tokens - 1);
  return true;
}

// ICMP error written back into the TUN, towards a local sender.
function icmpToTun(type: u32, code: u32, rest: u32, orig: u32, origLen: u32, ttl: u32): void {
  if (!icmpAllowed(DIR_EGRESS, orig)) return;
  let out = ICMP_AREA + nIcmp * ICMP_STRIDE + HEADROOM;
  nIcmp++;
  let len = icmpBuild(out, type, code, rest, orig, origLen, localAddr, ttl);
  if (emitTun(DIR_EGRESS, out, len)) count(DIR_EGRESS, Verdict.IcmpSent, len);
}

// ICMP error sent through the tunnel to the peer that owns the offending packet's source.
function icmpToPeer(type: u32, code: u32, rest: u32, orig: u32, origLen: u32, route: u32): void {
  if (!icmpAllowed(DIR_INGRESS, orig)) return;
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

// --- egress: TUN -> wire ----------------------------------------------------------------

export function egress(n: u32, now: u32): void {
  beginBatch(now);
  if (n > BATCH) n = BATCH;
  let cap = egressReadCapacity();
  for (let i: u32 = 0; i < n; i++) {
    let d = EG_IN_DESC + i * DESC_SIZE;
    let off = load<u32>(d + D_OFFSET);
    let len = load<u32>(d + D_LENGTH);
    if (len > cap) len = cap;
    if (vnetHdr) {
      if (len < VNET_HDR_LEN) { count(DIR_EGRESS, Verdict.Malformed, len); continue; }
      let flags = <u32>load<u8>(off);
      let gsoType = <u32>load<u8>(off + 1);
      let ip = off + VNET_HDR_LEN;
      let plen = len - VNET_HDR_LEN;
      let total = validateIpv4(ip, plen);
      if (total < 0) { count(DIR_EGRESS, <Verdict>(-total), plen); continue; }
      if (gsoType == VNET_GSO_TCPV4 || gsoType == VNET_GSO_UDP_L4) {
        splitEgress(ip, <u32>total, gsoType, <u32>load<u16>(off + 4));
        continue;
      }
      if (gsoType != 0) { count(DIR_EGRESS, Verdict.Unsupported, plen); continue; }
      if ((flags & VNET_F_NEEDS_CSUM) != 0 &&
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
  coalesceSends();
}

// Joins runs of single datagrams that go to the same peer from the same source port and have
// the same length (the last may be shorter) into one UDP_SEGMENT send: the kernel then builds,
// routes and queues one buffer for the run instead of one per datagram, on this host and on a
// receiver with UDP GRO. Each run is copied once into the split area (a GSO send is one
// contiguous buffer); order is kept, as only neighbours are joined. A receiver without UDP GRO
// (flanneld, a kernel VXLAN device) gets the same datagrams: its kernel cuts them apart.
function coalesceSends(): void {
  let w: u32 = 0;
  let i: u32 = 0;
  while (i < nSend) {
    let d = SEND_DESC + i * DESC_SIZE;
    let len = load<u32>(d + D_LENGTH);
    let j = i + 1;
    // A datagram larger than the tunnel MTU allows (no DF: the kernel fragments it) cannot be
    // a GSO segment: the kernel refuses segments over the path MTU.
    if (load<u16>(d + D_SEGSIZE) == 0 && len <= tunnelMtu + (mode == MODE_VXLAN ? VXLAN_ENCAP_LEN : 0)) {
      let addr = load<u32>(d + D_ADDR);
      let srcPort = load<u16>(d + D_SRCPORT);
      let total = len;
      while (j < nSend && j - i < MAX_GSO_SEGMENTS) {
        let e = SEND_DESC + j * DESC_SIZE;
        let elen = load<u32>(e + D_LENGTH);
        if (load<u16>(e + D_SEGSIZE) != 0 || load<u32>(e + D_ADDR) != addr || load<u16>(e + D_SRCPORT) != srcPort ||
            elen > len || total + elen > MAX_GSO_BYTES) break;
        total += elen;
        j++;
        if (elen < len) break; // a shorter datagram can only end a run
      }
    }
    let out = SEND_DESC + w * DESC_SIZE;
    if (j - i >= 2 && splitUsed + 65536 <= SPLIT_SIZE) {
      let dst = SPLIT_AREA + splitUsed;
      let p = dst;
      for (let k = i; k < j; k++) {
        let e = SEND_DESC + k * DESC_SIZE;
        let elen = load<u32>(e + D_LENGTH);
        memory.copy(p, load<u32>(e + D_OFFSET), elen);
        p += elen;
      }
      if (out != d) memory.copy(out, d, DESC_SIZE);
      store<u32>(out + D_OFFSET, dst);
      store<u32>(out + D_LENGTH, p - dst);
      store<u16>(out + D_SEGSIZE, <u16>len);
      splitUsed += (p - dst + 15) & ~15;
    } else {
      // not joined: descriptors [i, j) move down unchanged
      for (let k = i; k < j; k++) {
        let e = SEND_DESC + k * DESC_SIZE;
        let o = SEND_DESC + (w + k - i) * DESC_SIZE;
        if (o != e) memory.copy(o, e, DESC_SIZE);
      }
      w += j - i - 1;
    }
    w++;
    i = j;
  }
  nSend = w;
}

// Decides where a valid IPv4 packet from the TUN goes: the route entry's address, or 0 when it
// is dropped (counted, with an ICMP error where one is due). wireLen is the largest packet it
// will become on the wire (its own length, or one segment of a super-packet).
function routeEgress(ip: u32, total: u32, wireLen: u32): u32 {
  let r = routeLookup(ipDst(ip));
  if (r < 0) {
    count(DIR_EGRESS, Verdict.NoRoute, total);
    if (!flannelUnreachableExempt(ip)) {
      icmpToTun(ICMP_DEST_UNREACH, CODE_NET_UNREACH, 0, ip, total, FLANNEL_ICMP_TTL);
    }
    return 0;
  }
  if (ipTtl(ip) <= ttlFloor) {
    count(DIR_EGRESS, Verdict.TtlExpired, total);
    if (hopInTunnel && !icmpErrorExempt(ip, total)) icmpToTun(ICMP_TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0, ip, total, ICMP_TTL);
    return 0;
  }
  if (wireLen > tunnelMtu && hasDF(ip)) {
    count(DIR_EGRESS, Verdict.TooBig, total);
    if (!icmpErrorExempt(ip, total)) icmpToTun(ICMP_DEST_UNREACH, CODE_FRAG_NEEDED, tunnelMtu, ip, total, ICMP_TTL);
    return 0;
  }
  return routeAddr(r);
}

@inline function countTx(route: u32, packets: u32, bytes: u32): void {
  store<u64>(route + R_TX_PACKETS, load<u64>(route + R_TX_PACKETS) + <u64>packets);
  store<u64>(route + R_TX_BYTES, load<u64>(route + R_TX_BYTES) + <u64>bytes);
}

// Routes one valid IPv4 packet from the TUN to its peer.
function forwardEgress(ip: u32, total: u32): void {
  let route = routeEgress(ip, total, total);
  if (route == 0) return;
  if (hopInTunnel) ipDecrementTtl(ip);
  if (emitSend(DIR_EGRESS, ip, total, route)) {
    count(DIR_EGRESS, Verdict.Forwarded, total);
    countTx(route, 1, total);
  }
}

// Splits a TSO/USO super-packet into wire packets in the split area and queues them as
// UDP_SEGMENT bursts.
function splitEgress(ip: u32, total: u32, gsoType: u32, gsoSize: u32): void {
  let hdrLen = gsoHeaderLen(ip, total, gsoType);
  if (hdrLen == 0 || gsoSize == 0 || gsoSize > 65535 - hdrLen) { count(DIR_EGRESS, Verdict.Malformed, total); return; }
  let route = routeEgress(ip, total, hdrLen + min(gsoSize, total - hdrLen));
  if (route == 0) return;
  if (hopInTunnel) ipDecrementTtl(ip);
  let framing: u32 = mode == MODE_VXLAN ? VXLAN_ENCAP_LEN : 0;
  let out = SPLIT_AREA + splitUsed;
  let nseg = splitSegments(ip, total, hdrLen, gsoSize, gsoType, out, SPLIT_SIZE - splitUsed, framing);
  if (nseg == 0) { count(DIR_EGRESS, Verdict.NoRoom, total); return; }
  let srcPort: u32 = mode == MODE_VXLAN ? vxlanSourcePort(ip) : 0;
  let payload = total - hdrLen;
  let datagram = framing + hdrLen + gsoSize;
  let perSend = min(MAX_GSO_SEGMENTS, MAX_GSO_BYTES / datagram);
  if (perSend == 0) perSend = 1;
  let p = out;
  for (let i: u32 = 0; i < nseg; i += perSend) {
    let k = min(perSend, nseg - i);
    // bytes of segments [i, i + k): all full-size but possibly the very last one
    let lastPayload = min(gsoSize, payload - (i + k - 1) * gsoSize);
    let len = (k - 1) * datagram + framing + hdrLen + lastPayload;
    if (mode == MODE_VXLAN) {
      for (let j: u32 = 0; j < k; j++) vxlanFrame(p + j * datagram + framing, route);
    }
    if (queueSend(DIR_EGRESS, p, len, k > 1 ? datagram : 0, route, srcPort)) {
      let ipBytes = len - k * framing;
      count(DIR_EGRESS, Verdict.Forwarded, ipBytes);
      // counters count wire packets: add the other k - 1 segments
      let c = counterAddr(DIR_EGRESS, <u32>Verdict.Forwarded);
      store<u64>(c, load<u64>(c) + <u64>(k - 1));
      countTx(route, k, ipBytes);
    }
    p += len;
  }
  splitUsed += (p - out + 15) & ~15;
}

// --- ingress: wire -> TUN ---------------------------------------------------------------

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
  if (mode == MODE_UDP && outerPort != port) { count(DIR_INGRESS, Verdict.WrongSourcePort, len); return; }
  if (mode == MODE_VXLAN) {
    if (len < VXLAN_ENCAP_LEN + 20) { count(DIR_INGRESS, Verdict.Malformed, len); return; }
    let v = vxlanCheck(p);
    if (v != Verdict.Forwarded) { count(DIR_INGRESS, v, len); return; }
    ip = p + VXLAN_ENCAP_LEN;
    plen = len - VXLAN_ENCAP_LEN;
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
  // A peer delivers only to this node's pods: never to other networks (metadata address, the
  // node's own services, the internet through masquerading) nor to another peer's subnet.
  if ((ipDst(ip) & localMask) != localAddr) {
    count(DIR_INGRESS, Verdict.ForeignDestination, total);
    return;
  }
  let route = routeAddr(r);
  if (ipTtl(ip) <= ttlFloor) {
    count(DIR_INGRESS, Verdict.TtlExpired, total);
    if (hopInTunnel && !icmpErrorExempt(ip, total)) icmpToPeer(ICMP_TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0, ip, total, route);
    return;
  }
  if (hopInTunnel) ipDecrementTtl(ip);
  if (completePartialL4(ip, total)) count(DIR_INGRESS, Verdict.ChecksumCompleted, 0);
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
  count(DIR_INGRESS, Verdict.Forwarded, total);
  store<u64>(route + R_RX_PACKETS, load<u64>(route + R_RX_PACKETS) + 1);
  store<u64>(route + R_RX_BYTES, load<u64>(route + R_RX_BYTES) + <u64>total);
}

// Writes a TCP packet larger than the tunnel MTU to the TUN in MTU-sized segments: with a GSO
// virtio_net_hdr when the TUN has one (the kernel segments, nothing is copied), otherwise cut
// here into the split area. Returns false when it was dropped (counted).
function oversizeTcpToTun(ip: u32, total: u32): bool {
  let hdrLen = gsoHeaderLen(ip, total, VNET_GSO_TCPV4);
  if (hdrLen == 0 || hdrLen >= tunnelMtu) { count(DIR_INGRESS, Verdict.Malformed, total); return false; }
  let gsoSize = tunnelMtu - hdrLen;
  if (vnetHdr) {
    if (nTunw >= TUNW_CAP || nIov + 2 > IOV_CAP) { count(DIR_INGRESS, Verdict.NoRoom, total); return false; }
    let vnet = VNET_SCRATCH + nTunw * 16;
    tcpGsoHeader(vnet, ip, total, hdrLen, gsoSize);
    setTunWrite2(nTunw, nIov, vnet, VNET_HDR_LEN, ip, total);
    nIov += 2;
    nTunw++;
    return true;
  }
  let out = SPLIT_AREA + splitUsed;
  let nseg = splitSegments(ip, total, hdrLen, gsoSize, VNET_GSO_TCPV4, out, SPLIT_SIZE - splitUsed, 0);
  if (nseg == 0) { count(DIR_INGRESS, Verdict.NoRoom, total); return false; }
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
