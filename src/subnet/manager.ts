// Lease acquisition, renewal and own-key monitoring, as docs/flanneld-compat.md describes them.
//
// Acquisition follows flanneld's LocalManager.tryAcquireLease:
//   1. reuse the first lease (key order) whose PublicIP is ours, if compatible with the
//      config (re-Put with a fresh 24 h lease); an incompatible one is deleted;
//   2. else the previous subnet from subnet.env, if free and compatible;
//   3. else a random one among the first 100 free candidates from SubnetMin;
//   4. create it with Grant + Txn(Version == 0).
// Where linen does better:
//   * a lost create race (`subnet already exists`) picks another candidate and tries again,
//     up to maxAttempts, instead of exiting (flanneld's retry never fires for that error);
//   * etcd being unreachable during acquisition is retried with backoff, not fatal;
//   * keys that exist but do not parse as leases still count as taken (flanneld would pick
//     them and then lose the create txn);
//   * the previous subnet is rejected if it overlaps any lease, not only an identical one;
//   * a reused reservation (key without an etcd lease) stays a reservation.
//
// run() renews at expiration − margin (new Grant + Put), retries every minute on failure,
// and watches the own key: a DELETE (or the key found missing after a compaction) resolves
// run() with 'revoked', which the daemon acts on (flanneld logs "Lease has been revoked.
// Shutting down daemon." and exits 0).
// Unlike flanneld, a failed renewal is never retried after the lease would have expired: with
// less than two minutes left the retry comes after half the remaining time (at least 1 s),
// each call's deadline is at most half the remaining time, and a retry that is waiting goes
// at once when the registry reports that etcd is reachable again.
// Also unlike flanneld, the own key rewritten by someone else (another PublicIP or VtepMAC, or
// a value that is no lease) is put back at once (at most every reassertMinIntervalMs, 10 s, so
// that two misconfigured nodes cannot flood etcd): until then every peer routes this node's
// subnet to whatever was written there. flanneld would only rewrite it at its next renewal.

import { parseNetworkConfig, type NetworkConfig } from '../config/network.js';
import { formatCIDR, formatIPv4, netEqual, netLast, netNext, netOverlaps, netSize, prefixMask, type IPv4Net } from '../net.js';
import { nullLogger, type Logger } from '../log.js';
import { Backoff } from '../backoff.js';
import { realClock, type Clock } from './clock.js';
import { makeSubnetKey, parseSubnetKey, sameLeaseAttrs, subnetKeyName, type Lease, type LeaseAttrs } from './lease.js';
import { ReconnectWait, RegistryError, SUBNET_TTL_SECONDS, SubnetExistsError, type Registry } from './registry.js';
import { RetryLog } from './retry-log.js';

export class LeaseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseError';
  }
}

export interface AcquiredLease {
  readonly subnet: IPv4Net;
  readonly attrs: LeaseAttrs;
  /** etcd lease ID, "0" for a reservation. */
  readonly leaseId: string;
  /** Clock time (ms) at which etcd drops the key, or null for a reservation (no expiry). */
  readonly expiration: number | null;
  readonly how: 'reused' | 'previous' | 'allocated';
}

export type LeaseEvent =
  | { readonly type: 'renewed'; readonly lease: AcquiredLease }
  | { readonly type: 'renew-failed'; readonly error: string; readonly retryInMs: number }
  | { readonly type: 'expiration'; readonly expiration: number | null }
  | { readonly type: 'taken-over'; readonly attrs: LeaseAttrs }
  | { readonly type: 'revoked' };

