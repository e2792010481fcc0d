// Memory layout shared by the wasm core, the native I/O addon and the shell.
//
// Everything lives at fixed addresses in a fixed-size linear memory (initial == maximum, never
// grown), so the native addon can keep one base pointer for the life of the instance.
// This file is the one source of the layout: the module exports every value below as a global
// (and each enum member as `Enum.Member`), and scripts/gen-abi.mjs turns those exports into the
// native addon's C header (native/linen_abi.h) and the shell's TypeScript module
// (src/dataplane/abi.ts). Nothing else may repeat a number or a name from here.
// docs/memory-abi.md describes it.

// Packets handled per egress() or ingress() call: one TUN read burst or one recvmmsg.
export const BATCH: u32 = 64;

// Bytes in front of every packet's IP header: room for a virtio_net_hdr (10) on TUN I/O, or a
// VXLAN header plus inner Ethernet (22) on the wire, with the IP header 8-byte aligned.
export const HEADROOM: u32 = 64;
// One slot holds a 64 KiB super-packet (TSO read or UDP GRO receive) plus headroom.
export const SLOT_STRIDE: u32 = 69632;

export const VNET_HDR_LEN: u32 = 10;
export const VXLAN_HDR_LEN: u32 = 8;
export const ETH_HDR_LEN: u32 = 14;
export const VXLAN_ENCAP_LEN: u32 = VXLAN_HDR_LEN + ETH_HDR_LEN;

// Packet descriptor (24 bytes), used for TUN reads, UDP receives and UDP sends:
//   +0  u32 offset   linear-memory address of the first byte (vnet header or VXLAN header if any)
//   +4  u32 length   bytes
//   +8  [4] addr     IPv4 address, network byte order (copied to/from sockaddr_in as is)
//   +12 [2] port     UDP port, network byte order
//   +14 u16 segSize  send: UDP_SEGMENT size (0 = one datagram); receive: UDP_GRO size (0 = none)
//   +16 u16 flowHash send: VXLAN: the flow's hash, which picks the send socket (the addon sends on
//                   fds[flowHash % n], so a flow keeps one source port); 0 = the first; host order
//   +18 u16 status   send: 0 when sent, else the errno the addon got for this datagram
//   +20 u32 spare    reserved, 0
export const DESC_SIZE: u32 = 24;
export const D_OFFSET: u32 = 0;
export const D_LENGTH: u32 = 4;
export const D_ADDR: u32 = 8;
export const D_PORT: u32 = 12;
export const D_SEGSIZE: u32 = 14;
export const D_FLOW_HASH: u32 = 16;
export const D_STATUS: u32 = 18;
export const D_SPARE: u32 = 20;

// TUN write (8 bytes): the iovecs [first, first + count) of the iovec table, written with one
// writev(). Iovec (8 bytes): u32 offset, u32 length.
export const TUNW_SIZE: u32 = 8;
export const TW_FIRST: u32 = 0;
export const TW_COUNT: u32 = 4;
export const IOV_SIZE: u32 = 8;
export const IOV_OFFSET: u32 = 0;
export const IOV_LENGTH: u32 = 4;

export const SEND_CAP: u32 = 512;
export const TUNW_CAP: u32 = 256;
export const IOV_CAP: u32 = 8192;
export const ICMP_CAP: u32 = 128;
export const ICMP_STRIDE: u32 = 256;
// Output area for packets the core builds itself (TSO segments, fragments): room for the
// segments of one 64 KiB super-packet (payload plus a header per segment) per batch slot.
export const SPLIT_PER_PACKET: u32 = 73728;
export const SPLIT_SIZE: u32 = BATCH * SPLIT_PER_PACKET;

export const MAX_ROUTES: u32 = 131072;
export const ROUTE_SIZE: u32 = 64;
export const HASH_SLOTS: u32 = 262144;

export const COUNTER_DIRS: u32 = 2;
export const COUNTER_SLOTS: u32 = 32;

