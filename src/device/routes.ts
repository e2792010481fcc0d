// Plain kernel routes to peers on a directly connected network (flannel's host-gw, and VXLAN
// DirectRouting): `<peer subnet> via <peer PublicIP> dev <external interface>` in the main
// table. As flanneld's route_network.go, the routes linend wants are checked every 10 s and any
// that went missing (someone ran `ip route del`, the interface bounced) is put back and counted.
// Unlike the data plane's routes these outlive linend, as flanneld's do: a restart does not
// interrupt the traffic they carry.
//
// Everything goes through the addon's rtnetlink calls, which run on the libuv thread pool: the
// JS thread only queues changes and reads answers, so a thousand peers arriving at once cost it
// milliseconds, and /healthz, lease renewals and watches go on meanwhile. Changes queued while a
// batch is in the kernel go out together in the next one (the last change to a subnet wins);
// the periodic check runs between batches, never beside one.
import { performance } from 'node:perf_hooks';
import type { PeerRoute } from '../peer-route.js';
import type { Metric } from '../metric.js';
import type { Logger } from '../log.js';
import { loadNative, ROUTE_OP, type NativeIO, type RouteAnswer } from '../addon/native.js';
import { formatCIDR, formatIPv4, netKey, type NetKey } from '../net.js';

/** The kernel calls the route manager makes (the addon's; unit tests give a fake kernel). */
export type RouteNetlink = Pick<NativeIO, 'routeBatch' | 'routeDump'>;

/** What the peer set needs from the kernel side: adjacency, and routes it installs and removes. */
export interface DirectRoutes {
  /** Looks up how the kernel reaches each address (one batch, off the JS thread): notAdjacent
   * answers from the last lookup, for the addresses it named. */
  lookup(publicIPs: Iterable<number>): Promise<void>;
  /** Why traffic to `publicIP` cannot go along a plain route on the external interface, or
   * null when it can (the peer is on a directly connected network of that interface). */
  notAdjacent(publicIP: number): string | null;
  /** Adds the route, or replaces the one for the same subnet (written in the next batch). */
  set(route: PeerRoute): void;
  remove(route: PeerRoute): void;
}

export interface KernelRoutesOptions {
  /** The external interface the routes go out of. */
  dev: string;
  log: Logger;
  /** How often the routes are checked; flanneld's 10 s. */
  checkEveryMs?: number;
  netlink?: RouteNetlink;
}

/** rtm_type of a route to an address of this host. */
const RTN_LOCAL = 2;
/** The kernel's answer to deleting a route that is not there. */
const ESRCH = 3;

const routeText = (r: PeerRoute): string => `${formatCIDR(r.subnet)} via ${formatIPv4(r.publicIP)}`;
/** A route's identity as the check compares it: destination, prefix length, gateway. */
const routeId = (dst: number, prefixLen: number, gateway: number): string => `${dst >>> 0}/${prefixLen}/${gateway >>> 0}`;

interface Change { op: 'replace' | 'delete'; route: PeerRoute }

export class KernelRoutes implements DirectRoutes {
  /** The routes wanted, by subnet. */
  private readonly wanted = new Map<NetKey, PeerRoute>();
  /** Changes not yet sent to the kernel, by subnet. */
  private readonly pending = new Map<NetKey, Change>();
  /** What the kernel took last, by subnet: a delete names the gateway the kernel has. */
  private readonly written = new Map<NetKey, PeerRoute>();
  /** The last lookup's answer for each of its PublicIPs: why it is not adjacent, or null (see notAdjacent). */
  private readonly adjacency = new Map<number, string | null>();
  /** The batches and checks, one after another. */
  private queue: Promise<void> = Promise.resolve();
  private flushQueued = false;
  private checking = false;
  private restored = 0;
  private failures = 0;
  private lastCheckSeconds = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly netlink: RouteNetlink;

  /** Loads the addon unless given `netlink`: a node that cannot program routes fails at start. */
  constructor(private readonly o: KernelRoutesOptions) {
    this.netlink = o.netlink ?? loadNative();
  }

