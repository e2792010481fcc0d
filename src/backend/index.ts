import type { BackendConfig } from '../config.js';
import type { Backend } from './backend.js';
import { udpBackend } from './udp.js';
import { vxlanBackend } from './vxlan.js';

export type { Backend } from './backend.js';
export { randomVtepMAC } from './backend.js';

export function createBackend(config: BackendConfig): Backend {
  return config.type === 'udp' ? udpBackend(config) : vxlanBackend(config);
}