// Regions, laid out from 1 MiB upward (static data and the stub heap stay below).
export const REGION_BASE: u32 = 1 << 20;
export const COUNTERS: u32 = REGION_BASE; // u64 [dir][verdict][packets, bytes]
export const EG_IN_DESC: u32 = COUNTERS + COUNTER_DIRS * COUNTER_SLOTS * 16;
export const IN_IN_DESC: u32 = EG_IN_DESC + BATCH * DESC_SIZE;
export const SEND_DESC: u32 = IN_IN_DESC + BATCH * DESC_SIZE;
export const TUN_WRITES: u32 = SEND_DESC + SEND_CAP * DESC_SIZE;
export const IOVECS: u32 = TUN_WRITES + TUNW_CAP * TUNW_SIZE;
export const ZERO_VNET: u32 = IOVECS + IOV_CAP * IOV_SIZE; // 16 zero bytes, never written
export const VNET_SCRATCH: u32 = ZERO_VNET + 16; // one 16-byte vnet header per TUN write
export const ICMP_AREA: u32 = VNET_SCRATCH + TUNW_CAP * 16;
export const EG_SLOTS: u32 = ((ICMP_AREA + ICMP_CAP * ICMP_STRIDE + 4095) & ~4095);
export const IN_SLOTS: u32 = EG_SLOTS + BATCH * SLOT_STRIDE;
export const SPLIT_AREA: u32 = IN_SLOTS + BATCH * SLOT_STRIDE;
export const ROUTES: u32 = SPLIT_AREA + SPLIT_SIZE;
export const ROUTE_HASH: u32 = ROUTES + MAX_ROUTES * ROUTE_SIZE;
export const REGION_END: u32 = ROUTE_HASH + HASH_SLOTS * 4;

// Route entry (ROUTE_SIZE bytes). The entry is the peer: its public IP and VTEP MAC, plus
// per-peer counters the shell reads.
export const R_NET: u32 = 0;       // u32 network, host order (free entries: next free index)
export const R_LEN: u32 = 4;       // u8 prefix length
export const R_USED: u32 = 5;      // u8 1 when in use
export const R_PUBLIC_IP: u32 = 8; // u32 peer public IPv4, host order
export const R_MAC: u32 = 12;      // [6] peer VTEP MAC
export const R_COUNTERS: u32 = 24; // u64 [PeerCounter.Count], in the order below

// A peer's counters, as u64 words from R_COUNTERS on. The shell copies them as a block of
// PeerCounter.Count words, so the order here is the order everywhere.
export enum PeerCounter {
  TxPackets = 0,
  TxBytes = 1,
  RxPackets = 2,
  RxBytes = 3,
  Count = 4,
}
export const R_TX_PACKETS: u32 = R_COUNTERS + PeerCounter.TxPackets * 8;
export const R_TX_BYTES: u32 = R_COUNTERS + PeerCounter.TxBytes * 8;
export const R_RX_PACKETS: u32 = R_COUNTERS + PeerCounter.RxPackets * 8;
export const R_RX_BYTES: u32 = R_COUNTERS + PeerCounter.RxBytes * 8;
// WireGuard: the local index of the session packets to this peer go out on (0: none), and the
// UDP port of its endpoint (host order; its address is R_PUBLIC_IP).
export const R_WG_SESSION: u32 = 56;
export const R_WG_PORT: u32 = 60;

