// IPv4 header access, RFC 1071 checksums and RFC 1624 incremental updates.
// Multi-byte packet fields are big-endian; wasm loads are little-endian, hence the bswaps.
import { PacketVerdict } from './counters';

export const PROTO_ICMP: u8 = 1;
export const PROTO_TCP: u8 = 6;
export const PROTO_UDP: u8 = 17;

export const IP_DF: u16 = 0x4000;
export const IP_MF: u16 = 0x2000;
export const IP_OFFSET_MASK: u16 = 0x1fff;

@inline export function load16be(p: u32): u32 { return <u32>bswap<u16>(load<u16>(p)); }
@inline export function load32be(p: u32): u32 { return bswap<u32>(load<u32>(p)); }
@inline export function store16be(p: u32, v: u32): void { store<u16>(p, bswap<u16>(<u16>v)); }
@inline export function store32be(p: u32, v: u32): void { store<u32>(p, bswap<u32>(v)); }

@inline export function ipVersion(ip: u32): u32 { return <u32>load<u8>(ip) >> 4; }
@inline export function ipHeaderLen(ip: u32): u32 { return (<u32>load<u8>(ip) & 0x0f) << 2; }
@inline export function ipTotalLen(ip: u32): u32 { return load16be(ip + 2); }
@inline export function ipFragField(ip: u32): u32 { return load16be(ip + 6); }
@inline export function ipTtl(ip: u32): u32 { return <u32>load<u8>(ip + 8); }
@inline export function ipProto(ip: u32): u8 { return load<u8>(ip + 9); }
@inline export function ipSrc(ip: u32): u32 { return load32be(ip + 12); }
@inline export function ipDst(ip: u32): u32 { return load32be(ip + 16); }
@inline export function isFragment(ip: u32): bool { return (ipFragField(ip) & (<u32>IP_MF | <u32>IP_OFFSET_MASK)) != 0; }
@inline export function isLaterFragment(ip: u32): bool { return (ipFragField(ip) & <u32>IP_OFFSET_MASK) != 0; }
@inline export function hasDF(ip: u32): bool { return (ipFragField(ip) & <u32>IP_DF) != 0; }

// Adds the bytes [p, p+len) to a running ones'-complement sum, as 16-bit big-endian words.
// The sum is kept in little-endian word order (RFC 1071 §2(B): byte order independence) and
// swapped once at the end by fold(); callers mix in big-endian values with addBE().
export function sumBytes(p: u32, len: u32, acc: u64): u64 {
  // 16 bytes per step with SIMD: pairwise-add u16 lanes into u32 lanes. Each lane gains at most
  // 2 * 0xffff per step, so 4096 steps (64 KiB) cannot overflow a u32 lane.
  let end = p + len;
  if (len >= 32) {
    let vacc = i32x4.splat(0);
    let vend = p + (len & ~15);
    let steps: u32 = 0;
    while (p < vend) {
      vacc = i32x4.add(vacc, i32x4.extadd_pairwise_i16x8_u(v128.load(p)));
      p += 16;
      if (++steps == 4096) {
        acc += <u64><u32>i32x4.extract_lane(vacc, 0) + <u64><u32>i32x4.extract_lane(vacc, 1) +
               <u64><u32>i32x4.extract_lane(vacc, 2) + <u64><u32>i32x4.extract_lane(vacc, 3);
        vacc = i32x4.splat(0);
        steps = 0;
      }
    }
    acc += <u64><u32>i32x4.extract_lane(vacc, 0) + <u64><u32>i32x4.extract_lane(vacc, 1) +
           <u64><u32>i32x4.extract_lane(vacc, 2) + <u64><u32>i32x4.extract_lane(vacc, 3);
  }
  while (p + 4 <= end) {
    let w = load<u32>(p);
    acc += <u64>(w & 0xffff) + <u64>(w >> 16);
    p += 4;
  }
  if (p + 2 <= end) { acc += <u64>load<u16>(p); p += 2; }
  if (p < end) acc += <u64>load<u8>(p);
  return acc;
}

// Adds a big-endian 16-bit quantity (given as a host number) to a little-endian-order sum.
@inline export function addBE(acc: u64, v: u32): u64 {
  return acc + <u64>(((v & 0xff) << 8) | ((v >> 8) & 0xff)) + <u64>(((v >> 16) & 0xff) << 8 | (v >> 24));
}

// Folds a little-endian-order sum into a 16-bit ones'-complement sum in host (big-endian value) form.
export function fold(acc: u64): u32 {
  acc = (acc & 0xffffffff) + (acc >> 32);
  acc = (acc & 0xffff) + (acc >> 16);
  acc = (acc & 0xffff) + (acc >> 16);
  acc = (acc & 0xffff) + (acc >> 16);
  let s = <u32>acc;
  return ((s & 0xff) << 8) | (s >> 8);
}

