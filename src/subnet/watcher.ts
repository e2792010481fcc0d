// Peer discovery: list the leases, then watch <prefix>/subnets from revision + 1, and hand
// the consumer (the peer set, src/peers/) a diff of the leases: added / changed / removed.
//
// flanneld's behaviour (docs/flanneld-compat.md, "Watching leases") with its data-losing quirks fixed:
//   * a PUT that is not a lease (bad key or value) is skipped with a log line naming the
//     key, once per key and reason; it never wipes the other peers (flanneld drops every peer);
//   * a key is a lease key only when it is exactly <subnets>/<a.b.c.d>-<len> (flanneld also
//     takes keys with a prefix or in deeper folders), and the first key to name a subnet holds
//     it: another key for the same subnet (an alias) neither replaces nor deletes its peer;
//   * after a compaction the re-list is reconciled including peers whose attributes
//     changed in the gap (flanneld emits nothing for those, §4.3);
//   * a renewal (PUT with the same attributes) is not reported again;
//   * a peer that switches to another backend type is removed from a vxlan node's set.
//   * when etcd's revision went back (the store was wiped, or restored from a backup), the
//     peers missing from the new listing are kept for resetGraceMs (15 s) while their owners
//     notice and put their leases back, so that forwarding does not stop in the meantime; a
//     re-list after the grace drops the ones that did not come back.
// Kept as flanneld: the own subnet is filtered out; the vxlan (host-gw) backend ignores leases
// whose BackendType is not "vxlan" ("host-gw"); the UDP backend accepts every lease (§6.7); reconnects and
// re-listings back off from 100 ms doubling to 5 s (cut short when the registry reports etcd
// reachable again), reset only by a watch answer with events or progress.

import { formatCIDR, netEqual, netKey, type IPv4Net, type NetKey } from '../net.js';
import { nullLogger, type Logger } from '../log.js';
import { Backoff } from '../backoff.js';
import { realClock, type Clock } from './clock.js';
import type { Refusal, RefusalReason } from './admission.js';
import { decodeVxlanBackendData, parseSubnetName, sameLeaseAttrs, subnetKeyName, type Lease, type LeaseAttrs, type SubnetKey, type VxlanBackendData } from './lease.js';
import { ReconnectWait, type LeaseList, type LeaseSource, type WatchEvent } from './registry.js';
import { RetryLog } from './retry-log.js';

export interface Peer {
  /** Full etcd key. */
  readonly key: string;
  readonly subnet: IPv4Net;
  readonly publicIP: number;
  readonly attrs: LeaseAttrs;
  /** Decoded VXLAN BackendData when BackendType is "vxlan" and it decodes; else null. */
  readonly vxlan: VxlanBackendData | null;
}

/** A lease the watcher refused before it became a peer (its key or value). */
export interface RefusedLease extends Refusal {
  /** The etcd key, cut to a length fit for a log line. */
  readonly key: string;
}

export interface PeerDiff {
  readonly added: Peer[];
  /** Same subnet, different attributes (PublicIP, VtepMAC...): replace the old entry. */
  readonly changed: Peer[];
  /** The last known peer (with its attributes) for each removed subnet. */
  readonly removed: Peer[];
  /**
   * Keys and values refused for the first time (each key and reason is reported once; the
   * watcher has logged them): the peer set counts them by reason.
   */
  readonly refused?: readonly RefusedLease[];
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
  | 'host-gw'
  /** WireGuard backend: only leases with BackendType "wireguard" (the backend decodes the key). */
  | 'wireguard';

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
  /**
   * The subnet a lease key names, or null for a key that is no lease key. Default: etcd's
   * layout, exactly `<registry.keys.subnets>/<a.b.c.d>-<len>` (or the dual-stack form). A
   * registry with other keys (node names, say) passes its own.
   */
  subnetOfKey?: (key: string) => SubnetKey | null;
}

/** The subnet of an etcd lease key exactly under `subnets`, or null. */
export function etcdLeaseKeySubnet(subnets: string): (key: string) => SubnetKey | null {
  return (key) => {
    const name = subnetKeyName(subnets, key);
    return name === null ? null : parseSubnetName(name);
  };
}

export const isEmptyDiff = (d: PeerDiff): boolean => d.added.length + d.changed.length + d.removed.length + (d.refused?.length ?? 0) === 0;

/** What one lease is to this node: a peer, something to ignore silently, or a bad entry. */
type LeaseClass = { peer: Peer } | { ignore: string } | { invalid: Refusal };

/** Longest piece of a key put in a log line (etcd takes keys of megabytes). */
const KEY_SHOWN = 200;
/** Refusals remembered so that each is logged once; forgotten all at once past this many. */
const REPORTED_LIMIT = 10_000;

