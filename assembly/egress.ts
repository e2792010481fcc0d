// egress(n): n packets read from the TUN (descriptors at EG_IN_DESC) become UDP sends
// (SEND_DESC) and, for ICMP errors, TUN writes (TUN_WRITES).
import {
  BATCH, DESC_SIZE, D_ADDR, D_LENGTH, D_OFFSET, D_SEGSIZE, D_FLOW_HASH, EG_IN_DESC, HEADROOM,
  R_TX_BYTES, R_TX_PACKETS, SEND_DESC, SLOT_STRIDE, SPLIT_AREA, SPLIT_SIZE, VNET_HDR_LEN,
  VXLAN_ENCAP_LEN, WG_HEADER_LEN, WG_TAG_LEN, WG_PAD, R_WG_SESSION, WG_STAGE_CAP,
} from './ring';
import {
  wgBeginBatch, wgFrame, wgPadded, wgSendSession, wgStageFree, wgStagedBefore, wgStagedCount, wgStagedLength,
  wgStagedPacket, wgStagedRoute,
} from './wg';
import { DIR_EGRESS, PacketVerdict, count, counterAddr } from './counters';
import { completeChecksum, hasDF, ipDecrementTtl, ipDst, ipTotalLen, ipTtl, validateIpv4 } from './ip';
import { routeAddr, routeLookup } from './routes';
import { vxlanFrame, vxlanFlowHash } from './vxlan';
import { VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_GSO_UDP_L4, gsoHeaderLen, splitSegments } from './gso';
import {
  CODE_FRAG_NEEDED, CODE_NET_UNREACH, CODE_TTL_EXCEEDED, FLANNEL_ICMP_TTL, ICMP_DEST_UNREACH,
  ICMP_TIME_EXCEEDED, ICMP_TTL, flannelUnreachableExempt, icmpErrorExempt,
} from './icmp';
import { MODE_VXLAN, MODE_WIREGUARD, hopInTunnel, mode, ttlFloor, tunnelMtu, vnetHdr } from './settings';
import {
  MAX_GSO_BYTES, MAX_GSO_SEGMENTS, beginBatch, emitSend, icmpToTun, nSend, queueSend, splitUsed, wgSessionFor,
} from './outputs';

// Bytes a TUN read may write at an egress input descriptor's offset.
export function egressReadCapacity(): u32 { return SLOT_STRIDE - HEADROOM + (vnetHdr ? VNET_HDR_LEN : 0); }

export function egress(n: u32, now: u32): void {
  beginBatch(now);
  if (mode == MODE_WIREGUARD) wgBeginBatch();
  if (n > BATCH) n = BATCH;
  let cap = egressReadCapacity();
  for (let i: u32 = 0; i < n; i++) {
    let d = EG_IN_DESC + i * DESC_SIZE;
    let off = load<u32>(d + D_OFFSET);
    let len = load<u32>(d + D_LENGTH);
    if (len > cap) len = cap;
    if (vnetHdr) {
      if (len < VNET_HDR_LEN) { count(DIR_EGRESS, PacketVerdict.Malformed, len); continue; }
      let flags = <u32>load<u8>(off);
      let gsoType = <u32>load<u8>(off + 1);
      let ip = off + VNET_HDR_LEN;
      let plen = len - VNET_HDR_LEN;
      let total = validateIpv4(ip, plen);
      if (total < 0) { count(DIR_EGRESS, <PacketVerdict>(-total), plen); continue; }
      if (gsoType == VNET_GSO_TCPV4 || gsoType == VNET_GSO_UDP_L4) {
        splitEgress(ip, <u32>total, gsoType, <u32>load<u16>(off + 4));
        continue;
      }
      if (gsoType != 0) { count(DIR_EGRESS, PacketVerdict.Unsupported, plen); continue; }
      if ((flags & VNET_F_NEEDS_CSUM) != 0 &&
          !completeChecksum(ip, <u32>total, <u32>load<u16>(off + 6), <u32>load<u16>(off + 8))) {
        count(DIR_EGRESS, PacketVerdict.Malformed, plen);
        continue;
      }
      forwardEgress(ip, <u32>total);
    } else {
      let total = validateIpv4(off, len);
      if (total < 0) { count(DIR_EGRESS, <PacketVerdict>(-total), len); continue; }
      forwardEgress(off, <u32>total);
    }
  }
  // WireGuard joins datagrams only once they are sealed (wgEgressFinish): joining copies them.
  if (mode != MODE_WIREGUARD) coalesceSends();
}

