// flanneld's UDP backend: flannel0, the bare inner packet in UDP on one cluster-wide port, a
// route to every lease whatever its backend type, and a lease carrying only the PublicIP.
// DirectRouting (a linen extension) sends adjacent peers' traffic along plain kernel routes.
import type { UdpBackendConfig } from '../config/network.js';
import type { LeaseAttrs } from '../subnet/lease.js';
import { mtuFor, type OverlayBackend } from './backend.js';

/** Attributes a UDP node publishes: only PublicIP. */
export function udpLeaseAttrs(publicIP: number): LeaseAttrs {
  return { publicIP, publicIPv6: null, backendType: '', backendData: null, backendV6Data: null };
}

export function udpBackend(config: UdpBackendConfig): OverlayBackend {
  return {
    type: 'udp',
    mode: 'udp',
    deviceName: 'flannel0',
    port: config.port,
    vni: 0,
    accept: 'all',
    direct: config.directRouting ? 'adjacent' : 'never',
    mtu: (extMTU) => mtuFor(config, extMTU),
    leaseAttrs: (publicIP) => udpLeaseAttrs(publicIP),
    route: (peer) => ({ subnet: peer.subnet, publicIP: peer.publicIP }),
  };
}
