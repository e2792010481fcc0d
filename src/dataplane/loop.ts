// A worker's forwarding loop, apart from how its I/O is opened and how it is woken: each
// wake-up (what the TUN queue, the UDP port and the control channel have) works the batches
// through the stages
//   TUN read  -> core egress  -> outputs (UDP send, TUN write)
//   UDP recv  -> core ingress -> outputs (TUN write, UDP send)
// JS runs once per batch, never per packet (the dgram engine's batches are one packet). A stage that transforms whole batches (WireGuard's
// encryption, WireguardStage) goes between the core and the I/O: after egress before the sends,
// after the receive before ingress; its own datagrams (handshakes, keepalives) go out after
// each direction's flushes. Two drivers wake it: runPolling() on a worker thread, which sleeps
// in poll() (the addon), and EventDriver on the main thread, woken by libuv (the dgram engine).
import type { Core } from './core.js';
import type { LoopIO, PollingIO } from './io.js';
import { READY_CONTROL, READY_TUN, READY_UDP } from './io.js';
import { formatCIDR, type IPv4Net } from '../net.js';
import {
  IO_STATS, STAT_HEARTBEAT, STAT_EXTRA, PEER_SLOTS, PEER_WORDS, statsLayout, type IoStat, type StatsLayout,
  type ControlMessage, type SlottedRoute,
} from './protocol.js';

const at = (name: IoStat): number => IO_STATS.indexOf(name);
const SEND_ERRORS = at('send_errors');
const TUN_WRITE_ERRORS = at('tun_write_errors');
const TUN_READS = at('tun_reads');
const TUN_WRITES = at('tun_writes');
const UDP_SENDS = at('udp_sends');
const UDP_RECEIVES = at('udp_receives');
const WAKEUPS = at('wakeups');

// With UDP GRO one receive can hold up to 64 datagrams; the core's TUN write table holds 256.
export const GRO_RECV_MAX = 4;
export const PUBLISH_EVERY_MS = 100;
// After traffic, the counters are published once the worker has been idle this long, so a
// scrape right after a transfer sees all of it without publishing on every busy wake-up.
export const PUBLISH_WHEN_IDLE_MS = 5;
// Batches per direction in one wake-up before control messages are looked at again.
const ROUNDS_PER_WAKEUP = 64;
/** WorkerLoop.wake()'s answer once the loop has stopped. */
export const STOPPED = -1;

// Per-peer counters: which core route each stats slot shows, copied out on every publish.
class PeerSlots {
  private readonly routeOf = new Int32Array(PEER_SLOTS).fill(-1);
  private used: number[] = [];
  private readonly words: BigUint64Array;

  constructor(private readonly core: Core, private readonly stats: BigUint64Array, private readonly base: number) {
    this.words = new BigUint64Array(core.memory.buffer);
  }

  /** Throws when the core refuses the route (bad prefix length, table full). */
  set({ route, slot }: SlottedRoute): void {
    const index = this.core.setRoute(route);
    if (slot < 0 || slot >= PEER_SLOTS) return;
    if (this.routeOf[slot] < 0) this.used.push(slot);
    this.routeOf[slot] = index;
  }

  remove(subnet: IPv4Net, slot: number): void {
    this.core.removeRoute(subnet);
    if (slot < 0 || slot >= PEER_SLOTS || this.routeOf[slot] < 0) return;
    this.routeOf[slot] = -1;
    this.used = this.used.filter((s) => s !== slot);
    this.stats.fill(0n, this.base + slot * PEER_WORDS, this.base + (slot + 1) * PEER_WORDS);
  }

  publish(): void {
    for (const slot of this.used) {
      // Route entries are 64-byte aligned, so their u64 counters are too.
      const at = this.core.exports.routeCounterAddr(this.routeOf[slot]) >>> 3;
      const to = this.base + slot * PEER_WORDS;
      for (let k = 0; k < PEER_WORDS; k++) this.stats[to + k] = this.words[at + k];
    }
  }
}

