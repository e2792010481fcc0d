// A peer's route as the backends make it and the engines and kernel routes (device/routes.ts)
// install it. A leaf, so that device/ and dataplane/ share it without importing each other.
export interface PeerRoute {
  /** Peer subnet network address, host order. */
  net: number;
  len: number;
  /** Peer public IPv4, host order. */
  publicIP: number;
  /** Peer VTEP MAC (VXLAN). */
  mac?: Uint8Array;
}
