// Typed access to the native I/O addon (native/linen_io.c; linen_route.c for kernel routes).
// node-gyp-build finds it: a local build (build/Release/linen_io.node, from npm run build)
// first, else the prebuilt one the package ships for this platform (prebuilds/<platform>-<arch>/,
// made by scripts/prebuild.sh).
//
// The addon knows file descriptors and memory regions, nothing about packets. Batched calls take
// the wasm instance's linear memory (its ArrayBuffer) and byte offsets of descriptor tables
// inside it; the layouts are in docs/memory-abi.md. Every failure is thrown as a NativeError
// whose `code` is the errno name (e.g. 'EINVAL') and `errno` its number; out-of-bounds tables
// throw a RangeError with code 'ERR_OUT_OF_RANGE' before any I/O happens.

import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { repoRoot } from "../paths.js";
import { join } from "node:path";

/** Memory the addon reads and writes: a wasm Memory's buffer, or a view on it. */
export type NativeMemory = ArrayBuffer | ArrayBufferView;

export interface TunOpenOptions {
  /** IFF_MULTI_QUEUE: every open with the same name adds one queue (one fd each). */
  multiQueue?: boolean;
  /** IFF_VNET_HDR with a 10-byte virtio_net_hdr in front of every read and write. */
  vnetHdr?: boolean;
}

export interface TunHandle {
  fd: number;
  /** The interface name the kernel gave (resolves patterns such as "tun%d"). */
  name: string;
}

export type PmtuDisc = "dont" | "want" | "do";

export interface UdpOpenOptions {
  /** Dotted-quad IPv4 address to bind; "0.0.0.0" for any. */
  address: string;
  /** Port to bind; 0 for an ephemeral port. */
  port: number;
  reusePort?: boolean;
  /** Requested socket buffer sizes (SO_*BUF, then SO_*BUFFORCE; failures ignored). */
  rcvbuf?: number;
  sndbuf?: number;
  /** Enable UDP_GRO on receive. */
  gro?: boolean;
  pmtuDisc?: PmtuDisc;
}

export interface UdpSocket {
  fd: number;
  /** The bound port (the ephemeral one when 0 was asked). */
  port: number;
  /** getsockopt(UDP_SEGMENT) works: descriptors with segSize go out as one GSO send. */
  gso: boolean;
  /** UDP_GRO was enabled and reads back as 1. */
  gro: boolean;
  /** The buffer sizes the kernel reports after the request (twice the bytes asked, as usual). */
  rcvbuf: number;
  sndbuf: number;
}

export interface NativeConstants {
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_TSO_ECN: number;
  readonly TUN_F_UFO: number;
  readonly TUN_F_USO4: number;
  readonly TUN_F_USO6: number;
  /** Most iovecs in one TUN write (UIO_MAXIOV). */
  readonly MAX_IOV: number;
  /** Most fds in one wait() call (the result is a 32-bit mask). */
  readonly MAX_WAIT_FDS: number;
}

/** The error every failed syscall is thrown as. */
export interface NativeError extends Error {
  /** errno name, e.g. 'EINVAL'. */
  code: string;
  errno: number;
  /** The call that failed, e.g. 'TUNSETOFFLOAD'. */
  syscall: string;
  /** tunWriteBatch only: packets written before the error. */
  written?: number;
}

/** The memory layout the addon was compiled with (native/linen_abi.h, generated with abi.ts
 * from the wasm core's exports): every value of abi.ts's LAYOUT. checkAddonLayout()
 * (descriptors.ts) compares it with the core's. */
export type NativeLayout = Readonly<Record<string, number>>;

export interface NativeIO {
  abiVersion(): number;
  readonly constants: NativeConstants;
  readonly layout: NativeLayout;

  tunOpen(name: string, opts?: TunOpenOptions): TunHandle;
  /** TUNSETOFFLOAD; throws EINVAL for a combination the kernel refuses. */
  tunSetOffload(fd: number, flags: number): void;
  /**
   * Reads up to `max` packets, one per descriptor of the table at `descTable`, each into
   * `offset` with at most `capacity` bytes; stores `length`. Stops at EAGAIN. Returns the count.
   * `max` is at most 1024; the offsets checked before the first read are the ones used. With a
   * `budget` (bytes, > 0) it also stops once the packets read add up to that many bytes.
   */
  tunReadBatch(fd: number, memory: NativeMemory, descTable: number, max: number, capacity: number, budget?: number): number;
  /**
   * One writev() per 8-byte entry {first, count} of the table at `writesTable`, naming iovecs
   * {offset, length} of the table at `iovTable`. Returns the packets written: EINVAL drops one
   * packet, EIO (interface down) stops the batch.
   */
  tunWriteBatch(fd: number, memory: NativeMemory, writesTable: number, count: number, iovTable: number): number;

  udpOpen(opts: UdpOpenOptions): UdpSocket;
  /** recvmmsg into the descriptors; fills length, addr, port and segSize (GRO). As tunReadBatch:
   * `max` at most 1024, offsets checked once before the first call. */
  udpRecvBatch(fd: number, memory: NativeMemory, descTable: number, max: number, capacity: number): number;
  /**
   * sendmmsg of `count` descriptors. Descriptor i goes out on fds[flowHash % fds.length]
   * (fds[0] when flowHash is 0), with UDP_SEGMENT when segSize is set and smaller than length.
   * Each descriptor's status is 0 or the errno of its failure. Returns the number sent.
   */
  udpSendBatch(fds: Int32Array, memory: NativeMemory, descTable: number, count: number): number;
  /** False once GSO was found not to work on this socket (probe or EIO), or was turned off. */
  udpGsoEnabled(fd: number): boolean;
  /** Turns GSO off (segSize descriptors then go out as separate datagrams) or back on. */
  udpSetGso(fd: number, enabled: boolean): void;