/** WireGuard mode's stage: the loop calls it at these points, all per batch or per wake-up. */
export interface WireguardStage {
  /** The longest wait() when idle, so that the handshake timers run. */
  readonly tickMs: number;
  /** Bytes one TUN read batch stops at (TunQueue.readBatch's budget). */
  readonly egressBudget: number;
  /** After the core took route `r` (its index `routeIndex`). */
  setPeer(r: SlottedRoute, routeIndex: number): void;
  /** Before the core drops the route at `routeIndex`. */
  removePeer(routeIndex: number): void;
  /** On every wake-up, before any batch. */
  tick(now: number): void;
  /** After core.egress(), before the outputs are flushed: seals the batch. */
  afterEgress(now: number): void;
  /** After a UDP receive of `count` datagrams, before core.ingress(): opens them. */
  beforeIngress(count: number, now: number): void;
  /** Sends the datagrams it has queued (handshakes, keepalives); returns how many were sent. */
  drain(): number;
  /** Reports its state to the main thread: when `force`, or if it last did long enough ago. */
  report(now: number, force: boolean): void;
}

export interface LoopOptions {
  core: Core;
  io: LoopIO;
  /** WireGuard mode's stage; absent in the other modes. */
  wireguard?: WireguardStage | null;
  /** The stats buffer (layout in protocol.ts), shared with the main thread. */
  stats: SharedArrayBuffer;
  /** Told about a control message that failed; the loop carries on. */
  reportError(message: string): void;
}

export class WorkerLoop {
  private readonly core: Core;
  private readonly io: LoopIO;
  private readonly wg: WireguardStage | null;
  private readonly stats: BigUint64Array;
  private readonly SL: StatsLayout;
  private readonly counters: BigUint64Array;
  private readonly peers: PeerSlots;
  private readonly reportError: (message: string) => void;
  private readonly batch: number;
  /** TunQueue.readBatch's budget; 0: batches end only at `batch` packets or a dry queue. */
  private readonly egressBudget: number;
  private readonly egressCapacity: number;
  private readonly ingressCapacity: number;
  // Plain numbers on the hot path; converted to u64 only when published.
  private readonly ioStats = new Float64Array(IO_STATS.length);
  private lastPublish = 0;
  /** Packets were handled since the last publish. */
  private dirty = false;
  private stopping = false;

  constructor(o: LoopOptions) {
    this.core = o.core;
    this.io = o.io;
    this.wg = o.wireguard ?? null;
    this.reportError = o.reportError;
    this.stats = new BigUint64Array(o.stats);
    const L = o.core.layout;
    this.SL = statsLayout(L);
    this.counters = new BigUint64Array(o.core.memory.buffer, L.COUNTERS, this.SL.counterWords);
    this.peers = new PeerSlots(o.core, this.stats, this.SL.peers);
    this.batch = L.BATCH;
    this.egressBudget = this.wg?.egressBudget ?? 0;
    this.egressCapacity = o.core.exports.egressReadCapacity();
    this.ingressCapacity = o.core.exports.ingressReadCapacity();
  }

  /** Loads the initial routes. A route the core refuses is reported and skipped: it must not
   * stop the others (nor make every restart of this worker fail the same way). */
  setRoutes(routes: readonly SlottedRoute[]): void {
    for (const r of routes) {
      try { this.setPeer(r); } catch (e) { this.reportError(`route ${formatCIDR(r.route.subnet)}: ${message(e)}`); }
    }
  }

  /** Publishes the counters a first time; returns how long the first wait may sleep (ms). */
  start(): number {
    this.publish(Date.now());
    return this.nextWait();
  }

