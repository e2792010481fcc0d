// The per-packet baseline: Node's own dgram socket and one blocking TUN read or write per
// packet, on the main thread, with the same wasm core deciding what happens to each packet.
// It exists to be measured against (it is what a straightforward Node port of flanneld's proxy
// looks like) and as a fallback when the batched engine cannot run. It still needs the addon
// to open the TUN: Node has no ioctl.
import { createSocket, type Socket } from 'node:dgram';
import { read, writeSync } from 'node:fs';
import { loadNative, type NativeIO } from './native.js';
import { Core } from './core.js';
import { DescriptorView, checkAddonLayout } from './descriptors.js';
import { formatIPv4, parseIPv4 } from '../net.js';
import { IO_STATS, type Engine, type EngineFeatures, type EngineOptions, type EngineStats, type IoStat, type RouteSource, type SlottedRoute } from './engine.js';

const MAX_PACKET = 65535;

export class DgramEngine implements Engine {
  readonly name = 'dgram' as const;
  private readonly io: NativeIO;
  private readonly core: Core;
  readonly routeCapacity: number;
  readonly peerSlots = 0; // the core's own per-route counters are read directly
  private tunFd = -1;
  private socket: Socket | null = null;
  private running = false;
  private readonly ioStats = Object.fromEntries(IO_STATS.map((n) => [n, 0n])) as Record<IoStat, bigint>;
  private readonly readBuf = Buffer.alloc(MAX_PACKET);
  private readonly desc: DescriptorView;

  constructor(private readonly opts: EngineOptions, private readonly source: RouteSource) {
    this.io = loadNative();
    this.core = new Core({
      mode: opts.mode, port: opts.port, mtu: opts.mtu, subnet: opts.subnet,
      network: opts.network, vni: opts.vni, mac: opts.mac,
    });
    checkAddonLayout(this.io.layout, this.core.layout);
    this.desc = new DescriptorView(this.core.memory.buffer, this.core.layout);
    this.routeCapacity = this.core.layout.MAX_ROUTES;
  }

  async start(): Promise<EngineFeatures> {
    this.tunFd = this.io.tunOpen(this.opts.device, { multiQueue: false, vnetHdr: false }).fd;
    this.io.setBlocking(this.tunFd, true);
    const sock = createSocket({ type: 'udp4', reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(this.opts.port, this.opts.bindAddr, () => { sock.off('error', reject); resolve(); });
    });
    sock.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo.address, rinfo.port));
    sock.on('error', () => { this.ioStats.send_errors++; });
    this.socket = sock;
    this.running = true;
    this.readLoop();
    return { vnetHdr: false, tunOffload: 0, udpGso: false, udpGro: false, multiQueue: false };
  }

  // One read() per packet on the thread pool; each packet goes through the core on its own.
  private readLoop(): void {
    if (!this.running) return;
    read(this.tunFd, this.readBuf, 0, MAX_PACKET, null, (err, n) => {
      if (!this.running) return;
      if (err) { setTimeout(() => this.readLoop(), 10); return; }
      this.ioStats.tun_reads++;
      const mem = new Uint8Array(this.core.memory.buffer);
      const d = this.desc.at(this.core.layout.EG_IN_DESC, 0);
      mem.set(this.readBuf.subarray(0, n), this.desc.offset(d));
      this.desc.setLength(d, n);
      this.core.egress(1, Date.now());
      this.flush();
      this.readLoop();
    });
  }

  private onDatagram(msg: Buffer, from: string, port: number): void {
    this.ioStats.udp_receives++;
    const mem = new Uint8Array(this.core.memory.buffer);
    const d = this.desc.at(this.core.layout.IN_IN_DESC, 0);
    const cap = this.core.exports.ingressReadCapacity();
    const n = Math.min(msg.length, cap);
    mem.set(msg.subarray(0, n), this.desc.offset(d));
    this.desc.setLength(d, n);
    this.desc.setAddr(d, parseIPv4(from) ?? 0);
    this.desc.setPort(d, port);
    this.desc.setSegSize(d, 0);
    this.core.ingress(1, Date.now(), 0);
    this.flush();
  }

  // Copies each output out of wasm memory and hands it to Node, one call per packet.
  private flush(): void {
    const L = this.core.layout;
    const mem = new Uint8Array(this.core.memory.buffer);
    for (let i = 0; i < this.core.sendCount; i++) {
      const d = this.desc.at(L.SEND_DESC, i);
      const off = this.desc.offset(d);
      const len = this.desc.length(d);
      const addr = formatIPv4(this.desc.addr(d));
      const port = this.desc.port(d);
      this.socket?.send(Buffer.from(mem.subarray(off, off + len)), port, addr, (err) => { if (err) this.ioStats.send_errors++; });
      this.ioStats.udp_sends++;
    }
    for (let i = 0; i < this.core.tunWriteCount; i++) {
      const { first, count } = this.desc.tunWrite(L.TUN_WRITES, i);
      const parts: Uint8Array[] = [];
      for (let k = 0; k < count; k++) {
        const v = this.desc.iovec(L.IOVECS, first + k);
        parts.push(mem.subarray(v.offset, v.offset + v.length));
      }
      try { writeSync(this.tunFd, Buffer.concat(parts)); this.ioStats.tun_writes++; } catch { this.ioStats.tun_write_errors++; }
    }
  }

  setRoute({ route }: SlottedRoute): void {
    this.core.setRoute(route);
  }

  removeRoute({ route }: SlottedRoute): void {
    this.core.removeRoute(route.subnet);
  }

  stats(): EngineStats {
    return {
      counters: this.core.counters(),
      peers: [...this.source.routes()].flatMap(({ route: r }) => {
        const c = this.core.peerCounters(r.subnet);
        return c ? [{ subnet: r.subnet, ...c }] : [];
      }),
      io: { ...this.ioStats, heartbeat_ms: BigInt(Date.now()) },
      workers: this.running ? 1 : 0,
      workerRestarts: 0,
    };
  }

  /** The core runs on this thread: its counters are always current. */
  async refresh(): Promise<void> {}

  async stop(): Promise<void> {
    this.running = false;
    await new Promise<void>((resolve) => (this.socket ? this.socket.close(() => resolve()) : resolve()));
    this.socket = null;
    // A read may still be parked in the thread pool; it ends with the process or the next packet.
  }
}
