// Peer discovery: list the leases, then watch <prefix>/subnets from revision + 1, and hand
// the consumer (the peer set, src/peers/) a diff of the leases: added / changed / removed.
//
// flanneld's behaviour (docs/flanneld-compat.md, "Watching leases") with its data-losing quirks fixed:
//   * a PUT that is not a lease (bad key or value) is skipped with a log line naming the
//     key; it never wipes the other peers (flanneld drops every peer);
//   * after a compaction the re-list is reconciled including peers whose attributes
//     changed in the gap (flanneld emits nothing for those, §4.3);
//   * a renewal (PUT with the same attributes) is not reported again;
//   * a peer that switches to another backend type is removed from a vxlan node's set.
//   * when etcd's revision went back (the store was wiped, or restored from a backup), the
//     peers missing from the new listing are kept for resetGraceMs (15 s) while their owners
//     notice and put their leases back, so that forwarding does not stop in the meantime; a
//     re-list after the grace drops the ones that did not come back.
// Kept as flanneld: the own subnet is filtered out; the vxlan (host-gw) backend ignores leases
// whose BackendType is not "vxlan" ("host-gw"); the UDP backend accepts every lease (§6.7); reconnects back
// off from 100 ms doubling to 5 s (cut short when the registry reports etcd reachable again).

import { formatCIDR, netEqual, netKey, type IPv4Net, type NetKey } from '../net.js';
import { nullLogger, type Logger } from '../log.js';
import { Backoff, realClock, type Clock } from './clock.js';
import { decodeVxlanBackendData, sameLeaseAttrs, type Lease, type LeaseAttrs, type VxlanBackendData } from './lease.js';
import { ReconnectWait, type LeaseList, type LeaseSource, type WatchEvent } from './registry.js';

export interface Peer {
  /** Full etcd key. */
  readonly key: string;
  readonly subnet: IPv4Net;
  readonly publicIP: number;
  readonly attrs: LeaseAttrs;
  /** Decoded VXLAN BackendData when BackendType is "vxlan" and it decodes; else null. */
  readonly vxlan: VxlanBackendData | null;
}

export interface PeerDiff {
  readonly added: Peer[];
  /** Same subnet, different attributes (PublicIP, VtepMAC...): replace the old entry. */
  readonly changed: Peer[];
  /** The last known peer (with its attributes) for each removed subnet. */
  readonly removed: Peer[];
  /** 'snapshot' for the first list, 'resync' after a compaction, 'events' otherwise. */
  readonly cause: 'snapshot' | 'resync' | 'events';
  /** etcd revision the peer set now reflects. */
  readonly revision: number;
}

export type PeerFilter =
  /** UDP backend: every lease is a peer, whatever its BackendType (flanneld §6.7). */
  | 'all'
  /** VXLAN backend: only leases with BackendType "vxlan" and a valid BackendData. */
  | 'vxlan'
  /** host-gw backend: only leases with BackendType "host-gw" (flanneld's RouteNetwork). */
  | 'host-gw';

export interface LeaseWatcherOptions {
  registry: LeaseSource;
  /** This node's subnet; never reported as a peer. */
  ownSubnet: IPv4Net | null;
  accept: PeerFilter;
  log?: Logger;
  clock?: Clock;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** How long peers missing after a revision reset are kept; default 15 s. */
  resetGraceMs?: number;
}

export const isEmptyDiff = (d: PeerDiff): boolean => d.added.length + d.changed.length + d.removed.length === 0;

type Verdict = { peer: Peer } | { ignore: string } | { invalid: string };

export class LeaseWatcher {
  private readonly registry: LeaseSource;
  private readonly own: IPv4Net | null;
  private readonly accept: PeerFilter;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly backoffInitial: number;
  private readonly backoffMax: number;
  private readonly resetGraceMs: number;
  private readonly state = new Map<NetKey, Peer>();
  private rev = 0;
  private readyResolve!: () => void;
  /** Resolves once the first snapshot has been delivered. */
  readonly ready: Promise<void>;

  constructor(opts: LeaseWatcherOptions) {
    this.registry = opts.registry;
    this.own = opts.ownSubnet;
    this.accept = opts.accept;
    this.log = opts.log ?? nullLogger;
    this.clock = opts.clock ?? realClock;
    this.backoffInitial = opts.backoffInitialMs ?? 100;
    this.backoffMax = opts.backoffMaxMs ?? 5000;
    this.resetGraceMs = opts.resetGraceMs ?? 15_000;
    this.ready = new Promise((r) => (this.readyResolve = r));
  }

