import type { BackendConfig } from '../config/network.js';
import type { Backend } from './backend.js';
import { hostGwBackend } from './hostgw.js';
import { udpBackend } from './udp.js';
import { vxlanBackend } from './vxlan.js';
import { wireguardBackend } from './wireguard.js';

export type { Backend, DirectRouting, OverlayBackend, RouteOnlyBackend } from './backend.js';
export { randomVtepMAC } from './backend.js';

export function createBackend(config: BackendConfig): Backend {
  switch (config.type) {
    case 'udp': return udpBackend(config);
    case 'vxlan': return vxlanBackend(config);
    case 'host-gw': return hostGwBackend(config);
    case 'wireguard': return wireguardBackend(config);
  }
}
