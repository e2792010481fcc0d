// The outputs of one batch: UDP sends (SEND_DESC), TUN writes (TUN_WRITES and their IOVECS),
// ICMP errors built in ICMP_AREA, and the split area's use. beginBatch() empties them; the shell
// flushes them after each egress() or ingress() call.
import {
  DESC_SIZE, D_ADDR, D_LENGTH, D_OFFSET, D_PORT, D_SEGSIZE, D_SPARE, D_FLOW_HASH, D_STATUS, HEADROOM,
  ICMP_AREA, ICMP_CAP, ICMP_STRIDE, IOV_CAP, R_PUBLIC_IP, SEND_CAP, SEND_DESC, TUNW_CAP,
  VNET_HDR_LEN, VXLAN_ENCAP_LEN, ZERO_VNET, R_WG_PORT, R_WG_SESSION, ROUTES, ROUTE_SIZE, WG_HEADER_LEN,
} from './ring';
import { wgFrame, wgSendSession, wgStage, wgWant } from './wg';
import { setIovec, setTunWrite, setTunWrite2 } from './tables';
import { DIR_EGRESS, DIR_INGRESS, PacketVerdict, count } from './counters';
import { ipSrc } from './ip';
import { vxlanFrame, vxlanFlowHash } from './vxlan';
import { udpFrame } from './udp';
import { mergeReset } from './gso';
import { ICMP_TTL, icmpBuild } from './icmp';
import { MODE_VXLAN, MODE_WIREGUARD, clusterAddr, clusterMask, icmpSeed, localAddr, mode, port, vnetHdr } from './settings';

// A UDP_SEGMENT send carries at most 64 datagrams (UDP_MAX_SEGMENTS before Linux 6.9) and
// 65,507 payload bytes.
export const MAX_GSO_SEGMENTS: u32 = 64;
export const MAX_GSO_BYTES: u32 = 65507;

// This batch's outputs so far: sends, TUN writes, iovecs, ICMP messages built, and bytes of
// the split area taken; nowMs is the batch's clock for the ICMP buckets.
export let nSend: u32 = 0;
export let nTunw: u32 = 0;
export let nIov: u32 = 0;
export let nIcmp: u32 = 0;
export let nowMs: u32 = 0;
export let splitUsed: u32 = 0;

// ICMP error budget per destination (the offending packet's source): a burst of 50, refilled
// at 1000 per second (Linux's icmp_msgs_per_sec), so one pod's flood cannot use up the path-MTU
// messages of the others. Sources share ICMP_BUCKETS buckets by a seeded hash: no allocation,
// and a pod cannot pick addresses that collide with a given victim's bucket.
const ICMP_BURST: u32 = 50;
const ICMP_PER_SEC: u32 = 1000;
const ICMP_BUCKET_BITS: u32 = 10;
const ICMP_BUCKETS: u32 = 1 << ICMP_BUCKET_BITS;
const icmpBuckets = memory.data(ICMP_BUCKETS * 8); // [tokens u32, last refill ms u32]

export function resetIcmpBuckets(): void {
  for (let b: u32 = 0; b < ICMP_BUCKETS; b++) {
    store<u32>(icmpBuckets + b * 8, ICMP_BURST);
    store<u32>(icmpBuckets + b * 8 + 4, 0);
  }
}

export function sendCount(): u32 { return nSend; }
export function tunWriteCount(): u32 { return nTunw; }

export function beginBatch(now: u32): void {
  nSend = 0; nTunw = 0; nIov = 0; nIcmp = 0; splitUsed = 0;
  mergeReset();
  nowMs = now;
}

// Queues a send of [start, start + len) to the peer of route: one datagram, or with segSize
// non-zero a UDP_SEGMENT burst of datagrams of segSize bytes (the last may be shorter).
export function queueSend(dir: u32, start: u32, len: u32, segSize: u32, route: u32, flowHash: u32): bool {
  if (nSend >= SEND_CAP) { count(dir, PacketVerdict.NoRoom, len); return false; }
  let d = SEND_DESC + nSend * DESC_SIZE;
  store<u32>(d + D_OFFSET, start);
  store<u32>(d + D_LENGTH, len);
  store<u32>(d + D_ADDR, bswap<u32>(load<u32>(route + R_PUBLIC_IP)));
  store<u16>(d + D_PORT, bswap<u16>(<u16>(mode == MODE_WIREGUARD ? load<u32>(route + R_WG_PORT) : port)));
  store<u16>(d + D_SEGSIZE, <u16>segSize);
  store<u16>(d + D_FLOW_HASH, <u16>flowHash);
  store<u16>(d + D_STATUS, 0);
  store<u32>(d + D_SPARE, 0);
  nSend++;
  return true;
}