  /**
   * The leases etcd holds now, keyed by their subnet as written (netKey: `10.5.7.0/24`, host
   * bits and all): a mirror of the store that diffs are computed against, not the routed peers.
   * Which of them get a route is the peer set's (src/peers/) decision.
   */
  peers(): ReadonlyMap<NetKey, Peer> {
    return this.state;
  }

  /** Revision the peer set reflects. */
  get revision(): number {
    return this.rev;
  }

  /** Classifies one lease: a peer, something to ignore silently, or a bad entry. */
  private verdict(l: Lease): Verdict {
    if (this.own !== null && netEqual(l.subnet, this.own)) return { ignore: 'own subnet' };
    // `null`, `{}` or a value without PublicIP decode (as in Go) to PublicIP 0.0.0.0: no peer.
    if (l.attrs.publicIP === 0) return { invalid: 'no PublicIP (0.0.0.0)' };
    if (this.accept !== 'all' && l.attrs.backendType !== this.accept) {
      return { ignore: `BackendType ${JSON.stringify(l.attrs.backendType)} is not ${this.accept}` };
    }
    let vxlan: VxlanBackendData | null = null;
    if (l.attrs.backendType === 'vxlan') {
      const d = decodeVxlanBackendData(l.attrs.backendData);
      if (d.ok) vxlan = d.value;
      else if (this.accept === 'vxlan') return { invalid: `bad VXLAN BackendData: ${d.error}` };
    }
    return { peer: { key: l.key, subnet: l.subnet, publicIP: l.attrs.publicIP, attrs: l.attrs, vxlan } };
  }

  /** Net diff between the state before a batch (`before`) and now, for the touched keys. */
  private diffFrom(before: Map<NetKey, Peer | undefined>, cause: PeerDiff['cause']): PeerDiff {
    const added: Peer[] = [];
    const changed: Peer[] = [];
    const removed: Peer[] = [];
    for (const [k, old] of before) {
      const now = this.state.get(k);
      if (old === undefined && now !== undefined) added.push(now);
      else if (old !== undefined && now === undefined) removed.push(old);
      else if (old !== undefined && now !== undefined && (!sameLeaseAttrs(old.attrs, now.attrs) || old.key !== now.key)) changed.push(now);
    }
    return { added, changed, removed, cause, revision: this.rev };
  }

  private remember(before: Map<NetKey, Peer | undefined>, k: NetKey): void {
    if (!before.has(k)) before.set(k, this.state.get(k));
  }

  /** Applies a batch of watch events to the state; returns the net diff. */
  applyEvents(events: readonly WatchEvent[], revision: number): PeerDiff {
    const before = new Map<NetKey, Peer | undefined>();
    for (const ev of events) {
      if (ev.type === 'invalid') {
        this.log.warn(`skipping bad subnet lease ${ev.key}: ${ev.error}`);
        continue;
      }
      if (ev.type === 'delete') {
        if (ev.subnet === null) continue;
        const k = netKey(ev.subnet);
        this.remember(before, k);
        this.state.delete(k);
        continue;
      }
      const k = netKey(ev.lease.subnet);
      const v = this.verdict(ev.lease);
      if ('invalid' in v) {
        this.log.warn(`skipping bad subnet lease ${ev.key}: ${v.invalid}`);
        continue;
      }
      this.remember(before, k);
      if ('ignore' in v) {
        if (this.state.has(k)) this.log.info(`subnet ${formatCIDR(ev.lease.subnet)} is no longer a peer (${v.ignore})`);
        else this.log.v(1).info(`ignoring ${ev.key}: ${v.ignore}`);
        this.state.delete(k);
      } else {
        this.state.set(k, v.peer);
      }
    }
    this.rev = revision;
    return this.diffFrom(before, 'events');
  }

