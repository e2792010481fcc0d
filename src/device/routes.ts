// Plain kernel routes to peers on a directly connected network (flannel's host-gw, and VXLAN
// DirectRouting): `<peer subnet> via <peer PublicIP> dev <external interface>` in the main
// table. As flanneld's route_network.go, the routes linend wants are checked every 10 s and any
// that went missing (someone ran `ip route del`, the interface bounced) is put back and counted.
// Unlike the data plane's routes these outlive linend, as flanneld's do: a restart does not
// interrupt the traffic they carry.
import { execFileSync } from 'node:child_process';
import type { PeerRoute } from '../peer-route.js';
import type { Metric } from '../metric.js';
import type { Logger } from '../log.js';
import { formatCIDR, formatIPv4, netKey, type NetKey } from '../net.js';

/** Runs `ip <args>` and returns its stdout; throws an Error carrying ip's message. */
export type IpCommand = (args: string[]) => string;

export const runIp: IpCommand = (args) => {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string };
    throw new Error(`ip ${args.join(' ')}: ${err.stderr?.trim() || (e as Error).message}`);
  }
};

/** What the peer set needs from the kernel side: adjacency, and routes it installs and removes. */
export interface DirectRoutes {
  /** Why traffic to `publicIP` cannot go along a plain route on the external interface, or
   * null when it can (the peer is on a directly connected network of that interface). */
  notAdjacent(publicIP: number): string | null;
  /** Adds the route, or replaces the one for the same subnet. */
  set(route: PeerRoute): void;
  remove(route: PeerRoute): void;
}

export interface KernelRoutesOptions {
  /** The external interface the routes go out of. */
  dev: string;
  log: Logger;
  /** How often the routes are checked; flanneld's 10 s. */
  checkEveryMs?: number;
  ip?: IpCommand;
}

interface IpRoute { dst?: string; gateway?: string; dev?: string; type?: string }

const routeText = (r: PeerRoute): string => `${formatCIDR(r.subnet)} via ${formatIPv4(r.publicIP)}`;

export class KernelRoutes implements DirectRoutes {
  /** The routes wanted, by subnet. */
  private readonly wanted = new Map<NetKey, PeerRoute>();
  private restored = 0;
  private failures = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly ip: IpCommand;

  constructor(private readonly o: KernelRoutesOptions) {
    this.ip = o.ip ?? runIp;
  }

  get size(): number {
    return this.wanted.size;
  }

  notAdjacent(publicIP: number): string | null {
    const addr = formatIPv4(publicIP);
    let found: IpRoute[];
    try {
      found = JSON.parse(this.ip(['-j', '-4', 'route', 'get', addr])) as IpRoute[];
    } catch (e) {
      return `no route to it (${(e as Error).message})`;
    }
    // flanneld's test (ip.DirectRouting): exactly one route, without a gateway. It must also
    // leave by the external interface, where the route to the peer's subnet will point.
    const r = found[0];
    if (found.length !== 1 || !r) return `the route lookup for ${addr} gave ${found.length} routes`;
    if (r.type === 'local') return `${addr} is an address of this host`;
    if (r.gateway !== undefined) return `it is reached through the gateway ${r.gateway}, not on a directly connected network`;
    if (r.dev !== this.o.dev) return `it is reached through ${r.dev ?? 'no interface'}, not the external interface ${this.o.dev}`;
    return null;
  }

  set(route: PeerRoute): void {
    this.wanted.set(netKey(route.subnet), route);
    try {
      this.install(route);
    } catch (e) {
      // Kept wanted: the next check tries again, as flanneld keeps it in its list.
      this.failures++;
      this.o.log.error(`adding route ${routeText(route)} dev ${this.o.dev}: ${(e as Error).message}`);
    }
  }

  remove(route: PeerRoute): void {
    const key = netKey(route.subnet);
    const had = this.wanted.get(key);
    this.wanted.delete(key);
    const r = had ?? route;
    try {
      this.ip(['route', 'del', formatCIDR(r.subnet), 'via', formatIPv4(r.publicIP), 'dev', this.o.dev]);
    } catch (e) {
      if (!/No such process|not found/i.test((e as Error).message)) this.o.log.error(`deleting route ${routeText(r)}: ${(e as Error).message}`);
    }
  }

  /** Puts back the wanted routes the kernel lacks; returns how many it put back. */
  check(): number {
    let present: IpRoute[];
    try {
      present = JSON.parse(this.ip(['-j', '-4', 'route', 'show', 'table', 'main'])) as IpRoute[];
    } catch (e) {
      this.o.log.error(`listing routes, will retry: ${(e as Error).message}`);
      return 0;
    }
    const have = new Set(present.map((r) => `${r.dst?.includes('/') ? r.dst : `${r.dst}/32`} ${r.gateway ?? ''} ${r.dev ?? ''}`));
    let n = 0;
    for (const route of this.wanted.values()) {
      if (have.has(`${formatCIDR(route.subnet)} ${formatIPv4(route.publicIP)} ${this.o.dev}`)) continue;
      try {
        this.install(route);
        n++;
        this.restored++;
        this.o.log.info(`Route recovered ${routeText(route)} dev ${this.o.dev}`);
      } catch (e) {
        this.failures++;
        this.o.log.error(`recovering route ${routeText(route)}: ${(e as Error).message}`);
      }
    }
    return n;
  }

  /** Starts the periodic check. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.check(), this.o.checkEveryMs ?? 10_000);
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
    ];
  }

  private install(route: PeerRoute): void {
    this.ip(['route', 'replace', formatCIDR(route.subnet), 'via', formatIPv4(route.publicIP), 'dev', this.o.dev]);
  }
}
