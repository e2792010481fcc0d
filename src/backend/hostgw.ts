// flanneld's host-gw backend: no device and no data plane. The lease carries the PublicIP and
// BackendType "host-gw" (no BackendData); every host-gw peer's subnet becomes a kernel route via
// its PublicIP on the external interface, which needs the peer on a directly connected network
// (others are refused); the MTU is the interface's.
import type { HostGwBackendConfig } from '../config/network.js';
import type { LeaseAttrs } from '../subnet/lease.js';
import { mtuFor, type RouteOnlyBackend } from './backend.js';

export const HOST_GW = 'host-gw';

export function hostGwLeaseAttrs(publicIP: number): LeaseAttrs {
  return { publicIP, publicIPv6: null, backendType: HOST_GW, backendData: null, backendV6Data: null };
}

export function hostGwBackend(config: HostGwBackendConfig): RouteOnlyBackend {
  return {
    type: 'host-gw',
    mode: null,
    accept: 'host-gw',
    direct: 'only',
    mtu: (extMTU) => mtuFor(config, extMTU),
    leaseAttrs: (publicIP) => hostGwLeaseAttrs(publicIP),
    route: (peer) => ({ subnet: peer.subnet, publicIP: peer.publicIP }),
  };
}