export interface LeaseManagerOptions {
  registry: Registry;
  /** What this node publishes; attrs.publicIP is also its identity for reuse. */
  attrs: LeaseAttrs;
  /** FLANNEL_SUBNET of the previous run (masked back to the network), if any. */
  previousSubnet?: IPv4Net | null;
  /** --subnet-lease-renew-margin in ms; default 60 min. */
  renewMarginMs?: number;
  /** TTL granted for the lease; default 86400 s as flanneld. */
  leaseTTLSeconds?: number;
  /** Create attempts (each after a lost race); default 10 as flanneld's raceRetries. */
  maxAttempts?: number;
  /** Delay after a failed renewal; default 1 min. */
  renewRetryMs?: number;
  /** Candidate pool size for random choice; default 100. */
  candidates?: number;
  clock?: Clock;
  /** Uniform in [0, 1); default Math.random. */
  random?: () => number;
  log?: Logger;
  /** Called for every lease event (renewals, failures, revocation). */
  onEvent?: (e: LeaseEvent) => void;
  /** Least time between two puts of the own lease after it was rewritten; default 10 s. */
  reassertMinIntervalMs?: number;
}

const isTransient = (e: unknown): boolean => e instanceof RegistryError && (e.kind === 'unavailable' || e.kind === 'timeout');

/** Network address within [SubnetMin, SubnetMax] and the configured length (flannel's isSubnetConfigCompat). */
export function isSubnetCompatible(config: NetworkConfig, sn: IPv4Net): boolean {
  return sn.ip >= config.subnetMin && sn.ip <= config.subnetMax && sn.prefixLen === config.subnetLen;
}

/**
 * flannel's allocateSubnet walk: from SubnetMin upward in subnet-size steps while
 * candidate <= SubnetMax, skipping anything that overlaps `taken`, at most `limit` results.
 * One sweep over `taken` sorted by first address, not every candidate against every lease:
 * with the leases of a large cluster packed from SubnetMin (tens of thousands), the pairwise
 * walk took seconds.
 */
export function freeCandidates(config: NetworkConfig, taken: readonly IPv4Net[], limit = 100): IPv4Net[] {
  const ranges = taken.map((t) => {
    const first = (t.ip & prefixMask(t.prefixLen)) >>> 0;
    return { first, last: netLast({ ip: first, prefixLen: t.prefixLen }) };
  }).sort((a, b) => a.first - b.first);
  const out: IPv4Net[] = [];
  let next = 0; // ranges[0..next) start at or below the current candidate's last address
  let reach = -1; // the highest last address among them
  let sn: IPv4Net = { ip: config.subnetMin, prefixLen: config.subnetLen };
  let prev = -1;
  while (sn.ip <= config.subnetMax && sn.ip > prev && out.length < limit) {
    const last = netLast(sn);
    while (next < ranges.length && ranges[next]!.first <= last) reach = Math.max(reach, ranges[next++]!.last);
    if (reach < sn.ip) out.push(sn);
    prev = sn.ip;
    sn = netNext(sn);
  }
  return out;
}

/**
 * Reads <prefix>/config until it exists and validates, as flanneld's getConfig: on failure
 * logs `Couldn't fetch network config: <err>` and retries every second (forever, until
 * `signal` aborts, when it throws).
 */
export async function fetchNetworkConfig(
  registry: Registry,
  opts: { signal?: AbortSignal; clock?: Clock; log?: Logger; retryMs?: number } = {},
): Promise<NetworkConfig> {
  const clock = opts.clock ?? realClock;
  const log = opts.log ?? nullLogger;
  for (;;) {
    if (opts.signal?.aborted === true) throw new LeaseError('interrupted while fetching the network config');
    try {
      const config = parseNetworkConfig(await registry.getNetworkConfig());
      for (const w of config.warnings) log.warn(`network config: ${w}`);
      return config;
    } catch (e) {
      log.error(`Couldn't fetch network config: ${(e as Error).message}`);
    }
    await clock.sleep(opts.retryMs ?? 1000, opts.signal);
  }
}

export class LeaseManager {
  private readonly registry: Registry;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly ttl: number;
  private readonly margin: number;
  private readonly maxAttempts: number;
  private readonly renewRetryMs: number;
  private readonly candidates: number;
  private readonly emit: (e: LeaseEvent) => void;
  private attrs: LeaseAttrs;
  private previous: IPv4Net | null;
  private current: AcquiredLease | null = null;
  /** Wakes the renewal sleep when the expiration changes. */
  private wake: AbortController = new AbortController();
  /** A failed renewal is waiting for its retry; set retryNow to make it go at once. */
  private retryPending = false;
  private retryNow = false;
  /** When the own lease is to be put back after someone rewrote it (null: not needed). */
  private reassertAt: number | null = null;
  private lastReassert = -Infinity;
  private readonly reassertEveryMs: number;
  private readonly renewCounts = { renewed: 0, failed: 0 };

