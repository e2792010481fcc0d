// Segmentation offload in userspace.
//
// Egress: the TUN hands over TCP (and UDP, with USO) super-packets of up to 64 KiB described by
// a virtio_net_hdr. splitSegments() cuts one into wire-size packets, each a complete IPv4
// packet with its own ID, length, sequence number, flags and checksums, laid out back to back
// (with the mode's framing in front of each) so one UDP_SEGMENT send carries many of them.
//
// Ingress: consecutive TCP segments of one flow in a received batch are merged into one
// super-packet (wireguard-go's rules) and written to the TUN with a GSO virtio_net_hdr, so the
// kernel's stack is crossed once per burst instead of once per segment. UDP datagrams of one
// flow with the same length (the last may be shorter) are merged the same way into a USO
// super-packet when the TUN takes those (Linux 6.2+); the kernel cuts it back into the same
// datagrams for the pod.
import { IOV_CAP, VNET_HDR_LEN } from './ring';
import { setTunWrite, setTunWrite2, setIovec } from './tables';
import {
  load16be, load32be, store16be, store32be, ipHeaderLen, ipSetChecksum, sumBytes, fold,
  pseudoHeaderSum, isFragment, PROTO_TCP, PROTO_UDP,
} from './ip';

export const VNET_GSO_TCPV4: u32 = 1;
export const VNET_GSO_UDP_L4: u32 = 5;
export const VNET_F_NEEDS_CSUM: u32 = 1;

const TCP_FIN: u32 = 0x01;
const TCP_PSH: u32 = 0x08;
const TCP_ACK: u32 = 0x10;
const TCP_CWR: u32 = 0x80;

// Copies len bytes from src to dst and returns the ones'-complement sum of them added to acc
// (same byte-order convention as sumBytes): one pass over the data instead of two.
export function copyAndSum(dst: u32, src: u32, len: u32, acc: u64): u64 {
  let end = src + len;
  if (len >= 32) {
    let vacc = i32x4.splat(0);
    let vend = src + (len & ~15);
    while (src < vend) {
      let v = v128.load(src);
      v128.store(dst, v);
      vacc = i32x4.add(vacc, i32x4.extadd_pairwise_i16x8_u(v));
      src += 16;
      dst += 16;
    }
    acc += <u64><u32>i32x4.extract_lane(vacc, 0) + <u64><u32>i32x4.extract_lane(vacc, 1) +
           <u64><u32>i32x4.extract_lane(vacc, 2) + <u64><u32>i32x4.extract_lane(vacc, 3);
  }
  while (src + 2 <= end) {
    let w = load<u16>(src);
    store<u16>(dst, w);
    acc += <u64>w;
    src += 2;
    dst += 2;
  }
  if (src < end) {
    let b = load<u8>(src);
    store<u8>(dst, b);
    acc += <u64>b;
  }
  return acc;
}

// Header length (IP + L4) of a super-packet, recomputed from the packet itself (hdr_len in the
// virtio header is not trusted), or 0 when the shape is invalid.
export function gsoHeaderLen(ip: u32, total: u32, gsoType: u32): u32 {
  let hlen = ipHeaderLen(ip);
  if (isFragment(ip)) return 0;
  let proto = load<u8>(ip + 9);
  if (gsoType == VNET_GSO_TCPV4) {
    if (proto != PROTO_TCP || hlen + 20 > total) return 0;
    let thlen = (<u32>load<u8>(ip + hlen + 12) >> 4) << 2;
    if (thlen < 20 || hlen + thlen > total) return 0;
    return hlen + thlen;
  }
  if (gsoType == VNET_GSO_UDP_L4) {
    if (proto != PROTO_UDP || hlen + 8 > total) return 0;
    return hlen + 8;
  }
  return 0;
}