// Queues a datagram carrying the inner IPv4 packet at ip (totalLen bytes) to the peer of route,
// with the mode's framing written in front of it.
export function emitSend(dir: u32, ip: u32, totalLen: u32, route: u32): bool {
  if (mode == MODE_VXLAN) {
    let flowHash = vxlanFlowHash(ip);
    return queueSend(dir, vxlanFrame(ip, route), totalLen + VXLAN_ENCAP_LEN, 0, route, flowHash);
  }
  if (mode == MODE_WIREGUARD) {
    let s = wgSessionFor(route);
    if (s == 0) {
      if (!wgStage(<i32>((route - ROUTES) / ROUTE_SIZE), ip, totalLen)) count(dir, PacketVerdict.WgNoSession, totalLen);
      return false;
    }
    let wire = wgFrame(s, ip, totalLen);
    if (wire == 0) { count(dir, PacketVerdict.NoRoom, totalLen); return false; }
    return queueSend(dir, ip - WG_HEADER_LEN, wire, 0, route, 0);
  }
  return queueSend(dir, udpFrame(ip), totalLen, 0, route, 0);
}

// WireGuard: the session packets to the peer of route go out on, or 0 (the shell is asked for
// a handshake).
export function wgSessionFor(route: u32): u32 {
  let s = wgSendSession(load<u32>(route + R_WG_SESSION));
  if (s == 0) wgWant(<i32>((route - ROUTES) / ROUTE_SIZE));
  return s;
}

// Queues one TUN write of [ip, ip + len), behind a zero virtio_net_hdr when the TUN has one.
export function emitTun(dir: u32, ip: u32, len: u32): bool {
  let need: u32 = vnetHdr ? 2 : 1;
  if (nTunw >= TUNW_CAP || nIov + need > IOV_CAP) { count(dir, PacketVerdict.NoRoom, len); return false; }
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
export function icmpAllowed(dir: u32, orig: u32): bool {
  let to = ipSrc(orig);
  if ((to & clusterMask) != clusterAddr) return false;
  if (nIcmp >= ICMP_CAP) { count(dir, PacketVerdict.NoRoom, 0); return false; }
  let b = icmpBuckets + ((((to ^ icmpSeed) * 0x9e3779b1) >> (32 - ICMP_BUCKET_BITS)) << 3);
  let tokens = load<u32>(b);
  let elapsed = nowMs - load<u32>(b + 4);
  if (elapsed > 0) {
    let t = <u64>tokens + <u64>elapsed * ICMP_PER_SEC / 1000;
    tokens = t > <u64>ICMP_BURST ? ICMP_BURST : <u32>t;
    store<u32>(b + 4, nowMs);
  }
  if (tokens == 0) { count(dir, PacketVerdict.IcmpRateLimited, 0); return false; }
  store<u32>(b, tokens - 1);
  return true;
}

// ICMP error written back into the TUN, towards a local sender.
export function icmpToTun(type: u32, code: u32, rest: u32, orig: u32, origLen: u32, ttl: u32): void {
  if (!icmpAllowed(DIR_EGRESS, orig)) return;
  let out = ICMP_AREA + nIcmp * ICMP_STRIDE + HEADROOM;
  nIcmp++;
  let len = icmpBuild(out, type, code, rest, orig, origLen, localAddr, ttl);
  if (emitTun(DIR_EGRESS, out, len)) count(DIR_EGRESS, PacketVerdict.IcmpSent, len);
}

// ICMP error sent through the tunnel to the peer that owns the offending packet's source.
export function icmpToPeer(type: u32, code: u32, rest: u32, orig: u32, origLen: u32, route: u32): void {
  if (!icmpAllowed(DIR_INGRESS, orig)) return;
  let out = ICMP_AREA + nIcmp * ICMP_STRIDE + HEADROOM;
  nIcmp++;
  let len = icmpBuild(out, type, code, rest, orig, origLen, localAddr, ICMP_TTL);
  if (emitSend(DIR_INGRESS, out, len, route)) count(DIR_INGRESS, PacketVerdict.IcmpSent, len);
}