  constructor(opts: LeaseManagerOptions) {
    this.registry = opts.registry;
    this.attrs = opts.attrs;
    this.previous = opts.previousSubnet ?? null;
    this.clock = opts.clock ?? realClock;
    this.log = opts.log ?? nullLogger;
    this.random = opts.random ?? Math.random;
    this.ttl = opts.leaseTTLSeconds ?? SUBNET_TTL_SECONDS;
    this.margin = opts.renewMarginMs ?? 60 * 60_000;
    this.maxAttempts = opts.maxAttempts ?? 10;
    this.renewRetryMs = opts.renewRetryMs ?? 60_000;
    this.candidates = opts.candidates ?? 100;
    this.emit = opts.onEvent ?? (() => undefined);
    this.reassertEveryMs = opts.reassertMinIntervalMs ?? 10_000;
  }

  /** Renewals done and failed so far (for /metrics). */
  renewals(): { readonly renewed: number; readonly failed: number } {
    return { ...this.renewCounts };
  }

  /** The lease currently held (after acquire()). */
  get lease(): AcquiredLease | null {
    return this.current;
  }

  private expirationFrom(ttlSeconds: number | null): number | null {
    return ttlSeconds === null ? null : this.clock.now() + ttlSeconds * 1000;
  }

  /**
   * Acquires a subnet for this node. Throws LeaseError when the config leaves no free
   * subnet (`out of subnets`) or every attempt lost a create race.
   */
  async acquire(config: NetworkConfig, signal?: AbortSignal): Promise<AcquiredLease> {
    const backoff = new Backoff(100, 5000);
    const retries = new RetryLog(this.log, this.registry, this.clock);
    const lost: IPv4Net[] = [];
    let attempt = 0;
    while (attempt < this.maxAttempts) {
      if (signal?.aborted === true) throw new LeaseError('interrupted while acquiring a lease');
      try {
        const r = await this.tryAcquire(config, lost);
        if (r !== null) {
          this.current = r;
          this.previous = r.subnet;
          return r;
        }
        attempt++;
        backoff.reset();
      } catch (e) {
        if (e instanceof SubnetExistsError) {
          attempt++;
          lost.push(e.subnet);
          this.log.warn(`subnet ${formatCIDR(e.subnet)} was taken by another node while we created it (attempt ${attempt}/${this.maxAttempts}); picking another`);
          continue;
        }
        if (!isTransient(e)) throw e;
        const d = backoff.next();
        retries.failed(`acquiring a lease: ${(e as Error).message}; retrying in ${d} ms`, e);
        await this.clock.sleep(d, signal);
      }
    }
    throw new LeaseError(
      `failed to acquire lease: max retries reached trying to acquire a subnet (${lost.length} create race(s) lost: ${lost.map(formatCIDR).join(', ')})`,
    );
  }

