// The per-packet baseline: the same core and worker loop as the native engine, on Node's own
// dgram socket and one blocking TUN read or write per packet (dgram-io.ts), on the main thread.
// It exists to be measured against (it is what a straightforward Node port of flanneld's proxy
// looks like) and as a fallback when the batched engine cannot run. It still needs the addon
// to open the TUN: Node has no ioctl.
import { createSocket, type Socket } from 'node:dgram';
import { loadNative, type NativeIO } from '../addon/native.js';
import { Core } from './core.js';
import { checkAddonLayout } from './descriptors.js';
import { DgramIO } from './dgram-io.js';
import { WorkerLoop, EventDriver } from './loop.js';
import { PEER_SLOTS, decodeStats, statsLayout, type StatsLayout } from './protocol.js';
import type { Engine, EngineEvents, EngineFeatures, EngineOptions, EngineStats, RouteSource, SlottedRoute } from './engine.js';

export class DgramEngine implements Engine {
  readonly name = 'dgram' as const;
  private readonly native: NativeIO;
  private readonly core: Core;
  readonly routeCapacity: number;
  readonly peerSlots = PEER_SLOTS;
  private readonly layout: StatsLayout;
  private readonly statsBuffer: SharedArrayBuffer;
  private io: DgramIO | null = null;
  private socket: Socket | null = null;
  private publishSeq = 0;

  constructor(private readonly opts: EngineOptions, private readonly source: RouteSource, private readonly events: EngineEvents = {}) {
    this.native = loadNative();
    this.core = new Core({
      mode: opts.mode, port: opts.port, mtu: opts.mtu, subnet: opts.subnet,
      network: opts.network, vni: opts.vni, mac: opts.mac,
    });
    checkAddonLayout(this.native.layout, this.core.layout);
    this.routeCapacity = this.core.layout.MAX_ROUTES;
    this.layout = statsLayout(this.core.layout);
    this.statsBuffer = new SharedArrayBuffer(this.layout.words * 8);
  }

  async start(): Promise<EngineFeatures> {
    const tunFd = this.native.tunOpen(this.opts.device, { multiQueue: false, vnetHdr: false }).fd;
    this.native.setBlocking(tunFd, true);
    const sock = createSocket({ type: 'udp4', reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(this.opts.port, this.opts.bindAddr, () => { sock.off('error', reject); resolve(); });
    });
    this.socket = sock;
    const io = new DgramIO(tunFd, sock, this.core.memory.buffer, this.core.layout);
    const loop = new WorkerLoop({
      core: this.core, io, stats: this.statsBuffer, reportError: (message) => this.events.workerError?.(0, message),
    });
    loop.setRoutes([...this.source.routes()]);
    const driver = new EventDriver(loop);
    driver.start();
    io.start((bits) => driver.ready(bits));
    this.io = io;
    return { vnetHdr: false, tunOffload: 0, udpGso: false, udpGro: false, multiQueue: false };
  }

  setRoute({ route, slot }: SlottedRoute): void {
    this.io?.post({ type: 'set', route, slot });
  }

  removeRoute({ route, slot }: SlottedRoute): void {
    this.io?.post({ type: 'remove', subnet: route.subnet, slot });
  }

  stats(): EngineStats {
    const words = new BigUint64Array(this.statsBuffer);
    return { ...decodeStats(this.layout, (i) => words[i], this.source.routes()), workers: this.io ? 1 : 0, workerRestarts: 0 };
  }

  /** The loop runs on this thread: it publishes before this returns. */
  async refresh(): Promise<void> {
    this.io?.post({ type: 'publish', seq: ++this.publishSeq });
  }

  async stop(): Promise<void> {
    const io = this.io;
    this.io = null;
    io?.post({ type: 'stop' });
    io?.stop();
    const sock = this.socket;
    this.socket = null;
    await new Promise<void>((resolve) => (sock ? sock.close(() => resolve()) : resolve()));
  }
}
