// The native I/O addon against the real kernel: TUN devices, UDP sockets (mmsg, GSO, GRO),
// eventfd and wait. Anything that touches the network runs as a child script
// (test/fixtures/native/*.mjs) inside a namespace the test creates, so the host is untouched.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import t from "tap";

import {
  enableTunOffload, isNativeError, loadNative, NATIVE_ABI_VERSION, nativeAddonPath, TUN_F,
  type NativeIO,
} from "../../src/addon/native.js";
import { repoRoot } from "../../src/paths.js";
import { Core } from "../../src/dataplane/core.js";
import { DgramEngine } from "../../src/dataplane/dgram-engine.js";
import type { EngineOptions } from "../../src/dataplane/engine.js";
import { NativeEngine } from "../../src/dataplane/native-engine.js";
import { checkAddonLayout } from "../../src/dataplane/descriptors.js";
import { LAYOUT } from "../../src/dataplane/abi.js";
import { netnsLab } from "../helpers/netns.js";

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = join(here, "..", "fixtures", "native");
const tunScript = join(fixtures, "tun.mjs");
const udpScript = join(fixtures, "udp.mjs");

// lib.dom is not in the project's lib; declare the little of WebAssembly.Memory used here.
interface WasmMemory { readonly buffer: ArrayBuffer; grow(pages: number): number }
const WasmMemoryCtor = (globalThis as unknown as {
  WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => WasmMemory };
}).WebAssembly.Memory;

interface ErrInfo { name?: string; message?: string; code?: string; errno?: number }
type Attempt<T = unknown> = { ok: true; value: T } | { ok: false; error: ErrInfo };

function errorOf(a: Attempt): ErrInfo {
  return a.ok ? {} : a.error;
}

let io: NativeIO;

t.before(() => {
  io = loadNative();
});

t.test("native.ts loads the addon from the repository's build/", async (t) => {
  t.ok(existsSync(join(repoRoot(), "package.json")), "repoRoot holds package.json");
  t.equal(nativeAddonPath(), join(repoRoot(), "build", "Release", "linen_io.node"));
  t.equal(io.abiVersion(), NATIVE_ABI_VERSION);
  t.equal(loadNative(), io, "cached per thread");
  for (const [k, v] of Object.entries(TUN_F)) {
    t.equal(io.constants[`TUN_F_${k}` as keyof typeof io.constants], v, `TUN_F_${k}`);
  }
  t.equal(io.layout.DESC_SIZE, 24);
  t.equal(io.layout.VNET_HDR_LEN, 10);
  for (const fn of ["tunOpen", "tunSetOffload", "tunReadBatch", "tunWriteBatch", "udpOpen", "udpRecvBatch",
    "udpSendBatch", "udpGsoEnabled", "udpSetGso", "eventfdOpen", "eventfdSignal", "eventfdDrain", "wait", "close"]) {
    t.type((io as unknown as Record<string, unknown>)[fn], "function", fn);
  }
  t.throws(() => io.close(-1), { code: "EBADF", errno: 9, message: "close: Bad file descriptor (EBADF)" });
  try {
    io.close(-1);
  } catch (e) {
    t.ok(isNativeError(e, "EBADF"), "isNativeError recognises addon errors");
    t.notOk(isNativeError(e, "EINVAL"));
  }
  t.notOk(isNativeError(new Error("x")));
});