  /** One pass; null means "try again" (an incompatible own lease was deleted, say). */
  private async tryAcquire(config: NetworkConfig, lost: readonly IPv4Net[]): Promise<AcquiredLease | null> {
    const list = await this.registry.getLeases();
    for (const s of list.skipped) this.log.warn(`ignoring bad subnet entry ${s.key}: ${s.error}`);
    const ip = this.attrs.publicIP;

    // Only a key exactly under <prefix>/subnets is reused: an alias key naming this node's
    // PublicIP must not pick its subnet.
    const mine = list.leases.find((l) => l.attrs.publicIP === ip && subnetKeyName(this.registry.keys.subnets, l.key) !== null);
    if (mine !== undefined) {
      if (isSubnetCompatible(config, mine.subnet) && mine.ipv6 === null) {
        const reservation = mine.leaseId === '0';
        this.log.info(`Found lease (ip: ${formatCIDR(mine.subnet)}) for current IP (${formatIPv4(ip)}), reusing${reservation ? ' (a reservation: kept without expiry)' : ''}`);
        const g = await this.registry.updateLease(mine.subnet, this.attrs, reservation ? null : this.ttl);
        return { subnet: mine.subnet, attrs: this.attrs, leaseId: g.leaseId, expiration: this.expirationFrom(g.ttlSeconds), how: 'reused' };
      }
      this.log.info(`Found lease (${formatCIDR(mine.subnet)}) for current IP (${formatIPv4(ip)}) but not compatible with current config, deleting`);
      await this.registry.deleteLease(mine.subnet);
      return null;
    }

    // Everything that holds a key counts as taken, including entries whose value is bad.
    const taken: IPv4Net[] = list.leases.map((l) => l.subnet);
    for (const s of list.skipped) {
      const k = parseSubnetKey(s.key);
      if (k !== null) taken.push(k.subnet);
    }
    taken.push(...lost);

    let pick: IPv4Net | null = null;
    let how: AcquiredLease['how'] = 'allocated';
    const prev = this.previous;
    if (prev !== null) {
      if (taken.some((t) => netOverlaps(t, prev))) {
        this.log.info(`previously leased subnet (${formatCIDR(prev)}) is in use by another node, picking a new one`);
      } else if (isSubnetCompatible(config, prev)) {
        this.log.info(`Found previously leased subnet (${formatCIDR(prev)}), reusing`);
        pick = prev;
        how = 'previous';
      } else {
        this.log.error(`Found previously leased subnet (${formatCIDR(prev)}) that is not compatible with the Etcd network config, ignoring`);
      }
    }
    if (pick === null) {
      this.log.info(`Picking subnet in range ${formatIPv4(config.subnetMin)} ... ${formatIPv4(config.subnetMax)}`);
      const free = freeCandidates(config, taken, this.candidates);
      if (free.length === 0) {
        const holds = (config.subnetMax - config.subnetMin) / netSize(config.subnetLen) + 1;
        const inRange = taken.filter((t) => t.ip <= config.subnetMax && netLast(t) >= config.subnetMin).length;
        throw new LeaseError(
          `failed to acquire lease: out of subnets: the range ${formatIPv4(config.subnetMin)} ... ${formatIPv4(config.subnetMax)} ` +
          `(SubnetMin ... SubnetMax of Network ${formatCIDR(config.network)}) holds ${holds} /${config.subnetLen} subnet(s) and all ${holds} are taken ` +
          `(${inRange} key(s) under ${this.registry.keys.subnets} in that range${lost.length > 0 ? `, ${lost.length} create race(s) lost` : ''}); ` +
          'widen the Network or SubnetMin/SubnetMax, or delete the leases of nodes that are gone',
        );
      }
      pick = free[Math.min(free.length - 1, Math.floor(this.random() * free.length))]!;
    }
    const g = await this.registry.createLease(pick, this.attrs, this.ttl);
    this.log.info(`Allocated lease (ip: ${formatCIDR(pick)}) to current node (${formatIPv4(ip)})`);
    return { subnet: pick, attrs: this.attrs, leaseId: g.leaseId, expiration: this.expirationFrom(g.ttlSeconds), how };
  }

  /** Renews now: a new Grant(ttl) and a plain Put of our attrs (flanneld's RenewLease). */
  async renew(): Promise<AcquiredLease> {
    const cur = this.current;
    if (cur === null) throw new LeaseError('no lease to renew');
    const reservation = cur.expiration === null;
    // Close to expiry, a call stuck on a dead connection must not eat the time that is left.
    const left = cur.expiration === null ? Infinity : cur.expiration - this.clock.now();
    const opts = left / 2 < 10_000 ? { timeoutMs: Math.max(1000, Math.floor(left / 2)) } : undefined;
    const g = await this.registry.updateLease(cur.subnet, this.attrs, reservation ? null : this.ttl, opts);
    const next: AcquiredLease = { ...cur, attrs: this.attrs, leaseId: g.leaseId, expiration: this.expirationFrom(g.ttlSeconds) };
    this.current = next;
    return next;
  }