  get size(): number {
    return this.wanted.size;
  }

  /** Main-thread time the last periodic check took (the dump and writes run off it). */
  get lastCheckMainThreadSeconds(): number {
    return this.lastCheckSeconds;
  }

  async lookup(publicIPs: Iterable<number>): Promise<void> {
    const ips = [...new Set([...publicIPs].map((ip) => ip >>> 0))];
    // Only the last lookup's addresses are kept: the peer set asks for every one a diff needs.
    this.adjacency.clear();
    if (ips.length === 0) return;
    const ops = new Uint32Array(ips.length * 4);
    ips.forEach((ip, i) => ops.set([ROUTE_OP.get, ip, 32, 0], i * 4));
    let answers: RouteAnswer[];
    try {
      answers = await this.netlink.routeBatch(this.o.dev, ops);
    } catch (e) {
      for (const ip of ips) this.adjacency.set(ip, `the route lookup failed (${(e as Error).message})`);
      return;
    }
    ips.forEach((ip, i) => this.adjacency.set(ip, this.whyNotAdjacent(ip, answers[i])));
  }

  notAdjacent(publicIP: number): string | null {
    const v = this.adjacency.get(publicIP >>> 0);
    return v === undefined ? `its route was not looked up` : v;
  }

  set(route: PeerRoute): void {
    const k = netKey(route.subnet);
    this.wanted.set(k, route);
    this.enqueue(k, { op: 'replace', route });
  }

  remove(route: PeerRoute): void {
    const k = netKey(route.subnet);
    const had = this.wanted.get(k);
    this.wanted.delete(k);
    this.enqueue(k, { op: 'delete', route: had ?? route });
  }

  /** Resolves once every change made so far is in the kernel (or was refused and counted). */
  async settled(): Promise<void> {
    let q: Promise<void>;
    do {
      q = this.queue;
      await q;
    } while (q !== this.queue || this.pending.size > 0);
  }

  /** Puts back the wanted routes the kernel lacks; resolves to how many it put back. */
  check(): Promise<number> {
    const run = this.queue.then(() => this.checkNow());
    this.queue = run.then(() => undefined, () => undefined);
    return run;
  }

