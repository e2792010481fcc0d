// The dgram engine's I/O (Node's own UDP socket, one TUN read or write per packet) under the
// worker loop and its event driver, without root: real sockets on loopback; for the TUN either
// the in-memory queue or a FIFO, which like a TUN fd is read one packet per read() here.
import t, { type Test } from 'tap';
import { createSocket, type Socket } from 'node:dgram';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Core } from '../../src/dataplane/core.js';
import { DescriptorView } from '../../src/dataplane/descriptors.js';
import { DgramIO, DgramUdp } from '../../src/dataplane/dgram-io.js';
import { MemoryIO } from '../../src/dataplane/memory-io.js';
import { READY_CONTROL, READY_TUN, type LoopIO } from '../../src/dataplane/io.js';
import { EventDriver, WorkerLoop } from '../../src/dataplane/loop.js';
import { IO_STATS, PEER_WORDS, statsLayout, type IoStat } from '../../src/dataplane/protocol.js';
import { PeerCounter } from '../../src/dataplane/abi.js';
import { ip4, buildUdp, bytes, parseIp4 } from '../helpers/packets.js';

const OWN = { ip: ip4('10.5.72.0'), prefixLen: 24 };
const LINEN_ADDR = '127.0.0.1';
const PEER_ADDR = '127.0.0.2';
const PEER = { subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4(PEER_ADDR) };
// Sending there needs SO_BROADCAST, which a node:dgram socket does not set: the kernel refuses
// each send, and Node tells only in the send's callback.
const UNREACHABLE = { subnet: { ip: ip4('10.5.34.0'), prefixLen: 24 }, publicIP: ip4('255.255.255.255') };
const DEADLINE_MS = 10_000;

const toPeer = (i: number, dst = '10.5.33.7'): Uint8Array => buildUdp('10.5.72.5', dst, 4000 + i, 5000, bytes(100 + i, i));
const fromPeer = (i: number): Uint8Array => buildUdp('10.5.33.7', '10.5.72.5', 5000, 4000 + i, bytes(100, i));

async function bind(sock: Socket, port: number, address: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, address, () => { sock.off('error', reject); resolve(); });
  });
  return sock.address().port;
}

/** The peer's socket and linen's, both on the one port every node uses (udp mode's ingress
 * takes datagrams only from that port). */
