// Debian's wireguard-go on every host of a topology, each device set up as flanneld's wireguard
// backend sets up the kernel's: a private key, ListenPort 51820, every other host as a peer
// (its public key, endpoint PublicIP:Port, allowed IPs its subnet, optional PSK and persistent
// keepalive), the lease subnet's address /32 on the device, MTU the underlay's less 80, and the
// cluster network routed to it. wireguard-go runs in the foreground, so its pid is the
// forwarding process whose CPU and memory count.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { WIREGUARD_DEFAULT_PORT, WIREGUARD_MTU_OVERHEAD } from '../src/config/network.js';
import type { Topology } from './topology.js';
import { waitFor } from './wait.js';

export interface WireguardGoOptions {
  /** A preshared key (base64, as `wg genpsk` prints) for every pair; default none, as flanneld's default. */
  psk?: string;
  /** PersistentKeepaliveInterval in seconds; default 0 (none), as flanneld's default. */
  keepalive?: number;
}

export interface WireguardGoNode {
  readonly ns: string;
  readonly dev: string;
  readonly publicKey: string;
  readonly process: ChildProcess;
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
    for (const n of nodes.splice(0)) {
      if (n.process.exitCode === null && n.process.signalCode === null) {
        const gone = new Promise((r) => n.process.once('exit', r));
        n.process.kill('SIGKILL');
        await gone;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const keys = topo.hosts.map((h) => {
      const priv = execFileSync('wg', ['genkey']).toString().trim();
      const file = join(dir, `host${h.index}.key`);
      writeFileSync(file, priv, { mode: 0o400 });
      return { file, pub: execFileSync('wg', ['pubkey'], { input: priv }).toString().trim() };
    });
    const pskFile = o.psk ? join(dir, 'psk') : null;
    if (pskFile) writeFileSync(pskFile, o.psk!, { mode: 0o400 });
    for (const [i, h] of topo.hosts.entries()) {
      const dev = deviceName(topo, h.index);
      const proc = topo.spawn(h.ns, 'wireguard-go', ['-f', dev], { stdio: ['ignore', 'ignore', 'ignore'] });
      nodes.push({ ns: h.ns, dev, publicKey: keys[i]!.pub, process: proc });
      const up = await waitFor(() => {
        if (proc.exitCode !== null) throw new Error(`wireguard-go ${dev} in ${h.ns} exited (${proc.exitCode})`);
        try { topo.ip(h.ns, 'link', 'show', dev); return true; } catch { return false; }
      }, 10_000);
      if (up < 0) throw new Error(`wireguard-go made no device ${dev} in ${h.ns} within 10 s`);
      const peers = topo.hosts.flatMap((p, k) => p === h ? [] : [
        'peer', keys[k]!.pub, ...(pskFile ? ['preshared-key', pskFile] : []),
        'endpoint', `${p.underlayIP}:${WIREGUARD_DEFAULT_PORT}`, 'allowed-ips', p.podSubnet,
        ...(o.keepalive ? ['persistent-keepalive', String(o.keepalive)] : []),
      ]);
      topo.exec(h.ns, 'wg', ['set', dev, 'private-key', keys[i]!.file, 'listen-port', String(WIREGUARD_DEFAULT_PORT), ...peers]);
      topo.ip(h.ns, 'addr', 'add', `${h.podSubnet.split('/')[0]}/32`, 'dev', dev);
      topo.ip(h.ns, 'link', 'set', dev, 'mtu', String(topo.underlayMtu - WIREGUARD_MTU_OVERHEAD), 'up');
      topo.ip(h.ns, 'route', 'add', topo.clusterNet, 'dev', dev);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { nodes, pids: () => nodes.map((n) => n.process.pid!).filter((p) => p !== undefined), stop };
}