  /** Starts the periodic check. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.checking) return; // the last one still waits for the kernel
      this.checking = true;
      void this.check().finally(() => { this.checking = false; });
    }, this.o.checkEveryMs ?? 10_000);
    this.timer.unref();
  }

  /** Stops checking; the routes stay (see the top of this file). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  metrics(): Metric[] {
    return [
      { name: 'linen_direct_routes', help: 'Kernel routes to peers on a directly connected network (host-gw, DirectRouting).', type: 'gauge', value: this.wanted.size },
      { name: 'linen_routes_restored_total', help: 'Direct routes found missing by the periodic check and put back.', type: 'counter', value: this.restored },
      { name: 'linen_route_errors_total', help: 'Direct routes the kernel refused to add or put back.', type: 'counter', value: this.failures },
      { name: 'linen_route_check_seconds', help: 'Main-thread time of the last periodic check of the direct routes (the kernel dump and writes run off that thread).', type: 'gauge', value: this.lastCheckSeconds },
    ];
  }

  // flanneld's test (ip.DirectRouting): the kernel's route to the address has no gateway. It
  // must also leave by the external interface, where the route to the peer's subnet will point.
  private whyNotAdjacent(ip: number, a: RouteAnswer | undefined): string | null {
    const addr = formatIPv4(ip);
    if (!a) return `the route lookup for ${addr} gave no answer`;
    if (a.errno !== 0) return `no route to it (${a.error})`;
    if (a.type === RTN_LOCAL) return `${addr} is an address of this host`;
    if (a.gateway !== undefined) return `it is reached through the gateway ${formatIPv4(a.gateway)}, not on a directly connected network`;
    if (a.dev !== this.o.dev) return `it is reached through ${a.dev || 'no interface'}, not the external interface ${this.o.dev}`;
    return null;
  }

  private enqueue(k: NetKey, c: Change): void {
    this.pending.set(k, c);
    if (this.flushQueued) return;
    this.flushQueued = true;
    // Runs after the current synchronous work (a whole diff of leases), so that goes out as one batch.
    this.queue = this.queue.then(() => this.flush()).catch((e: unknown) => this.o.log.error(`writing routes: ${(e as Error).message}`));
  }

  private async flush(): Promise<void> {
    this.flushQueued = false;
    const changes = [...this.pending].map(([k, c]): Change => (c.op === 'delete' ? { op: c.op, route: this.written.get(k) ?? c.route } : c));
    this.pending.clear();
    if (changes.length === 0) return;
    const ops = new Uint32Array(changes.length * 4);
    changes.forEach((c, i) => ops.set([ROUTE_OP[c.op], c.route.subnet.ip, c.route.subnet.prefixLen, c.route.publicIP], i * 4));
    const answers = await this.write(ops, changes.length);
    changes.forEach((c, i) => {
      const a = answers[i]!;
      const k = netKey(c.route.subnet);
      if (c.op === 'delete' && (a.errno === 0 || a.errno === ESRCH)) this.written.delete(k);
      if (a.errno === 0) {
        if (c.op === 'replace') this.written.set(k, c.route);
        return;
      }
      if (c.op === 'replace') {
        // Kept wanted: the next check tries again, as flanneld keeps it in its list.
        this.failures++;
        this.o.log.error(`adding route ${routeText(c.route)} dev ${this.o.dev}: ${a.error}`);
      } else if (a.errno !== ESRCH) {
        this.o.log.error(`deleting route ${routeText(c.route)}: ${a.error}`);
      }
    });
  }

  /** Sends a batch; a batch that fails as a whole answers each request with that failure. */
  private async write(ops: Uint32Array, n: number): Promise<RouteAnswer[]> {
    try {
      return await this.netlink.routeBatch(this.o.dev, ops);
    } catch (e) {
      const a: RouteAnswer = { errno: (e as { errno?: number }).errno || -1, error: (e as Error).message };
      return Array.from({ length: n }, () => a);
    }
  }

  private async checkNow(): Promise<number> {
    let busy = 0;
    let t = performance.now();
    let rows: Uint32Array;
    try {
      const dump = this.netlink.routeDump(this.o.dev);
      busy += performance.now() - t;
      rows = await dump;
    } catch (e) {
      this.o.log.error(`listing routes, will retry: ${(e as Error).message}`);
      return 0;
    }
    t = performance.now();
    const have = new Set<string>();
    for (let i = 0; i + 2 < rows.length; i += 3) have.add(routeId(rows[i]!, rows[i + 1]!, rows[i + 2]!));
    // A route with a change still queued is left to that change.
    const missing = [...this.wanted].filter(([k, r]) => !this.pending.has(k) && !have.has(routeId(r.subnet.ip, r.subnet.prefixLen, r.publicIP))).map(([, r]) => r);
    let n = 0;
    if (missing.length > 0) {
      const ops = new Uint32Array(missing.length * 4);
      missing.forEach((r, i) => ops.set([ROUTE_OP.replace, r.subnet.ip, r.subnet.prefixLen, r.publicIP], i * 4));
      const written = this.write(ops, missing.length);
      busy += performance.now() - t;
      const answers = await written;
      t = performance.now();
      missing.forEach((route, i) => {
        const a = answers[i]!;
        if (a.errno === 0) {
          this.written.set(netKey(route.subnet), route);
          n++;
          this.restored++;
          this.o.log.info(`Route recovered ${routeText(route)} dev ${this.o.dev}`);
        } else {
          this.failures++;
          this.o.log.error(`recovering route ${routeText(route)}: ${a.error}`);
        }
      });
    }
    busy += performance.now() - t;
    this.lastCheckSeconds = busy / 1000;
    return n;
  }
}
