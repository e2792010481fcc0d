// What differs between linen's modes, in one place: the device, the MTU, the port, what the
// node publishes in its lease, which peers it accepts, how a peer becomes a route and where
// that route goes (linen's data plane, or a plain kernel route to a directly connected peer).
import { kernelRandomBytes } from '../random.js';
import type { BackendConfig, BackendType } from '../config/network.js';
import { overlayMTU } from '../config/network.js';
import type { Mode } from '../dataplane/core.js';
import type { WireguardEngineOptions } from '../dataplane/engine.js';
import type { PeerRoute } from '../peer-route.js';
import type { LeaseAttrs } from '../subnet/lease.js';
import type { Peer, PeerFilter } from '../subnet/watcher.js';

/**
 * Which peers get a direct kernel route (`S via PublicIP dev <external interface>`, the kernel
 * forwards) instead of a route in linen's data plane:
 *   'never'    all through the data plane (UDP, VXLAN);
 *   'adjacent' peers on a directly connected network direct, the rest through the data plane
 *              (flannel's VXLAN DirectRouting; for UDP a linen extension);
 *   'only'     peers on a directly connected network direct, the rest refused (host-gw).
 */
export type DirectRouting = 'never' | 'adjacent' | 'only';

interface BackendBase {
  /** The config's backend type. */
  readonly type: BackendType;
  /** Which leases are peers (flanneld's UDP backend takes all, VXLAN and host-gw their own type). */
  readonly accept: PeerFilter;
  readonly direct: DirectRouting;
  /** MTU of the overlay device and FLANNEL_MTU for an external interface MTU. */
  mtu(extMTU: number): number;
  /** The lease attributes this node publishes. */
  leaseAttrs(publicIP: number, vtepMAC: Uint8Array): LeaseAttrs;
  /** The route a peer's lease becomes, or null when the lease lacks what this mode needs. */
  route(peer: Peer): PeerRoute | null;
}

/** A backend with linen's data plane (a TUN device and workers). */
export interface OverlayBackend extends BackendBase {
  readonly mode: Mode;
  /** TUN device name: flannel0 (UDP) or flannel.<VNI> (VXLAN). */
  readonly deviceName: string;
  readonly port: number;
  readonly vni: number;
  /** WireGuard: this node's keys and keepalive for the data plane. */
  readonly wireguard?: () => WireguardEngineOptions;
}

/** A backend without one (host-gw): no device, the kernel forwards along plain routes. */
export interface RouteOnlyBackend extends BackendBase {
  readonly mode: null;
}

export type Backend = OverlayBackend | RouteOnlyBackend;

/** A random locally administered unicast MAC, as flannel gives a new flannel.<VNI> device. */
export function randomVtepMAC(): Uint8Array {
  const mac = kernelRandomBytes(6);
  mac[0] = (mac[0] & 0xfe) | 0x02;
  return mac;
}

export function mtuFor(config: BackendConfig, extMTU: number): number {
  return overlayMTU(config, extMTU);
}