// Writes the segments of the super-packet at ip (total bytes, headers hdrLen, payload cut every
// gsoSize bytes) to out, each preceded by `framing` bytes of room. The source header's TTL must
// already be decremented. Returns the number of segments, or 0 when cap bytes do not suffice.
export function splitSegments(ip: u32, total: u32, hdrLen: u32, gsoSize: u32, gsoType: u32,
                              out: u32, cap: u32, framing: u32): u32 {
  let hlen = ipHeaderLen(ip);
  let payload = total - hdrLen;
  let nseg = (payload + gsoSize - 1) / gsoSize;
  let need = nseg * (framing + hdrLen) + payload;
  if (nseg == 0 || need > cap) return 0;
  let firstId = load16be(ip + 4);
  let isTcp = gsoType == VNET_GSO_TCPV4;
  let firstSeq = isTcp ? load32be(ip + hlen + 4) : 0;
  let tcpFlags = isTcp ? <u32>load<u8>(ip + hlen + 13) : 0;
  let src = load32be(ip + 12);
  let dst = load32be(ip + 16);
  let proto = <u32>load<u8>(ip + 9);
  let p = out;
  for (let i: u32 = 0; i < nseg; i++) {
    let off = i * gsoSize;
    let segLen = min(gsoSize, payload - off);
    let seg = p + framing;
    memory.copy(seg, ip, hdrLen);
    store16be(seg + 2, hdrLen + segLen);
    store16be(seg + 4, (firstId + i) & 0xffff);
    ipSetChecksum(seg, hlen);
    let l4 = seg + hlen;
    let l4len = hdrLen - hlen + segLen;
    let csumAt: u32;
    if (isTcp) {
      store32be(l4 + 4, firstSeq + off);
      let flags = tcpFlags;
      if (i + 1 < nseg) flags &= ~(TCP_FIN | TCP_PSH);
      if (i > 0) flags &= ~TCP_CWR;
      store<u8>(l4 + 13, <u8>flags);
      csumAt = l4 + 16;
    } else {
      store16be(l4 + 4, l4len);
      csumAt = l4 + 6;
    }
    store<u16>(csumAt, 0);
    let acc = pseudoHeaderSum(src, dst, proto, l4len);
    acc = sumBytes(l4, hdrLen - hlen, acc);
    acc = copyAndSum(seg + hdrLen, ip + hdrLen + off, segLen, acc);
    let sum = (~fold(acc)) & 0xffff;
    if (!isTcp && sum == 0) sum = 0xffff;
    store16be(csumAt, sum);
    p = seg + hdrLen + segLen;
  }
  return nseg;
}

// --- ingress merge ----------------------------------------------------------------------

// An open merge item: a head packet plus payload iovecs appended behind it.
const MAX_ITEMS: u32 = 64;
// iovecs reserved per item: the vnet header, the head packet, and up to this many - 2 payloads.
export const ITEM_IOVS: u32 = 48;
const ITEM_SIZE: u32 = 64;
const items: u32 = <u32>memory.data(MAX_ITEMS * ITEM_SIZE);
// item fields
const I_SRC: u32 = 0;
const I_DST: u32 = 4;
const I_PORTS: u32 = 8;
const I_ACK: u32 = 12;
const I_IP: u32 = 16;      // head packet address
const I_HDRLEN: u32 = 20;
const I_GSO: u32 = 24;     // payload size of every segment but the last
const I_PAYLOAD: u32 = 28; // merged payload bytes
const I_NEXTSEQ: u32 = 32;
const I_IOV: u32 = 36;     // first reserved iovec
const I_NIOV: u32 = 40;
const I_CLOSED: u32 = 44;  // no more appends (PSH seen or short segment)
const I_MATCH: u32 = 48;   // IP bytes 1 (TOS), 6 (DF etc.), 8 (TTL) packed
const I_VNET: u32 = 52;    // address of this write's 16-byte vnet header scratch
const I_WRITE: u32 = 56;   // index of this item's TUN write
const I_PROTO: u32 = 60;   // PROTO_TCP or PROTO_UDP

let nItems: u32 = 0;

export function mergeReset(): void { nItems = 0; }

@inline function matchBits(ip: u32): u32 {
  return (<u32>load<u8>(ip + 1) << 16) | ((<u32>load<u8>(ip + 6) & 0xe0) << 8) | <u32>load<u8>(ip + 8);
}

