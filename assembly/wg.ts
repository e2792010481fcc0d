// WireGuard transport framing for the core: sessions (keys, counters, replay windows), the
// type-4 header, padding, and the crypt table that the addon seals or opens in one call per
// batch. The core never encrypts; the shell runs the handshake and installs the keys here.
//
// Egress: egress() frames every datagram (header in front of the IP packet, zero padding to 16
// bytes, room for the tag behind) and adds a crypt entry; the shell seals the table, then calls
// wgEgressFinish() (which joins datagrams into GSO sends: after sealing, as it copies them).
// Ingress: wgIngressPrepare(n) adds a crypt entry for every transport datagram whose receiver
// index names a live session, and queues handshake messages for the shell; the shell opens the
// table, then calls ingress(), which delivers only what authenticated and is not a replay.
import {
  DESC_SIZE, D_OFFSET, D_LENGTH, D_ADDR, D_PORT, D_SEGSIZE, IN_IN_DESC, BATCH, WG_HEADER_LEN, WG_TAG_LEN, WG_PAD,
  WG_SLOT_BITS, WG_MAX_SESSIONS, WG_SESSION_SIZE, WG_S_LOCAL_INDEX, WG_S_REMOTE_INDEX, WG_S_ROUTE, WG_S_SEND_COUNTER,
  WG_S_RECV_TOP, WG_S_TX_BYTES, WG_S_RX_BYTES, WG_S_SEND_KEY, WG_S_RECV_KEY, WG_S_WINDOW, WG_WINDOW_BITS, WG_ENTRY_SIZE, WG_E_KEY, WG_E_DATA,
  WG_E_LENGTH, WG_E_STATUS, WG_E_COUNTER, WG_CRYPT_CAP, WG_CONTROL_CAP, WG_CONTROL_SIZE, WG_WANT_CAP, WG_SESSIONS,
  WG_CRYPT, WG_CONTROL, WG_WANT, WG_STAGE, WG_STAGE_CAP, WG_STAGE_META, WG_STAGE_META_SIZE, WG_STAGE_PER_PEER,
  WG_STAGE_SLOT_SIZE, WG_STAGE_MAX_PACKET,
} from './ring';
import { PacketVerdict, count, DIR_EGRESS, DIR_INGRESS } from './counters';
import { tunnelMtu } from './settings';

const WG_MSG_TRANSPORT: u32 = 4;
const WG_CONTROL_MAX_MSG: u32 = WG_CONTROL_SIZE - 16;
// Never send or accept a counter at or past this (the whitepaper's REJECT-AFTER-MESSAGES).
const REJECT_AFTER_MESSAGES: u64 = 0xffffffffffffffff - (1 << 13);

let nCrypt: u32 = 0;
let cryptCursor: u32 = 0;
let nControl: u32 = 0;
let nWant: u32 = 0;
let nStaged: u32 = 0;
let stageAge: u32 = 0;

@inline export function wgSessionAddr(slot: u32): u32 { return WG_SESSIONS + slot * WG_SESSION_SIZE; }

export function wgReset(): void {
  memory.fill(WG_SESSIONS, 0, WG_MAX_SESSIONS * WG_SESSION_SIZE);
  memory.fill(WG_STAGE_META, 0, WG_STAGE_CAP * WG_STAGE_META_SIZE);
  nCrypt = 0; cryptCursor = 0; nControl = 0; nWant = 0; nStaged = 0; stageAge = 0;
}

// Installs a session in its slot (keys already written at WG_S_SEND_KEY / WG_S_RECV_KEY by the
// shell). Returns 0, or -1 when the index does not name a slot.
export function wgSessionOpen(localIndex: u32, remoteIndex: u32, route: i32): i32 {
  if (localIndex == 0) return -1;
  let s = wgSessionAddr(localIndex & (WG_MAX_SESSIONS - 1));
  store<u32>(s + WG_S_LOCAL_INDEX, localIndex);
  store<u32>(s + WG_S_REMOTE_INDEX, remoteIndex);
  store<i32>(s + WG_S_ROUTE, route);
  store<u64>(s + WG_S_SEND_COUNTER, 0);
  store<u64>(s + WG_S_RECV_TOP, 0);
  store<u64>(s + WG_S_TX_BYTES, 0);
  store<u64>(s + WG_S_RX_BYTES, 0);
  memory.fill(s + WG_S_WINDOW, 0, WG_WINDOW_BITS / 8);
  return 0;
}

