// Network namespaces for tests and the benchmark: unique names, veth pairs, addresses, commands
// run inside, and a cleanup that removes everything this helper made, even when a test fails.
//
//   const lab = netnsLab(t);            // cleanup registered with t.teardown and process 'exit'
//   const a = lab.ns(), b = lab.ns();
//   const [va, vb] = lab.veth(a, b, { aAddr: "10.1.0.1/24", bAddr: "10.1.0.2/24" });
//   a.exec("ping", ["-c1", "10.1.0.2"]);
//
// Everything is synchronous (execFileSync). Names are "ln" + 6 random base-36 characters (+ a
// short suffix), so device names stay within IFNAMSIZ (15). Devices are created directly inside
// the namespaces; nothing is ever added to, or removed from, the root namespace.

import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { randomBytes } from "node:crypto";
import { sh } from "../../lab/topology.js";

/** What netnsLab needs from a tap Test: just teardown. */
export interface Teardown {
  teardown(fn: () => void | Promise<void>): void;
}

export interface ExecOptions {
  /** Bytes written to the command's stdin. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Milliseconds; default 30 000. */
  timeout?: number;
}

export interface VethOptions {
  /** Device names; default <lab prefix><n>a / b. At most 15 bytes. */
  aName?: string;
  bName?: string;
  /** CIDR addresses, e.g. "10.1.0.1/24". */
  aAddr?: string;
  bAddr?: string;
  mtu?: number;
  /** Bring both ends up (default true). */
  up?: boolean;
}

/** Short random name: "ln" + 6 base-36 characters. */
export function uniqueName(): string {
  const n = randomBytes(5).readUIntBE(0, 5) % 36 ** 6;
  return "ln" + n.toString(36).padStart(6, "0");
}

// One way of running commands for tests, the benchmark and the demo (lab/topology.ts).
const run = (cmd: string, args: string[], opts: ExecOptions = {}): string => sh(cmd, args, opts);

/** One namespace created by a Lab. */
export class Netns {
  constructor(readonly name: string, private readonly lab: Lab) {}

  /** `ip -n <ns> <args>`: returns stdout. */
  ip(...args: string[]): string {
    return run("ip", ["-n", this.name, ...args]);
  }

  /** Runs a command inside the namespace (`ip netns exec`); returns stdout, throws on failure. */
  exec(cmd: string, args: string[] = [], opts: ExecOptions = {}): string {
    return run("ip", ["netns", "exec", this.name, cmd, ...args], opts);
  }

  /** Runs `node <script> <args>` inside the namespace with the current Node binary. */
  node(script: string, args: string[] = [], opts: ExecOptions = {}): string {
    return this.exec(process.execPath, [script, ...args], opts);
  }

  /** Like node(), but parses the last non-empty line of stdout as JSON. */
  nodeJson<T = unknown>(script: string, args: string[] = [], opts: ExecOptions = {}): T {
    const out = this.node(script, args, opts);
    const lines = out.trim().split("\n").filter((l) => l.trim() !== "");
    const last = lines[lines.length - 1];
    if (last === undefined) throw new Error(`${script} printed nothing`);
    return JSON.parse(last) as T;
  }

  /** Starts a long-running process inside the namespace; it is killed at cleanup. */
  spawn(cmd: string, args: string[] = [], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn("ip", ["netns", "exec", this.name, cmd, ...args], { stdio: "pipe", ...opts });
    this.lab.track(child);
    return child;
  }

  /** Adds an address (CIDR) to a device in this namespace and brings it up. */
  addr(dev: string, cidr: string): void {
    this.ip("addr", "add", cidr, "dev", dev);
    this.ip("link", "set", dev, "up");
  }

  /** Adds a route in this namespace, e.g. route("10.2.0.0/16", "via", "10.1.0.2"). */
  route(dst: string, ...rest: string[]): void {
    this.ip("route", "add", dst, ...rest);
  }