// WireGuard: called after the shell sealed the batch's crypt table.
export function wgEgressFinish(): void { coalesceSends(); }

// WireGuard: a batch of the waiting packets whose peers have a session now, oldest first, framed
// where they wait; the shell seals it, calls wgEgressFinish() and sends it like an egress batch,
// before anything is staged again. Returns the packets queued.
export function wgReleaseStaged(now: u32): u32 {
  beginBatch(now);
  wgBeginBatch();
  let queued: u32 = 0;
  while (wgStagedCount() > 0) {
    let best: i32 = -1;
    let bestSession: u32 = 0;
    for (let slot: u32 = 0; slot < WG_STAGE_CAP; slot++) {
      let tag = wgStagedRoute(slot);
      if (tag == 0 || (best >= 0 && !wgStagedBefore(slot, <u32>best))) continue;
      let s = wgSendSession(load<u32>(routeAddr(<i32>tag - 1) + R_WG_SESSION));
      if (s != 0) { best = <i32>slot; bestSession = s; }
    }
    if (best < 0) break;
    let slot = <u32>best;
    let route = routeAddr(<i32>wgStagedRoute(slot) - 1);
    let ip = wgStagedPacket(slot);
    let len = wgStagedLength(slot);
    let wire = wgFrame(bestSession, ip, len);
    if (wire == 0) break; // crypt table full: the rest waits for the next call
    if (!queueSend(DIR_EGRESS, ip - WG_HEADER_LEN, wire, 0, route, 0)) break;
    wgStageFree(slot);
    count(DIR_EGRESS, PacketVerdict.Forwarded, len);
    countTx(route, 1, len);
    queued++;
  }
  return queued;
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
    if (load<u16>(d + D_SEGSIZE) == 0 && len <= tunnelMtu + sendFraming()) {
      let addr = load<u32>(d + D_ADDR);
      let flowHash = load<u16>(d + D_FLOW_HASH);
      let total = len;
      while (j < nSend && j - i < MAX_GSO_SEGMENTS) {
        let e = SEND_DESC + j * DESC_SIZE;
        let elen = load<u32>(e + D_LENGTH);
        if (load<u16>(e + D_SEGSIZE) != 0 || load<u32>(e + D_ADDR) != addr || load<u16>(e + D_FLOW_HASH) != flowHash ||
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
    count(DIR_EGRESS, PacketVerdict.NoRoute, total);
    if (!flannelUnreachableExempt(ip)) {
      icmpToTun(ICMP_DEST_UNREACH, CODE_NET_UNREACH, 0, ip, total, FLANNEL_ICMP_TTL);
    }
    return 0;
  }
  if (ipTtl(ip) <= ttlFloor) {
    count(DIR_EGRESS, PacketVerdict.TtlExpired, total);
    if (hopInTunnel && !icmpErrorExempt(ip, total)) icmpToTun(ICMP_TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0, ip, total, ICMP_TTL);
    return 0;
  }
  if (wireLen > tunnelMtu && hasDF(ip)) {
    count(DIR_EGRESS, PacketVerdict.TooBig, total);
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
    count(DIR_EGRESS, PacketVerdict.Forwarded, total);
    countTx(route, 1, total);
  }
}

// Splits a TSO/USO super-packet into wire packets in the split area and queues them as
// UDP_SEGMENT bursts.
function splitEgress(ip: u32, total: u32, gsoType: u32, gsoSize: u32): void {
  let hdrLen = gsoHeaderLen(ip, total, gsoType);
  if (hdrLen == 0 || gsoSize == 0 || gsoSize > 65535 - hdrLen) { count(DIR_EGRESS, PacketVerdict.Malformed, total); return; }
  let route = routeEgress(ip, total, hdrLen + min(gsoSize, total - hdrLen));
  if (route == 0) return;
  if (hopInTunnel) ipDecrementTtl(ip);
  if (mode == MODE_WIREGUARD) { splitEgressWg(ip, total, hdrLen, gsoSize, gsoType, route); return; }
  let framing: u32 = mode == MODE_VXLAN ? VXLAN_ENCAP_LEN : 0;
  let out = SPLIT_AREA + splitUsed;
  let nseg = splitSegments(ip, total, hdrLen, gsoSize, gsoType, out, SPLIT_SIZE - splitUsed, framing);
  if (nseg == 0) { count(DIR_EGRESS, PacketVerdict.NoRoom, total); return; }
  let flowHash: u32 = mode == MODE_VXLAN ? vxlanFlowHash(ip) : 0;
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
    if (queueSend(DIR_EGRESS, p, len, k > 1 ? datagram : 0, route, flowHash)) {
      let ipBytes = len - k * framing;
      count(DIR_EGRESS, PacketVerdict.Forwarded, ipBytes);
      // counters count wire packets: add the other k - 1 segments
      let c = counterAddr(DIR_EGRESS, <u32>PacketVerdict.Forwarded);
      store<u64>(c, load<u64>(c) + <u64>(k - 1));
      countTx(route, k, ipBytes);
    }
    p += len;
  }
  splitUsed += (p - out + 15) & ~15;
}


// Bytes a mode adds around an inner packet of the tunnel MTU (WireGuard: header, padding, tag).
function sendFraming(): u32 {
  return mode == MODE_VXLAN ? VXLAN_ENCAP_LEN : mode == MODE_WIREGUARD ? WG_HEADER_LEN + WG_PAD - 1 + WG_TAG_LEN : 0;
}

// WireGuard: each segment becomes one transport message. The segments are laid out so that the
// messages lie back to back (header, padded segment, tag) and go out as UDP_SEGMENT sends.
function splitEgressWg(ip: u32, total: u32, hdrLen: u32, gsoSize: u32, gsoType: u32, route: u32): void {
  let s = wgSessionFor(route);
  // A super-packet does not wait for the handshake: TCP sends it again.
  if (s == 0) { count(DIR_EGRESS, PacketVerdict.WgNoSession, total); return; }
  let full = hdrLen + gsoSize;
  let framing = WG_HEADER_LEN + WG_TAG_LEN + (wgPadded(full) - full);
  let out = SPLIT_AREA + splitUsed;
  let room = SPLIT_SIZE - splitUsed;
  // the last segment's padding and tag go behind the area splitSegments fills
  let reserve: u32 = 2 * (WG_HEADER_LEN + WG_TAG_LEN);
  let nseg: u32 = room < reserve ? 0 : splitSegments(ip, total, hdrLen, gsoSize, gsoType, out, room - reserve, framing);
  if (nseg == 0) { count(DIR_EGRESS, PacketVerdict.NoRoom, total); return; }
  let datagram = framing + full;
  let perSend = min(MAX_GSO_SEGMENTS, MAX_GSO_BYTES / datagram);
  if (perSend == 0) perSend = 1;
  let end = out;
  for (let i: u32 = 0; i < nseg; i += perSend) {
    let k = min(perSend, nseg - i);
    let first = out + i * datagram + framing;
    let len: u32 = 0;
    let ipBytes: u32 = 0;
    for (let j: u32 = 0; j < k; j++) {
      let seg = first + j * datagram;
      let segLen = ipTotalLen(seg);
      let wire = wgFrame(s, seg, segLen);
      if (wire == 0) { count(DIR_EGRESS, PacketVerdict.NoRoom, segLen); k = j; break; }
      len += wire;
      ipBytes += segLen;
    }
    if (k == 0) break;
    end = first - WG_HEADER_LEN + len;
    if (queueSend(DIR_EGRESS, first - WG_HEADER_LEN, len, k > 1 ? datagram : 0, route, 0)) {
      count(DIR_EGRESS, PacketVerdict.Forwarded, ipBytes);
      let c = counterAddr(DIR_EGRESS, <u32>PacketVerdict.Forwarded);
      store<u64>(c, load<u64>(c) + <u64>(k - 1));
      countTx(route, k, ipBytes);
    }
  }
  splitUsed += (end - out + 15) & ~15;
}