  /**
   * Reconciles the state with a full listing (first snapshot or after a compaction). With
   * keepMissing, peers absent from the listing stay (after a revision reset).
   */
  applySnapshot(list: LeaseList, cause: 'snapshot' | 'resync', keepMissing = false): PeerDiff {
    const before = new Map<NetKey, Peer | undefined>();
    const seen = new Set<NetKey>();
    for (const s of list.skipped) {
      this.log.warn(`skipping bad subnet lease ${s.key}: ${s.error}`);
      // A key we know that now holds garbage: keep the last good peer rather than drop it.
      for (const [k, p] of this.state) if (p.key === s.key) seen.add(k);
    }
    for (const l of list.leases) {
      const k = netKey(l.subnet);
      const v = this.verdict(l);
      if ('invalid' in v) {
        this.log.warn(`skipping bad subnet lease ${l.key}: ${v.invalid}`);
        if (this.state.has(k)) seen.add(k);
        continue;
      }
      if ('ignore' in v) {
        this.log.v(1).info(`ignoring ${l.key}: ${v.ignore}`);
        continue;
      }
      seen.add(k);
      this.remember(before, k);
      this.state.set(k, v.peer);
    }
    for (const k of [...this.state.keys()]) {
      if (!seen.has(k) && !keepMissing) {
        this.remember(before, k);
        this.state.delete(k);
      }
    }
    this.rev = list.revision;
    return this.diffFrom(before, cause);
  }

  /**
   * Lists, delivers the snapshot, then follows the watch, calling `apply` with every
   * non-empty diff (and once with the first snapshot even if empty). Returns when `signal`
   * aborts. `apply` runs one call at a time, in order; if it throws, the error is logged.
   */
  async run(signal: AbortSignal, apply: (d: PeerDiff) => void | Promise<void>): Promise<void> {
    const backoff = new Backoff(this.backoffInitial, this.backoffMax);
    let from: number | null = null;
    let first = true;
    const waits = new ReconnectWait(this.registry, this.clock);
    // After a revision reset: until when missing peers are kept; graceEnded aborts then.
    let graceUntil = 0;
    let graceEnded = new AbortController();
    const stopTimers = new AbortController();
    const deliver = async (d: PeerDiff): Promise<void> => {
      if (!first && isEmptyDiff(d)) return;
      first = false;
      try {
        await apply(d);
      } catch (e) {
        this.log.error(`applying peer changes failed: ${(e as Error).message}`);
      }
      if (d.cause === 'snapshot') this.readyResolve();
    };
    try {
      while (!signal.aborted) {
        try {
          if (from === null) {
            const list = await this.registry.getLeases();
            const keep = this.clock.now() < graceUntil;
            if (!keep) graceUntil = 0;
            const d = this.applySnapshot(list, first ? 'snapshot' : 'resync', keep);
            if (keep) {
              const missing = [...this.state.values()].filter((p) => !list.leases.some((l) => l.key === p.key)).length;
              if (missing > 0) this.log.warn(`keeping ${missing} peer(s) missing from etcd for ${Math.round((graceUntil - this.clock.now()) / 1000)} s while their nodes put their leases back`);
            }
            from = list.revision + 1;
            backoff.reset();
            await deliver(d);
          }
          this.log.v(4).info(`watching subnet leases from revision ${from}`);
          const watchSignal = graceUntil > 0 ? AbortSignal.any([signal, graceEnded.signal]) : signal;
          for await (const item of this.registry.watchLeases(from, watchSignal)) {
            backoff.reset();
            if (item.kind === 'compacted') {
              this.log.warn(
                item.reason === 'compacted'
                  ? `etcd watch of subnet leases fell behind compaction (compact rev ${item.compactRevision}), re-listing`
                  : `etcd revision went back to ${item.compactRevision} (store wiped or restored?), re-listing`,
              );
              if (item.reason === 'revision-reset') {
                graceUntil = this.clock.now() + this.resetGraceMs;
                graceEnded.abort(); // a previous grace's timer, if any, has nothing left to end
                const ended = (graceEnded = new AbortController());
                void this.clock.sleep(this.resetGraceMs, AbortSignal.any([stopTimers.signal, ended.signal])).then(() => ended.abort());
              }
              from = null;
              break;
            }
            from = item.revision + 1;
            await deliver(this.applyEvents(item.events, item.revision));
          }
          if (graceUntil > 0 && this.clock.now() >= graceUntil && !signal.aborted) {
            // The grace is over: a full listing drops the peers that did not come back.
            graceUntil = 0;
            from = null;
            continue;
          }
          if (from !== null && !signal.aborted) {
            const d = backoff.next();
            this.log.warn(`watch of subnet leases ended; reconnecting from rev ${from} in ${d} ms`);
            await waits.sleep(d, signal);
          }
        } catch (e) {
          if (signal.aborted) break;
          const d = backoff.next();
          this.log.warn(
            `watch of subnet leases failed: ${(e as Error).message}; ${from === null ? 're-listing' : `reconnecting from rev ${from}`} in ${d} ms`,
          );
          await waits.sleep(d, signal);
        }
      }
    } finally {
      waits.close();
      stopTimers.abort();
    }
  }
}