// Forgets a session: its keys are wiped and its index no longer matches.
export function wgSessionClose(localIndex: u32): void {
  let s = wgSessionAddr(localIndex & (WG_MAX_SESSIONS - 1));
  if (load<u32>(s + WG_S_LOCAL_INDEX) != localIndex) return;
  memory.fill(s, 0, WG_SESSION_SIZE);
}

// A u64 field of the session `localIndex` names, or 0 once that session is gone.
@inline function sessionU64(localIndex: u32, field: u32): u64 {
  let s = wgSessionAddr(localIndex & (WG_MAX_SESSIONS - 1));
  return load<u32>(s + WG_S_LOCAL_INDEX) == localIndex ? load<u64>(s + field) : 0;
}

export function wgSendCounter(localIndex: u32): u64 { return sessionU64(localIndex, WG_S_SEND_COUNTER); }

// Greatest counter received on a session + 1 (0: nothing yet): a responder's session is
// confirmed, and may send, once the initiator's first message arrived.
export function wgReceivedOn(localIndex: u32): u64 { return sessionU64(localIndex, WG_S_RECV_TOP); }

// Bytes of the transport messages framed to send on a session / accepted on it.
export function wgSessionSentBytes(localIndex: u32): u64 { return sessionU64(localIndex, WG_S_TX_BYTES); }
export function wgSessionReceivedBytes(localIndex: u32): u64 { return sessionU64(localIndex, WG_S_RX_BYTES); }

// Frames a keepalive (a transport message with nothing inside) of a session at `at` (its header;
// 32 bytes) as the only entry of the crypt table, for the shell to seal and send between
// batches. Returns its length, or 0 when the session is gone.
export function wgFrameKeepalive(localIndex: u32, at: u32): u32 {
  let s = wgSendSession(localIndex);
  if (s == 0) return 0;
  nCrypt = 0;
  return wgFrame(s, at + WG_HEADER_LEN, 0);
}

export function wgCryptCount(): u32 { return nCrypt; }
export function wgControlCount(): u32 { return nControl; }
export function wgWantCount(): u32 { return nWant; }

export function wgBeginBatch(): void { nCrypt = 0; cryptCursor = 0; nWant = 0; }

// Notes that the peer of `route` needs a handshake (the shell dedupes).
export function wgWant(route: i32): void {
  if (nWant < WG_WANT_CAP) store<i32>(WG_WANT + nWant++ * 4, route);
}

// A packet's length with its zero padding: to a multiple of WG_PAD, but not past the device's
// MTU (a full-size packet gets none), as the whitepaper pads.
@inline export function wgPadded(len: u32): u32 {
  let padded = (len + WG_PAD - 1) & ~(WG_PAD - 1);
  return padded > tunnelMtu && len <= tunnelMtu ? tunnelMtu : padded;
}

// The session to send on for a peer: its slot's index is kept in the route entry (field at
// routeSession); 0 or a closed session: none.
export function wgSendSession(sessionIndex: u32): u32 {
  if (sessionIndex == 0) return 0;
  let s = wgSessionAddr(sessionIndex & (WG_MAX_SESSIONS - 1));
  if (load<u32>(s + WG_S_LOCAL_INDEX) != sessionIndex) return 0;
  if (load<u64>(s + WG_S_SEND_COUNTER) >= REJECT_AFTER_MESSAGES) return 0;
  return s;
}

// Frames the IP packet at ip (len bytes) as a transport message of session s: the header at
// ip - 16, zero padding, the tag's room after it, and a crypt entry. Returns the wire length,
// or 0 when the crypt table is full.
export function wgFrame(s: u32, ip: u32, len: u32): u32 {
  if (nCrypt >= WG_CRYPT_CAP) return 0;
  let padded = wgPadded(len);
  memory.fill(ip + len, 0, padded - len);
  let counter = load<u64>(s + WG_S_SEND_COUNTER);
  store<u64>(s + WG_S_SEND_COUNTER, counter + 1);
  let h = ip - WG_HEADER_LEN;
  store<u32>(h, WG_MSG_TRANSPORT);
  store<u32>(h + 4, load<u32>(s + WG_S_REMOTE_INDEX));
  store<u64>(h + 8, counter);
  let e = WG_CRYPT + nCrypt++ * WG_ENTRY_SIZE;
  store<u32>(e + WG_E_KEY, s + WG_S_SEND_KEY);
  store<u32>(e + WG_E_DATA, ip);
  store<u32>(e + WG_E_LENGTH, padded);
  store<u32>(e + WG_E_STATUS, 0);
  store<u64>(e + WG_E_COUNTER, counter);
  let wire = WG_HEADER_LEN + padded + WG_TAG_LEN;
  store<u64>(s + WG_S_TX_BYTES, load<u64>(s + WG_S_TX_BYTES) + <u64>wire);
  return wire;
}

