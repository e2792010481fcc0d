// flannel's wireguard backend from userspace: flannel-wg (a TUN here, a kernel wireguard device
// on flanneld nodes), WireGuard transport messages to each peer's PublicIP and the Port in its
// lease, and a lease with BackendType wireguard, this node's PublicKey and ListenPort.
import type { WireguardBackendConfig } from '../config/network.js';
import { decodeWireguardBackendData, type LeaseAttrs } from '../subnet/lease.js';
import { publicKeyOf } from '../wireguard/crypto.js';
import { loadOrCreatePrivateKey } from '../wireguard/keyfile.js';
import { mtuFor, type OverlayBackend } from './backend.js';

export const WIREGUARD_DEVICE = 'flannel-wg';

/** Attributes a WireGuard node publishes, byte for byte as flanneld (fields PublicKey, Port). */
export function wireguardLeaseAttrs(publicIP: number, publicKey: Uint8Array, port: number): LeaseAttrs {
  if (publicKey.length !== 32) throw new Error('a WireGuard public key is 32 bytes');
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid WireGuard port: ${port}`);
  return {
    publicIP,
    publicIPv6: null,
    backendType: 'wireguard',
    backendData: `{"PublicKey":${JSON.stringify(Buffer.from(publicKey).toString('base64'))},"Port":${port}}`,
    backendV6Data: null,
  };
}

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
      // Loaded by the worker itself, in this mode only (the data plane imports nothing of it).
      stageModule: new URL('../wireguard/stage.js', import.meta.url).href,
      privateKey: key(),
      presharedKey: config.presharedKey ?? new Uint8Array(32),
      persistentKeepalive: config.persistentKeepalive,
    }),
  };
}
