// A worker's I/O through the native addon: its TUN queue, its UDP socket (plus, for VXLAN, the
// send-only sockets that vary the outer source port) and the eventfd the main thread signals.
// Opens them, makes the core, runs the loop on them and closes them.
import { receiveMessageOnPort } from 'node:worker_threads';
import { Core } from './core.js';
import { loadNative, enableTunOffload, TUN_F, type NativeIO } from '../addon/native.js';
import type { EngineFeatures } from './engine.js';
import type { PollingIO, TunQueue, UdpPorts } from './io.js';
import { WorkerLoop, runPolling, type WireguardStage } from './loop.js';
import type { ControlMessage, WorkerData, WorkerReport } from './protocol.js';

const VXLAN_SOURCE_SOCKETS = 8;
const SOCKET_BUFFER = 8 << 20;

class AddonTun implements TunQueue {
  constructor(private readonly native: NativeIO, readonly fd: number, private readonly memory: ArrayBuffer) {}
  readBatch(descTable: number, max: number, capacity: number, budget = 0): number {
    return this.native.tunReadBatch(this.fd, this.memory, descTable, max, capacity, budget);
  }
  writeBatch(writesTable: number, count: number, iovTable: number): number {
    return this.native.tunWriteBatch(this.fd, this.memory, writesTable, count, iovTable);
  }
}

class AddonUdp implements UdpPorts {
  private readonly sendFds: Int32Array;
  /** fds[0] receives and sends; the others only send. */
  constructor(private readonly native: NativeIO, fds: number[], readonly gro: boolean, private readonly memory: ArrayBuffer) {
    this.sendFds = Int32Array.from(fds);
  }
  recvBatch(descTable: number, max: number, capacity: number): number {
    return this.native.udpRecvBatch(this.sendFds[0], this.memory, descTable, max, capacity);
  }
  sendBatch(descTable: number, count: number): number {
    return this.native.udpSendBatch(this.sendFds, this.memory, descTable, count);
  }
}

class AddonLoopIO implements PollingIO {
  private readonly pollFds: Int32Array;
  constructor(private readonly native: NativeIO, readonly tun: AddonTun, readonly udp: AddonUdp, udpFd: number, private readonly data: WorkerData) {
    this.pollFds = Int32Array.of(tun.fd, udpFd, data.eventFd);
  }
  wait(timeoutMs: number): number { return this.native.wait(this.pollFds, timeoutMs); }
  clearControl(): void { this.native.eventfdDrain(this.data.eventFd); }
  nextControl(): ControlMessage | undefined {
    return receiveMessageOnPort(this.data.port)?.message as ControlMessage | undefined;
  }
}

/** Runs fn on fd; if it throws, closes fd first. */
function orClose(native: NativeIO, fd: number, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    native.close(fd);
    throw e;
  }
}

function openTun(native: NativeIO, opts: WorkerData['options'], features: EngineFeatures | null): { fd: number; features: EngineFeatures } {
  const multiQueue = opts.queues > 1;
  if (features) {
    const { fd } = native.tunOpen(opts.device, { multiQueue, vnetHdr: features.vnetHdr });
    if (features.tunOffload) orClose(native, fd, () => native.tunSetOffload(fd, features.tunOffload));
    return { fd, features };
  }
  const found: EngineFeatures = { vnetHdr: false, tunOffload: 0, udpGso: false, udpGro: false, multiQueue };
  if (opts.offload !== 'off') {
    try {
      const { fd } = native.tunOpen(opts.device, { multiQueue, vnetHdr: true });
      try {
        found.tunOffload = enableTunOffload(native, fd);
      } catch (e) {
        if (opts.offload === 'on') { native.close(fd); throw e; }
      }
      found.vnetHdr = true;
      return { fd, features: found };
    } catch (e) {
      if (opts.offload === 'on') throw e;
    }
  }
  const { fd } = native.tunOpen(opts.device, { multiQueue, vnetHdr: false });
  return { fd, features: found };
}

/** Makes WireGuard's stage in a worker from its addon, core, options and the UDP sockets it sends
 * on. The module the options name (WireguardEngineOptions.stageModule) exports it as startStage. */
export type StartStage = (native: NativeIO, core: Core, data: WorkerData, udp: UdpPorts) => WireguardStage;