// Whether the IPv4 packet at ip (total bytes, TTL already decremented) can take part in a
// merge: IPv4 without options, not a fragment, TCP with only ACK or ACK|PSH, some payload and a
// valid checksum. Returns the TCP header length, or 0.
export function mergeCandidate(ip: u32, total: u32): u32 {
  if (load<u8>(ip) != 0x45 || load<u8>(ip + 9) != PROTO_TCP || isFragment(ip) || total < 40) return 0;
  let thlen = (<u32>load<u8>(ip + 32) >> 4) << 2;
  if (thlen < 20 || thlen + 20 >= total) return 0;
  let flags = <u32>load<u8>(ip + 33);
  if (flags != TCP_ACK && flags != (TCP_ACK | TCP_PSH)) return 0;
  let acc = pseudoHeaderSum(load32be(ip + 12), load32be(ip + 16), PROTO_TCP, total - 20);
  if (fold(sumBytes(ip + 20, total - 20, acc)) != 0xffff) return 0;
  return thlen;
}

// Tries to append the candidate at ip to an open item of its flow. Returns true when merged.
export function mergeAppend(ip: u32, total: u32, thlen: u32): bool {
  let src = load<u32>(ip + 12), dst = load<u32>(ip + 16), ports = load<u32>(ip + 20), ack = load<u32>(ip + 28);
  for (let k: u32 = 0; k < nItems; k++) {
    let it = items + k * ITEM_SIZE;
    if (load<u32>(it + I_SRC) != src || load<u32>(it + I_DST) != dst ||
        load<u32>(it + I_PORTS) != ports || load<u32>(it + I_ACK) != ack || load<u32>(it + I_PROTO) != PROTO_TCP) continue;
    // Same flow: only the newest item of a flow may grow, to keep the flow in order.
    if (load<u32>(it + I_CLOSED) != 0) return false;
    let head = load<u32>(it + I_IP);
    let hdrLen = load<u32>(it + I_HDRLEN);
    let payload = total - 20 - thlen;
    let gso = load<u32>(it + I_GSO);
    if (thlen + 20 != hdrLen || payload > gso || matchBits(ip) != load<u32>(it + I_MATCH)) return false;
    if (load32be(ip + 24) != load<u32>(it + I_NEXTSEQ)) return false;
    // TCP options must be identical.
    for (let o: u32 = 40; o < hdrLen; o++) if (load<u8>(ip + o) != load<u8>(head + o)) return false;
    let merged = load<u32>(it + I_PAYLOAD);
    let niov = load<u32>(it + I_NIOV);
    if (hdrLen + merged + payload > 65535 || niov >= ITEM_IOVS) return false;
    setIovec(load<u32>(it + I_IOV) + niov, ip + hdrLen, payload);
    store<u32>(it + I_NIOV, niov + 1);
    store<u32>(it + I_PAYLOAD, merged + payload);
    store<u32>(it + I_NEXTSEQ, load<u32>(it + I_NEXTSEQ) + payload);
    let flags = <u32>load<u8>(ip + 33);
    if ((flags & TCP_PSH) != 0) {
      store<u8>(head + 33, <u8>(load<u8>(head + 33) | <u8>TCP_PSH));
      store<u32>(it + I_CLOSED, 1);
    }
    if (payload < gso) store<u32>(it + I_CLOSED, 1);
    return true;
  }
  return false;
}

// Opens a new item with the candidate at ip as its head, as TUN write number w, using iovecs
// [iov, iov + ITEM_IOVS) and the vnet header scratch at vnet. Returns false when no item slot
// is free.
export function mergeOpen(ip: u32, total: u32, thlen: u32, w: u32, iov: u32, vnet: u32): bool {
  if (!openItem(ip, total, PROTO_TCP, thlen + 20, w, iov, vnet)) return false;
  let it = items + (nItems - 1) * ITEM_SIZE;
  store<u32>(it + I_ACK, load<u32>(ip + 28));
  store<u32>(it + I_NEXTSEQ, load32be(ip + 24) + total - 20 - thlen);
  store<u32>(it + I_CLOSED, (<u32>load<u8>(ip + 33) & TCP_PSH) != 0 ? 1 : 0);
  return true;
}

