import type { BackendConfig } from '../config/network.js';
import type { Backend } from './backend.js';
import { hostGwBackend } from './hostgw.js';
import { udpBackend } from './udp.js';
import { vxlanBackend } from './vxlan.js';

export type { Backend, DirectRouting, OverlayBackend, RouteOnlyBackend } from './backend.js';
export { randomVtepMAC } from './backend.js';

// WireGuard's backend loads its key file code and the cryptography only when a node runs it.
export async function createBackend(config: BackendConfig): Promise<Backend> {
  switch (config.type) {
    case 'udp': return udpBackend(config);
    case 'vxlan': return vxlanBackend(config);
    case 'host-gw': return hostGwBackend(config);
    case 'wireguard': return (await import('./wireguard.js')).wireguardBackend(config);
  }
}
