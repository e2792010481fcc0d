// The two batch interfaces a worker loop forwards between, and its control channel. Packets stay
// in the core's memory: every call names descriptor tables in it by byte offset (the layouts are
// in docs/memory-abi.md), so an implementation moves bytes in and out of that memory. Two real
// ones: the addon's (addon-io.ts: batched system calls, no allocation per packet, a worker thread
// sleeping in poll()) and Node's own sockets and file reads (dgram-io.ts: one packet per call,
// on the main thread, woken by libuv). memory-io.ts fakes them for unit tests of the loop.
import type { ControlMessage } from './protocol.js';

/** One TUN queue. */
export interface TunQueue {
  /** Reads up to `max` packets, one into each descriptor of the table at `descTable` (at its
   * offset, at most `capacity` bytes), storing each length. With a `budget` (bytes, > 0) it
   * also stops once the packets read add up to that many bytes. Returns how many were read:
   * without a budget, fewer than `max` means the queue ran dry; with one, only 0 says so.
   * Throws on a failure other than "nothing to read". */
  readBatch(descTable: number, max: number, capacity: number, budget?: number): number;
  /** Writes `count` entries of the TUN write table at `writesTable` (each a packet gathered from
   * iovecs of the table at `iovTable`). Returns the packets written; the rest were refused. */
  writeBatch(writesTable: number, count: number, iovTable: number): number;
}

/** The UDP port(s) a worker receives on and sends from. */
export interface UdpPorts {
  /** UDP GRO is on: one receive may hold many datagrams (segSize apart). */
  readonly gro: boolean;
  /** Receives up to `max` datagrams into the descriptors at `descTable` as TunQueue.readBatch,
   * also storing the source address and port and the GRO segment size. Fewer than `max`: dry. */
  recvBatch(descTable: number, max: number, capacity: number): number;
  /** Sends `count` descriptors of the table at `descTable`, each to its address and port (its
   * flowHash picks the local socket); stores each status. Returns how many were sent. */
  sendBatch(descTable: number, count: number): number;
  /** Sends that failed after sendBatch() counted them sent (an asynchronous socket learns it
   * later), since the last call. Absent: sendBatch() knows every failure. */
  lateSendErrors?(): number;
}

/** What has something for the loop: bits of a wake-up (WorkerLoop.wake, PollingIO.wait). */
export const READY_TUN = 1;
export const READY_UDP = 2;
export const READY_CONTROL = 4;

/** Everything a worker loop does I/O with. */
export interface LoopIO {
  readonly tun: TunQueue;
  readonly udp: UdpPorts;
  /** After READY_CONTROL: clears the wake-up; messages are then taken with nextControl(). */
  clearControl(): void;
  /** The next control message from the main thread, or undefined when there is none. */
  nextControl(): ControlMessage | undefined;
}

/** A LoopIO a thread can sleep on (a worker's: it has nothing else to do). */
export interface PollingIO extends LoopIO {
  /** Sleeps until the TUN queue, the UDP port or the control channel has something, at most
   * `timeoutMs`; returns READY_* bits, 0 on timeout. One system call. */
  wait(timeoutMs: number): number;
}