// The live session a received transport datagram names, or 0. Reads only the header, which
// decryption leaves alone, so prepare and ingress classify a datagram the same way.
function transportSession(p: u32, len: u32): u32 {
  if (len < WG_HEADER_LEN + WG_TAG_LEN || load<u32>(p) != WG_MSG_TRANSPORT) return 0;
  let index = load<u32>(p + 4);
  let s = wgSessionAddr(index & (WG_MAX_SESSIONS - 1));
  if (index == 0 || load<u32>(s + WG_S_LOCAL_INDEX) != index) return 0;
  return s;
}

function prepareDatagram(p: u32, len: u32, addr: u32, port: u32): void {
  let type = len >= 4 ? load<u32>(p) : 0;
  if (type == WG_MSG_TRANSPORT) {
    let s = transportSession(p, len);
    if (s == 0) { count(DIR_INGRESS, len < WG_HEADER_LEN + WG_TAG_LEN ? PacketVerdict.Malformed : PacketVerdict.WgUnknownSession, len); return; }
    if (nCrypt >= WG_CRYPT_CAP) return; // ingress counts it as no_room
    let counter = load<u64>(p + 8);
    let e = WG_CRYPT + nCrypt++ * WG_ENTRY_SIZE;
    store<u32>(e + WG_E_KEY, s + WG_S_RECV_KEY);
    store<u32>(e + WG_E_DATA, p + WG_HEADER_LEN);
    store<u32>(e + WG_E_LENGTH, len - WG_HEADER_LEN - WG_TAG_LEN);
    // A counter that can never be accepted is not worth a decryption: status stays 0.
    store<u32>(e + WG_E_STATUS, 0);
    store<u64>(e + WG_E_COUNTER, counter);
    if (counter >= REJECT_AFTER_MESSAGES) store<u32>(e + WG_E_LENGTH, 0xffffffff);
    return;
  }
  if ((type == 1 || type == 2 || type == 3) && len <= WG_CONTROL_MAX_MSG) {
    count(DIR_INGRESS, PacketVerdict.WgHandshake, len);
    if (nControl >= WG_CONTROL_CAP) { count(DIR_INGRESS, PacketVerdict.NoRoom, len); return; }
    let c = WG_CONTROL + nControl++ * WG_CONTROL_SIZE;
    store<u32>(c, len);
    store<u32>(c + 4, addr);
    store<u32>(c + 8, port);
    store<u32>(c + 12, 0);
    memory.copy(c + 16, p, len);
    return;
  }
  count(DIR_INGRESS, PacketVerdict.Malformed, len);
}

// Walks the received datagrams (GRO batches cut as ingress() cuts them) and fills the crypt
// table and the control queue. Returns the number of crypt entries.
export function wgIngressPrepare(n: u32): u32 {
  nCrypt = 0; cryptCursor = 0; nControl = 0;
  if (n > BATCH) n = BATCH;
  for (let i: u32 = 0; i < n; i++) {
    let d = IN_IN_DESC + i * DESC_SIZE;
    let off = load<u32>(d + D_OFFSET);
    let len = load<u32>(d + D_LENGTH);
    let addr = load<u32>(d + D_ADDR);
    let port = <u32>bswap<u16>(load<u16>(d + D_PORT));
    let seg = <u32>load<u16>(d + D_SEGSIZE);
    if (seg == 0 || seg >= len) {
      prepareDatagram(off, len, addr, port);
    } else {
      let end = off + len;
      for (let p = off; p < end; p += seg) prepareDatagram(p, min(seg, end - p), addr, port);
    }
  }
  return nCrypt;
}

// RFC 6479's window: a ring of bits, words cleared as the top moves. True (and recorded) for a
// counter not seen before and not older than the window.
function replayAccept(s: u32, counter: u64): bool {
  let top = load<u64>(s + WG_S_RECV_TOP);
  let words = <u64>(WG_WINDOW_BITS / 32);
  if (counter >= top) {
    let from = top == 0 ? <u64>0 : ((top - 1) >> 5) + 1;
    let to = counter >> 5;
    for (let w = from; w <= to && w - from < words; w++) store<u32>(s + WG_S_WINDOW + <u32>(w % words) * 4, 0);
    store<u64>(s + WG_S_RECV_TOP, counter + 1);
  } else if (top - 1 - counter >= <u64>(WG_WINDOW_BITS - 32)) {
    return false;
  }
  let word = s + WG_S_WINDOW + <u32>((counter >> 5) % words) * 4;
  let bit: u32 = 1 << <u32>(counter & 31);
  let v = load<u32>(word);
  if ((v & bit) != 0) return false;
  store<u32>(word, v | bit);
  return true;
}