t.test("the addon was compiled with the wasm core's layout; a differing layout is refused", async (t) => {
  const core = new Core({ mode: "udp", port: 8285, mtu: 1472, subnet: { ip: 0, prefixLen: 24 } });
  for (const name of Object.keys(LAYOUT) as (keyof typeof LAYOUT)[]) t.equal(io.layout[name], core.layout[name], `addon ${name} = core ${name}`);
  t.doesNotThrow(() => checkAddonLayout(io.layout, core.layout), "the built pair agrees");
  const moved = { ...core.layout, D_LENGTH: core.layout.D_LENGTH + 4 };
  t.throws(() => checkAddonLayout(io.layout, moved), {
    message: `linen: the native addon and the wasm core disagree on the memory layout: D_LENGTH is ${io.layout.D_LENGTH} in the addon and ${moved.D_LENGTH} in the core; rebuild both with "npm run build"`,
  }, "a moved field is named");
  t.throws(() => checkAddonLayout(io.layout, { ...core.layout, DESC_SIZE: 32 }), /DESC_SIZE is 24 in the addon and 32 in the core/);
  const { D_SPARE: _spare, ...older } = io.layout;
  t.throws(() => checkAddonLayout(older, core.layout), /built without layout field D_SPARE/, "an addon lacking a field");
  t.throws(() => checkAddonLayout({ ...io.layout, D_FLAGS: 22 }, core.layout), /D_FLAGS = 22, which the wasm core does not export/);
  t.throws(() => checkAddonLayout(undefined, core.layout), /reports no memory layout/, "an addon from before the check");
  // Both engines check before they open anything: an addon built with D_SEGSIZE elsewhere.
  const options: EngineOptions = {
    mode: "udp", device: "lnlayout0", bindAddr: "127.0.0.1", port: 8285, mtu: 1472, subnet: { ip: 0x0a054800, prefixLen: 24 },
    network: { ip: 0x0a050000, prefixLen: 16 }, vni: 1, mac: new Uint8Array(6), queues: 1, offload: "off",
  };
  const real = io.layout;
  Object.defineProperty(io, "layout", { value: { ...real, D_SEGSIZE: real.D_SEGSIZE + 2 }, configurable: true });
  try {
    t.throws(() => new NativeEngine(options, { routes: () => [] }), /disagree on the memory layout: D_SEGSIZE is 16 in the addon and 14 in the core/, "native engine refuses");
    t.throws(() => new DgramEngine(options, { routes: () => [] }), /D_SEGSIZE is 16 in the addon and 14 in the core/, "dgram engine refuses");
  } finally {
    Object.defineProperty(io, "layout", { value: real, configurable: true });
  }
  t.equal(io.layout, real);
  const check = spawnSync(process.execPath, [join(repoRoot(), "scripts", "gen-abi.mjs"), "--check"], { encoding: "utf8" });
  t.equal(check.status, 0, `native/linen_abi.h and src/dataplane/abi.ts are what the built core generates ${check.stderr}`);
});

t.test("tunOpen: plain, vnetHdr, multi-queue; TUNSETOFFLOAD probing", async (t) => {
  const lab = netnsLab(t);
  const ns = lab.ns();
  const p = lab.name();
  const r = ns.nodeJson<{
    plain: { fd: number; name: string; flags: string };
    plainEmptyRead: number;
    pattern: string;
    vnet: { name: string; flags: string };
    offloadTcp: Attempt; offloadTso4Alone: Attempt; offloadUso: Attempt; offloadUso4Alone: Attempt;
    offloadUnknownBit: Attempt; offloadZero: Attempt;
    mq: { fds: number[]; names: string[]; flags: string; queues: string[] };
    mqMixed: Attempt; tooLong: Attempt; badFd: Attempt; closedGone: boolean; closeTwice: Attempt;
  }>(tunScript, ["open", p]);
  t.equal(r.plain.name, `${p}p`);
  t.ok(r.plain.fd > 2);
  t.equal(r.plain.flags, "0x1001", "IFF_TUN|IFF_NO_PI");
  t.equal(r.plainEmptyRead, 0, "non-blocking: empty queue reads 0 packets");
  t.equal(r.pattern, `${p}0`, "name patterns are resolved by the kernel");
  t.equal(r.vnet.flags, "0x5001", "IFF_TUN|IFF_NO_PI|IFF_VNET_HDR");
  t.ok(r.offloadTcp.ok, "CSUM|TSO4|TSO6 accepted");
  t.same(errorOf(r.offloadTso4Alone), {
    name: "Error", code: "EINVAL", errno: 22, message: "TUNSETOFFLOAD: Invalid argument (EINVAL)",
  }, "TSO4 alone: EINVAL");
  t.ok(r.offloadUso.ok, "USO4|USO6 accepted (kernel >= 6.2)");
  t.equal(errorOf(r.offloadUso4Alone).code, "EINVAL", "USO4 without USO6: EINVAL");
  t.equal(errorOf(r.offloadUnknownBit).code, "EINVAL", "unknown bit: EINVAL");
  t.ok(r.offloadZero.ok);
  t.same(r.mq.names, [`${p}m`, `${p}m`], "two queues of one device");
  t.not(r.mq.fds[0], r.mq.fds[1]);
  t.equal(r.mq.flags, "0x5101", "IFF_MULTI_QUEUE set");
  t.same(r.mq.queues, ["rx-0", "rx-1", "tx-0", "tx-1"]);
  t.equal(errorOf(r.mqMixed).message, "TUNSETIFF: Invalid argument (EINVAL)", "mixing single and multi queue");
  t.equal(errorOf(r.tooLong).name, "RangeError");
  t.equal(errorOf(r.badFd).code, "EBADF");
  t.ok(r.closedGone, "the device goes away with its last fd");
  t.equal(errorOf(r.closeTwice).code, "EBADF");
});

