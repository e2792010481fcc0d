// LoopIO in memory, for unit tests of the worker loop without root, devices or sockets: packets
// queued on a fake TUN queue and UDP port are copied into the core's descriptors as the addon
// would, what the loop writes and sends is kept, every batch call (a system call in the addon)
// is counted, and failures can be injected. wait() runs the test's next step, then reports
// what is queued; when the steps run out it sends 'stop'.
import { DescriptorView } from './descriptors.js';
import type { Layout } from './abi.js';
import { READY_CONTROL, READY_TUN, READY_UDP, type PollingIO, type TunQueue, type UdpPorts } from './io.js';
import type { ControlMessage } from './protocol.js';

export interface Datagram {
  data: Uint8Array;
  /** Peer address (host-order IPv4) and port: the source of a received datagram, the
   * destination of a sent one. */
  addr: number;
  port: number;
  /** GRO (received) or GSO (sent) segment size; 0: one datagram. */
  segSize?: number;
  /** Sent only: the value that picks the local socket. */
  flowHash?: number;
}

export class MemoryTun implements TunQueue {
  /** Packets the kernel holds for the loop to read. */
  readonly inbound: Uint8Array[] = [];
  /** Packets the loop wrote, in order. */
  readonly written: Uint8Array[] = [];
  /** Packets per writeBatch call. */
  readonly writeBatches: number[] = [];
  reads = 0;
  /** Thrown by the next readBatch. */
  readError: Error | null = null;
  /** This many of the next packets written are refused. */
  refuseWrites = 0;
  /** The queue was opened with IFF_VNET_HDR (the core must agree). */
  vnetHdr = false;

  constructor(private readonly desc: DescriptorView, private readonly L: Layout) {}

  readBatch(descTable: number, max: number, capacity: number, budget = 0): number {
    this.reads++;
    if (this.readError) { const e = this.readError; this.readError = null; throw e; }
    let n = 0;
    for (let bytes = 0; n < max && this.inbound.length > 0 && (budget === 0 || bytes < budget); n++) {
      const packet = this.inbound.shift() as Uint8Array;
      this.desc.fill(this.desc.at(descTable, n), packet, capacity);
      bytes += packet.length;
    }
    return n;
  }

  writeBatch(writesTable: number, count: number, iovTable: number): number {
    this.writeBatches.push(count);
    let written = 0;
    for (let w = 0; w < count; w++) {
      if (this.refuseWrites > 0) { this.refuseWrites--; continue; }
      // With IFF_VNET_HDR every write starts with the virtio_net_hdr: the packet is what follows.
      const packet = this.desc.gather(writesTable, w, iovTable);
      this.written.push(packet.subarray(this.vnetHdr ? this.L.VNET_HDR_LEN : 0));
      written++;
    }
    return written;
  }
}

export class MemoryUdp implements UdpPorts {
  readonly inbound: Datagram[] = [];
  readonly sent: Datagram[] = [];
  receives = 0;
  /** Thrown by the next recvBatch. */
  recvError: Error | null = null;
  /** This many of the next descriptors sent are refused. */
  refuseSends = 0;

  constructor(private readonly desc: DescriptorView, readonly gro: boolean) {}

  recvBatch(descTable: number, max: number, capacity: number): number {
    this.receives++;
    if (this.recvError) { const e = this.recvError; this.recvError = null; throw e; }
    const n = Math.min(max, this.inbound.length);
    for (let i = 0; i < n; i++) this.desc.fillDatagram(this.desc.at(descTable, i), this.inbound.shift() as Datagram, capacity);
    return n;
  }

  sendBatch(descTable: number, count: number): number {
    let sent = 0;
    for (let i = 0; i < count; i++) {
      if (this.refuseSends > 0) { this.refuseSends--; continue; }
      const at = this.desc.at(descTable, i);
      const d = this.desc.read(at);
      this.sent.push({ data: this.desc.bytes(at).slice(), addr: d.addr, port: d.port, segSize: d.segSize, flowHash: d.flowHash });
      sent++;
    }
    return sent;
  }
}

export interface MemoryIOOptions {
  /** The core's memory and layout: packets are copied in and out of it. */
  memory: ArrayBuffer;
  layout: Layout;
  gro?: boolean;
  vnetHdr?: boolean;
}

export class MemoryIO implements PollingIO {
  readonly tun: MemoryTun;
  readonly udp: MemoryUdp;
  /** Messages the main thread posted, not yet taken. */
  readonly control: ControlMessage[] = [];
  /** The timeout of every wait() call, in order. */
  readonly waits: number[] = [];
  private readonly steps: (() => void)[] = [];

  constructor(o: MemoryIOOptions) {
    const desc = new DescriptorView(o.memory, o.layout);
    this.tun = new MemoryTun(desc, o.layout);
    this.tun.vnetHdr = o.vnetHdr ?? false;
    this.udp = new MemoryUdp(desc, o.gro ?? false);
  }

  /** Queues steps: each wait() runs the next before reporting what is ready. */
  then(...steps: (() => void)[]): this {
    this.steps.push(...steps);
    return this;
  }

  wait(timeoutMs: number): number {
    this.waits.push(timeoutMs);
    const step = this.steps.shift();
    if (step) step();
    else this.control.push({ type: 'stop' });
    return (this.tun.inbound.length > 0 || this.tun.readError ? READY_TUN : 0)
      | (this.udp.inbound.length > 0 || this.udp.recvError ? READY_UDP : 0)
      | (this.control.length > 0 ? READY_CONTROL : 0);
  }

  clearControl(): void {}

  nextControl(): ControlMessage | undefined {
    return this.control.shift();
  }
}
