// The batched, zero-copy engine: one worker thread per TUN queue, each with its own wasm core
// and UDP socket. The main thread pushes every route change (from the peer set, which owns the
// routes) to all workers, restarts a worker that dies, retrying with backoff while it fails to
// start, and sums their counters.
import { Worker, MessageChannel, type MessagePort } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadNative, type NativeIO } from '../addon/native.js';
import { Backoff } from '../backoff.js';
import { Core } from './core.js';
import { checkAddonLayout } from './descriptors.js';
import type { Engine, EngineFeatures, EngineOptions, EngineStats, EngineEvents, RouteSource, SlottedRoute, WireguardReport } from './engine.js';
import {
  PEER_SLOTS, PEER_WORDS, statsLayout, decodeStats, type StatsLayout, type ControlMessage, type WorkerData, type WorkerReport,
} from './protocol.js';

/** One worker thread and what the engine keeps of it (its stats buffer, what dead ones counted). */
interface WorkerHandle {
  index: number;
  worker: Worker;
  port: MessagePort;
  eventFd: number;
  stats: SharedArrayBuffer;
  /** Counters of workers that died, kept so totals never go backwards. */
  retired: bigint[];
  ready: Promise<EngineFeatures>;
  /** Started and not dead: what linen_workers counts. */
  running: boolean;
  stopped: boolean;
  /** Descriptors the worker opened: a dead worker's TUN queue and sockets must be closed
   * before a new worker can attach the queue and bind the port. */
  fds: number[];
}

/** A worker thread's script beside this module: `name`.js, or .ts when running from source
 * under a TS loader. */
function workerUrl(name: string): URL {
  const js = new URL(`./${name}.js`, import.meta.url);
  if (existsSync(fileURLToPath(js))) return js;
  return new URL(`./${name}.ts`, import.meta.url);
}

export class NativeEngine implements Engine {
  readonly name = 'native' as const;
  private readonly io: NativeIO;
  readonly routeCapacity: number;
  readonly peerSlots = PEER_SLOTS;
  private publishSeq = 0;
  private readonly workers: WorkerHandle[] = [];
  private features: EngineFeatures | null = null;
  private restarts = 0;
  private closing = false;
  /** WireGuard mode: the worker's last report of its peers and control-path counters. */
  private wgReport: WireguardReport | null = null;
  /** Pending restarts of workers that failed to start, cancelled by stop(). */
  private readonly retries = new Set<NodeJS.Timeout>();
  /** Where each counter lives in a worker's stats buffer. */
  private readonly layout: StatsLayout;

  constructor(private readonly opts: EngineOptions, private readonly source: RouteSource, private readonly events: EngineEvents = {}) {
    this.io = loadNative();
    // The layout comes from the wasm module itself; a throwaway instance reads it.
    const L = new Core({ mode: opts.mode, port: opts.port, mtu: opts.mtu, subnet: opts.subnet }).layout;
    checkAddonLayout(this.io.layout, L);
    this.layout = statsLayout(L);
    this.routeCapacity = L.MAX_ROUTES;
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
    const entry = this.workerEntry(index);
    const data: WorkerData = {
      index,
      options: { ...this.opts, mac: Array.from(this.opts.mac) },
      features,
      eventFd,
      port: port2,
      stats,
      routes: [...this.source.routes()].map(({ route, slot }) => ({ route, slot })),
    };
    const worker = new Worker(workerUrl(entry.script), { workerData: { ...entry.data, ...data }, transferList: [port2] });
    let resolveReady!: (f: EngineFeatures) => void;
    let rejectReady!: (e: Error) => void;
    const ready = new Promise<EngineFeatures>((res, rej) => { resolveReady = res; rejectReady = rej; });
    const handle: WorkerHandle = { index, worker, port: port1, eventFd, stats, retired: retired ?? new Array(this.layout.words).fill(0n), ready, running: false, stopped: false, fds: [] };
    this.workers[index] = handle;
    let isReady = false;
    // A worker that fails before it is ready has closed what it opened; its channel and
    // eventfd are ours to close.
    const failed = (why: string): void => {
      if (handle.stopped) return;
      handle.stopped = true;
      handle.port.close();
      try { this.io.close(handle.eventFd); } catch { /* closed */ }
      rejectReady(new Error(why));
    };
    port1.on('message', (msg: WorkerReport) => {
      if (msg.type === 'ready') { isReady = true; handle.running = true; handle.fds = msg.fds; resolveReady(msg.features); }
      else if (msg.type === 'error') this.events.workerError?.(index, msg.message);
      else if (msg.type === 'wireguard') this.wgReport = { publicKey: msg.publicKey, listenPort: msg.listenPort, peers: msg.peers, events: msg.events };
    });
    worker.on('error', (err) => {
      if (!isReady) { failed(err.message); return; }
      this.onWorkerDeath(handle, err.message);
    });
    worker.on('exit', (code) => {
      if (!isReady) { failed(`worker ${index} exited with code ${code} before it was ready`); return; }
      if (!handle.stopped && !this.closing) this.onWorkerDeath(handle, `exited with code ${code}`);
    });
    return ready;
  }