t.test("enableTunOffload picks the widest offload set", async (t) => {
  // The kernel's answers are covered above (child script); here the fallback order of the
  // TypeScript helper, with a stand-in that refuses USO as a pre-6.2 kernel would.
  const calls: number[] = [];
  const fake = {
    tunSetOffload(_fd: number, flags: number): void {
      calls.push(flags);
      if (flags & TUN_F.USO4) throw Object.assign(new Error("TUNSETOFFLOAD: Invalid argument (EINVAL)"), { code: "EINVAL", errno: 22, syscall: "TUNSETOFFLOAD" });
    },
  } as unknown as NativeIO;
  t.equal(enableTunOffload(fake, 3), TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6, "pre-6.2: no USO");
  t.same(calls, [0x07, 0x67]);
});

t.test("tunReadBatch: a packet routed into the TUN lands at its descriptor's offset", async (t) => {
  const lab = netnsLab(t);
  const ns = lab.ns();
  const r = ns.nodeJson<{
    payloads: string[];
    packets: { offset: number; expectOffset: number; length: number; vnet: number[]; dst: string; totalLen: number; dport: number; payload: string }[];
    canary: number; emptyAfter: number;
  }>(tunScript, ["read", lab.name()]);
  t.equal(r.packets.length, r.payloads.length, "every datagram came out of the TUN");
  r.packets.forEach((pk, i) => {
    t.equal(pk.offset, pk.expectOffset, `packet ${i} at its slot`);
    t.equal(pk.length, 10 + 28 + Buffer.byteLength(r.payloads[i] ?? ""), `packet ${i} length = vnet hdr + IP + UDP + payload`);
    t.equal(pk.length, 10 + pk.totalLen, "length matches the IP total length");
    t.same(pk.vnet, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "no offloads: zero vnet header");
    t.equal(pk.dst, "10.201.0.2");
    t.equal(pk.dport, 9000);
    t.equal(pk.payload, r.payloads[i]);
  });
  t.equal(r.canary, 0xee, "bytes before the slot untouched");
  t.equal(r.emptyAfter, 0, "EAGAIN ends the batch");
});

t.test("tunReadBatch: a byte budget ends the batch once the packets read reach it", async (t) => {
  const lab = netnsLab(t);
  const r = lab.ns().nodeJson<{
    packet: number; reads: { budget: number | null; n: number; lengths: number[] }[]; badBudget: Attempt<number>;
  }>(tunScript, ["budget", lab.name()]);
  const p = r.packet;
  t.same(r.reads, [
    { budget: 2 * p + 1, n: 3, lengths: [p, p, p] },
    { budget: 1, n: 1, lengths: [p] },
    { budget: null, n: 2, lengths: [p, p] },
    { budget: 0, n: 0, lengths: [] },
  ], "3 packets reach a budget of 2 packets and a byte; 1 reaches 1 byte; without one the batch ends at the dry queue");
  t.equal(errorOf(r.badBudget).name, "RangeError", "a negative budget is refused");
  t.match(errorOf(r.badBudget).message ?? "", /budget/);
});