  /** One wake-up: `ready` holds the READY_* bits of what has something, 0 when the wait timed
   * out. Takes the control messages, then works the ready directions' batches. Returns how long
   * the next wait may sleep (ms), or STOPPED once a 'stop' was taken (the counters are then
   * published a last time). Throws what the I/O throws. */
  wake(ready: number): number {
    if (this.stopping) return STOPPED;
    const { io, wg } = this;
    if (wg) {
      const now = Date.now();
      wg.tick(now);
      this.drainStage();
      wg.report(now, false);
    }
    if (ready === 0 && this.dirty) {
      this.publish(Date.now());
      this.dirty = false;
      return this.nextWait();
    }
    this.ioStats[WAKEUPS]++;
    if (ready & READY_CONTROL) {
      io.clearControl();
      this.control();
      if (this.stopping) {
        this.publish(Date.now());
        return STOPPED;
      }
    }
    // Work the directions found ready until each is dry, bounded so control messages are seen
    // promptly. A batch shorter than asked for ended on "nothing to read": that source is dry,
    // and the next wait (one system call for both) tells whether more came meanwhile, where
    // reading each again would cost one system call each.
    let tunReady = (ready & READY_TUN) !== 0;
    let udpReady = (ready & READY_UDP) !== 0;
    for (let round = 0; round < ROUNDS_PER_WAKEUP && (tunReady || udpReady); round++) {
      if (tunReady) {
        const n = this.fromTun();
        if (n > 0) this.dirty = true;
        // A batch cut by the budget is not a dry queue: only an empty one says so.
        tunReady = n === this.batch || (this.egressBudget > 0 && n > 0);
      }
      if (udpReady) {
        const max = io.udp.gro ? GRO_RECV_MAX : this.batch;
        const m = this.fromUdp(max);
        if (m > 0) this.dirty = true;
        udpReady = m === max;
      }
    }
    const now = Date.now();
    if (now - this.lastPublish >= PUBLISH_EVERY_MS) {
      this.publish(now);
      this.dirty = false;
    }
    return this.nextWait();
  }

  /** Soon after traffic, so that its counters are published once the worker is idle; else as
   * long as the WireGuard timers or the heartbeat allow. */
  private nextWait(): number {
    return this.dirty ? PUBLISH_WHEN_IDLE_MS : this.wg ? this.wg.tickMs : PUBLISH_EVERY_MS;
  }

  /** One TUN read batch through egress; returns the packets read. */
  private fromTun(): number {
    const L = this.core.layout;
    const n = this.io.tun.readBatch(L.EG_IN_DESC, this.batch, this.egressCapacity, this.egressBudget);
    if (n > 0) {
      this.ioStats[TUN_READS] += n;
      this.core.egress(n, Date.now());
      this.wg?.afterEgress(Date.now());
      this.flush();
      this.drainStage();
    }
    return n;
  }

  /** One UDP receive batch through ingress, flushing whenever the core's output tables fill;
   * returns the receives. */
  private fromUdp(max: number): number {
    const L = this.core.layout;
    const m = this.io.udp.recvBatch(L.IN_IN_DESC, max, this.ingressCapacity);
    if (m > 0) {
      this.ioStats[UDP_RECEIVES] += m;
      this.wg?.beforeIngress(m, Date.now());
      for (let next = 0; next < m;) {
        next = this.core.ingress(m, Date.now(), next);
        this.flush();
      }
      this.drainStage();
    }
    return m;
  }

  /** Hands the core's outputs to the I/O: its send table, then its TUN write table. */
  private flush(): void {
    this.toUdp();
    this.toTun();
  }

  /** Sends what the stage queued between batches. */
  private drainStage(): void {
    if (this.wg) this.ioStats[UDP_SENDS] += this.wg.drain();
  }

  private toUdp(): void {
    const ns = this.core.exports.sendCount();
    if (ns === 0) return;
    const sent = this.io.udp.sendBatch(this.core.layout.SEND_DESC, ns);
    this.ioStats[UDP_SENDS] += sent;
    this.ioStats[SEND_ERRORS] += ns - sent;
  }

  private toTun(): void {
    const nt = this.core.exports.tunWriteCount();
    if (nt === 0) return;
    const L = this.core.layout;
    const written = this.io.tun.writeBatch(L.TUN_WRITES, nt, L.IOVECS);
    this.ioStats[TUN_WRITES] += written;
    this.ioStats[TUN_WRITE_ERRORS] += nt - written;
  }