// Opens a new item of protocol proto with the packet at ip (headers hdrLen bytes) as its head.
function openItem(ip: u32, total: u32, proto: u32, hdrLen: u32, w: u32, iov: u32, vnet: u32): bool {
  if (nItems >= MAX_ITEMS || iov + ITEM_IOVS > IOV_CAP) return false;
  // A later item of the same flow supersedes an earlier one: close the earlier one.
  let src = load<u32>(ip + 12), dst = load<u32>(ip + 16), ports = load<u32>(ip + 20);
  for (let k: u32 = 0; k < nItems; k++) {
    let o = items + k * ITEM_SIZE;
    if (load<u32>(o + I_SRC) == src && load<u32>(o + I_DST) == dst && load<u32>(o + I_PORTS) == ports &&
        load<u32>(o + I_PROTO) == proto) {
      store<u32>(o + I_SRC, 0); // retire its key so lookups skip it
      store<u32>(o + I_DST, 0);
    }
  }
  let it = items + nItems * ITEM_SIZE;
  nItems++;
  let payload = total - hdrLen;
  store<u32>(it + I_SRC, src);
  store<u32>(it + I_DST, dst);
  store<u32>(it + I_PORTS, ports);
  store<u32>(it + I_ACK, 0);
  store<u32>(it + I_IP, ip);
  store<u32>(it + I_HDRLEN, hdrLen);
  store<u32>(it + I_GSO, payload);
  store<u32>(it + I_PAYLOAD, payload);
  store<u32>(it + I_NEXTSEQ, 0);
  store<u32>(it + I_IOV, iov);
  store<u32>(it + I_NIOV, 2);
  store<u32>(it + I_CLOSED, 0);
  store<u32>(it + I_MATCH, matchBits(ip));
  store<u32>(it + I_VNET, vnet);
  store<u32>(it + I_WRITE, w);
  store<u32>(it + I_PROTO, proto);
  setTunWrite2(w, iov, vnet, VNET_HDR_LEN, ip, total);
  return true;
}

// Whether the IPv4 packet at ip (total bytes, TTL already decremented) can take part in a UDP
// merge: IPv4 without options, not a fragment, UDP whose length field matches, some payload,
// and a checksum that is valid or absent (0). The kernel completes every segment's checksum
// from the merged packet, so a corrupted datagram must not get in.
export function mergeUdpCandidate(ip: u32, total: u32): bool {
  if (load<u8>(ip) != 0x45 || load<u8>(ip + 9) != PROTO_UDP || isFragment(ip) || total <= 28) return false;
  if (load16be(ip + 24) != total - 20) return false;
  if (load<u16>(ip + 26) == 0) return true;
  let acc = pseudoHeaderSum(load32be(ip + 12), load32be(ip + 16), PROTO_UDP, total - 20);
  return fold(sumBytes(ip + 20, total - 20, acc)) == 0xffff;
}

// Tries to append the UDP candidate at ip to the open item of its flow. Returns true when merged.
export function mergeUdpAppend(ip: u32, total: u32): bool {
  let src = load<u32>(ip + 12), dst = load<u32>(ip + 16), ports = load<u32>(ip + 20);
  for (let k: u32 = 0; k < nItems; k++) {
    let it = items + k * ITEM_SIZE;
    if (load<u32>(it + I_SRC) != src || load<u32>(it + I_DST) != dst ||
        load<u32>(it + I_PORTS) != ports || load<u32>(it + I_PROTO) != PROTO_UDP) continue;
    if (load<u32>(it + I_CLOSED) != 0) return false;
    let payload = total - 28;
    let gso = load<u32>(it + I_GSO);
    if (payload > gso || matchBits(ip) != load<u32>(it + I_MATCH)) return false;
    let merged = load<u32>(it + I_PAYLOAD);
    let niov = load<u32>(it + I_NIOV);
    if (28 + merged + payload > 65535 || niov >= ITEM_IOVS) return false;
    setIovec(load<u32>(it + I_IOV) + niov, ip + 28, payload);
    store<u32>(it + I_NIOV, niov + 1);
    store<u32>(it + I_PAYLOAD, merged + payload);
    // a shorter datagram can only be the last segment
    if (payload < gso) store<u32>(it + I_CLOSED, 1);
    return true;
  }
  return false;
}

