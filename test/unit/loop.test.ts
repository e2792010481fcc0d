// The worker loop on in-memory I/O: both directions, the system calls each wake-up makes,
// control messages, a full output table and I/O failures, all without root or devices.
import t from 'tap';
import { Core } from '../../src/dataplane/core.js';
import { WorkerLoop, EventDriver, runPolling, PUBLISH_EVERY_MS, PUBLISH_WHEN_IDLE_MS, STOPPED, type WireguardStage } from '../../src/dataplane/loop.js';
import { MemoryIO } from '../../src/dataplane/memory-io.js';
import { READY_CONTROL, READY_TUN } from '../../src/dataplane/io.js';
import { IO_STATS, PEER_WORDS, statsLayout, type IoStat, type SlottedRoute } from '../../src/dataplane/protocol.js';
import { PeerCounter } from '../../src/dataplane/abi.js';
import { ip4, buildUdp, bytes, parseIp4 } from '../helpers/packets.js';

const PORT = 8285;
const OWN = '10.5.72.0';
const PEER = { subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20') };
const PEER2 = { subnet: { ip: ip4('10.5.34.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.21') };

interface Rig {
  core: Core;
  io: MemoryIO;
  loop: WorkerLoop;
  /** Runs the loop on the polling driver until the steps run out. */
  run(): void;
  errors: string[];
  stat(name: IoStat): number;
  peerWord(slot: number, word: number): number;
  seq(): number;
}

function rig(routes: SlottedRoute[] = [{ route: PEER, slot: 0 }], o: { gro?: boolean; wireguard?: WireguardStage; reportError?: (m: string) => void } = {}): Rig {
  const core = new Core({ mode: 'udp', port: PORT, mtu: 1472, subnet: { ip: ip4(OWN), prefixLen: 24 } });
  const io = new MemoryIO({ memory: core.memory.buffer, layout: core.layout, gro: o.gro ?? false });
  const SL = statsLayout(core.layout);
  const stats = new SharedArrayBuffer(SL.words * 8);
  const words = new BigUint64Array(stats);
  const errors: string[] = [];
  const loop = new WorkerLoop({ core, io, stats, wireguard: o.wireguard, reportError: (m) => { errors.push(m); o.reportError?.(m); } });
  loop.setRoutes(routes);
  return {
    core, io, loop, errors,
    run: () => runPolling(loop, io),
    stat: (name) => Number(words[IO_STATS.indexOf(name)]),
    peerWord: (slot, word) => Number(words[SL.peers + slot * PEER_WORDS + word]),
    seq: () => Number(words[SL.seq]),
  };
}

// Lengths differ packet to packet, so the core sends each as its own datagram (no GSO burst).
const toPeer = (i: number, dst = '10.5.33.7'): Uint8Array => buildUdp('10.5.72.5', dst, 4000 + i, 5000, bytes(100 + i, i));
const fromPeer = (i: number): Uint8Array => buildUdp('10.5.33.7', '10.5.72.5', 5000, 4000 + i, bytes(100, i));

t.test('egress: TUN packets go out as datagrams to the peer; one short read means dry, UDP is not read', async (t) => {
  const r = rig();
  r.io.then(() => { for (let i = 0; i < 3; i++) r.io.tun.inbound.push(toPeer(i)); });
  r.run();
  t.equal(r.io.udp.sent.length, 3);
  t.same(r.io.udp.sent.map((s) => [s.addr, s.port]), [[PEER.publicIP, PORT], [PEER.publicIP, PORT], [PEER.publicIP, PORT]]);
  t.equal(parseIp4(r.io.udp.sent[0].data).ttl, 63, 'the core forwarded it (TTL decremented)');
  t.equal(r.io.tun.reads, 1, 'a batch shorter than asked for ends the TUN reads of the wake-up');
  t.equal(r.io.udp.receives, 0, 'the UDP port was not reported ready and is not read');
  t.equal(r.stat('tun_reads'), 3);
  t.equal(r.stat('udp_sends'), 3);
  t.equal(r.stat('wakeups'), 2, 'the packets\' wake-up and the stop\'s');
  t.equal(r.peerWord(0, PeerCounter.TxPackets), 3, 'per-peer counters are published');
});

t.test('ingress: datagrams from the peer are written to the TUN', async (t) => {
  const r = rig();
  r.io.then(() => { for (let i = 0; i < 5; i++) r.io.udp.inbound.push({ data: fromPeer(i), addr: PEER.publicIP, port: PORT }); });
  r.run();
  t.equal(r.io.tun.written.length, 5);
  t.equal(parseIp4(r.io.tun.written[2]).ttl, 63, 'the inner packet, TTL decremented');
  t.same(r.io.tun.written[2].subarray(20), fromPeer(2).subarray(20), 'its payload as received');
  t.equal(r.io.udp.receives, 1);
  t.equal(r.io.tun.reads, 0);
  t.same(r.io.tun.writeBatches, [5], 'one TUN write batch for the receive batch');
  t.equal(r.stat('udp_receives'), 5);
  t.equal(r.stat('tun_writes'), 5);
  t.equal(r.peerWord(0, PeerCounter.RxPackets), 5);
});

t.test('a wake-up reads each ready source until a short batch, and no further', async (t) => {
  const r = rig();
  const B = r.core.layout.BATCH;
  let tunReads = 0;
  let receives = 0;
  r.io.then(
    () => {
      for (let i = 0; i < B + 10; i++) r.io.tun.inbound.push(toPeer(i));
      for (let i = 0; i < 2 * B; i++) r.io.udp.inbound.push({ data: fromPeer(i), addr: PEER.publicIP, port: PORT });
    },
    () => { tunReads = r.io.tun.reads; receives = r.io.udp.receives; },
  );
  r.run();
  t.equal(tunReads, 2, 'TUN: a full batch, then a short one');
  t.equal(receives, 3, 'UDP: two full batches, then an empty one that shows it dry');
  t.equal(r.io.udp.sent.length, B + 10);
  t.equal(r.io.tun.written.length, 2 * B);
});

t.test('the loop sleeps longer when idle and publishes soon after traffic', async (t) => {
  const r = rig();
  r.io.then(() => r.io.tun.inbound.push(toPeer(0)), () => {}, () => {});
  r.run();
  t.same(r.io.waits.slice(0, 3), [PUBLISH_EVERY_MS, PUBLISH_WHEN_IDLE_MS, PUBLISH_EVERY_MS],
    'after a batch the next wait is short (publish when idle), then back to the long one');
});

t.test('control messages: routes set and removed while running, a refused route reported, publish on request', async (t) => {
  const r = rig([]);
  let before = -1;
  r.io.then(
    () => { r.io.tun.inbound.push(toPeer(0, '10.5.34.9')); }, // no route yet: dropped
    () => {
      r.io.control.push({ type: 'set', route: PEER2, slot: 7 });
      r.io.control.push({ type: 'set', route: { subnet: { ip: 0, prefixLen: 33 }, publicIP: 0 }, slot: -1 });
      r.io.tun.inbound.push(toPeer(1, '10.5.34.9'));
    },
    () => {
      r.io.control.push({ type: 'publish', seq: 42 });
    },
    () => {
      before = r.peerWord(7, PeerCounter.TxPackets);
      r.io.control.push({ type: 'remove', subnet: PEER2.subnet, slot: 7 });
      r.io.tun.inbound.push(toPeer(2, '10.5.34.9'));
    },
  );
  r.run();
  t.equal(r.io.udp.sent.length, 1, 'only the packet sent while the route was there went out');
  t.equal(r.io.udp.sent[0].addr, PEER2.publicIP);
  t.equal(r.seq(), 42, 'the publish request was served and its seq stored');
  t.equal(before, 1, 'the slot counted the peer\'s packet');
  t.equal(r.peerWord(7, PeerCounter.TxPackets), 0, 'a removed route\'s slot is cleared');
  t.equal(r.errors.length, 1, 'the refused route was reported');
  t.match(r.errors[0], /control message set 0\.0\.0\.0\/33: bad prefix length 33/);
  t.equal(r.core.counters().egress.no_route.packets, 2n, 'before the set and after the remove: no route');
});

t.test('a refused initial route is reported and the others are loaded', async (t) => {
  const r = rig([{ route: { subnet: { ip: 0, prefixLen: 40 }, publicIP: 0 }, slot: -1 }, { route: PEER, slot: 0 }]);
  r.io.then(() => r.io.tun.inbound.push(toPeer(0)));
  r.run();
  t.match(r.errors, [/^route 0\.0\.0\.0\/40: bad prefix length 40/]);
  t.equal(r.io.udp.sent.length, 1);
});

t.test('a full output table is flushed and ingress resumes where it stopped', async (t) => {
  const r = rig([{ route: PEER, slot: 0 }], { gro: true });
  const segments = 65; // one more than a GRO batch can hold, so the tables fill within 4 receives
  const receives = 4;
  r.io.then(() => {
    for (let g = 0; g < receives; g++) {
      const packets = Array.from({ length: segments }, (_, i) => fromPeer(g * segments + i));
      const data = new Uint8Array(packets.reduce((s, p) => s + p.length, 0));
      packets.reduce((o, p) => { data.set(p, o); return o + p.length; }, 0);
      r.io.udp.inbound.push({ data, addr: PEER.publicIP, port: PORT, segSize: packets[0].length });
    }
  });
  r.run();
  t.equal(r.io.tun.written.length, receives * segments, 'every packet was written');
  t.ok(r.io.tun.writeBatches.length >= 2, `the receive batch took ${r.io.tun.writeBatches.length} flushes`);
  t.ok(r.io.tun.writeBatches.every((n) => n <= 256), 'no flush exceeded the TUN write table');
  t.equal(r.core.counters().ingress.no_room.packets, 0n, 'nothing dropped for lack of room');
  t.same(r.io.tun.written[receives * segments - 1].subarray(20), fromPeer(receives * segments - 1).subarray(20), 'the last packet, intact');
});

t.test('refused sends and TUN writes are counted as errors; forwarding carries on', async (t) => {
  const r = rig();
  r.io.udp.refuseSends = 2;
  r.io.tun.refuseWrites = 1;
  r.io.then(() => {
    for (let i = 0; i < 4; i++) r.io.tun.inbound.push(toPeer(i));
    for (let i = 0; i < 3; i++) r.io.udp.inbound.push({ data: fromPeer(i), addr: PEER.publicIP, port: PORT });
  });
  r.run();
  t.equal(r.stat('udp_sends'), 2);
  t.equal(r.stat('send_errors'), 2);
  t.equal(r.stat('tun_writes'), 2);
  t.equal(r.stat('tun_write_errors'), 1);
});

t.test('a failed read ends the loop with that error (the worker dies and is restarted)', async (t) => {
  const tun = rig();
  tun.io.then(() => { tun.io.tun.readError = Object.assign(new Error('read: EBADFD'), { code: 'EBADFD' }); });
  t.throws(() => tun.run(), { code: 'EBADFD' });
  const udp = rig();
  udp.io.then(() => { udp.io.udp.recvError = new Error('recvmmsg: ENOMEM'); });
  t.throws(() => udp.run(), /ENOMEM/);
});

// A WireGuard stage that records when the loop calls it, in one log with the I/O's batch calls
// and the core's egress/ingress, so the order within a wake-up can be checked.
class RecordingStage implements WireguardStage {
  readonly tickMs = 37;
  constructor(readonly egressBudget = 0) {}
  readonly log: string[] = [];
  /** Datagrams drain() claims to send, once. */
  queued = 0;
  readonly peers: { subnet: number; routeIndex: number }[] = [];
  readonly removed: { routeIndex: number; stillRouted: number }[] = [];
  core: Core | null = null;

  setPeer(r: SlottedRoute, routeIndex: number): void { this.log.push('setPeer'); this.peers.push({ subnet: r.route.subnet.ip, routeIndex }); }
  removePeer(routeIndex: number): void {
    this.log.push('removePeer');
    const s = PEER2.subnet;
    this.removed.push({ routeIndex, stillRouted: this.core?.exports.routeFind(s.ip >>> 0, s.prefixLen) ?? -2 });
  }
  tick(): void { this.log.push('tick'); }
  afterEgress(): void { this.log.push('seal'); }
  beforeIngress(count: number): void { this.log.push(`open ${count}`); }
  drain(): number { this.log.push('drain'); const n = this.queued; this.queued = 0; return n; }
  report(_now: number, force: boolean): void { this.log.push(force ? 'report forced' : 'report'); }
}

function stageRig(routes: SlottedRoute[] = [{ route: PEER, slot: 0 }], egressBudget = 0): Rig & { stage: RecordingStage } {
  const stage = new RecordingStage(egressBudget);
  const r = rig(routes, { wireguard: stage });
  stage.core = r.core;
  const log = stage.log;
  const { tun, udp } = r.io;
  const wrap = <T extends object, K extends keyof T>(o: T, k: K, name: string): void => {
    const f = o[k] as unknown as (...a: unknown[]) => unknown;
    (o as Record<K, unknown>)[k] = (...a: unknown[]): unknown => { log.push(name); return f.apply(o, a); };
  };
  wrap(tun, 'readBatch', 'tun read');
  wrap(tun, 'writeBatch', 'tun write');
  wrap(udp, 'recvBatch', 'udp recv');
  wrap(udp, 'sendBatch', 'udp send');
  wrap(r.core, 'egress', 'egress');
  wrap(r.core, 'ingress', 'ingress');
  const wait = r.io.wait.bind(r.io);
  r.io.wait = (ms: number): number => { log.push('wait'); return wait(ms); };
  return { ...r, stage };
}

const wakeups = (log: string[]): string[][] => {
  const out: string[][] = [];
  for (const e of log) if (e === 'wait') out.push([]); else out.at(-1)?.push(e);
  return out;
};

t.test('wireguard stage: tick and drain on every wake-up, seal after egress before the sends, drain after the flushes', async (t) => {
  const r = stageRig();
  r.io.then(() => {
    for (let i = 0; i < 3; i++) r.io.tun.inbound.push(toPeer(i));
    r.stage.queued = 2;
  });
  r.run();
  t.same(r.stage.log.slice(0, r.stage.log.indexOf('wait')), ['setPeer'], 'initial routes reach the stage');
  t.same(wakeups(r.stage.log)[0], ['tick', 'drain', 'report', 'tun read', 'egress', 'seal', 'udp send', 'drain']);
  t.equal(r.io.udp.sent.length, 3, 'the core\'s batch was sent');
  t.equal(r.stat('udp_sends'), 5, 'what the stage sent between batches is counted with the sends');
  t.same(r.stage.peers, [{ subnet: PEER.subnet.ip, routeIndex: r.core.exports.routeFind(PEER.subnet.ip >>> 0, PEER.subnet.prefixLen) }],
    'the stage gets the core\'s index of the route');
  t.ok(r.stage.peers[0].routeIndex >= 0);
});

t.test('wireguard stage: a TUN read ends at its byte budget, each part is sealed and sent before the next read, an empty read ends the run', async (t) => {
  // toPeer(i) is 128 + i bytes: the budget is reached by the third packet of each batch.
  const r = stageRig([{ route: PEER, slot: 0 }], 2 * toPeer(0).length + 10);
  const counts: number[] = [];
  const read = r.io.tun.readBatch.bind(r.io.tun);
  r.io.tun.readBatch = (...a: Parameters<typeof read>): number => { const n = read(...a); counts.push(n); return n; };
  r.io.then(() => { for (let i = 0; i < 7; i++) r.io.tun.inbound.push(toPeer(i)); });
  r.run();
  t.same(counts, [3, 3, 1, 0], 'batches of 3, 3 and 1 packets, then one read that found the queue dry');
  const part = ['tun read', 'egress', 'seal', 'udp send', 'drain'];
  t.same(wakeups(r.stage.log)[0], ['tick', 'drain', 'report', ...part, ...part, ...part, 'tun read']);
  t.equal(r.io.udp.sent.length, 7, 'every packet was sent');
  t.same(r.io.udp.sent.map((d) => d.data.length), Array.from({ length: 7 }, (_, i) => toPeer(i).length), 'in order');
});

t.test('without a budget a short TUN read means dry: no second read', async (t) => {
  const r = stageRig();
  let reads = 0;
  const read = r.io.tun.readBatch.bind(r.io.tun);
  r.io.tun.readBatch = (...a: Parameters<typeof read>): number => { reads++; return read(...a); };
  r.io.then(() => { for (let i = 0; i < 7; i++) r.io.tun.inbound.push(toPeer(i)); });
  r.run();
  t.equal(reads, 1);
  t.equal(r.io.udp.sent.length, 7);
});

t.test('wireguard stage: open after the receive and before ingress, drain after the TUN writes', async (t) => {
  const r = stageRig();
  r.io.then(() => { for (let i = 0; i < 4; i++) r.io.udp.inbound.push({ data: fromPeer(i), addr: PEER.publicIP, port: PORT }); });
  r.run();
  t.same(wakeups(r.stage.log)[0], ['tick', 'drain', 'report', 'udp recv', 'open 4', 'ingress', 'tun write', 'drain']);
  t.equal(r.io.tun.written.length, 4);
});

t.test('wireguard stage: idle waits are its tick, after traffic the short one; set, remove and publish reach it', async (t) => {
  const r = stageRig([]);
  r.io.then(
    () => r.io.tun.inbound.push(toPeer(0)),
    () => {},
    () => r.io.control.push({ type: 'set', route: PEER2, slot: 3 }),
    () => r.io.control.push({ type: 'publish', seq: 9 }),
    () => r.io.control.push({ type: 'remove', subnet: PEER2.subnet, slot: 3 }),
  );
  r.run();
  t.same(r.io.waits.slice(0, 3), [r.stage.tickMs, PUBLISH_WHEN_IDLE_MS, r.stage.tickMs]);
  const w = wakeups(r.stage.log);
  t.same(w[2], ['tick', 'drain', 'report', 'setPeer']);
  t.same(w[3], ['tick', 'drain', 'report', 'report forced'], 'a publish request forces a report');
  t.equal(r.seq(), 9);
  t.same(w[4], ['tick', 'drain', 'report', 'removePeer']);
  t.equal(r.stage.removed.length, 1);
  t.ok(r.stage.removed[0].routeIndex >= 0);
  t.equal(r.stage.removed[0].stillRouted, r.stage.removed[0].routeIndex, 'the stage is told before the core drops the route');
  t.equal(r.core.exports.routeFind(PEER2.subnet.ip >>> 0, PEER2.subnet.prefixLen) < 0, true, 'then the route is gone');
});

t.test('without a stage the loop waits its plain timeouts', async (t) => {
  const r = rig();
  r.io.then(() => {}, () => {});
  r.run();
  t.same(r.io.waits.slice(0, 2), [PUBLISH_EVERY_MS, PUBLISH_EVERY_MS]);
});

t.test('wake(): one wake-up at a time, as an event-driven driver calls it; STOPPED after stop and ever after', async (t) => {
  const r = rig();
  t.equal(r.loop.start(), PUBLISH_EVERY_MS, 'idle: the long wait');
  r.io.tun.inbound.push(toPeer(0));
  t.equal(r.loop.wake(READY_TUN), PUBLISH_WHEN_IDLE_MS, 'after traffic: the short wait, to publish once idle');
  t.equal(r.io.udp.sent.length, 1);
  t.equal(r.loop.wake(0), PUBLISH_EVERY_MS, 'the short wait timed out: published, back to the long one');
  t.equal(r.stat('tun_reads'), 1);
  r.io.control.push({ type: 'stop' });
  t.equal(r.loop.wake(READY_CONTROL), STOPPED);
  r.io.tun.inbound.push(toPeer(1));
  t.equal(r.loop.wake(READY_TUN), STOPPED, 'a stopped loop reads nothing');
  t.equal(r.io.tun.inbound.length, 1);
});

t.test('EventDriver: wakes the loop on ready(), publishes on its timer once idle, and works a ready() made during a wake-up after that one', async (t) => {
  let driver: EventDriver | null = null;
  let sentInsideReport = -1;
  const r = rig([{ route: PEER, slot: 0 }], {
    // Reported from inside a wake-up: a packet arrives and the I/O says so at once.
    reportError: () => {
      r.io.tun.inbound.push(toPeer(1));
      driver?.ready(READY_TUN);
      sentInsideReport = r.io.udp.sent.length;
    },
  });
  driver = new EventDriver(r.loop);
  driver.start();
  t.teardown(() => { r.io.control.push({ type: 'stop' }); driver?.ready(READY_CONTROL); });
  r.io.tun.inbound.push(toPeer(0));
  driver.ready(READY_TUN);
  t.equal(r.io.udp.sent.length, 1, 'forwarded within ready()');
  const deadline = Date.now() + 10_000;
  while (r.stat('tun_reads') === 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
  t.equal(r.stat('tun_reads'), 1, 'the idle timer published the counters, with no event');
  r.io.control.push({ type: 'set', route: { subnet: { ip: 0, prefixLen: 33 }, publicIP: 0 }, slot: -1 });
  driver.ready(READY_CONTROL);
  t.equal(sentInsideReport, 1, 'the wake-up under way was not entered again');
  t.equal(r.io.udp.sent.length, 2, 'the packet was forwarded before the outer ready() returned');
});