  private publish(now: number): void {
    this.ioStats[SEND_ERRORS] += this.io.udp.lateSendErrors?.() ?? 0;
    this.stats.set(this.counters, STAT_EXTRA);
    this.peers.publish();
    this.ioStats[STAT_HEARTBEAT] = now;
    for (let i = 0; i < this.ioStats.length; i++) this.stats[i] = BigInt(this.ioStats[i]);
    this.lastPublish = now;
  }

  private setPeer(r: SlottedRoute): void {
    this.peers.set(r);
    if (this.wg) this.wg.setPeer(r, this.routeIndex(r.route.subnet));
  }

  private removePeer(subnet: IPv4Net, slot: number): void {
    if (this.wg) this.wg.removePeer(this.routeIndex(subnet));
    this.peers.remove(subnet, slot);
  }

  private routeIndex(subnet: IPv4Net): number {
    return this.core.exports.routeFind(subnet.ip >>> 0, subnet.prefixLen);
  }

  private control(): void {
    for (;;) {
      const msg = this.io.nextControl();
      if (!msg) return;
      // A message that throws is one message lost, reported; the worker keeps forwarding.
      try {
        this.apply(msg);
      } catch (e) {
        this.reportError(`control message ${msg.type}${msg.type === 'set' ? ` ${formatCIDR(msg.route.subnet)}` : ''}: ${message(e)}`);
      }
    }
  }

  private apply(msg: ControlMessage): void {
    if (msg.type === 'set') this.setPeer(msg);
    else if (msg.type === 'remove') this.removePeer(msg.subnet, msg.slot);
    else if (msg.type === 'stop') this.stopping = true;
    else if (msg.type === 'publish') {
      this.publish(Date.now());
      this.wg?.report(Date.now(), true);
      // Stored last and atomically: whoever sees the seq sees the counters before it.
      Atomics.store(this.stats, this.SL.seq, BigInt(msg.seq));
    }
  }
}

function message(e: unknown): string {
  return (e as Error)?.message ?? String(e);
}

/** The driver of a worker thread: sleeps in io.wait() between wake-ups until 'stop'. Throws
 * what the I/O throws (the worker then dies and is restarted). */
export function runPolling(loop: WorkerLoop, io: PollingIO): void {
  for (let wait = loop.start(); wait !== STOPPED;) wait = loop.wake(io.wait(wait));
}

/** The driver on a thread that must not block (the main thread): the I/O calls ready() from
 * its libuv callbacks, and a timer stands in for the wait's timeout. */
export class EventDriver {
  private timer: NodeJS.Timeout | null = null;
  private timerMs = 0;
  private pending = 0;
  private busy = false;

  constructor(private readonly loop: WorkerLoop) {}

  start(): void {
    this.schedule(this.loop.start());
  }

  /** Something has what the READY_* bits say. Called while a wake-up runs (a callback of the
   * I/O it made), it is worked right after that one. */
  ready(bits: number): void {
    this.pending |= bits;
    if (this.busy) return;
    this.busy = true;
    try {
      let wait: number;
      do {
        const now = this.pending;
        this.pending = 0;
        wait = this.loop.wake(now);
      } while (this.pending !== 0 && wait !== STOPPED);
      this.schedule(wait);
    } finally {
      this.busy = false;
    }
  }

  private schedule(ms: number): void {
    if (ms === STOPPED) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      return;
    }
    // Re-arming the same timer costs less than a new one on every wake-up.
    if (this.timer && ms === this.timerMs) { this.timer.refresh(); return; }
    if (this.timer) clearTimeout(this.timer);
    this.timerMs = ms;
    // It must not keep the process alive: the sockets and reads the I/O has open do.
    this.timer = setTimeout(() => { this.timer = null; this.ready(0); }, ms).unref();
  }
}