/** A key as a log line shows it: cut, with its length, when long. */
export function shownKey(key: string): string {
  return key.length <= KEY_SHOWN ? key : `${key.slice(0, KEY_SHOWN)}... (${key.length} characters)`;
}

export class LeaseWatcher {
  private readonly registry: LeaseSource;
  private readonly own: IPv4Net | null;
  private readonly accept: PeerFilter;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly backoffInitial: number;
  private readonly backoffMax: number;
  private readonly resetGraceMs: number;
  private readonly subnetOfKey: (key: string) => SubnetKey | null;
  private readonly state = new Map<NetKey, Peer>();
  /**
   * The key that holds each subnet in etcd, whatever its value: the first seen (or, in a
   * listing, the first in key order), until it is deleted. Another key naming the same subnet
   * can neither replace its peer nor delete it.
   */
  private readonly holders = new Map<NetKey, string>();
  /** Refusals already logged, by reason, key and text. */
  private readonly reported = new Set<string>();
  /** Refusals of this batch, for the diff. */
  private refusedNow: RefusedLease[] = [];
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
    const own = opts.subnetOfKey ?? opts.registry.subnetOfKey?.bind(opts.registry);
    const subnets = opts.registry.keys?.subnets;
    if (own === undefined && subnets === undefined) throw new Error('LeaseWatcher: a lease source without etcd keys must say which subnet a key names (subnetOfKey)');
    this.subnetOfKey = own ?? etcdLeaseKeySubnet(subnets ?? '');
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
  private classify(l: Lease): LeaseClass {
    if (this.own !== null && netEqual(l.subnet, this.own)) return { ignore: 'own subnet' };
    // `null`, `{}` or a value without PublicIP decode (as in Go) to PublicIP 0.0.0.0: no peer.
    if (l.attrs.publicIP === 0) return { invalid: { reason: 'public_ip_unspecified', why: 'no PublicIP (0.0.0.0)' } };
    if (this.accept !== 'all' && l.attrs.backendType !== this.accept) {
      return { ignore: `BackendType ${JSON.stringify(l.attrs.backendType)} is not ${this.accept}` };
    }
    let vxlan: VxlanBackendData | null = null;
    if (l.attrs.backendType === 'vxlan') {
      const d = decodeVxlanBackendData(l.attrs.backendData);
      if (d.ok) vxlan = d.value;
      else if (this.accept === 'vxlan') return { invalid: { reason: 'backend_data', why: `bad VXLAN BackendData: ${d.error}` } };
    }
    return { peer: { key: l.key, subnet: l.subnet, publicIP: l.attrs.publicIP, attrs: l.attrs, vxlan } };
  }

  /** Logs a refusal the first time this key is refused for this reason and text. */
  private refuse(key: string, r: Refusal): void {
    const shown = shownKey(key);
    const id = `${r.reason} ${key.length} ${shown} ${r.why}`;
    if (this.reported.has(id)) return;
    if (this.reported.size >= REPORTED_LIMIT) this.reported.clear();
    this.reported.add(id);
    this.log.warn(`skipping bad subnet lease ${shown}: ${r.why}`);
    this.refusedNow.push({ key: shown, reason: r.reason, why: r.why });
  }

  /** The subnet a key names; any other key is refused once as bad_key. */
  private subnetOf(key: string, valueError?: string): SubnetKey | null {
    const sk = this.subnetOfKey(key);
    if (sk === null) {
      const layout = this.registry.keys?.subnets;
      // A source with keys of its own (kube mode's nodes) says why its key names no subnet.
      const why = layout !== undefined ? `: a lease key is exactly ${layout}/<a.b.c.d>-<prefix length>` : valueError !== undefined ? ` (${valueError})` : '';
      this.refuse(key, { reason: 'bad_key', why: `not a subnet key${why}` });
    }
    return sk;
  }

  /** Whether `key` holds subnet k (taking it when it is free); refuses it as an alias if not. */
  private claim(k: NetKey, key: string, reason: RefusalReason = 'alias_key'): boolean {
    const holder = this.holders.get(k);
    if (holder === undefined) this.holders.set(k, key);
    else if (holder !== key) {
      this.refuse(key, { reason, why: `${k} is held by the key ${shownKey(holder)}; a second key for the same subnet is ignored while that one exists` });
      return false;
    }
    return true;
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
    const refused = this.refusedNow;
    this.refusedNow = [];
    return { added, changed, removed, refused, cause, revision: this.rev };
  }

