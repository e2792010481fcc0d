// Writers for the records of ring.ts's tables: input slots, TUN writes and iovecs.
import { EG_SLOTS, IN_SLOTS, SLOT_STRIDE, TUN_WRITES, TUNW_SIZE, TW_FIRST, TW_COUNT, IOVECS, IOV_SIZE, IOV_OFFSET, IOV_LENGTH } from './ring';

// Where a slot's packet data is read to: the IP header lands at slot + HEADROOM.
@inline export function egressSlot(i: u32): u32 { return EG_SLOTS + i * SLOT_STRIDE; }
@inline export function ingressSlot(i: u32): u32 { return IN_SLOTS + i * SLOT_STRIDE; }

// TUN write w gathers the n iovecs from index iov on.
@inline export function setTunWrite(w: u32, iov: u32, n: u32): void {
  let tw = TUN_WRITES + w * TUNW_SIZE;
  store<u32>(tw + TW_FIRST, iov);
  store<u32>(tw + TW_COUNT, n);
}

@inline export function setIovec(i: u32, addr: u32, len: u32): void {
  let v = IOVECS + i * IOV_SIZE;
  store<u32>(v + IOV_OFFSET, addr);
  store<u32>(v + IOV_LENGTH, len);
}

// Fills TUN write w with two iovecs from index iov on: a header (the virtio_net_hdr) and a packet.
@inline export function setTunWrite2(w: u32, iov: u32, hdr: u32, hdrLen: u32, pkt: u32, pktLen: u32): void {
  setTunWrite(w, iov, 2);
  setIovec(iov, hdr, hdrLen);
  setIovec(iov + 1, pkt, pktLen);
}
