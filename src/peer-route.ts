// A peer's route as the backends make it and the engines and kernel routes (device/routes.ts)
// install it. A leaf, so that device/ and dataplane/ share it without importing each other.
import type { IPv4Net } from './net.js';

export interface PeerRoute {
  /** The peer's subnet (masked: the peer set admits no lease with host bits). */
  subnet: IPv4Net;
  /** Peer public IPv4, host order. */
  publicIP: number;
  /** Peer VTEP MAC (VXLAN). */
  mac?: Uint8Array;
  /** WireGuard: the peer's public key and the UDP port of its endpoint (at publicIP). */
  wireguard?: { publicKey: Uint8Array; port: number };
}