  /** Changes the published attributes; they are written at the next renewal (or call renew()). */
  setAttrs(attrs: LeaseAttrs): void {
    this.attrs = attrs;
  }

  private setExpiration(exp: number | null): void {
    const cur = this.current;
    if (cur === null || cur.expiration === exp) return;
    this.current = { ...cur, expiration: exp };
    this.emit({ type: 'expiration', expiration: exp });
    this.wake.abort();
  }

  /**
   * Keeps the lease: renews before it expires and watches the own key. Resolves with
   * 'revoked' when the key is deleted (by an admin, or by etcd when the lease expired), or
   * 'stopped' when `signal` aborts.
   */
  async run(signal: AbortSignal): Promise<'revoked' | 'stopped'> {
    if (this.current === null) throw new LeaseError('run() needs acquire() first');
    const inner = new AbortController();
    const stop = AbortSignal.any([signal, inner.signal]);
    const unsubscribe = this.registry.onConnectionChange((st) => {
      if (st.state !== 'connected') return;
      if (this.retryPending) {
        this.retryNow = true;
        this.wake.abort();
      }
    });
    const waits = new ReconnectWait(this.registry, this.clock);
    try {
      const watch = this.watchOwn(stop, waits).then((r) => {
        inner.abort();
        return r;
      });
      await this.renewLoop(stop);
      const r = await watch;
      return r === 'revoked' && !signal.aborted ? 'revoked' : 'stopped';
    } finally {
      unsubscribe();
      waits.close();
    }
  }

  private async renewLoop(stop: AbortSignal): Promise<void> {
    let retryAt: number | null = null;
    while (!stop.aborted) {
      const cur = this.current!;
      let due: number | null;
      if (retryAt !== null && this.retryNow) due = this.clock.now();
      else if (retryAt !== null) due = retryAt;
      else if (cur.expiration === null) due = null;
      else due = cur.expiration - this.margin;
      if (this.reassertAt !== null) due = due === null ? this.reassertAt : Math.min(due, this.reassertAt);
      this.wake = new AbortController();
      const waitSignal = AbortSignal.any([stop, this.wake.signal]);
      if (due === null) {
        this.log.info('lease is a reservation (no expiry): nothing to renew');
        await this.clock.sleep(2 ** 31 - 1, waitSignal);
        continue;
      }
      const delay = due - this.clock.now();
      if (delay > 0) {
        this.log.v(1).info(`Waiting for ${Math.round(delay / 1000)}s to renew lease`);
        await this.clock.sleep(delay, waitSignal);
        if (stop.aborted) return;
        if (this.wake.signal.aborted) continue; // expiration changed: recompute
      }
      this.retryNow = false;
      try {
        const reasserting = this.reassertAt !== null;
        const l = await this.renew();
        retryAt = null;
        this.retryPending = false;
        if (reasserting) {
          this.reassertAt = null;
          this.lastReassert = this.clock.now();
          this.log.warn(`put the own lease ${formatCIDR(l.subnet)} back with this node's attributes`);
        }
        this.log.info(`Lease renewed, new expiration: ${l.expiration === null ? 'none' : new Date(l.expiration).toISOString()}`);
        this.renewCounts.renewed++;
        this.emit({ type: 'renewed', lease: l });
      } catch (e) {
        if (stop.aborted) return;
        const msg = (e as Error).message;
        const exp = this.current?.expiration ?? null;
        const left = exp === null ? Infinity : exp - this.clock.now();
        const retryIn = Math.min(this.renewRetryMs, Math.max(1000, Math.floor(left / 2)));
        this.log.error(`Error renewing lease (trying again in ${Math.round(retryIn / 1000)}s): ${msg}`);
        this.renewCounts.failed++;
        this.emit({ type: 'renew-failed', error: msg, retryInMs: retryIn });
        retryAt = this.clock.now() + retryIn;
        this.retryPending = true;
      }
    }
  }

