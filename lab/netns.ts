// Network namespaces for the lab: commands run on the host or inside a namespace, unique names,
// and the one Lab that creates namespaces, veth pairs and processes inside them and removes all
// of it together, even when a test or a benchmark run fails.
//
//   const lab = new Lab();              // cleanup also runs on process exit, SIGINT and SIGTERM
//   const a = lab.ns(), b = lab.ns();
//   const [va, vb] = lab.veth(a, b, { aAddr: "10.1.0.1/24", bAddr: "10.1.0.2/24" });
//   a.exec("ping", ["-c1", "10.1.0.2"]);
//   lab.cleanup();
//
// Everything is synchronous (execFileSync). Names start with the lab's prefix, "lb" + 5 random
// base-36 characters, so device names stay within IFNAMSIZ (15). Devices are created directly
// inside the namespaces; nothing is ever added to, or removed from, the root namespace.

import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';

// ---------------------------------------------------------------------------------------------
// Running commands

export interface ShOptions {
  /** Bytes written to stdin. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Milliseconds before the command is killed; default 30 000. */
  timeout?: number;
}

/** An error from sh(): the command line, exit status and captured output. */
export interface ShError extends Error {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command synchronously and returns its stdout; throws a ShError on failure or timeout. */
export function sh(cmd: string, args: string[], opts: ShOptions = {}): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      input: opts.input,
      env: opts.env,
      cwd: opts.cwd,
      timeout: opts.timeout ?? 30_000,
      killSignal: 'SIGKILL',
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 64 << 20,
    });
  } catch (e) {
    const err = e as Error & { stderr?: string | Buffer; stdout?: string | Buffer; status?: number | null; signal?: string | null };
    const stderr = String(err.stderr ?? '').trim();
    const stdout = String(err.stdout ?? '').trim();
    const why = err.signal ? `killed by ${err.signal}` : `status ${err.status ?? '?'}`;
    const msg = `${cmd} ${args.join(' ')} failed (${why})` + (stderr ? `: ${stderr}` : '') + (stdout ? `\nstdout: ${stdout}` : '');
    throw Object.assign(new Error(msg), { status: err.status ?? null, stdout, stderr }) as ShError;
  }
}

/** `ip -n <ns> <args>` (ns undefined: the current namespace). */
export function ipNs(ns: string | undefined, ...args: string[]): string {
  return sh('ip', ns === undefined ? args : ['-n', ns, ...args]);
}