// RFC 1071 checksum of [p, p+len): the value to store, big-endian, in host form.
export function checksum(p: u32, len: u32): u32 {
  return (~fold(sumBytes(p, len, 0))) & 0xffff;
}

// IPv4 header checksum: valid when the sum over the header folds to 0xffff.
// The common 20-byte header is summed as five 32-bit words (same ones'-complement result).
@inline export function ipHeaderValid(ip: u32, hlen: u32): bool {
  if (hlen == 20) {
    let s: u64 = <u64>load<u32>(ip) + <u64>load<u32>(ip, 4) + <u64>load<u32>(ip, 8) +
                 <u64>load<u32>(ip, 12) + <u64>load<u32>(ip, 16);
    return fold(s) == 0xffff;
  }
  return fold(sumBytes(ip, hlen, 0)) == 0xffff;
}

export function ipSetChecksum(ip: u32, hlen: u32): void {
  store<u16>(ip + 10, 0);
  store16be(ip + 10, checksum(ip, hlen));
}

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit word changing from m to m'.
@inline export function csumReplace16(hc: u32, m: u32, m2: u32): u32 {
  let s: u32 = (~hc & 0xffff) + (~m & 0xffff) + (m2 & 0xffff);
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return ~s & 0xffff;
}

// Decrements the TTL and patches the header checksum incrementally.
export function ipDecrementTtl(ip: u32): void {
  let oldWord = load16be(ip + 8); // TTL | protocol
  let newWord = oldWord - 0x100;
  store<u8>(ip + 8, <u8>(newWord >> 8));
  store16be(ip + 10, csumReplace16(load16be(ip + 10), oldWord, newWord));
}

// Sum of the TCP/UDP pseudo-header (RFC 793/768) in little-endian order, for sumBytes/fold.
export function pseudoHeaderSum(src: u32, dst: u32, proto: u32, l4len: u32): u64 {
  let acc: u64 = 0;
  acc = addBE(acc, src);
  acc = addBE(acc, dst);
  acc = addBE(acc, proto);
  acc = addBE(acc, l4len);
  return acc;
}

// A TCP or UDP checksum that holds only the pseudo-header sum, as a peer's kernel leaves it for
// checksum offload (CHECKSUM_PARTIAL, e.g. kernel VXLAN over veth), is completed in place.
// Completing always yields the right checksum for the bytes, so a real checksum that happens
// to equal the pseudo-header sum is rewritten to itself. Returns true when it completed one.
// Completes a partial L4 checksum whose field, at ip + start + offset, holds the pseudo-header
// sum (virtio NEEDS_CSUM, CHECKSUM_PARTIAL): sums the L4 bytes from start over it. A result of
// 0 is written as 0xffff, as the kernel does (skb_checksum_help): for UDP, 0 means "no
// checksum". Returns false when the offsets do not fit the packet.
export function completeChecksum(ip: u32, total: u32, start: u32, offset: u32): bool {
  if (start < ipHeaderLen(ip) || start + offset + 2 > total) return false;
  let field = ip + start + offset;
  let seed = <u64>load<u16>(field);
  store<u16>(field, 0);
  let sum = (~fold(sumBytes(ip + start, total - start, seed))) & 0xffff;
  store16be(field, sum == 0 ? 0xffff : sum);
  return true;
}

export function completePartialL4(ip: u32, total: u32): bool {
  if (isFragment(ip)) return false;
  let proto = ipProto(ip);
  let hlen = ipHeaderLen(ip);
  let l4len = total - hlen;
  let at: u32;
  if (proto == PROTO_TCP) {
    if (l4len < 20) return false;
    at = 16;
  } else if (proto == PROTO_UDP) {
    if (l4len < 8) return false;
    at = 6;
  } else {
    return false;
  }
  let current = load16be(ip + hlen + at);
  if (current == 0) return false; // UDP: no checksum at all
  if (current != fold(pseudoHeaderSum(ipSrc(ip), ipDst(ip), <u32>proto, l4len))) return false;
  return completeChecksum(ip, total, hlen, at);
}

// Validates the IPv4 packet at ip with avail readable bytes. Returns its total length, or a
// negative PacketVerdict.
export function validateIpv4(ip: u32, avail: u32): i32 {
  if (avail < 20) return -<i32>PacketVerdict.Malformed;
  if (ipVersion(ip) != 4) return -<i32>PacketVerdict.NotIpv4;
  let hlen = ipHeaderLen(ip);
  if (hlen < 20 || hlen > avail) return -<i32>PacketVerdict.Malformed;
  let total = ipTotalLen(ip);
  if (total < hlen || total > avail) return -<i32>PacketVerdict.Malformed;
  if (!ipHeaderValid(ip, hlen)) return -<i32>PacketVerdict.Malformed;
  return <i32>total;
}