t.test("tunWriteBatch: iovec lists are delivered, bad packets skipped, EIO when down", async (t) => {
  const lab = netnsLab(t);
  const ns = lab.ns();
  const r = ns.nodeJson<{
    written: number;
    got: { addr: string; port: number; length: number; payload: string }[];
    whileDown: Attempt<number>;
  }>(tunScript, ["write", lab.name()]);
  t.equal(r.written, 2, "two good writes counted, the malformed one (EINVAL) skipped");
  t.equal(r.got.length, 2);
  for (const g of r.got) {
    t.equal(g.payload, "hello from tunWriteBatch");
    t.equal(g.addr, "10.202.0.2");
    t.equal(g.port, 5555);
  }
  t.same(r.whileDown, { ok: true, value: 0 }, "interface down: EIO stops the batch without throwing");
});

t.test("udpSendBatch/udpRecvBatch: a batch over loopback with a socket pool", async (t) => {
  const lab = netnsLab(t);
  const ns = lab.ns();
  const r = ns.nodeJson<{
    ports: { rx: number; s0: number; s1: number };
    sent: number; status: number[]; received: number; expected: number; calls: number;
    mismatches: unknown[]; trunc: number[]; emptyRecv: number;
  }>(udpScript, ["batch"]);
  t.equal(r.sent, 98, "100 descriptors, 2 refused");
  t.equal(r.status[17], 22, "port 0: EINVAL in its status");
  t.equal(r.status[42], 90, "65508-byte datagram: EMSGSIZE in its status");
  t.equal(r.status.filter((s) => s === 0).length, 98, "status 0 for every sent descriptor");
  t.equal(r.received, r.expected, "all sent datagrams arrived");
  t.same(r.mismatches, [], "data, source address and source port (flowHash % fds) as sent");
  t.ok(r.calls <= 4, `received in few batches (${r.calls})`);
  t.same(r.trunc, [300], "a truncated datagram reports the bytes stored");
  t.equal(r.emptyRecv, 0, "EAGAIN with nothing queued: 0");
});

interface GsoRun { gsoProbe: boolean; gsoEnabled: boolean; sent: number; status: number[]; want: number; sizes: number[]; segSizes: number[]; intact: boolean }

t.test("UDP GSO: one descriptor with segSize becomes N datagrams", async (t) => {
  const lab = netnsLab(t);
  const ns = lab.ns();
  const r = ns.nodeJson<Record<"kernel" | "chunks" | "small" | "software", GsoRun>>(udpScript, ["gso"]);
  t.ok(r.kernel.gsoProbe, "getsockopt(UDP_SEGMENT) works");
  t.same(r.kernel.sizes, [...Array<number>(10).fill(1000), 500]);
  t.ok(r.kernel.intact);
  t.same(r.kernel.status, [0]);
  t.equal(r.chunks.sent, 3);
  t.equal(r.chunks.sizes.length, 49);
  t.same(r.chunks.sizes.slice(-2), [7, 99]);
  t.ok(r.chunks.intact, "two GSO messages and a plain one, in order");
  t.same(r.small.sizes, [800], "length <= segSize: one plain datagram");
  t.notOk(r.software.gsoEnabled, "udpSetGso(fd, false) sticks");
  t.same(r.software.sizes, [...Array<number>(10).fill(1000), 500, 300], "software split gives the same datagrams");
  t.ok(r.software.intact);
  t.equal(r.software.sent, 2);
});

t.test("UDP GRO: a GSO burst arrives as one buffer with segSize", async (t) => {
  const lab = netnsLab(t);
  const ns = lab.ns();
  const r = ns.nodeJson<{
    groRequested: boolean; groOff: boolean; sent: number;
    groRecv: { length: number; segSize: number; intact: boolean }[]; plainRecv: [number, number][]; rcvbuf: number;
  }>(udpScript, ["gro"]);
  t.ok(r.groRequested, "UDP_GRO reads back as 1");
  t.notOk(r.groOff);
  t.equal(r.sent, 2);
  t.same(r.groRecv.map((g) => [g.length, g.segSize, g.intact]), [[9900, 1200, true]]);
  t.same(r.plainRecv, [...Array<[number, number]>(8).fill([1200, 0]), [300, 0]], "without GRO: separate datagrams");
  t.ok(r.rcvbuf >= 8 << 20, `SO_RCVBUFFORCE raised the buffer past rmem_max (${r.rcvbuf})`);
});