  private onWorkerDeath(handle: WorkerHandle, reason: string): void {
    if (handle.stopped || this.closing) return;
    handle.stopped = true;
    handle.running = false;
    // Keep what it counted, then start a fresh worker on the same queue.
    const last = new BigUint64Array(handle.stats);
    const retired = handle.retired.map((v, i) => v + last[i]);
    handle.port.close();
    for (const fd of [handle.eventFd, ...handle.fds]) {
      try { this.io.close(fd); } catch { /* already closed */ }
    }
    this.restarts++;
    this.events.workerRestart?.(handle.index, reason);
    // A worker that fails before it is ready is started again after 100 ms, doubling up to 5 s.
    this.restart(handle.index, retired, new Backoff(100, 5000));
  }

  /** Starts worker `index` again; while it fails before it is ready, retries with backoff. */
  private restart(index: number, retired: bigint[], backoff: Backoff): void {
    if (this.closing) return;
    this.spawn(index, this.features, retired).then(() => this.events.workerRestarted?.(index), (e: Error) => {
      if (this.closing) return;
      const delay = backoff.next();
      this.events.workerStartFailed?.(index, e.message, delay);
      const timer = setTimeout(() => { this.retries.delete(timer); this.restart(index, retired, backoff); }, delay);
      this.retries.add(timer);
    });
  }

  private broadcast(msg: ControlMessage): void {
    for (const s of this.workers) {
      if (!s || s.stopped) continue;
      s.port.postMessage(msg);
      this.io.eventfdSignal(s.eventFd);
    }
  }

  setRoute({ route, slot }: SlottedRoute): void {
    this.broadcast({ type: 'set', route, slot });
  }

  removeRoute({ route, slot }: SlottedRoute): void {
    // What dead workers counted for this peer goes with it.
    if (slot >= 0) for (const s of this.workers) if (s) s.retired.fill(0n, this.layout.peers + slot * PEER_WORDS, this.layout.peers + (slot + 1) * PEER_WORDS);
    this.broadcast({ type: 'remove', subnet: route.subnet, slot });
  }

  /** The script a new worker `index` runs and extra workerData for it: worker.ts, nothing
   * extra. A test wrapper of the engine (debug-engine.ts) runs its own. */
  protected workerEntry(_index: number): { script: string; data?: Record<string, unknown> } {
    return { script: 'worker' };
  }

  /** Posts a message to worker `index` alone and wakes it. */
  protected post(index: number, msg: ControlMessage | { readonly type: string }): void {
    const s = this.workers[index];
    if (!s || s.stopped) throw new Error(`no worker ${index}`);
    s.port.postMessage(msg);
    this.io.eventfdSignal(s.eventFd);
  }

  /** Asks every worker to publish and waits until each has (at most timeoutMs). */
  async refresh(timeoutMs = 200): Promise<void> {
    const seq = BigInt(++this.publishSeq);
    this.broadcast({ type: 'publish', seq: Number(seq) });
    const deadline = Date.now() + timeoutMs;
    const served = (s: WorkerHandle): boolean => {
      const words = new BigUint64Array(s.stats);
      return Atomics.load(words, this.layout.seq) >= seq;
    };
    while (!this.workers.every((s) => !s || !s.running || served(s))) {
      if (Date.now() >= deadline) return;
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  wireguard(): WireguardReport | null { return this.wgReport; }

  stats(): EngineStats {
    const live = this.workers.filter((s) => s).map((s) => ({ retired: s.retired, words: new BigUint64Array(s.stats) }));
    const word = (i: number): bigint => {
      let sum = 0n;
      for (const { retired, words } of live) sum += retired[i] + words[i];
      return sum;
    };
    return {
      ...decodeStats(this.layout, word, this.source.routes()),
      workers: this.workers.filter((s) => s && s.running).length,
      workerRestarts: this.restarts,
    };
  }

  async stop(): Promise<void> {
    this.closing = true;
    for (const timer of this.retries) clearTimeout(timer);
    this.retries.clear();
    // Dead and failed workers' descriptors are closed already.
    const live = this.workers.filter((s) => s && !s.stopped);
    const exits = live.map((s) => new Promise<void>((res) => {
      const timer = setTimeout(() => { void s.worker.terminate().then(() => res()); }, 3000);
      s.worker.once('exit', () => { clearTimeout(timer); res(); });
      s.port.postMessage({ type: 'stop' } satisfies ControlMessage);
      this.io.eventfdSignal(s.eventFd);
    }));
    await Promise.all(exits);
    for (const s of live) {
      if (s.stopped) continue; // failed before it was ready: closed then
      s.stopped = true;
      s.running = false;
      s.port.close();
      try { this.io.close(s.eventFd); } catch { /* closed */ }
    }
  }
}
