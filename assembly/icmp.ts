// ICMP error messages: net unreachable (as flanneld sends it), time exceeded and
// fragmentation needed (which flanneld leaves out).
import { checksum, ipHeaderLen, ipProto, ipSrc, ipDst, isLaterFragment, store16be, store32be, ipSetChecksum, PROTO_ICMP } from './ip';

export const ICMP_DEST_UNREACH: u32 = 3;
export const ICMP_TIME_EXCEEDED: u32 = 11;
export const CODE_NET_UNREACH: u32 = 0;
export const CODE_FRAG_NEEDED: u32 = 4;
export const CODE_TTL_EXCEEDED: u32 = 0;

// flanneld's TTL for the net-unreachable messages it writes into the TUN.
export const FLANNEL_ICMP_TTL: u32 = 8;
export const ICMP_TTL: u32 = 64;

// flanneld sends no net unreachable about any ICMP packet, a non-first fragment, or a packet
// whose header is 60 bytes or more.
export function flannelUnreachableExempt(ip: u32): bool {
  return ipProto(ip) == PROTO_ICMP || isLaterFragment(ip) || ipHeaderLen(ip) >= 60;
}

// RFC 1812 4.3.2.7: no ICMP error about an ICMP error, a non-first fragment, or a packet whose
// source cannot be answered (unspecified, multicast, broadcast, loopback).
export function icmpErrorExempt(ip: u32, origLen: u32): bool {
  if (isLaterFragment(ip)) return true;
  let src = ipSrc(ip);
  let top = src >> 24;
  if (src == 0 || src == 0xffffffff || top >= 224 || top == 127) return true;
  let dst = ipDst(ip);
  if ((dst >> 28) == 0xe || dst == 0xffffffff) return true;
  if (ipProto(ip) == PROTO_ICMP) {
    let hlen = ipHeaderLen(ip);
    if (origLen < hlen + 1) return true;
    let t = <u32>load<u8>(ip + hlen);
    // error types: unreachable, source quench, redirect, time exceeded, parameter problem
    if (t == 3 || t == 4 || t == 5 || t == 11 || t == 12) return true;
  }
  return false;
}

// Builds an ICMP error about the packet at orig (origLen valid bytes) into out. The message
// quotes the offending header and the first 8 bytes of its payload. Returns the total length.
export function icmpBuild(out: u32, type: u32, code: u32, rest: u32, orig: u32, origLen: u32, src: u32, ttl: u32): u32 {
  let hlen = ipHeaderLen(orig);
  let quote = hlen + 8;
  if (quote > origLen) quote = origLen;
  let total = 20 + 8 + quote;
  // IPv4 header
  store<u8>(out, 0x45);
  store<u8>(out + 1, 0);
  store16be(out + 2, total);
  store<u32>(out + 4, 0);            // id 0, no flags
  store<u8>(out + 8, <u8>ttl);
  store<u8>(out + 9, PROTO_ICMP);
  store32be(out + 12, src);
  store32be(out + 16, ipSrc(orig));
  ipSetChecksum(out, 20);
  // ICMP header and quoted packet
  let icmp = out + 20;
  store<u8>(icmp, <u8>type);
  store<u8>(icmp + 1, <u8>code);
  store<u16>(icmp + 2, 0);
  store32be(icmp + 4, rest);
  memory.copy(icmp + 8, orig, quote);
  store16be(icmp + 2, checksum(icmp, 8 + quote));
  return total;
}