  /** Own-key watch with reconnects; resolves 'revoked' on DELETE, 'stopped' on abort. */
  private async watchOwn(stop: AbortSignal, waits: ReconnectWait): Promise<'revoked' | 'stopped'> {
    const subnet = this.current!.subnet;
    const backoff = new Backoff();
    const retries = new RetryLog(this.log, this.registry, this.clock);
    let from: number | null = null;
    while (!stop.aborted) {
      try {
        if (from === null) {
          // (re)sync: read the key, as flanneld's leaseWatchReset / resyncWatchSubnet
          const g = await this.registry.getLease(subnet);
          if (g.lease === null && g.invalid === null) {
            this.log.error(`own subnet key ${makeSubnetKey(subnet)} is missing`);
            return this.revoked();
          }
          if (g.lease !== null) await this.noteOwnPut(g.lease);
          if (g.invalid !== null) {
            this.log.warn(`own subnet key ${makeSubnetKey(subnet)} holds a bad value: ${g.invalid}`);
            this.requestReassert();
          }
          from = g.revision + 1;
        }
        for await (const item of this.registry.watchLease(subnet, from, stop)) {
          if (item.kind === 'compacted') {
            retries.failed(`own lease watch lost history (${item.reason}, rev ${item.compactRevision}), re-reading`);
            from = null;
            break;
          }
          backoff.reset(); // events or progress: the watch works (a compaction answer does not say so)
          retries.succeeded('own lease watch');
          from = item.revision + 1;
          for (const ev of item.events) {
            if (ev.type === 'delete') return this.revoked();
            if (ev.type === 'put') await this.noteOwnPut(ev.lease);
            if (ev.type === 'invalid') {
              this.log.warn(`own subnet key ${ev.key} now holds a bad value: ${ev.error}`);
              this.requestReassert();
            }
          }
        }
        // An ended watch and a compaction answer (from === null: the key is read again) both wait.
        if (!stop.aborted) await waits.sleep(backoff.next(), stop);
      } catch (e) {
        if (stop.aborted) break;
        const d = backoff.next();
        retries.failed(`own lease watch failed: ${(e as Error).message}; reconnecting in ${d} ms`, e);
        await waits.sleep(d, stop);
      }
    }
    return 'stopped';
  }

  private revoked(): 'revoked' {
    this.log.error('Lease has been revoked.');
    this.emit({ type: 'revoked' });
    return 'revoked';
  }

  /** Makes the renewal loop put the own lease back soon (rate-limited). */
  private requestReassert(): void {
    if (this.reassertAt !== null) return;
    this.reassertAt = Math.max(this.clock.now(), this.lastReassert + this.reassertEveryMs);
    this.wake.abort();
  }

  /**
   * A PUT of the own key: update the expiration from its etcd lease; a takeover (someone
   * else's attributes) is put back, and its etcd lease (or none) is not adopted as ours.
   */
  private async noteOwnPut(l: Lease): Promise<void> {
    const cur = this.current!;
    if (!netEqual(l.subnet, cur.subnet)) return;
    if (!sameLeaseAttrs(l.attrs, this.attrs)) {
      this.log.warn(`own subnet ${formatCIDR(cur.subnet)} was rewritten by someone else (PublicIP ${formatIPv4(l.attrs.publicIP)}); putting it back`);
      this.emit({ type: 'taken-over', attrs: l.attrs });
      this.requestReassert();
      return;
    }
    if (l.leaseId === cur.leaseId) return;
    if (l.leaseId === '0') {
      this.current = { ...cur, leaseId: '0' };
      this.setExpiration(null);
      return;
    }
    const ttl = await this.registry.leaseTimeToLive(l.leaseId);
    this.current = { ...this.current!, leaseId: l.leaseId };
    this.setExpiration(ttl < 0 ? this.clock.now() : this.clock.now() + ttl * 1000);
  }
}
