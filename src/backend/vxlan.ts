// flanneld's VXLAN backend from userspace: flannel.<VNI> (a TUN here, a kernel vxlan device on
// flanneld nodes), RFC 7348 framing to each peer's PublicIP on the cluster-wide port, and a
// lease with BackendType vxlan and the VNI and VtepMAC that kernel peers put in their FDB.
// DirectRouting: peers on a directly connected network get a plain kernel route instead.
import type { VxlanBackendConfig } from '../config/network.js';
import type { LeaseAttrs } from '../subnet/lease.js';
import { formatMAC, normalizeMAC, parseMAC } from '../net.js';
import { mtuFor, type OverlayBackend } from './backend.js';

/** Attributes a VXLAN node publishes. `vtepMAC` may be in any form parseMAC accepts. */
export function vxlanLeaseAttrs(publicIP: number, vni: number, vtepMAC: string): LeaseAttrs {
  const mac = normalizeMAC(vtepMAC);
  if (mac === null) throw new Error(`invalid VtepMAC: ${JSON.stringify(vtepMAC)}`);
  if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffffff) throw new Error(`invalid VNI: ${vni}`);
  return {
    publicIP,
    publicIPv6: null,
    backendType: 'vxlan',
    backendData: `{"VNI":${vni},"VtepMAC":${JSON.stringify(mac)}}`,
    backendV6Data: null,
  };
}

export function vxlanBackend(config: VxlanBackendConfig): OverlayBackend {
  return {
    type: 'vxlan',
    mode: 'vxlan',
    deviceName: `flannel.${config.vni}`,
    port: config.port,
    vni: config.vni,
    accept: 'vxlan',
    direct: config.directRouting ? 'adjacent' : 'never',
    mtu: (extMTU) => mtuFor(config, extMTU),
    leaseAttrs: (publicIP, mac) => vxlanLeaseAttrs(publicIP, config.vni, formatMAC(mac)),
    route: (peer) => {
      // As flanneld, the peer's advertised VNI is not compared with ours.
      const mac = peer.vxlan ? parseMAC(peer.vxlan.vtepMAC) : null;
      if (!mac) return null;
      return { subnet: peer.subnet, publicIP: peer.publicIP, mac };
    },
  };
}
