// flanneld's VXLAN backend from userspace: flannel.<VNI> (a TUN here, a kernel vxlan device on
// flanneld nodes), RFC 7348 framing to each peer's PublicIP on the cluster-wide port, and a
// lease with BackendType vxlan and the VNI and VtepMAC that kernel peers put in their FDB.
// DirectRouting: peers on a directly connected network get a plain kernel route instead.
import type { VxlanBackendConfig } from '../config/network.js';
import type { LeaseAttrs } from '../subnet/lease.js';
import { formatMAC } from '../net.js';
import { mtuFor, type OverlayBackend } from './backend.js';

/** Attributes a VXLAN node publishes. */
export function vxlanLeaseAttrs(publicIP: number, vni: number, vtepMAC: Uint8Array): LeaseAttrs {
  if (vtepMAC.length !== 6) throw new Error(`invalid VtepMAC: ${vtepMAC.length} bytes, not 6`);
  if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffffff) throw new Error(`invalid VNI: ${vni}`);
  return {
    publicIP,
    publicIPv6: null,
    backendType: 'vxlan',
    backendData: `{"VNI":${vni},"VtepMAC":${JSON.stringify(formatMAC(vtepMAC))}}`,
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
    leaseAttrs: (publicIP, mac) => vxlanLeaseAttrs(publicIP, config.vni, mac),
    route: (peer) => {
      // As flanneld, the peer's advertised VNI is not compared with ours.
      if (!peer.vxlan) return null;
      return { subnet: peer.subnet, publicIP: peer.publicIP, mac: peer.vxlan.vtepMAC };
    },
  };
}
