// Per-direction, per-verdict packet and byte counters, in linear memory so the shell can read
// them without a call. The shell's names for the verdicts (src/dataplane/abi.ts VERDICTS) are
// generated from this enum: its member names in snake_case are the metric labels.
import { COUNTERS, COUNTER_SLOTS } from './ring';

export const DIR_EGRESS: u32 = 0;
export const DIR_INGRESS: u32 = 1;

export enum PacketVerdict {
  Forwarded = 0,
  NoRoute = 1,
  TtlExpired = 2,
  Malformed = 3,
  Spoofed = 4,
  WrongVni = 5,
  TooBig = 6,
  BadVxlanFlags = 7,
  WrongMac = 8,
  NotIpv4 = 9,
  IcmpSent = 10,
  IcmpRateLimited = 11,
  NoRoom = 12,
  Unsupported = 13,
  // Not a drop: a peer's partial (offload) TCP/UDP checksum completed before the TUN write.
  ChecksumCompleted = 14,
  // Ingress: the inner destination is not in this node's subnet (a peer may only deliver here).
  ForeignDestination = 15,
  // Ingress, UDP mode: the datagram did not come from the flannel port every node sends from.
  WrongSourcePort = 16,
  // WireGuard, ingress: a transport message whose receiver index names no live session.
  WgUnknownSession = 17,
  // WireGuard, ingress: a transport message that did not authenticate.
  WgBadMac = 18,
  // WireGuard, ingress: a counter already received or older than the replay window.
  WgReplay = 19,
  // WireGuard, ingress: a handshake message, handed to the control path.
  WgHandshake = 20,
  // WireGuard, egress: no session with the peer and the packet could not wait for one (a
  // super-packet, or larger than a staging slot); a handshake is asked for.
  WgNoSession = 21,
  // WireGuard, ingress: an authenticated keepalive (no packet inside).
  WgKeepalive = 22,
  // WireGuard, egress: not a drop: the packet waits for the peer's handshake (it is counted
  // forwarded when it goes out, or wg_stage_dropped).
  WgStaged = 23,
  // WireGuard, egress: a waiting packet dropped: pushed out by newer ones, its peer's handshake
  // given up, or the peer removed.
  WgStageDropped = 24,
  Count = 25,
}

// Address of the [packets, bytes] pair of a direction's verdict.
@inline function slotAddr(dir: u32, verdict: u32): u32 { return COUNTERS + (dir * COUNTER_SLOTS + verdict) * 16; }
export function counterAddr(dir: u32, verdict: u32): u32 { return slotAddr(dir, verdict); }

@inline export function count(dir: u32, v: PacketVerdict, bytes: u32): void {
  let p = slotAddr(dir, <u32>v);
  store<u64>(p, load<u64>(p) + 1);
  store<u64>(p + 8, load<u64>(p + 8) + <u64>bytes);
}

export function resetCounters(): void {
  memory.fill(COUNTERS, 0, 2 * COUNTER_SLOTS * 16);
}