/** A worker's opened I/O and core. */
export interface OpenedWorker {
  io: AddonLoopIO;
  core: Core;
  /** WireGuard mode's stage; null in the other modes. */
  wireguard: WireguardStage | null;
  features: EngineFeatures;
  /** Every descriptor opened, TUN first: closed by close(), or by the main thread if the worker dies. */
  fds: number[];
  close(): void;
}

/** Opens the TUN queue and the sockets and makes the core. If anything fails, closes what
 * was opened before throwing: the main thread only learns the descriptors from 'ready'. */
export function openWorker(native: NativeIO, data: WorkerData, startStage: StartStage | null = null): OpenedWorker {
  const opts = data.options;
  const tun = openTun(native, opts, data.features);
  const fds = [tun.fd];
  const close = (): void => {
    for (const fd of fds) {
      try { native.close(fd); } catch { /* nothing more to do */ }
    }
  };
  try {
    const features = tun.features;
    const core = new Core({
      mode: opts.mode, vnetHdr: features.vnetHdr, udpMerge: (features.tunOffload & TUN_F.USO4) !== 0, port: opts.port, mtu: opts.mtu,
      subnet: opts.subnet, network: opts.network, vni: opts.vni, mac: Uint8Array.from(opts.mac),
    });
    const wantGro = opts.offload !== 'off';
    const sock = native.udpOpen({
      address: opts.bindAddr, port: opts.port, reusePort: true, gro: wantGro,
      rcvbuf: SOCKET_BUFFER, sndbuf: SOCKET_BUFFER, pmtuDisc: 'dont',
    });
    fds.push(sock.fd);
    if (opts.offload === 'off') native.udpSetGso(sock.fd, false);
    features.udpGso = sock.gso && opts.offload !== 'off';
    features.udpGro = sock.gro;
    // VXLAN: extra send-only sockets on ephemeral ports, picked by the flow hash, so the outer
    // source port varies per flow as the kernel's does and receivers can spread the load.
    if (opts.mode === 'vxlan') {
      for (let i = 0; i < VXLAN_SOURCE_SOCKETS; i++) {
        const s = native.udpOpen({ address: opts.bindAddr, port: 0, sndbuf: SOCKET_BUFFER, pmtuDisc: 'dont' });
        fds.push(s.fd);
        if (opts.offload === 'off') native.udpSetGso(s.fd, false);
      }
    }
    const memory = core.memory.buffer;
    const udp = new AddonUdp(native, fds.slice(1), sock.gro, memory);
    const io = new AddonLoopIO(native, new AddonTun(native, tun.fd, memory), udp, sock.fd, data);
    const wireguard = startStage ? startStage(native, core, data, udp) : null;
    return { io, core, wireguard, features, fds, close };
  } catch (e) {
    close();
    throw e;
  }
}

/** Hooks a test wrapper of the worker (debug-worker.ts) may set; the product worker sets none. */
export interface WorkerAdapter {
  /** Called once everything is open, before 'ready'; may close it and throw. */
  opened?(w: OpenedWorker): void;
  /** Wraps the loop's I/O. */
  io?(io: PollingIO): PollingIO;
}

/** The body of a worker thread: open, report 'ready', forward until 'stop', close. */
export async function runWorker(data: WorkerData, adapter: WorkerAdapter = {}): Promise<void> {
  const native = loadNative();
  // WireGuard's modules (node:crypto, the protocol) load only in that mode: a plain worker
  // stays as small as it was (etcd mode's idle RSS has a bound).
  const stageModule = data.options.mode === 'wireguard' ? data.options.wireguard?.stageModule : undefined;
  const startStage = stageModule ? ((await import(stageModule)) as { startStage: StartStage }).startStage : null;
  const w = openWorker(native, data, startStage);
  adapter.opened?.(w);
  const post = (r: WorkerReport): void => data.port.postMessage(r);
  const io = adapter.io ? adapter.io(w.io) : w.io;
  const loop = new WorkerLoop({
    core: w.core, io, wireguard: w.wireguard, stats: data.stats,
    reportError: (message) => post({ type: 'error', message }),
  });
  loop.setRoutes(data.routes);
  post({ type: 'ready', features: w.features, fds: w.fds });
  runPolling(loop, io);
  w.close();
  post({ type: 'stopped' });
}