  eventfdOpen(): number;
  eventfdSignal(fd: number): void;
  /** Resets the eventfd; returns the count it held (0 if not signalled). */
  eventfdDrain(fd: number): number;
  /**
   * poll() for readability: returns a mask with bit i set when fds[i] is readable (or has an
   * error or hang-up pending); 0 on timeout or EINTR. timeoutMs < 0 waits forever.
   */
  wait(fds: Int32Array, timeoutMs: number): number;
  close(fd: number): void;
  /** Clears (true) or sets (false) O_NONBLOCK on fd. */
  setBlocking(fd: number, blocking: boolean): void;
  /** Sends `message` to systemd's NOTIFY_SOCKET (a leading '@' is the abstract namespace). */
  sdNotify(socketPath: string, message: string): void;

  /**
   * rtnetlink requests, 4 words each in `ops` (kind: ROUTE_OP, destination, prefix length,
   * gateway; addresses as host-order numbers), run off the JS thread. Routes are in the main
   * table out of `dev`, as `ip route replace|del <dst>/<len> via <gateway> dev <dev>`; a lookup
   * (prefix length 32, no gateway) is `ip route get <dst>`. One answer per request, in order.
   * Throws before any work on bad arguments; rejects when netlink or `dev` itself fails.
   */
  routeBatch(dev: string, ops: Uint32Array): Promise<RouteAnswer[]>;
  /** The main table's IPv4 unicast routes with a gateway out of `dev`: (destination, prefix
   * length, gateway) triples, off the JS thread. */
  routeDump(dev: string): Promise<Uint32Array>;
}

/** The request kinds of routeBatch. */
export const ROUTE_OP = { replace: 1, delete: 2, get: 3 } as const;

/** routeBatch's answer to one request. */
export interface RouteAnswer {
  /** 0, or the errno the kernel answered. */
  errno: number;
  /** The kernel's own message for the failure (extended ack), else strerror; '' on success. */
  error: string;
  /** A lookup's route: its type (RTN_*), gateway when it has one, and output interface. */
  type?: number;
  gateway?: number;
  dev?: string;
}

/** The ABI version this wrapper was written for (the addon's abiVersion()). */
export const NATIVE_ABI_VERSION = 3;

/** The TUNSETOFFLOAD flag values (also in `constants`), usable before loading the addon. */
export const TUN_F = {
  CSUM: 0x01,
  TSO4: 0x02,
  TSO6: 0x04,
  TSO_ECN: 0x08,
  UFO: 0x10,
  USO4: 0x20,
  USO6: 0x40,
} as const;

const require = createRequire(import.meta.url);

/**
 * The addon node-gyp-build picks under `root`: build/Release first, then the prebuild matching
 * this platform, arch and libc. Throws an error that says what to do when none fits.
 */
export function nativeAddonPath(root: string = repoRoot()): string {
  const nodeGypBuild = require("node-gyp-build") as { path(dir: string): string };
  try {
    return nodeGypBuild.path(root);
  } catch {
    let shipped: string[] = [];
    try { shipped = readdirSync(join(root, "prebuilds")); } catch { /* a source checkout has none */ }
    throw new Error(
      `linen: no native addon for ${process.platform}-${process.arch} in ${join(root, "build", "Release")} ` +
        `or ${join(root, "prebuilds")} (prebuilt for: ${shipped.join(", ") || "none"}, glibc); ` +
        `build it from source (needs gcc, make, python3 and Node's headers): cd ${root} && npx node-gyp rebuild`,
    );
  }
}

let cached: NativeIO | undefined;

/** Loads the addon once per thread (worker_threads each get their own instance). */
export function loadNative(): NativeIO {
  if (cached) return cached;
  const path = nativeAddonPath();
  let io: NativeIO;
  try {
    io = require(path) as NativeIO;
  } catch (e) {
    // e.g. a prebuild linked against a newer glibc than this system's.
    throw new Error(`linen: cannot load the native addon ${path}: ${(e as Error).message}; ` +
      `build one for this system (needs gcc, make, python3 and Node's headers): cd ${repoRoot()} && npx node-gyp rebuild`);
  }
  const v = io.abiVersion();
  if (v !== NATIVE_ABI_VERSION) {
    throw new Error(`linen: native addon ${path} has ABI ${v}, expected ${NATIVE_ABI_VERSION}; rebuild it (npm run build)`);
  }
  cached = io;
  return io;
}

/** True when `e` is an error thrown by the addon for a failed syscall (optionally with that errno name). */
export function isNativeError(e: unknown, code?: string): e is NativeError {
  if (!(e instanceof Error)) return false;
  const n = e as Partial<NativeError>;
  return typeof n.errno === "number" && typeof n.code === "string" && (code === undefined || n.code === code);
}

/**
 * Sets the widest TUN offload the kernel accepts, as wireguard-go does: CSUM|TSO4|TSO6 must
 * work (else this throws), then USO4|USO6 are added when the kernel knows them (6.2+).
 * Returns the flags in effect.
 */
export function enableTunOffload(io: NativeIO, fd: number): number {
  const base = TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6;
  io.tunSetOffload(fd, base);
  const withUso = base | TUN_F.USO4 | TUN_F.USO6;
  try {
    io.tunSetOffload(fd, withUso);
    return withUso;
  } catch (e) {
    if (isNativeError(e, "EINVAL")) return base;
    throw e;
  }
}