  /** Sets a sysctl inside this namespace, e.g. sysctl("net.ipv4.ip_forward", "1"). */
  sysctl(key: string, value: string): void {
    this.exec("sysctl", ["-q", "-w", `${key}=${value}`]);
  }
}

const live = new Set<Lab>();
let exitHook = false;

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on("exit", () => {
    for (const lab of [...live]) {
      try { lab.cleanup(); } catch (e) { process.stderr.write(`${(e as Error).message}\n`); }
    }
  });
}

/** A set of namespaces (and the processes started in them) that are removed together. */
export class Lab {
  /** Prefix shared by everything this lab names: "ln" + 6 random characters. */
  readonly prefix = uniqueName();
  private readonly namespaces: Netns[] = [];
  private readonly children = new Set<ChildProcess>();
  private counter = 0;

  constructor() {
    live.add(this);
    installExitHook();
  }

  /** A name unique to this lab: prefix + counter + suffix (keep suffix short: ≤ 15 in total). */
  name(suffix = ""): string {
    const n = `${this.prefix}${(this.counter++).toString(36)}${suffix}`;
    if (n.length > 15) throw new Error(`netns: name ${n} is longer than 15 characters`);
    return n;
  }

  /** Creates a namespace with loopback up. */
  ns(): Netns {
    const name = this.name();
    run("ip", ["netns", "add", name]);
    const ns = new Netns(name, this);
    this.namespaces.push(ns);
    ns.ip("link", "set", "lo", "up");
    return ns;
  }

  /** Creates a veth pair with one end in `a` and the other in `b`; returns the two names. */
  veth(a: Netns, b: Netns, opts: VethOptions = {}): [string, string] {
    const base = this.name();
    const an = opts.aName ?? `${base}a`;
    const bn = opts.bName ?? `${base}b`;
    for (const n of [an, bn]) if (n.length > 15) throw new Error(`netns: device name ${n} is longer than 15 characters`);
    run("ip", ["link", "add", "name", an, "netns", a.name, "type", "veth", "peer", "name", bn, "netns", b.name]);
    if (opts.mtu !== undefined) {
      a.ip("link", "set", an, "mtu", String(opts.mtu));
      b.ip("link", "set", bn, "mtu", String(opts.mtu));
    }
    if (opts.aAddr) a.ip("addr", "add", opts.aAddr, "dev", an);
    if (opts.bAddr) b.ip("addr", "add", opts.bAddr, "dev", bn);
    if (opts.up ?? true) {
      a.ip("link", "set", an, "up");
      b.ip("link", "set", bn, "up");
    }
    return [an, bn];
  }

  /** @internal */
  track(child: ChildProcess): void {
    this.children.add(child);
    child.once("exit", () => this.children.delete(child));
  }

  /** Kills the processes started here and deletes every namespace (with its devices). Idempotent. */
  cleanup(): void {
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
    this.children.clear();
    const errors: string[] = [];
    for (const ns of this.namespaces.splice(0).reverse()) {
      // Killing leftover processes first lets the namespace (and its veths) go away at once.
      try {
        const pids = run("ip", ["netns", "pids", ns.name]).split(/\s+/).filter(Boolean);
        for (const pid of pids) {
          try { process.kill(Number(pid), "SIGKILL"); } catch { /* already gone */ }
        }
      } catch { /* namespace may already be gone */ }
      try {
        run("ip", ["netns", "del", ns.name]);
      } catch (e) {
        if (!/No such file/.test((e as Error).message)) errors.push((e as Error).message);
      }
    }
    live.delete(this);
    if (errors.length) throw new Error(`netns cleanup: ${errors.join("; ")}`);
  }
}

/**
 * A new Lab whose cleanup runs at the test's teardown (when `t` is given) and, in any case,
 * when the process exits.
 */
export function netnsLab(t?: Teardown): Lab {
  const lab = new Lab();
  t?.teardown(() => lab.cleanup());
  return lab;
}
