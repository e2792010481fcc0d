// The instance's settings: the tunnel mode and what init() and configure() were given. The
// entry points in index.ts set them; egress, ingress and the outputs read them.
export const MODE_UDP: u32 = 0;
export const MODE_VXLAN: u32 = 1;
export const MODE_WIREGUARD: u32 = 2;

export let mode: u32 = MODE_UDP;
// flanneld's UDP backend counts the tunnel as a hop and decrements the TTL at both ends; the
// kernel's VXLAN device does not. TTL 0 is never forwarded.
export let hopInTunnel: bool = true;
export let ttlFloor: u32 = 1;
export let vnetHdr: bool = false;
export let mergeOnIngress: bool = false;
export let mergeUdpOnIngress: bool = false;
export let port: u32 = 8285;
export let tunnelMtu: u32 = 1472;
export let localAddr: u32 = 0; // own subnet's network address: source of our ICMP messages
export let localMask: u32 = 0xffffff00; // own subnet's mask: ingress delivers only inside it
// The cluster network: ICMP errors go only to sources inside it (own subnet included).
export let clusterAddr: u32 = 0;
export let clusterMask: u32 = 0;
export let icmpSeed: u32 = 0;
