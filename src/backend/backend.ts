// What differs between linen's two modes, in one place: the device, the MTU, the port, what the
// node publishes in its lease, which peers it accepts and how a peer becomes a route.
import { randomBytes } from 'node:crypto';
import type { BackendConfig } from '../config.js';
import { overlayMTU } from '../config.js';
import type { Mode } from '../dataplane/core.js';
import type { PeerRoute } from '../dataplane/engine.js';
import type { LeaseAttrs } from '../subnet/lease.js';
import type { Peer, PeerFilter } from '../subnet/watcher.js';

export interface Backend {
  readonly mode: Mode;
  /** TUN device name: flannel0 (UDP) or flannel.<VNI> (VXLAN). */
  readonly deviceName: string;
  readonly port: number;
  readonly vni: number;
  /** Which leases are peers (flanneld's UDP backend takes all, VXLAN only vxlan leases). */
  readonly accept: PeerFilter;
  /** Overlay MTU (TUN MTU and FLANNEL_MTU) for an external interface MTU. */
  mtu(extMTU: number): number;
  /** The lease attributes this node publishes. */
  leaseAttrs(publicIP: number, vtepMAC: Uint8Array): LeaseAttrs;
  /** The route a peer's lease becomes, or null when the lease lacks what this mode needs. */
  route(peer: Peer): PeerRoute | null;
}


/** A random locally administered unicast MAC, as flannel gives a new flannel.<VNI> device. */
export function randomVtepMAC(): Uint8Array {
  const mac = new Uint8Array(randomBytes(6));
  mac[0] = (mac[0] & 0xfe) | 0x02;
  return mac;
}

export function mtuFor(config: BackendConfig, extMTU: number): number {
  return overlayMTU(config, extMTU);
}
