// The batched, zero-copy engine: one worker thread per TUN queue, each with its own wasm core
// and UDP socket. The main thread keeps the authoritative route set, pushes every change to
// all workers, restarts a worker that dies, and sums their counters.
import { Worker, MessageChannel, type MessagePort } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadNative, type NativeIO } from './native.js';
import { Core, type CounterSnapshot } from './core.js';
import { checkAddonLayout } from './descriptors.js';
import { VERDICTS, DIRECTIONS, type VerdictName, type Direction } from './verdicts.js';
import { routeKey, type Engine, type EngineFeatures, type EngineOptions, type EngineStats, type PeerRoute, type EngineEvents, type PeerTraffic } from './engine.js';
import {
  IO_STATS, STAT_EXTRA, PEER_SLOTS, PEER_WORDS, statsLayout, type StatsLayout, type IoStat, type ControlMessage, type WorkerData,
  type WorkerReport,
} from './protocol.js';

interface Slot {
  index: number;
  worker: Worker;
  port: MessagePort;
  eventFd: number;
  stats: SharedArrayBuffer;
  /** Counters of workers that died, kept so totals never go backwards. */
  retired: bigint[];
  ready: Promise<EngineFeatures>;
  stopped: boolean;
  /** Descriptors the worker opened: a dead worker's TUN queue and sockets must be closed
   * before a new worker can attach the queue and bind the port. */
  fds: number[];
}

function workerUrl(): URL {
  const js = new URL('./worker.js', import.meta.url);
  if (existsSync(fileURLToPath(js))) return js;
  return new URL('./worker.ts', import.meta.url); // running from source under a TS loader
}

export class NativeEngine implements Engine {
  readonly name = 'native' as const;
  private readonly io: NativeIO;
  private readonly routes = new Map<string, PeerRoute>();
  /** Stats slot of each route's per-peer counters. Freed slots are reused last (FIFO), so a
   * worker has long finished clearing a slot before another route gets it. */
  private readonly peerSlot = new Map<string, number>();
  private readonly freePeerSlots: number[] = [];
  private nextPeerSlot = 0;
  private publishSeq = 0;
  private readonly slots: Slot[] = [];
  private features: EngineFeatures | null = null;
  private restarts = 0;
  private closing = false;
  /** Where each counter lives in a worker's stats buffer. */
  private readonly layout: StatsLayout;

  constructor(private readonly opts: EngineOptions, private readonly events: EngineEvents = {}) {
    this.io = loadNative();
    // The layout comes from the wasm module itself; a throwaway instance reads it.
    const L = new Core({ mode: opts.mode, port: opts.port, mtu: opts.mtu, localAddr: opts.localAddr }).layout;
    checkAddonLayout(this.io.layout, L);
    this.layout = statsLayout(L);
  }

  async start(): Promise<EngineFeatures> {
    const queues = Math.max(1, this.opts.queues);
    // Worker 0 probes the kernel; the other queues must open with the same flags.
    this.features = await this.spawn(0, null);
    const rest: Promise<EngineFeatures>[] = [];
    for (let i = 1; i < queues; i++) rest.push(this.spawn(i, this.features));
    await Promise.all(rest);
    return this.features;
  }

  private spawn(index: number, features: EngineFeatures | null, retired?: bigint[]): Promise<EngineFeatures> {
    const { port1, port2 } = new MessageChannel();
    const eventFd = this.io.eventfdOpen();
    const stats = new SharedArrayBuffer(this.layout.words * 8);
    const data: WorkerData = {
      index,
      options: { ...this.opts, mac: Array.from(this.opts.mac) },
      features,
      eventFd,
      port: port2,
      stats,
      routes: [...this.routes.entries()].map(([key, route]) => ({ route, slot: this.peerSlot.get(key) ?? -1 })),
    };
    const worker = new Worker(workerUrl(), { workerData: data, transferList: [port2] });
    let resolveReady!: (f: EngineFeatures) => void;
    let rejectReady!: (e: Error) => void;
    const ready = new Promise<EngineFeatures>((res, rej) => { resolveReady = res; rejectReady = rej; });
    const slot: Slot = { index, worker, port: port1, eventFd, stats, retired: retired ?? new Array(this.layout.words).fill(0n), ready, stopped: false, fds: [] };
    this.slots[index] = slot;
    let isReady = false;
    port1.on('message', (msg: WorkerReport) => {
      if (msg.type === 'ready') { isReady = true; slot.fds = msg.fds; resolveReady(msg.features); }
    });
    worker.on('error', (err) => {
      if (!isReady) { rejectReady(err); return; }
      this.onWorkerDeath(slot, err.message);
    });
    worker.on('exit', (code) => {
      if (!isReady) { rejectReady(new Error(`worker ${index} exited with code ${code} before it was ready`)); return; }
      if (!slot.stopped && !this.closing) this.onWorkerDeath(slot, `exited with code ${code}`);
    });
    return ready;
  }