t.test("reads use the descriptor values validated before the system call, not what the kernel wrote over them", async (t) => {
  // A read buffer that overlaps the descriptor table is the caller's error, but it must not let
  // packet bytes steer a later read: the addon keeps the offsets it checked.
  const lab = netnsLab(t);
  const tun = lab.ns().nodeJson<{ n: number; descriptor1Offset: number; decoy: number; atSlot: string; atDecoy: string; length1: number; expectLength1: number }>(
    tunScript, ["overlap", lab.name()]);
  t.equal(tun.n, 2, "tunReadBatch: both packets read");
  t.equal(tun.descriptor1Offset, tun.decoy, "packet 0 did overwrite descriptor 1's offset field");
  t.equal(tun.atSlot, "linen-overlap-second-packet", "tunReadBatch: packet 1 landed at its validated offset");
  t.not(tun.atDecoy, "linen-overlap-second-packet", "tunReadBatch: nothing was read to the offset the packet wrote");
  t.equal(tun.length1, tun.expectLength1);
  const udp = lab.ns().nodeJson<{ sent: number; n: number; atSlot: number; atDecoy: number; want: number; length64: number }>(udpScript, ["overlap"]);
  t.equal(udp.sent, 65);
  t.equal(udp.n, 65, "udpRecvBatch: 65 datagrams in two recvmmsg calls");
  t.equal(udp.atSlot, udp.want, "udpRecvBatch: datagram 64 landed at its validated offset");
  t.not(udp.atDecoy, udp.want, "udpRecvBatch: nothing was received to the offset datagram 0 wrote");
  t.equal(udp.length64, 64);
});

t.test("udpOpen options and errors", async (t) => {
  const lab = netnsLab(t);
  const r = lab.ns().nodeJson<{
    a: { port: number; gso: boolean; gro: boolean }; reuse: boolean; noReuse: Attempt; bad: Attempt; badPmtu: Attempt;
  }>(udpScript, ["opts"]);
  t.ok(r.a.port > 0, "ephemeral port reported");
  t.ok(r.reuse, "SO_REUSEPORT lets a second socket bind the same port");
  t.equal(errorOf(r.noReuse).message, "udpOpen bind: Address already in use (EADDRINUSE)");
  t.equal(errorOf(r.bad).name, "TypeError");
  t.equal(errorOf(r.badPmtu).name, "TypeError");
});