/** Runs `cmd args` inside namespace `ns` (`ip netns exec`) and returns stdout. */
export function nsExec(ns: string, cmd: string, args: string[] = [], opts: ShOptions = {}): string {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** Sets a sysctl inside a namespace, e.g. nsSysctl(ns, 'net.ipv4.ip_forward', '1'). */
export function nsSysctl(ns: string, key: string, value: string): void {
  nsExec(ns, 'sysctl', ['-q', '-w', `${key}=${value}`]);
}

/** Sleeps synchronously (used only in cleanup paths that must stay synchronous). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A per-run id: "lb" + 5 random base-36 characters (device names then stay ≤ 15 bytes). */
export function runId(): string {
  const n = randomBytes(4).readUInt32BE(0) % 36 ** 5;
  return 'lb' + n.toString(36).padStart(5, '0');
}

/** Names of all network namespaces (`ip netns list`). */
export function listNamespaces(): string[] {
  return sh('ip', ['netns', 'list']).split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter(Boolean);
}

/** PIDs of processes inside a namespace ([] when it does not exist). */
export function namespacePids(ns: string): number[] {
  try {
    return sh('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Device names inside a namespace (undefined: the current one). */
export function listLinks(ns?: string): string[] {
  const out = ipNs(ns, '-o', 'link', 'show');
  return out.split('\n').map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1]).filter((n): n is string => !!n);
}

/** What is left of a run: namespaces and root-namespace devices whose name contains the id. */
export function leftovers(id: string): { namespaces: string[]; links: string[] } {
  return {
    namespaces: listNamespaces().filter((n) => n.includes(id)),
    links: listLinks().filter((n) => n.includes(id)),
  };
}

// ---------------------------------------------------------------------------------------------
// Cleanup on exit

const live = new Set<Lab>();
const extraHooks = new Set<() => void>();
let hooksInstalled = false;

/**
 * Registers a synchronous function to run on process exit, SIGINT and SIGTERM, before the
 * labs are cleaned up (lab/traffic.ts kills its processes this way). One signal handler
 * serves all of them; it hands the signal on afterwards.
 */
let signalsOwned = false;

/**
 * The program handles SIGINT and SIGTERM itself and exits once its own (asynchronous) teardown
 * is done: the lab still cleans up on the signal, but does not raise it again.
 */
export function ownSignals(): void {
  signalsOwned = true;
}

/**
 * For programs with an asynchronous teardown of their own (the demo, the scale run): on the
 * first SIGINT or SIGTERM prints `message`, runs `teardown` and exits 130. The lab's own
 * handlers still remove namespaces and processes at once (ownSignals()); the handler stays
 * registered, so a second Ctrl-C cannot cut the teardown short. Register it before building:
 * it runs before the lab's handlers.
 */
export function teardownOnSignal(teardown: () => Promise<void>, message: string): { readonly interrupted: boolean } {
  ownSignals();
  const state = { interrupted: false };
  const onSignal = (): void => {
    if (state.interrupted) return;
    state.interrupted = true;
    process.stdout.write(`\n${message}\n`);
    void teardown().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return state;
}

export function addCleanupHook(fn: () => void): void {
  extraHooks.add(fn);
  installHooks();
}

function cleanupAll(): void {
  for (const fn of extraHooks) {
    try { fn(); } catch (e) { process.stderr.write(`cleanup: ${(e as Error).message}\n`); }
  }
  for (const lab of [...live]) {
    if (!lab.cleanupOnExit) continue;
    try { lab.cleanup(); } catch (e) { process.stderr.write(`${(e as Error).message}\n`); }
  }
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const handler = (): void => {
      cleanupAll();
      // Hand the signal on (without our listener: the default action ends the process), unless
      // the program said it ends itself after a teardown of its own (ownSignals(): the demo);
      // raising it again would end the process under that teardown.
      process.removeListener(sig, handler);
      if (!signalsOwned) process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

// ---------------------------------------------------------------------------------------------
// The lab

export interface ExecOptions extends ShOptions {}

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

/** One namespace created by a Lab. */
export class Netns {
  constructor(readonly name: string, private readonly lab: Lab) {}

  /** `ip -n <ns> <args>`: returns stdout. */
  ip(...args: string[]): string {
    return ipNs(this.name, ...args);
  }

  /** Runs a command inside the namespace (`ip netns exec`); returns stdout, throws on failure. */
  exec(cmd: string, args: string[] = [], opts: ExecOptions = {}): string {
    return nsExec(this.name, cmd, args, opts);
  }

  /** Runs `node <script> <args>` inside the namespace with the current Node binary. */
  node(script: string, args: string[] = [], opts: ExecOptions = {}): string {
    return this.exec(process.execPath, [script, ...args], opts);
  }

  /** Like node(), but parses the last non-empty line of stdout as JSON. */
  nodeJson<T = unknown>(script: string, args: string[] = [], opts: ExecOptions = {}): T {
    const out = this.node(script, args, opts);
    const lines = out.trim().split('\n').filter((l) => l.trim() !== '');
    const last = lines[lines.length - 1];
    if (last === undefined) throw new Error(`${script} printed nothing`);
    return JSON.parse(last) as T;
  }

  /** Starts a long-running process inside the namespace; it is killed at cleanup. */
  spawn(cmd: string, args: string[] = [], opts: SpawnOptions = {}): ChildProcess {
    return this.lab.spawn(this.name, cmd, args, opts);
  }

  /** Adds an address (CIDR) to a device in this namespace and brings it up. */
  addr(dev: string, cidr: string): void {
    this.ip('addr', 'add', cidr, 'dev', dev);
    this.ip('link', 'set', dev, 'up');
  }

  /** Adds a route in this namespace, e.g. route("10.2.0.0/16", "via", "10.1.0.2"). */
  route(dst: string, ...rest: string[]): void {
    this.ip('route', 'add', dst, ...rest);
  }

  /** Sets a sysctl inside this namespace, e.g. sysctl("net.ipv4.ip_forward", "1"). */
  sysctl(key: string, value: string): void {
    nsSysctl(this.name, key, value);
  }
}

export interface LabOptions {
  /** Run cleanup() on process exit, SIGINT and SIGTERM; default true. */
  cleanupOnExit?: boolean;
}

/** A set of namespaces (and the processes started in them) that are removed together. */
export class Lab {
  /** Prefix shared by everything this lab names: "lb" + 5 random characters. */
  readonly prefix = runId();
  readonly cleanupOnExit: boolean;
  private readonly created: Netns[] = [];
  private readonly children = new Set<ChildProcess>();
  private counter = 0;
  private done = false;

  constructor(opts: LabOptions = {}) {
    this.cleanupOnExit = opts.cleanupOnExit ?? true;
    live.add(this);
    if (this.cleanupOnExit) installHooks();
  }

  /** True once cleanup() has run. */
  get cleanedUp(): boolean {
    return this.done;
  }

  /** A name unique to this lab: prefix + counter + suffix (keep suffix short: ≤ 15 in total). */
  name(suffix = ''): string {
    const n = `${this.prefix}${(this.counter++).toString(36)}${suffix}`;
    if (n.length > 15) throw new Error(`netns: name ${n} is longer than 15 characters`);
    return n;
  }

  /** Creates a namespace (default name: name()) with loopback up. */
  ns(name = this.name()): Netns {
    if (this.done) throw new Error(`lab ${this.prefix} is cleaned up`);
    sh('ip', ['netns', 'add', name]);
    const ns = new Netns(name, this);
    this.created.push(ns);
    ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /** Names of every namespace of this lab, in creation order. */
  namespaces(): string[] {
    return this.created.map((n) => n.name);
  }

  /** Creates a veth pair with one end in `a` and the other in `b`; returns the two names. */
  veth(a: Netns, b: Netns, opts: VethOptions = {}): [string, string] {
    const base = this.name();
    const an = opts.aName ?? `${base}a`;
    const bn = opts.bName ?? `${base}b`;
    for (const n of [an, bn]) if (n.length > 15) throw new Error(`netns: device name ${n} is longer than 15 characters`);
    sh('ip', ['link', 'add', 'name', an, 'netns', a.name, 'type', 'veth', 'peer', 'name', bn, 'netns', b.name]);
    if (opts.mtu !== undefined) {
      a.ip('link', 'set', an, 'mtu', String(opts.mtu));
      b.ip('link', 'set', bn, 'mtu', String(opts.mtu));
    }
    if (opts.aAddr) a.ip('addr', 'add', opts.aAddr, 'dev', an);
    if (opts.bAddr) b.ip('addr', 'add', opts.bAddr, 'dev', bn);
    if (opts.up ?? true) {
      a.ip('link', 'set', an, 'up');
      b.ip('link', 'set', bn, 'up');
    }
    return [an, bn];
  }

  /**
   * Starts a long-running process inside namespace `ns` (`ip netns exec`, which execs, so the
   * child's pid is the command's). It is killed by cleanup(). Bound its lifetime yourself.
   */
  spawn(ns: string, cmd: string, args: string[] = [], opts: SpawnOptions = {}): ChildProcess {
    if (this.done) throw new Error(`lab ${this.prefix} is cleaned up`);
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: 'pipe', ...opts });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    return child;
  }

  /** Kills the processes started here and deletes every namespace (with its devices). Idempotent, synchronous. */
  cleanup(): void {
    if (this.done) return;
    this.done = true;
    live.delete(this);
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    this.children.clear();
    const errors: string[] = [];
    const namespaces = this.created.splice(0).reverse().map((n) => n.name);
    // Processes keep a namespace (and its devices) alive after `ip netns del`: kill them first
    // and wait (briefly) until they are gone.
    for (let round = 0; round < 50; round++) {
      let any = false;
      for (const ns of namespaces) {
        for (const pid of namespacePids(ns)) {
          any = true;
          try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
        }
      }
      if (!any) break;
      sleepSync(20);
    }
    for (const ns of namespaces) {
      try {
        sh('ip', ['netns', 'del', ns]);
      } catch (e) {
        if (!/No such file|Invalid argument/.test((e as Error).message)) errors.push((e as Error).message);
      }
    }
    if (errors.length) throw new Error(`lab ${this.prefix} cleanup: ${errors.join('; ')}`);
  }
}
