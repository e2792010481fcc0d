// flannel's wireguard backend from userspace: flannel-wg (a TUN here, a kernel wireguard device
// on flanneld nodes), WireGuard transport messages to each peer's PublicIP and the Port in its
// lease, and a lease with BackendType wireguard, this node's PublicKey and ListenPort.
import type { WireguardBackendConfig } from '../config.js';
import { decodeWireguardBackendData, wireguardLeaseAttrs } from '../subnet/lease.js';
import { publicKeyOf } from '../wireguard/crypto.js';
import { loadOrCreatePrivateKey } from '../wireguard/keyfile.js';
import { mtuFor, type OverlayBackend } from './backend.js';

export const WIREGUARD_DEVICE = 'flannel-wg';

export function wireguardBackend(config: WireguardBackendConfig, loadKey: () => Uint8Array = () => loadOrCreatePrivateKey()): OverlayBackend {
  // Read (or created) once, when the lease or the data plane first needs it.
  let privateKey: Uint8Array | null = null;
  const key = (): Uint8Array => (privateKey ??= loadKey());
  return {
    type: 'wireguard',
    mode: 'wireguard',
    deviceName: WIREGUARD_DEVICE,
    port: config.listenPort,
    vni: 0,
    accept: 'wireguard',
    direct: 'never',
    mtu: (extMTU) => mtuFor(config, extMTU),
    leaseAttrs: (publicIP) => wireguardLeaseAttrs(publicIP, publicKeyOf(key()), config.listenPort),
    route: (peer) => {
      const d = decodeWireguardBackendData(peer.attrs.backendData);
      if (!d.ok) return null;
      // As flanneld: a lease without a Port is reached on our own listen port.
      return { subnet: peer.subnet, publicIP: peer.publicIP, wireguard: { publicKey: d.value.publicKey, port: d.value.port || config.listenPort } };
    },
    wireguard: () => ({
      privateKey: key(),
      presharedKey: config.presharedKey ?? new Uint8Array(32),
      persistentKeepalive: config.persistentKeepalive,
    }),
  };
}