// For ingress(): the session of a transport datagram that authenticated and is new, or 0 (the
// datagram is counted here as dropped). Handshake messages return 0 uncounted (prepare did).
export function wgAccept(p: u32, len: u32): u32 {
  let s = transportSession(p, len);
  if (s == 0) return 0;
  if (cryptCursor >= nCrypt) { count(DIR_INGRESS, PacketVerdict.NoRoom, len); return 0; }
  let e = WG_CRYPT + cryptCursor++ * WG_ENTRY_SIZE;
  if (load<u32>(e + WG_E_STATUS) != 1) { count(DIR_INGRESS, PacketVerdict.WgBadMac, len); return 0; }
  if (!replayAccept(s, load<u64>(e + WG_E_COUNTER))) { count(DIR_INGRESS, PacketVerdict.WgReplay, len); return 0; }
  store<u64>(s + WG_S_RX_BYTES, load<u64>(s + WG_S_RX_BYTES) + <u64>len);
  return s;
}

// --- Packets waiting for a handshake (as a WireGuard peer queues them while it initiates) ---

@inline function stageMeta(slot: u32): u32 { return WG_STAGE_META + slot * WG_STAGE_META_SIZE; }
// Where a staged packet lies: behind the room for its message header.
@inline export function wgStagedPacket(slot: u32): u32 { return WG_STAGE + slot * WG_STAGE_SLOT_SIZE + WG_HEADER_LEN; }
export function wgStagedCount(): u32 { return nStaged; }
// The route index + 1 a slot holds a packet for (0: free), and the packet's length.
@inline export function wgStagedRoute(slot: u32): u32 { return load<u32>(stageMeta(slot)); }
@inline export function wgStagedLength(slot: u32): u32 { return load<u32>(stageMeta(slot) + 4); }

export function wgStageFree(slot: u32): void {
  store<u32>(stageMeta(slot), 0);
  nStaged--;
}

function stageEvict(slot: u32): void {
  count(DIR_EGRESS, PacketVerdict.WgStageDropped, wgStagedLength(slot));
  wgStageFree(slot);
}

// Keeps a copy of the IP packet at ip (len bytes) for the peer of route until its handshake
// completes (counted wg_staged). The peer's oldest waiting packet makes room when it has
// WG_STAGE_PER_PEER of them, the oldest of all when every slot is taken (counted
// wg_stage_dropped). False when the packet is too large to wait.
export function wgStage(route: i32, ip: u32, len: u32): bool {
  if (len > WG_STAGE_MAX_PACKET) return false;
  let tag = <u32>route + 1;
  let free: i32 = -1, oldest: i32 = -1, peerOldest: i32 = -1;
  let peerCount: u32 = 0;
  for (let slot: u32 = 0; slot < WG_STAGE_CAP; slot++) {
    let r = wgStagedRoute(slot);
    if (r == 0) { if (free < 0) free = <i32>slot; continue; }
    if (oldest < 0 || wgStagedBefore(slot, <u32>oldest)) oldest = <i32>slot;
    if (r == tag) {
      peerCount++;
      if (peerOldest < 0 || wgStagedBefore(slot, <u32>peerOldest)) peerOldest = <i32>slot;
    }
  }
  let slot = free;
  if (peerCount >= WG_STAGE_PER_PEER) { slot = peerOldest; stageEvict(<u32>slot); }
  else if (slot < 0) { slot = oldest; stageEvict(<u32>slot); }
  let m = stageMeta(<u32>slot);
  store<u32>(m, tag);
  store<u32>(m + 4, len);
  store<u32>(m + 8, stageAge++);
  nStaged++;
  memory.copy(wgStagedPacket(<u32>slot), ip, len);
  count(DIR_EGRESS, PacketVerdict.WgStaged, len);
  return true;
}

// Drops the packets waiting for the peer of route (its handshake was given up, or it left).
// Returns how many.
export function wgStageDrop(route: i32): u32 {
  let tag = <u32>route + 1;
  let n: u32 = 0;
  for (let slot: u32 = 0; slot < WG_STAGE_CAP && nStaged > 0; slot++) {
    if (wgStagedRoute(slot) == tag) { stageEvict(slot); n++; }
  }
  return n;
}

// Age order of two waiting slots (ages wrap): whether slot a was staged before slot b.
@inline export function wgStagedBefore(a: u32, b: u32): bool {
  return load<u32>(stageMeta(a) + 8) - load<u32>(stageMeta(b) + 8) > 0x7fffffff;
}
