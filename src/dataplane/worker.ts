// One data-plane worker: its own TUN queue, UDP socket(s) and wasm core. It sleeps in poll()
// on the TUN fd, the UDP socket and an eventfd the main thread signals when it has posted
// route changes or wants it to stop. JS runs once per batch, never per packet.
import { workerData, isMainThread, receiveMessageOnPort } from 'node:worker_threads';
import { Core } from './core.js';
import { loadNative, enableTunOffload, TUN_F, type NativeIO } from './native.js';
import type { EngineFeatures } from './engine.js';
import { formatCIDR, type IPv4Net } from '../net.js';
import type { WgNative } from '../wireguard/crypto.js';
import { WgDataPath } from '../wireguard/datapath.js';
import { WgControl } from '../wireguard/control.js';
import {
  IO_STATS, STAT_HEARTBEAT, STAT_EXTRA, PEER_SLOTS, PEER_WORDS, statsLayout, type IoStat, type WorkerData,
  type ControlMessage, type WorkerReport, type SlottedRoute,
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
const GRO_RECV_MAX = 4;
const VXLAN_SOURCE_SOCKETS = 8;
const SOCKET_BUFFER = 8 << 20;
const PUBLISH_EVERY_MS = 100;
// After traffic, the counters are published once the worker has been idle this long, so a
// scrape right after a transfer sees all of it without publishing on every busy wake-up.
const PUBLISH_WHEN_IDLE_MS = 5;
// WireGuard's timers (retransmits, keepalives, expiry) are checked at least this often.
const WG_TICK_MS = 100;
const WG_REPORT_MS = 1000;

/** Runs fn on fd; if it throws, closes fd first. */
function orClose(io: NativeIO, fd: number, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    io.close(fd);
    throw e;
  }
}

function openTun(io: NativeIO, opts: WorkerData['options'], features: EngineFeatures | null): { fd: number; features: EngineFeatures } {
  const multiQueue = opts.queues > 1;
  if (features) {
    const { fd } = io.tunOpen(opts.device, { multiQueue, vnetHdr: features.vnetHdr });
    if (features.tunOffload) orClose(io, fd, () => io.tunSetOffload(fd, features.tunOffload));
    return { fd, features };
  }
  const found: EngineFeatures = { vnetHdr: false, tunOffload: 0, udpGso: false, udpGro: false, multiQueue };
  if (opts.offload !== 'off') {
    try {
      const { fd } = io.tunOpen(opts.device, { multiQueue, vnetHdr: true });
      try {
        found.tunOffload = enableTunOffload(io, fd);
      } catch (e) {
        if (opts.offload === 'on') { io.close(fd); throw e; }
      }
      found.vnetHdr = true;
      return { fd, features: found };
    } catch (e) {
      if (opts.offload === 'on') throw e;
    }
  }
  const { fd } = io.tunOpen(opts.device, { multiQueue, vnetHdr: false });
  return { fd, features: found };
}

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

/** Reports a failed control message to the main thread; the worker carries on. */
function report(data: WorkerData, what: string, e: unknown): void {
  data.port.postMessage({ type: 'error', message: `${what}: ${(e as Error).message ?? String(e)}` } satisfies WorkerReport);
}

interface Opened {
  tun: { fd: number; features: EngineFeatures };
  sock: { fd: number; gso: boolean; gro: boolean };
  sendFds: number[];
  core: Core;
}

/** Opens the TUN queue and the sockets and makes the core. If anything fails, closes what
 * was opened before throwing: the main thread only learns the descriptors from 'ready'. */
function open(native: NativeIO, data: WorkerData): Opened {
  const opts = data.options;
  const tun = openTun(native, opts, data.features);
  const opened = [tun.fd];
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
    opened.push(sock.fd);
    if (opts.offload === 'off') native.udpSetGso(sock.fd, false);
    features.udpGso = sock.gso && opts.offload !== 'off';
    features.udpGro = sock.gro;
    // VXLAN: extra send-only sockets on ephemeral ports, picked by the flow hash, so the outer
    // source port varies per flow as the kernel's does and receivers can spread the load.
    const sendFds = [sock.fd];
    if (opts.mode === 'vxlan') {
      for (let i = 0; i < VXLAN_SOURCE_SOCKETS; i++) {
        const s = native.udpOpen({ address: opts.bindAddr, port: 0, sndbuf: SOCKET_BUFFER, pmtuDisc: 'dont' });
        opened.push(s.fd);
        if (opts.offload === 'off') native.udpSetGso(s.fd, false);
        sendFds.push(s.fd);
      }
    }
    if (data.failBeforeReady) throw new Error(`worker ${data.index}: start failure requested through the debug hook`);
    return { tun, sock, sendFds, core };
  } catch (e) {
    for (const fd of opened) {
      try { native.close(fd); } catch { /* nothing more to do */ }
    }
    throw e;
  }
}