  private remember(before: Map<NetKey, Peer | undefined>, k: NetKey): void {
    if (!before.has(k)) before.set(k, this.state.get(k));
  }

  /** Applies a batch of watch events to the state; returns the net diff. */
  applyEvents(events: readonly WatchEvent[], revision: number): PeerDiff {
    const before = new Map<NetKey, Peer | undefined>();
    for (const ev of events) {
      const sk = this.subnetOf(ev.key, ev.type === 'invalid' ? ev.error : undefined);
      if (sk === null) continue;
      const k = netKey(sk.subnet);
      if (ev.type === 'delete') {
        // Only the key that holds the subnet takes its peer away.
        if (this.holders.get(k) !== ev.key) continue;
        this.holders.delete(k);
        this.remember(before, k);
        this.state.delete(k);
        continue;
      }
      if (!this.claim(k, ev.key)) continue;
      if (ev.type === 'invalid') {
        this.refuse(ev.key, { reason: 'bad_value', why: ev.error });
        continue;
      }
      const v = this.classify(ev.lease);
      if ('invalid' in v) {
        this.refuse(ev.key, v.invalid);
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
    // Who holds each subnet now: the holder before, if its key is still there, else the
    // first key in the listing.
    const listed = new Map<NetKey, string[]>();
    const subnets = new Map<string, NetKey>();
    for (const key of [...list.leases.map((l) => l.key), ...list.skipped.map((e) => e.key)].sort()) {
      const sk = this.subnetOf(key);
      if (sk === null) continue;
      const k = netKey(sk.subnet);
      subnets.set(key, k);
      const keys = listed.get(k);
      if (keys === undefined) listed.set(k, [key]);
      else keys.push(key);
    }
    const kept = new Map<NetKey, string>();
    for (const [k, keys] of listed) {
      const holder = this.holders.get(k);
      kept.set(k, holder !== undefined && keys.includes(holder) ? holder : keys[0]!);
    }
    if (!keepMissing) this.holders.clear();
    for (const [k, key] of kept) this.holders.set(k, key);
    for (const s of list.skipped) {
      const k = subnets.get(s.key);
      if (k === undefined || !this.claim(k, s.key)) continue;
      this.refuse(s.key, { reason: 'bad_value', why: s.error });
      // A key we know that now holds garbage: keep the last good peer rather than drop it.
      if (this.state.get(k)?.key === s.key) seen.add(k);
    }
    for (const l of list.leases) {
      const k = subnets.get(l.key);
      if (k === undefined || !this.claim(k, l.key)) continue;
      const v = this.classify(l);
      if ('invalid' in v) {
        this.refuse(l.key, v.invalid);
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
    const retries = new RetryLog(this.log, this.registry, this.clock);
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
            await deliver(d);
          }
          this.log.v(4).info(`watching subnet leases from revision ${from}`);
          const watchSignal = graceUntil > 0 ? AbortSignal.any([signal, graceEnded.signal]) : signal;
          for await (const item of this.registry.watchLeases(from, watchSignal)) {
            if (item.kind === 'compacted') {
              if (item.reason === 'compacted') retries.failed(`etcd watch of subnet leases fell behind compaction (compact rev ${item.compactRevision}), re-listing`);
              else this.log.warn(`etcd revision went back to ${item.compactRevision} (store wiped or restored?), re-listing`);
              if (item.reason === 'revision-reset') {
                graceUntil = this.clock.now() + this.resetGraceMs;
                graceEnded.abort(); // a previous grace's timer, if any, has nothing left to end
                const ended = (graceEnded = new AbortController());
                void this.clock.sleep(this.resetGraceMs, AbortSignal.any([stopTimers.signal, ended.signal])).then(() => ended.abort());
              }
              from = null;
              break;
            }
            // Only events (or a progress notification) show the watch working: a listing, or a
            // compaction answer, does not end the backoff.
            backoff.reset();
            retries.succeeded('watch of subnet leases');
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
            retries.failed(`watch of subnet leases ended; reconnecting from rev ${from} in ${d} ms`);
            await waits.sleep(d, signal);
          } else if (from === null && !signal.aborted) {
            // Re-listing after a compaction answer waits its turn too: a server that keeps
            // answering "compacted" must not get a full listing many times a second.
            await waits.sleep(backoff.next(), signal);
          }
        } catch (e) {
          if (signal.aborted) break;
          const d = backoff.next();
          retries.failed(`watch of subnet leases failed: ${(e as Error).message}; ${from === null ? 're-listing' : `reconnecting from rev ${from}`} in ${d} ms`, e);
          await waits.sleep(d, signal);
        }
      }
    } finally {
      waits.close();
      stopTimers.abort();
    }
  }
}
