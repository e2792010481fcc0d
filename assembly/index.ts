// linen's dataplane core: the exported entry points the shell calls once per batch.
//
// egress(n):  n packets read from the TUN (descriptors at EG_IN_DESC) become UDP sends
//             (SEND_DESC) and, for ICMP errors, TUN writes (TUN_WRITES).
// ingress(n): n datagrams received from the wire (IN_IN_DESC) become TUN writes and, for ICMP
//             errors sent back to a peer, UDP sends.
// Nothing here allocates: all state lives at the fixed addresses of ring.ts. This file sets the
// instance up; egress.ts, ingress.ts and outputs.ts do the per-batch work.
import {
  BATCH, DESC_SIZE, D_OFFSET, EG_IN_DESC, HEADROOM, IN_IN_DESC, R_COUNTERS,
  VNET_HDR_LEN, ZERO_VNET, WG_REGION_END,
} from './ring';
import { wgReset } from './wg';
import { ingressFraming } from './ingress';
import { egressSlot, ingressSlot } from './tables';
import { resetCounters } from './counters';
import { maskOf, routeAddr, routesReset } from './routes';
import { vxlanConfigure } from './vxlan';
import {
  MODE_UDP, MODE_VXLAN, clusterAddr, clusterMask, hopInTunnel, icmpSeed, localAddr, localMask,
  mergeOnIngress, mergeUdpOnIngress, mode, port, ttlFloor, tunnelMtu, vnetHdr,
} from './settings';
import { resetIcmpBuckets } from './outputs';

// The whole layout (ring.ts) and the verdict enum, as globals: scripts/gen-abi.mjs turns these
// exports into native/linen_abi.h and src/dataplane/abi.ts.
export * from './ring';
export { PacketVerdict } from './counters';
export { MODE_UDP, MODE_VXLAN, MODE_WIREGUARD } from './settings';
export { egress, egressReadCapacity, wgEgressFinish, wgReleaseStaged } from './egress';
export {
  wgSessionAddr, wgSessionOpen, wgSessionClose, wgSendCounter, wgReceivedOn, wgSessionSentBytes, wgSessionReceivedBytes, wgFrameKeepalive, wgCryptCount,
  wgControlCount, wgWantCount, wgIngressPrepare, wgStagedCount, wgStageDrop,
} from './wg';
export { ingress, ingressReadCapacity } from './ingress';
export { sendCount, tunWriteCount } from './outputs';
export { counterAddr } from './counters';
export { routeSet, routeRemove, routeFind, routesCount, routeLookup } from './routes';
export { checksum } from './ip';

// Sets up the instance. Must be called before anything else; may be called again to reset.
// Returns 0, or -1 when the memory is too small for the layout.
// With a virtio_net_hdr on the TUN, egress splits TSO/USO super-packets and ingress merges TCP
// segments into super-packets (unless merging is turned off).
export function init(modeValue: u32, useVnetHdr: bool): i32 {
  if (<usize>memory.size() << 16 < <usize>WG_REGION_END || __heap_base > <usize>EG_IN_DESC - 65536) return -1;
  mode = modeValue;
  hopInTunnel = mode == MODE_UDP;
  ttlFloor = hopInTunnel ? 1 : 0;
  vnetHdr = useVnetHdr;
  mergeOnIngress = useVnetHdr;
  mergeUdpOnIngress = false;
  resetCounters();
  routesReset();
  wgReset();
  memory.fill(ZERO_VNET, 0, 16);
  // Input descriptors point at fixed slots so that the IP header lands at slot + HEADROOM.
  let eRead = HEADROOM - (vnetHdr ? VNET_HDR_LEN : 0);
  let iRead = HEADROOM - ingressFraming();
  for (let i: u32 = 0; i < BATCH; i++) {
    let e = EG_IN_DESC + i * DESC_SIZE;
    memory.fill(e, 0, DESC_SIZE);
    store<u32>(e + D_OFFSET, egressSlot(i) + eRead);
    let g = IN_IN_DESC + i * DESC_SIZE;
    memory.fill(g, 0, DESC_SIZE);
    store<u32>(g + D_OFFSET, ingressSlot(i) + iRead);
  }
  resetIcmpBuckets();
  return 0;
}

// Local settings: the UDP port peers listen on (and, in UDP mode, send from), the largest inner
// packet the tunnel carries, the own subnet (its network address is the ICMP source), the
// cluster network, and for VXLAN the VNI and own VTEP MAC; the random seed keys the flow and
// ICMP bucket hashes.
export function configure(portValue: u32, mtu: u32, local: u32, localLen: u32, cluster: u32, clusterLen: u32,
                          vni: u32, macHi: u32, macLo: u32, seed: u32): void {
  port = portValue;
  tunnelMtu = mtu;
  localMask = maskOf(min(localLen, 32));
  localAddr = local & localMask;
  clusterMask = maskOf(min(clusterLen, 32));
  clusterAddr = cluster & clusterMask;
  icmpSeed = seed;
  vxlanConfigure(vni, macHi, macLo, seed);
}

// Turns the ingress TCP merge on or off (it needs the TUN's virtio_net_hdr).
export function setIngressMerge(on: bool): void { mergeOnIngress = on && vnetHdr; }

// Turns the ingress UDP merge on or off: only for a TUN that takes USO writes (TUN_F_USO4,
// Linux 6.2+); older kernels refuse them.
export function setIngressUdpMerge(on: bool): void { mergeUdpOnIngress = on && vnetHdr; }

export function routeCounterAddr(index: i32): u32 { return routeAddr(index) + R_COUNTERS; }