/** WireGuard mode's part of a worker: the batch crypto around the core and the control path. */
function startWireguard(native: NativeIO, core: Core, data: WorkerData): { dp: WgDataPath; control: WgControl } | null {
  const o = data.options.wireguard;
  if (data.options.mode !== 'wireguard') return null;
  if (!o) throw new Error('linen: wireguard mode needs the node\'s keys');
  const dp = new WgDataPath(core, native as NativeIO & WgNative);
  return { dp, control: new WgControl(dp, o) };
}

function run(data: WorkerData): void {
  const native = loadNative();
  const { tun, sock, sendFds, core } = open(native, data);
  const wg = startWireguard(native, core, data);
  const features = tun.features;
  const sendTable = Int32Array.from(sendFds);
  const pollFds = Int32Array.of(tun.fd, sock.fd, data.eventFd);
  const stats = new BigUint64Array(data.stats);
  const L = core.layout;
  const mem = core.memory.buffer;
  const egCap = core.exports.egressReadCapacity();
  const inCap = core.exports.ingressReadCapacity();
  const recvMax = sock.gro ? GRO_RECV_MAX : L.BATCH;
  const SL = statsLayout(L);
  const counters = new BigUint64Array(mem, L.COUNTERS, SL.counterWords);
  const peers = new PeerSlots(core, stats, SL.peers);
  // A route the core refuses is reported and skipped: it must not stop the others (nor make
  // every restart of this worker fail the same way).
  const setPeer = (r: SlottedRoute): void => {
    peers.set(r);
    const w = r.route.wireguard;
    if (wg && w) {
      const route = core.exports.routeFind(r.route.subnet.ip >>> 0, r.route.subnet.prefixLen);
      wg.control.setPeer({ route, publicKey: w.publicKey, addr: r.route.publicIP, port: w.port });
    }
  };
  const removePeer = (subnet: IPv4Net, slot: number): void => {
    if (wg) wg.control.removePeer(core.exports.routeFind(subnet.ip >>> 0, subnet.prefixLen));
    peers.remove(subnet, slot);
  };
  for (const r of data.routes) {
    try { setPeer(r); } catch (e) { report(data, `route ${formatCIDR(r.route.subnet)}`, e); }
  }
  // WireGuard: the peers' state and the control path's counters go to the main thread at most
  // once a second (and on request), not with every publish.
  let wgReportedAt = 0;
  const reportWireguard = (now: number): void => {
    if (!wg) return;
    wgReportedAt = now;
    data.port.postMessage({ type: 'wireguard', peers: wg.control.status(), events: { ...wg.control.events } } satisfies WorkerReport);
  };
  // WireGuard: handshakes and keepalives the control path has queued go out between batches.
  const wgSend = (): void => {
    if (!wg) return;
    const { messages, keepalives } = wg.control.drain();
    if (messages.length + keepalives.length > 0) io[UDP_SENDS] += wg.dp.send(sendTable, messages, keepalives);
  };
  // Plain numbers on the hot path; converted to u64 only when published.
  const io = new Float64Array(IO_STATS.length);
  let lastPublish = 0;

  const publish = (now: number): void => {
    stats.set(counters, STAT_EXTRA);
    peers.publish();
    io[STAT_HEARTBEAT] = now;
    for (let i = 0; i < io.length; i++) stats[i] = BigInt(io[i]);
    lastPublish = now;
  };

  const flush = (): void => {
    const ns = core.exports.sendCount();
    if (ns > 0) {
      const sent = native.udpSendBatch(sendTable, mem, L.SEND_DESC, ns);
      io[UDP_SENDS] += sent;
      io[SEND_ERRORS] += ns - sent;
    }
    const nt = core.exports.tunWriteCount();
    if (nt > 0) {
      const written = native.tunWriteBatch(tun.fd, mem, L.TUN_WRITES, nt, L.IOVECS);
      io[TUN_WRITES] += written;
      io[TUN_WRITE_ERRORS] += nt - written;
    }
  };

  let stopping = false;
  const control = (): void => {
    for (;;) {
      const m = receiveMessageOnPort(data.port);
      if (!m) return;
      const msg = m.message as ControlMessage;
      if (msg.type === 'crash') throw new Error(`worker ${data.index}: crash requested through the debug hook`);
      // Anything else that throws is one message lost, reported; the worker keeps forwarding.
      try {
        if (msg.type === 'set') setPeer(msg);
        else if (msg.type === 'remove') removePeer(msg.subnet, msg.slot);
        else if (msg.type === 'stop') stopping = true;
        else if (msg.type === 'publish') {
          publish(Date.now());
          reportWireguard(Date.now());
          // Stored last and atomically: whoever sees the seq sees the counters before it.
          Atomics.store(stats, SL.seq, BigInt(msg.seq));
        }
      } catch (e) {
        report(data, `control message ${msg.type}${msg.type === 'set' ? ` ${formatCIDR(msg.route.subnet)}` : ''}`, e);
      }
    }
  };

  data.port.postMessage({ type: 'ready', features, fds: [tun.fd, ...sendFds] } satisfies WorkerReport);
  publish(Date.now());
  let dirty = false;
  while (!stopping) {
    const mask = native.wait(pollFds, dirty ? PUBLISH_WHEN_IDLE_MS : wg ? WG_TICK_MS : PUBLISH_EVERY_MS);
    if (wg) {
      const now = Date.now();
      wg.control.tick(now);
      wgSend();
      if (now - wgReportedAt >= WG_REPORT_MS) reportWireguard(now);
    }
    if (mask === 0 && dirty) {
      publish(Date.now());
      dirty = false;
      continue;
    }
    io[WAKEUPS]++;
    if (mask & 4) {
      native.eventfdDrain(data.eventFd);
      control();
      if (stopping) break;
    }
    // Work the directions poll() found ready until each is dry, bounded so control messages are
    // seen promptly. A batch shorter than asked for ended on EAGAIN: that fd is dry, and the next
    // poll() (one system call for both fds) tells whether more came meanwhile, where reading
    // each fd again would cost one call each (1.2-1.5 µs apiece on this project's paravirtualized VM).
    let tunReady = (mask & 1) !== 0;
    let sockReady = (mask & 2) !== 0;
    for (let round = 0; round < 64 && (tunReady || sockReady); round++) {
      if (tunReady) {
        const n = native.tunReadBatch(tun.fd, mem, L.EG_IN_DESC, L.BATCH, egCap);
        if (n > 0) {
          io[TUN_READS] += n;
          core.egress(n, Date.now());
          if (wg) {
            wg.dp.sealEgress();
            const wants = wg.dp.wants();
            if (wants.length > 0) wg.control.want(wants, Date.now());
          }
          flush();
          wgSend();
          dirty = true;
        }
        tunReady = n === L.BATCH;
      }
      if (sockReady) {
        const m = native.udpRecvBatch(sock.fd, mem, L.IN_IN_DESC, recvMax, inCap);
        if (m > 0) {
          io[UDP_RECEIVES] += m;
          if (wg) {
            const handshakes = wg.dp.openIngress(m);
            if (handshakes.length > 0) wg.control.receive(handshakes, Date.now());
          }
          for (let next = 0; next < m;) {
            next = core.ingress(m, Date.now(), next);
            flush();
          }
          wgSend();
          dirty = true;
        }
        sockReady = m === recvMax;
      }
    }
    const now = Date.now();
    if (now - lastPublish >= PUBLISH_EVERY_MS) {
      publish(now);
      dirty = false;
    }
  }
  publish(Date.now());
  for (const fd of sendFds) native.close(fd);
  native.close(tun.fd);
  data.port.postMessage({ type: 'stopped' } satisfies WorkerReport);
}

if (isMainThread) throw new Error('dataplane/worker.js runs only as a worker thread');
run(workerData as WorkerData);