// WireGuard (assembly/wg.ts), above the other regions.
// Transport message: u32 type 4, u32 receiver index, u64 counter, then the sealed packet padded
// to WG_PAD bytes, then the tag.
export const WG_HEADER_LEN: u32 = 16;
export const WG_TAG_LEN: u32 = 16;
export const WG_PAD: u32 = 16;
// Session (WG_SESSION_SIZE bytes). A local index is (random << WG_SLOT_BITS) | slot, so the
// receiver index of a message names its slot; the slot's stored index must match.
export const WG_SLOT_BITS: u32 = 10;
export const WG_MAX_SESSIONS: u32 = 1 << WG_SLOT_BITS;
export const WG_SESSION_SIZE: u32 = 384;
export const WG_S_LOCAL_INDEX: u32 = 0;   // u32, 0 = free
export const WG_S_REMOTE_INDEX: u32 = 4;  // u32
export const WG_S_ROUTE: u32 = 8;         // i32 route index of the peer
export const WG_S_SEND_COUNTER: u32 = 16; // u64 next counter to send
export const WG_S_RECV_TOP: u32 = 24;     // u64 greatest counter received + 1 (0: none yet)
// Bytes of the transport messages framed to send and accepted on the session, whole messages
// (header, padded packet, tag) as `wg show`'s transfer counts them.
export const WG_S_TX_BYTES: u32 = 32;     // u64
export const WG_S_RX_BYTES: u32 = 40;     // u64
export const WG_S_SEND_KEY: u32 = 64;     // [32]
export const WG_S_RECV_KEY: u32 = 96;     // [32]
export const WG_S_WINDOW: u32 = 128;      // [WG_WINDOW_BITS / 8] ring of bits
export const WG_WINDOW_BITS: u32 = 2048;
// Crypt table entry (WG_ENTRY_SIZE bytes), what the addon seals or opens in place: the payload
// at WG_E_DATA (WG_E_LENGTH bytes, the tag after it) under the key at WG_E_KEY with the nonce's
// counter WG_E_COUNTER; it writes WG_E_STATUS 1 (done) or 0 (refused).
export const WG_ENTRY_SIZE: u32 = 24;
export const WG_E_KEY: u32 = 0;      // u32 address of the 32-byte key
export const WG_E_DATA: u32 = 4;     // u32 address of the payload
export const WG_E_LENGTH: u32 = 8;   // u32 payload bytes without the tag
export const WG_E_STATUS: u32 = 12;  // u32
export const WG_E_COUNTER: u32 = 16; // u64
// Up to 64 super-packets of ~45 segments each in one egress batch; 64 GRO receives of 64.
export const WG_CRYPT_CAP: u32 = 4096;
// Handshake messages set aside for the shell (WG_CONTROL_SIZE bytes each): u32 length, u32
// source address (network order), u32 source port (host order), u32 spare, the message.
export const WG_CONTROL_CAP: u32 = 64;
export const WG_CONTROL_SIZE: u32 = 176;
// Route indexes whose peer had packets but no session (u32 each): the shell starts handshakes.
export const WG_WANT_CAP: u32 = 256;
// Messages the shell's control path sends (handshakes, keepalives), and their descriptors.
export const WG_OUT_CAP: u32 = 64;
export const WG_OUT_SIZE: u32 = 256;
export const WG_SESSIONS: u32 = (REGION_END + 4095) & ~4095;
export const WG_CRYPT: u32 = WG_SESSIONS + WG_MAX_SESSIONS * WG_SESSION_SIZE;
export const WG_CONTROL: u32 = WG_CRYPT + WG_CRYPT_CAP * WG_ENTRY_SIZE;
export const WG_WANT: u32 = WG_CONTROL + WG_CONTROL_CAP * WG_CONTROL_SIZE;
export const WG_OUT: u32 = WG_WANT + WG_WANT_CAP * 4;
export const WG_OUT_DESC: u32 = WG_OUT + WG_OUT_CAP * WG_OUT_SIZE;
// Packets waiting for a peer's handshake (wgStage): WG_STAGE_CAP slots shared by all peers, at
// most WG_STAGE_PER_PEER of them for one peer; the oldest goes when either is full. A slot holds
// a message's header room, a packet of up to WG_STAGE_MAX_PACKET bytes, its padding and tag, so
// the packet is framed where it lies. Its entry in WG_STAGE_META (WG_STAGE_META_SIZE bytes):
// u32 route index + 1 (0: free), u32 packet length, u32 age (a sequence number).
export const WG_STAGE_CAP: u32 = 128;
export const WG_STAGE_PER_PEER: u32 = 64;
export const WG_STAGE_SLOT_SIZE: u32 = 2048;
export const WG_STAGE_MAX_PACKET: u32 = WG_STAGE_SLOT_SIZE - WG_HEADER_LEN - WG_TAG_LEN - WG_PAD;
export const WG_STAGE_META_SIZE: u32 = 16;
export const WG_STAGE_META: u32 = WG_OUT_DESC + WG_OUT_CAP * DESC_SIZE;
export const WG_STAGE: u32 = (WG_STAGE_META + WG_STAGE_CAP * WG_STAGE_META_SIZE + 63) & ~63;
export const WG_REGION_END: u32 = WG_STAGE + WG_STAGE_CAP * WG_STAGE_SLOT_SIZE;