// Opens a new UDP item with the candidate at ip as its head (see mergeOpen).
export function mergeUdpOpen(ip: u32, total: u32, w: u32, iov: u32, vnet: u32): bool {
  return openItem(ip, total, PROTO_UDP, 28, w, iov, vnet);
}

// Finishes every open item: sets its TUN write's iovec count, fixes the head's lengths and
// checksums, and writes the vnet header (all zero for an item that merged nothing).
export function mergeFinishAll(): void {
  for (let k: u32 = 0; k < nItems; k++) mergeFinish(items + k * ITEM_SIZE);
  nItems = 0;
}

function mergeFinish(it: u32): void {
  let niov = load<u32>(it + I_NIOV);
  let vnet = load<u32>(it + I_VNET);
  setTunWrite(load<u32>(it + I_WRITE), load<u32>(it + I_IOV), niov);
  memory.fill(vnet, 0, VNET_HDR_LEN);
  if (niov == 2) return;
  let head = load<u32>(it + I_IP);
  let hdrLen = load<u32>(it + I_HDRLEN);
  let total = hdrLen + load<u32>(it + I_PAYLOAD);
  store16be(head + 2, total);
  ipSetChecksum(head, 20);
  if (load<u32>(it + I_PROTO) == PROTO_UDP) udpGsoHeader(vnet, head, total, load<u32>(it + I_GSO));
  else tcpGsoHeader(vnet, head, total, hdrLen, load<u32>(it + I_GSO));
}

// Prepares the UDP super-packet at ip (total bytes, no IP options) for a TUN write with the
// virtio_net_hdr at vnet: the kernel cuts it into datagrams of gsoSize payload bytes and
// completes each one's checksum from the pseudo-header sum left in the field.
function udpGsoHeader(vnet: u32, ip: u32, total: u32, gsoSize: u32): void {
  store16be(ip + 24, total - 20);
  store16be(ip + 26, fold(pseudoHeaderSum(load32be(ip + 12), load32be(ip + 16), PROTO_UDP, total - 20)));
  memory.fill(vnet, 0, VNET_HDR_LEN);
  store<u8>(vnet, <u8>VNET_F_NEEDS_CSUM);
  store<u8>(vnet + 1, <u8>VNET_GSO_UDP_L4);
  store<u16>(vnet + 2, 28);
  store<u16>(vnet + 4, <u16>gsoSize);
  store<u16>(vnet + 6, 20);
  store<u16>(vnet + 8, 6);
}

// Prepares the TCP super-packet at ip (total bytes, IP + TCP headers hdrLen) for a TUN write
// with the virtio_net_hdr at vnet: the kernel cuts it into segments of gsoSize payload bytes
// and completes the TCP checksum from the pseudo-header sum left in the field.
export function tcpGsoHeader(vnet: u32, ip: u32, total: u32, hdrLen: u32, gsoSize: u32): void {
  let hlen = ipHeaderLen(ip);
  let ps = fold(pseudoHeaderSum(load32be(ip + 12), load32be(ip + 16), PROTO_TCP, total - hlen));
  store16be(ip + hlen + 16, ps);
  memory.fill(vnet, 0, VNET_HDR_LEN);
  store<u8>(vnet, <u8>VNET_F_NEEDS_CSUM);
  store<u8>(vnet + 1, <u8>VNET_GSO_TCPV4);
  store<u16>(vnet + 2, <u16>hdrLen);
  store<u16>(vnet + 4, <u16>gsoSize);
  store<u16>(vnet + 6, <u16>hlen);
  store<u16>(vnet + 8, 16);
}

// A TCP packet of a flow that is not merged (a SYN, FIN, pure ACK...) closes the flow's open
// items, so nothing of that flow written later can overtake it.
export function mergeCloseFlow(ip: u32): void {
  let src = load<u32>(ip + 12), dst = load<u32>(ip + 16), ports = load<u32>(ip + ipHeaderLen(ip));
  for (let k: u32 = 0; k < nItems; k++) {
    let o = items + k * ITEM_SIZE;
    if (load<u32>(o + I_SRC) == src && load<u32>(o + I_DST) == dst && load<u32>(o + I_PORTS) == ports) {
      store<u32>(o + I_CLOSED, 1);
    }
  }
}
