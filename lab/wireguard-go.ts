// Debian's wireguard-go, each device set up as flanneld's wireguard backend sets up the
// kernel's: a private key, a listen port (51820), its peers (public key, endpoint PublicIP:Port,
// allowed IPs the peer's subnet, optional PSK and persistent keepalive), the lease subnet's
// address /32 on the device, MTU the underlay's less WireGuard's overhead, and the cluster
// network routed to it. startWireguardGoDevice() makes one such device in one namespace;
// setupWireguardGo() makes one on every host of a topology, each with the others as peers.
// wireguard-go runs in the foreground, so its pid is the forwarding process whose CPU and
// memory count.
import { execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { WIREGUARD_DEFAULT_PORT, WIREGUARD_MTU_OVERHEAD } from '../src/config/network.js';
import type { Topology } from './topology.js';
import { waitFor } from './wait.js';

/** What a device needs of its namespace: lab/netns.ts's Netns has it, namespaceOf() makes it
 * for one of a Topology's namespaces. */
export interface NamespaceShell {
  ip(...args: string[]): string;
  exec(cmd: string, args: string[]): string;
  spawn(cmd: string, args: string[], opts: SpawnOptions): ChildProcess;
}

export function namespaceOf(topo: Topology, ns: string): NamespaceShell {
  return {
    ip: (...args) => topo.ip(ns, ...args),
    exec: (cmd, args) => topo.exec(ns, cmd, args),
    spawn: (cmd, args, opts) => topo.spawn(ns, cmd, args, opts),
  };
}

export interface WireguardGoPeer {
  publicKey: string;
  /** PublicIP:Port of the peer's lease. */
  endpoint: string;
  /** The peer's subnet. */
  allowedIps: string;
  /** A file holding the preshared key (base64); none: no PSK, as flanneld's default. */
  pskFile?: string;
  /** PersistentKeepaliveInterval in seconds; 0 or none: no keepalives, as flanneld's default. */
  keepalive?: number;
}

export interface WireguardGoDeviceOptions {
  /** The device name. wireguard-go's control socket path is not per namespace: make it unique on the machine. */
  dev: string;
  /** A file holding the private key (base64, as `wg genkey` prints). */
  keyFile: string;
  /** Default WIREGUARD_DEFAULT_PORT (51820), flanneld's ListenPort default. */
  listenPort?: number;
  /** The node's lease subnet, e.g. 10.5.2.0/24: its first address goes on the device as /32. */
  subnet: string;
  /** The cluster network, routed to the device. */
  network: string;
  /** The underlay interface's MTU; the device gets it less WireGuard's overhead. */
  underlayMtu: number;
  peers: readonly WireguardGoPeer[];
}

export interface WireguardGoDevice {
  readonly dev: string;
  readonly process: ChildProcess;
  /** Ends wireguard-go (SIGTERM, SIGKILL after 5 s) and waits until its device is gone, so the
   * same name can be made again. Idempotent. */
  stop(): Promise<void>;
}

const DEVICE_WAIT_MS = 10_000;

/** Starts wireguard-go in `shell`'s namespace and sets its device up as flanneld sets up the kernel's. */
export async function startWireguardGoDevice(shell: NamespaceShell, o: WireguardGoDeviceOptions): Promise<WireguardGoDevice> {
  const { dev } = o;
  const proc = shell.spawn('wireguard-go', ['-f', dev], { stdio: ['ignore', 'ignore', 'ignore'] });
  const exists = (): boolean => { try { shell.ip('link', 'show', dev); return true; } catch { return false; } };
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const hard = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      await gone;
      clearTimeout(hard);
    }
    await waitFor(() => !exists(), DEVICE_WAIT_MS);
  };
  try {
    const up = await waitFor(() => {
      if (proc.exitCode !== null) throw new Error(`wireguard-go ${dev} exited (${proc.exitCode})`);
      return exists();
    }, DEVICE_WAIT_MS);
    if (up < 0) throw new Error(`wireguard-go made no device ${dev} within ${DEVICE_WAIT_MS / 1000} s`);
    const peers = o.peers.flatMap((p) => [
      'peer', p.publicKey, ...(p.pskFile ? ['preshared-key', p.pskFile] : []),
      'endpoint', p.endpoint, 'allowed-ips', p.allowedIps,
      ...(p.keepalive ? ['persistent-keepalive', String(p.keepalive)] : []),
    ]);
    shell.exec('wg', ['set', dev, 'private-key', o.keyFile, 'listen-port', String(o.listenPort ?? WIREGUARD_DEFAULT_PORT), ...peers]);
    shell.ip('addr', 'add', `${o.subnet.split('/')[0]}/32`, 'dev', dev);
    shell.ip('link', 'set', dev, 'mtu', String(o.underlayMtu - WIREGUARD_MTU_OVERHEAD), 'up');
    shell.ip('route', 'add', o.network, 'dev', dev);
  } catch (e) {
    await stop();
    throw e;
  }
  return { dev, process: proc, stop };
}

export interface WireguardGoOptions {
  /** A preshared key (base64, as `wg genpsk` prints) for every pair; default none, as flanneld's default. */
  psk?: string;
  /** PersistentKeepaliveInterval in seconds; default 0 (none), as flanneld's default. */
  keepalive?: number;
}

export interface WireguardGoNode extends WireguardGoDevice {
  readonly ns: string;
  readonly publicKey: string;
}

export interface WireguardGoMesh {
  readonly nodes: readonly WireguardGoNode[];
  /** The wireguard-go processes, in host order. */
  pids(): number[];
  /** Kills them (their devices, addresses and routes go with them). Idempotent. */
  stop(): Promise<void>;
}

/** A device name unique on the machine: wireguard-go's control socket path is not per namespace. */
const deviceName = (topo: Topology, index: number): string => `${topo.id}w${index}`.slice(0, 15);

export async function setupWireguardGo(topo: Topology, o: WireguardGoOptions = {}): Promise<WireguardGoMesh> {
  const dir = mkdtempSync(join(tmpdir(), `linen-wgo-${topo.id}-`));
  const nodes: WireguardGoNode[] = [];
  const stop = async (): Promise<void> => {
    for (const n of nodes.splice(0)) await n.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const keys = topo.hosts.map((h) => {
      const priv = execFileSync('wg', ['genkey']).toString().trim();
      const file = join(dir, `host${h.index}.key`);
      writeFileSync(file, priv, { mode: 0o400 });
      return { file, pub: execFileSync('wg', ['pubkey'], { input: priv }).toString().trim() };
    });
    const pskFile = o.psk ? join(dir, 'psk') : undefined;
    if (pskFile) writeFileSync(pskFile, o.psk!, { mode: 0o400 });
    for (const [i, h] of topo.hosts.entries()) {
      const device = await startWireguardGoDevice(namespaceOf(topo, h.ns), {
        dev: deviceName(topo, h.index), keyFile: keys[i]!.file, subnet: h.podSubnet, network: topo.clusterNet,
        underlayMtu: topo.underlayMtu,
        peers: topo.hosts.flatMap((p, k) => p === h ? [] : [{
          publicKey: keys[k]!.pub, endpoint: `${p.underlayIP}:${WIREGUARD_DEFAULT_PORT}`, allowedIps: p.podSubnet,
          pskFile, keepalive: o.keepalive,
        }]),
      });
      nodes.push({ ...device, ns: h.ns, publicKey: keys[i]!.pub });
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { nodes, pids: () => nodes.map((n) => n.process.pid!).filter((p) => p !== undefined), stop };
}
