// A worker's forwarding loop, apart from how its I/O is opened: it sleeps in LoopIO.wait() on
// the TUN queue, the UDP port and the control channel, and works each batch through the stages
//   TUN read  -> core egress  -> outputs (UDP send, TUN write)
//   UDP recv  -> core ingress -> outputs (TUN write, UDP send)
// JS runs once per batch, never per packet. A stage that transforms whole batches (WireGuard's
// encryption, WireguardStage) goes between the core and the I/O: after egress before the sends,
// after the receive before ingress; its own datagrams (handshakes, keepalives) go out after
// each direction's flushes.
import type { Core } from './core.js';
import type { LoopIO } from './io.js';
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
  private readonly egressCapacity: number;
  private readonly ingressCapacity: number;
  // Plain numbers on the hot path; converted to u64 only when published.
  private readonly ioStats = new Float64Array(IO_STATS.length);
  private lastPublish = 0;
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

  /** Forwards until a 'stop' message; throws what the I/O throws (the worker then dies). */
  run(): void {
    const { io, wg } = this;
    this.publish(Date.now());
    let dirty = false;
    while (!this.stopping) {
      const mask = io.wait(dirty ? PUBLISH_WHEN_IDLE_MS : wg ? wg.tickMs : PUBLISH_EVERY_MS);
      if (wg) {
        const now = Date.now();
        wg.tick(now);
        this.drainStage();
        wg.report(now, false);
      }
      if (mask === 0 && dirty) {
        this.publish(Date.now());
        dirty = false;
        continue;
      }
      this.ioStats[WAKEUPS]++;
      if (mask & READY_CONTROL) {
        io.clearControl();
        this.control();
        if (this.stopping) break;
      }
      // Work the directions wait() found ready until each is dry, bounded so control messages
      // are seen promptly. A batch shorter than asked for ended on "nothing to read": that
      // source is dry, and the next wait() (one system call for both) tells whether more came
      // meanwhile, where reading each again would cost one system call each.
      let tunReady = (mask & READY_TUN) !== 0;
      let udpReady = (mask & READY_UDP) !== 0;
      for (let round = 0; round < ROUNDS_PER_WAKEUP && (tunReady || udpReady); round++) {
        if (tunReady) {
          const n = this.fromTun();
          if (n > 0) dirty = true;
          tunReady = n === this.batch;
        }
        if (udpReady) {
          const max = io.udp.gro ? GRO_RECV_MAX : this.batch;
          const m = this.fromUdp(max);
          if (m > 0) dirty = true;
          udpReady = m === max;
        }
      }
      const now = Date.now();
      if (now - this.lastPublish >= PUBLISH_EVERY_MS) {
        this.publish(now);
        dirty = false;
      }
    }
    this.publish(Date.now());
  }

  /** One TUN read batch through egress; returns the packets read. */
  private fromTun(): number {
    const L = this.core.layout;
    const n = this.io.tun.readBatch(L.EG_IN_DESC, this.batch, this.egressCapacity);
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