t.test("sdNotify: errors name the call and errno; bad paths are refused before any syscall", async (t) => {
  const io = loadNative();
  const dir = mkdtempSync(join(tmpdir(), "linen-notify-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const missing = join(dir, "absent");
  t.throws(() => io.sdNotify(missing, "READY=1"), { message: "sdNotify sendto: No such file or directory (ENOENT)", code: "ENOENT" });
  t.throws(() => io.sdNotify("", "READY=1"), { name: "RangeError" });
  t.throws(() => io.sdNotify("/" + "x".repeat(200), "READY=1"), { name: "RangeError" });
  t.throws(() => (io.sdNotify as unknown as (a: number, b: string) => void)(5, "READY=1"), { name: "TypeError" });
});

t.test("udpSendBatch: a blocked socket waits ~5 ms, then marks the rest EAGAIN", async (t) => {
  const lab = netnsLab(t);
  const a = lab.ns();
  const b = lab.ns();
  const [va] = lab.veth(a, b, { aAddr: "10.204.0.1/24", bAddr: "10.204.0.2/24" });
  // A 1 Mbit/s qdisc holds the packets, so the tiny send buffer stays full.
  a.exec("tc", ["qdisc", "add", "dev", va, "root", "tbf", "rate", "1mbit", "burst", "1600", "limit", "3000000"]);
  const r = a.nodeJson<{ n: number; sent: number; ms: number; status: Record<string, number> }>(udpScript, ["eagain", "10.204.0.2"]);
  t.ok(r.sent > 0 && r.sent < r.n, `some sent (${r.sent}), not all`);
  t.same(r.status, { 0: r.sent, 11: r.n - r.sent }, "the rest: status EAGAIN");
  t.ok(r.ms >= 4 && r.ms < 2000, `bounded wait (${r.ms.toFixed(1)} ms; expected ~5 ms, bound 2 s)`);
});

t.test("bounds checking throws instead of touching memory outside the buffer", async (t) => {
  const mem = new WasmMemoryCtor({ initial: 1, maximum: 1 });
  const buf = mem.buffer;
  const dv = new DataView(buf);
  const u8 = new Uint8Array(buf);
  u8.fill(0xab);
  const fds = new Int32Array([-1]);
  const range = (re: RegExp) => ({ name: "RangeError", code: "ERR_OUT_OF_RANGE", message: re });

  // Descriptor table itself out of range.
  t.throws(() => io.tunReadBatch(-1, buf, 65530, 1, 100), range(/descriptor table/));
  t.throws(() => io.udpRecvBatch(-1, buf, 65536 - 24 * 3, 4, 100), range(/descriptor table/));
  // Descriptor 2's slot runs past the end.
  for (let i = 0; i < 4; i++) dv.setUint32(i * 24, 1024 * (i + 1), true);
  dv.setUint32(2 * 24, 65000, true);
  t.throws(() => io.tunReadBatch(-1, buf, 0, 4, 1000), range(/tunReadBatch: descriptor 2: \[65000, \+1000\)/));
  t.throws(() => io.udpRecvBatch(-1, buf, 0, 4, 1000), range(/udpRecvBatch: descriptor 2/));
  // Offsets near 2^32 must not wrap around (descriptor 0 is fine, 1 is not).
  dv.setUint32(0 * 24 + 4, 10, true);
  dv.setUint32(1 * 24, 0xffffff00, true);
  dv.setUint32(1 * 24 + 4, 0x200, true);
  t.throws(() => io.udpSendBatch(fds, buf, 0, 2), range(/udpSendBatch: descriptor 1/));
  // TUN writes: the table, an iovec range and an iovec's data.
  t.throws(() => io.tunWriteBatch(-1, buf, 65532, 1, 0), range(/writes table/));
  dv.setUint32(4096, 0, true); // first
  dv.setUint32(4100, 2, true); // count
  dv.setUint32(8192, 100, true); dv.setUint32(8196, 10, true);
  dv.setUint32(8200, 65530, true); dv.setUint32(8204, 10, true);
  t.throws(() => io.tunWriteBatch(-1, buf, 4096, 1, 8192), range(/write 0: iovec 1 \[65530, \+10\)/));
  t.throws(() => io.tunWriteBatch(-1, buf, 4096, 1, 65530), range(/write 0: iovecs/));
  dv.setUint32(4100, 5000, true);
  t.throws(() => io.tunWriteBatch(-1, buf, 4096, 1, 8192), range(/5000 iovecs/));
  // Argument types.
  t.throws(() => io.tunReadBatch(-1, "nope" as unknown as ArrayBuffer, 0, 1, 10), { name: "TypeError" });
  t.throws(() => io.udpSendBatch([1] as unknown as Int32Array, buf, 0, 0), { name: "TypeError", message: /Int32Array/ });
  t.throws(() => io.tunReadBatch(-1, buf, -1, 1, 10), { name: "RangeError" });
  t.throws(() => io.udpSendBatch(new Int32Array(0), buf, 0, 0), { name: "RangeError", message: /fds is empty/ });
  t.throws(() => io.close(1.5), { name: "TypeError", message: /fd must be a 32-bit integer/ });
  t.throws(() => io.wait(new Int32Array(1), Number.NaN), { name: "TypeError" });
  // A bad socket is the caller's bug, not a per-message error: it throws.
  dv.setUint32(0, 1024, true);
  dv.setUint32(4, 10, true);
  t.throws(() => io.udpSendBatch(fds, buf, 0, 1), { code: "EBADF", message: "udpSendBatch sendmmsg: Bad file descriptor (EBADF)" });
  // Nothing outside the descriptor fields was written.
  t.equal(u8[65535], 0xab);
  t.equal(u8[65000], 0xab);
  // A detached buffer (any grow detaches) has length 0: everything is out of range.
  mem.grow(0);
  t.throws(() => io.tunReadBatch(-1, buf, 0, 1, 10), range(/outside memory of 0 bytes/));
  t.equal(io.tunReadBatch(-1, mem.buffer, 0, 0, 10), 0, "max 0 on the new buffer: nothing to do");
  // A view over the memory works as well as the ArrayBuffer itself.
  t.throws(() => io.tunReadBatch(-1, new Uint8Array(mem.buffer, 0, 100), 0, 1, 200), range(/of 100 bytes/));
});

t.test("wait: readable mask, timeout; eventfd wakes a blocked wait from another thread", async (t) => {
  const a = io.eventfdOpen();
  const b = io.eventfdOpen();
  t.teardown(() => { io.close(a); io.close(b); });
  const fds = new Int32Array([a, b]);
  let t0 = Date.now();
  t.equal(io.wait(fds, 50), 0, "timeout: 0");
  t.ok(Date.now() - t0 >= 45, "waited about the timeout");
  io.eventfdSignal(b);
  t.equal(io.wait(fds, 1000), 0b10, "bit 1 = fds[1]");
  io.eventfdSignal(a);
  io.eventfdSignal(a);
  t.equal(io.wait(fds, 0), 0b11);
  t.equal(io.eventfdDrain(a), 2, "drain returns the count");
  t.equal(io.eventfdDrain(a), 0, "and resets it");
  t.equal(io.eventfdDrain(b), 1);
  t.equal(io.wait(fds, 0), 0);
  t.throws(() => io.wait(new Int32Array(33), 0), { name: "RangeError" });
  const closed = io.eventfdOpen();
  io.close(closed);
  t.throws(() => io.wait(new Int32Array([closed]), 0), { code: "EBADF" });

  // A worker (its own napi_env) signals while this thread is blocked in wait().
  const worker = new Worker(join(fixtures, "signal-worker.mjs"), { workerData: { fd: a, delayMs: 150 } });
  const ready = await new Promise<{ abi: number; gsoHere: boolean; sock: number }>((res, rej) => {
    worker.once("message", res);
    worker.once("error", rej);
  });
  t.equal(ready.abi, NATIVE_ABI_VERSION, "addon loads in a worker");
  t.notOk(ready.gsoHere, "worker's env turned GSO off for its socket");
  t.ok(io.udpGsoEnabled(ready.sock), "per-env state: this env still has GSO on for that fd");
  t0 = Date.now();
  const mask = io.wait(fds, 5000);
  const took = Date.now() - t0;
  t.equal(mask, 0b01, "woken by the eventfd");
  t.ok(took < 4000, `woke before the timeout (${took} ms)`);
  t.equal(io.eventfdDrain(a), 1);
  await new Promise((res) => worker.once("exit", res));
  io.close(ready.sock);
});

t.test("netns helper: veth between namespaces, cleanup removes everything", async (t) => {
  const lab = netnsLab();
  let names: string[] = [];
  try {
    const a = lab.ns();
    const b = lab.ns();
    names = [a.name, b.name];
    const [va, vb] = lab.veth(a, b, { aAddr: "10.203.0.1/24", bAddr: "10.203.0.2/24", mtu: 1400 });
    t.ok(va.length <= 15 && vb.length <= 15);
    t.match(a.ip("-o", "addr", "show", "dev", va), /10\.203\.0\.1\/24/);
    t.match(b.ip("link", "show", vb), /mtu 1400 .*state UP|mtu 1400/);
    t.match(a.exec("ip", ["route", "get", "10.203.0.2"]), new RegExp(`dev ${va}`));
    t.notMatch(a.ip("link"), /eth0/, "a fresh namespace");
    const listed = a.exec("ip", ["netns", "identify"]).trim();
    t.equal(listed, a.name, "exec runs inside the namespace");
    const sleeper = b.spawn("sleep", ["60"]);
    t.ok(sleeper.pid);
  } finally {
    lab.cleanup();
  }
  const { execFileSync } = await import("node:child_process");
  const after = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
  for (const n of names) t.notMatch(after, new RegExp(`^${n}\\b`, "m"), `${n} removed`);
  t.doesNotThrow(() => lab.cleanup(), "cleanup is idempotent");
});
