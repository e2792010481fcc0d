// The dgram engine's I/O: Node's own UDP socket (node:dgram) and one read() or write() of the
// TUN per packet (node:fs), on the main thread. It implements the loop's batch interfaces one
// packet per call, woken by libuv: a datagram's 'message' event, a TUN read's completion, a
// control message posted by the engine. Every packet is copied between Node's buffers and the
// core's memory, as a straightforward Node port would.
import type { Socket } from 'node:dgram';
import { read, writeSync } from 'node:fs';
import { DescriptorView } from './descriptors.js';
import type { Layout } from './abi.js';
import { READY_CONTROL, READY_TUN, READY_UDP, type LoopIO, type TunQueue, type UdpPorts } from './io.js';
import type { ControlMessage } from './protocol.js';
import { formatIPv4, parseIPv4 } from '../net.js';

const MAX_PACKET = 65535;
// A TUN read that failed is tried again after this long, not in a tight loop.
const READ_RETRY_MS = 10;

type Ready = (bits: number) => void;

/** A blocking TUN fd read one packet at a time on libuv's thread pool: one read is in flight,
 * and the next starts once the loop has taken its packet. */
export class DgramTun implements TunQueue {
  private readonly readBuf = Buffer.alloc(MAX_PACKET);
  /** Length of the packet read and not yet taken; -1: none. */
  private held = -1;
  private reading = false;
  private running = false;
  private ready: Ready = () => {};

  constructor(private readonly fd: number, private readonly desc: DescriptorView) {}

  start(ready: Ready): void {
    this.ready = ready;
    this.running = true;
    this.readNext();
  }

  stop(): void {
    // A read may still be parked in the thread pool: it ends with the next packet or the process.
    this.running = false;
  }

  readBatch(descTable: number, max: number, capacity: number): number {
    if (this.held < 0 || max < 1) return 0;
    this.desc.fill(this.desc.at(descTable, 0), this.readBuf.subarray(0, this.held), capacity);
    this.held = -1;
    this.readNext();
    return 1;
  }

  writeBatch(writesTable: number, count: number, iovTable: number): number {
    let written = 0;
    for (let w = 0; w < count; w++) {
      try {
        writeSync(this.fd, this.desc.gather(writesTable, w, iovTable));
        written++;
      } catch { /* refused: counted by the loop */ }
    }
    return written;
  }

  private readNext(): void {
    if (!this.running || this.reading || this.held >= 0) return;
    this.reading = true;
    read(this.fd, this.readBuf, 0, MAX_PACKET, null, (err, n) => {
      this.reading = false;
      if (!this.running) return;
      if (err) { setTimeout(() => this.readNext(), READ_RETRY_MS); return; }
      this.held = n;
      this.ready(READY_TUN);
    });
  }
}

interface Received { data: Buffer; addr: number; port: number }

/** A node:dgram socket: each 'message' is one receive; each datagram sent is one send(). */
export class DgramUdp implements UdpPorts {
  readonly gro = false;
  private readonly received: Received[] = [];
  private failed = 0;

  constructor(private readonly socket: Socket, private readonly desc: DescriptorView) {}

  start(ready: Ready): void {
    this.socket.on('message', (data, from) => {
      this.received.push({ data, addr: parseIPv4(from.address) ?? 0, port: from.port });
      ready(READY_UDP);
    });
    this.socket.on('error', () => { this.failed++; });
  }

  recvBatch(descTable: number, max: number, capacity: number): number {
    const n = Math.min(max, this.received.length);
    for (let i = 0; i < n; i++) this.desc.fillDatagram(this.desc.at(descTable, i), this.received.shift() as Received, capacity);
    return n;
  }

  sendBatch(descTable: number, count: number): number {
    const onSent = (err: Error | null): void => { if (err) this.failed++; };
    for (let i = 0; i < count; i++) {
      const d = this.desc.at(descTable, i);
      const address = formatIPv4(this.desc.addr(d));
      const port = this.desc.port(d);
      // Copied: the core reuses its buffers before Node sends. A run of equal datagrams the
      // core joined for UDP_SEGMENT goes out as its datagrams, one send each.
      const bytes = this.desc.bytes(d);
      const seg = this.desc.segSize(d) || bytes.length;
      for (let at = 0; at < bytes.length; at += seg) {
        this.socket.send(Buffer.from(bytes.subarray(at, Math.min(at + seg, bytes.length))), port, address, onSent);
      }
    }
    return count;
  }

  lateSendErrors(): number {
    const n = this.failed;
    this.failed = 0;
    return n;
  }
}

/** The control channel on the same thread: the engine posts, the loop is woken at once. */
export class DgramIO implements LoopIO {
  readonly tun: DgramTun;
  readonly udp: DgramUdp;
  private readonly control: ControlMessage[] = [];
  private ready: Ready = () => {};

  /** `tunFd` must be blocking (its reads park in the thread pool); `socket` bound. */
  constructor(tunFd: number, socket: Socket, memory: ArrayBuffer, layout: Layout) {
    const desc = new DescriptorView(memory, layout);
    this.tun = new DgramTun(tunFd, desc);
    this.udp = new DgramUdp(socket, desc);
  }

  /** Starts reading both; `ready` wakes the loop. */
  start(ready: Ready): void {
    this.ready = ready;
    this.udp.start(ready);
    this.tun.start(ready);
  }

  stop(): void {
    this.tun.stop();
  }

  /** Hands the loop a control message and wakes it: applied before this returns (or, when
   * posted from within a wake-up, right after that one). */
  post(msg: ControlMessage): void {
    this.control.push(msg);
    this.ready(READY_CONTROL);
  }

  clearControl(): void {}

  nextControl(): ControlMessage | undefined {
    return this.control.shift();
  }
}