async function sockets(t: Test): Promise<{ port: number; linen: Socket; peer: Socket; fromLinen: Buffer[] }> {
  const peer = createSocket('udp4');
  const port = await bind(peer, 0, PEER_ADDR);
  const linen = createSocket('udp4');
  await bind(linen, port, LINEN_ADDR);
  const fromLinen: Buffer[] = [];
  peer.on('message', (m) => fromLinen.push(m));
  t.teardown(() => { peer.close(); linen.close(); });
  return { port, linen, peer, fromLinen };
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function statsOf(core: Core): { buffer: SharedArrayBuffer; stat(name: IoStat): number; peerWord(slot: number, word: number): number; seq(): number } {
  const SL = statsLayout(core.layout);
  const buffer = new SharedArrayBuffer(SL.words * 8);
  const words = new BigUint64Array(buffer);
  return {
    buffer,
    stat: (name) => Number(words[IO_STATS.indexOf(name)]),
    peerWord: (slot, word) => Number(words[SL.peers + slot * PEER_WORDS + word]),
    seq: () => Number(words[SL.seq]),
  };
}

/** The in-memory TUN queue and node:dgram's socket under the loop and its event driver. */
function memoryTunRig(t: Test, port: number, linen: Socket) {
  const core = new Core({ mode: 'udp', port, mtu: 1472, subnet: OWN });
  const mem = new MemoryIO({ memory: core.memory.buffer, layout: core.layout });
  const desc = new DescriptorView(core.memory.buffer, core.layout);
  const udp = new DgramUdp(linen, desc);
  const io: LoopIO = { tun: mem.tun, udp, clearControl() {}, nextControl: () => mem.control.shift() };
  const stats = statsOf(core);
  const errors: string[] = [];
  const loop = new WorkerLoop({ core, io, stats: stats.buffer, reportError: (m) => errors.push(m) });
  loop.setRoutes([{ route: PEER, slot: 0 }]);
  const driver = new EventDriver(loop);
  driver.start();
  udp.start((bits) => driver.ready(bits));
  const control = (msg: (typeof mem.control)[number]): void => { mem.control.push(msg); driver.ready(READY_CONTROL); };
  t.teardown(() => control({ type: 'stop' }));
  return { core, mem, desc, udp, stats, errors, driver, control };
}

t.test('node:dgram under the loop: egress from the TUN queue to the peer, ingress to the TUN, control, late send errors, stop', async (t) => {
  const { port, linen, peer, fromLinen } = await sockets(t);
  const { mem, stats, errors, driver, control } = memoryTunRig(t, port, linen);

  mem.tun.inbound.push(toPeer(0));
  driver.ready(READY_TUN);
  await until('the datagram at the peer', () => fromLinen.length === 1);
  t.equal(parseIp4(fromLinen[0]).ttl, 63, 'the core forwarded it (TTL decremented)');
  t.same(fromLinen[0].subarray(20), Buffer.from(toPeer(0).subarray(20)), 'its payload intact');

  peer.send(fromPeer(1), port, LINEN_ADDR);
  await until('the packet written to the TUN', () => mem.tun.written.length === 1);
  t.same(mem.tun.written[0].subarray(20), fromPeer(1).subarray(20), 'the inner packet, as sent');

  control({ type: 'set', route: UNREACHABLE, slot: 1 });
  mem.tun.inbound.push(toPeer(2, '10.5.34.9'));
  driver.ready(READY_TUN);
  control({ type: 'publish', seq: 1 });
  t.equal(stats.stat('udp_sends'), 2, 'both handed to the socket');
  await until('the refused send\'s callback', () => {
    control({ type: 'publish', seq: 2 });
    return stats.stat('send_errors') === 1;
  });
  t.equal(stats.stat('tun_reads'), 2);
  t.equal(stats.stat('udp_receives'), 1);
  t.equal(stats.stat('tun_writes'), 1);
  t.equal(stats.peerWord(0, PeerCounter.TxPackets), 1, 'per-peer counters');
  t.equal(stats.peerWord(0, PeerCounter.RxPackets), 1);
  t.equal(stats.seq(), 2, 'a publish request is served before control() returns');

  control({ type: 'set', route: { subnet: { ip: 0, prefixLen: 33 }, publicIP: 0 }, slot: -1 });
  t.match(errors, [/control message set 0\.0\.0\.0\/33: bad prefix length 33/], 'a refused route is reported');

  control({ type: 'stop' });
  peer.send(fromPeer(3), port, LINEN_ADDR);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(mem.tun.written.length, 1, 'a stopped loop forwards nothing');
});

t.test('a run of equal datagrams the core joined for UDP_SEGMENT leaves node:dgram as its datagrams', async (t) => {
  const { port, linen, fromLinen } = await sockets(t);
  const { mem, desc, udp, errors, driver } = memoryTunRig(t, port, linen);
  // One length for all: in one TUN batch, the core joins them into one send.
  const same = (i: number): Uint8Array => buildUdp('10.5.72.5', '10.5.33.7', 4000, 5000, bytes(200, i));
  let joined = 0;
  const send = udp.sendBatch.bind(udp);
  udp.sendBatch = (table, count) => {
    for (let i = 0; i < count; i++) if (desc.segSize(desc.at(table, i)) > 0) joined++;
    return send(table, count);
  };
  for (let i = 0; i < 3; i++) mem.tun.inbound.push(same(i));
  driver.ready(READY_TUN);
  t.equal(joined, 1, 'the core handed one joined send');
  await until('three datagrams at the peer', () => fromLinen.length === 3);
  t.same(fromLinen.map((d) => d.subarray(20)), [0, 1, 2].map((i) => Buffer.from(same(i).subarray(20))), 'each its own datagram, in order');
  t.same(errors, []);
});

t.test('DgramIO on a FIFO for the TUN: one read per packet through the thread pool, one write per packet', async (t) => {
  const { port, linen, peer, fromLinen } = await sockets(t);
  const dir = mkdtempSync(join(tmpdir(), 'linen-dgram-io-'));
  const fifo = join(dir, 'tun');
  execFileSync('mkfifo', [fifo]);
  // Read and written like a TUN fd: blocking, one descriptor for both directions.
  const fd = openSync(fifo, 'r+');
  const writer = openSync(fifo, 'w');
  const core = new Core({ mode: 'udp', port, mtu: 1472, subnet: OWN });
  const io = new DgramIO(fd, linen, core.memory.buffer, core.layout);
  const stats = statsOf(core);
  const loop = new WorkerLoop({ core, io, stats: stats.buffer, reportError: (m) => t.fail(m) });
  loop.setRoutes([{ route: PEER, slot: 0 }]);
  const driver = new EventDriver(loop);
  driver.start();
  io.start((bits) => driver.ready(bits));
  t.teardown(() => {
    io.post({ type: 'stop' });
    io.stop();
    // The read parked in the thread pool returns on the next bytes; then the FIFO can close.
    writeSync(writer, new Uint8Array(1));
    closeSync(writer);
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });

  for (let i = 0; i < 3; i++) {
    writeSync(writer, toPeer(i));
    // One packet in the FIFO at a time: a pipe, unlike a TUN, would hand two in one read.
    await until(`datagram ${i} at the peer`, () => fromLinen.length === i + 1);
  }
  t.same(fromLinen.map((d) => d.subarray(20)), [0, 1, 2].map((i) => Buffer.from(toPeer(i).subarray(20))), 'each packet went out whole, in order');

  // A datagram from the peer is written to the "TUN", and the FIFO hands it back to the read:
  // with a route to this node's own subnet via the peer, egress sends it back there.
  io.post({ type: 'set', route: { subnet: OWN, publicIP: PEER.publicIP }, slot: 1 });
  peer.send(fromPeer(7), port, LINEN_ADDR);
  await until('the written packet back at the peer', () => fromLinen.length === 4);
  t.equal(parseIp4(fromLinen[3]).ttl, 62, 'forwarded twice: in, then out again');
  t.same(fromLinen[3].subarray(20), Buffer.from(fromPeer(7).subarray(20)), 'the packet written was the inner packet, whole');
  io.post({ type: 'publish', seq: 1 });
  t.equal(stats.stat('tun_writes'), 1);
  t.equal(stats.stat('tun_reads'), 4);
  t.equal(stats.stat('udp_sends'), 4);
});