  private onWorkerDeath(slot: Slot, reason: string): void {
    if (slot.stopped || this.closing) return;
    slot.stopped = true;
    // Keep what it counted, then start a fresh worker on the same queue.
    const last = new BigUint64Array(slot.stats);
    const retired = slot.retired.map((v, i) => v + last[i]);
    slot.port.close();
    for (const fd of [slot.eventFd, ...slot.fds]) {
      try { this.io.close(fd); } catch { /* already closed */ }
    }
    this.restarts++;
    this.events.workerRestart?.(slot.index, reason);
    this.spawn(slot.index, this.features, retired).then(() => this.events.workerRestarted?.(slot.index), (e: Error) => {
      this.events.workerRestart?.(slot.index, `restart failed: ${e.message}`);
    });
  }

  private broadcast(msg: ControlMessage): void {
    for (const s of this.slots) {
      if (!s || s.stopped) continue;
      s.port.postMessage(msg);
      this.io.eventfdSignal(s.eventFd);
    }
  }

  setRoute(route: PeerRoute): void {
    const key = routeKey(route.net, route.len);
    this.routes.set(key, route);
    let slot = this.peerSlot.get(key);
    if (slot === undefined) {
      slot = this.nextPeerSlot < PEER_SLOTS ? this.nextPeerSlot++ : this.freePeerSlots.shift() ?? -1;
      if (slot >= 0) this.peerSlot.set(key, slot);
    }
    this.broadcast({ type: 'set', route, slot });
  }

  removeRoute(net: number, len: number): void {
    const key = routeKey(net, len);
    if (!this.routes.delete(key)) return;
    const slot = this.peerSlot.get(key) ?? -1;
    if (slot >= 0) {
      this.peerSlot.delete(key);
      this.freePeerSlots.push(slot);
      // What dead workers counted for this peer goes with it.
      for (const s of this.slots) if (s) s.retired.fill(0n, this.layout.peers + slot * PEER_WORDS, this.layout.peers + (slot + 1) * PEER_WORDS);
    }
    this.broadcast({ type: 'remove', net, len, slot });
  }

  /** Debug hook for the reliability tests: makes worker `index` throw. */
  crashWorker(index: number): void {
    const s = this.slots[index];
    if (!s) throw new Error(`no worker ${index}`);
    s.port.postMessage({ type: 'crash' } satisfies ControlMessage);
    this.io.eventfdSignal(s.eventFd);
  }

  /** Asks every worker to publish and waits until each has (at most timeoutMs). */
  async refresh(timeoutMs = 200): Promise<void> {
    const seq = BigInt(++this.publishSeq);
    this.broadcast({ type: 'publish', seq: Number(seq) });
    const deadline = Date.now() + timeoutMs;
    const served = (s: Slot): boolean => {
      const words = new BigUint64Array(s.stats);
      return Atomics.load(words, this.layout.seq) >= seq;
    };
    while (!this.slots.every((s) => !s || s.stopped || served(s))) {
      if (Date.now() >= deadline) return;
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  stats(): EngineStats {
    const total = new Array<bigint>(this.layout.peers).fill(0n);
    const live = this.slots.filter((s) => s).map((s) => ({ s, words: new BigUint64Array(s.stats) }));
    for (const { s, words } of live) {
      for (let i = 0; i < this.layout.peers; i++) total[i] += s.retired[i] + words[i];
    }
    const peers: PeerTraffic[] = [];
    for (const [key, slot] of this.peerSlot) {
      const route = this.routes.get(key);
      if (!route) continue;
      const sum = [0n, 0n, 0n, 0n];
      const at = this.layout.peers + slot * PEER_WORDS;
      for (const { s, words } of live) for (let k = 0; k < PEER_WORDS; k++) sum[k] += s.retired[at + k] + words[at + k];
      peers.push({ net: route.net, len: route.len, txPackets: sum[0], txBytes: sum[1], rxPackets: sum[2], rxBytes: sum[3] });
    }
    const counters = {} as CounterSnapshot;
    const slotsPerDir = this.layout.counterWords / 2 / DIRECTIONS.length;
    DIRECTIONS.forEach((dir: Direction, d) => {
      const byVerdict = {} as Record<VerdictName, { packets: bigint; bytes: bigint }>;
      VERDICTS.forEach((name, v) => {
        const at = STAT_EXTRA + (d * slotsPerDir + v) * 2;
        byVerdict[name] = { packets: total[at], bytes: total[at + 1] };
      });
      counters[dir] = byVerdict;
    });
    return {
      counters,
      peers,
      io: Object.fromEntries(IO_STATS.map((name, i) => [name, total[i]])) as Record<IoStat, bigint>,
      workers: this.slots.filter((s) => s && !s.stopped).length,
      workerRestarts: this.restarts,
    };
  }

  async stop(): Promise<void> {
    this.closing = true;
    const exits = this.slots.filter((s) => s && !s.stopped).map((s) => new Promise<void>((res) => {
      const timer = setTimeout(() => { void s.worker.terminate().then(() => res()); }, 3000);
      s.worker.once('exit', () => { clearTimeout(timer); res(); });
      s.port.postMessage({ type: 'stop' } satisfies ControlMessage);
      this.io.eventfdSignal(s.eventFd);
    }));
    await Promise.all(exits);
    for (const s of this.slots) {
      if (!s) continue;
      s.stopped = true;
      s.port.close();
      try { this.io.close(s.eventFd); } catch { /* closed */ }
    }
  }
}
