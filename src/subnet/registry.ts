// The subnet registry: what linen needs from etcd, shaped like flannel's pkg/subnet/etcd
// Registry (getNetworkConfig, getSubnets, createSubnet, updateSubnet, deleteSubnet,
// watchSubnets, watchSubnet), plus connection-state reporting.
//
// Implementations: EtcdRegistry (src/subnet/etcd.ts). Tests may wrap one to inject faults.

import type { IPv4Net } from '../net.js';
import type { Lease, LeaseAttrs, SubnetKey } from './lease.js';
import type { Clock } from './clock.js';

/** flannel's own text for a missing <prefix>/config (§1.5). */
export const CONFIG_NOT_FOUND = 'flannel config not found in etcd store. Did you create your config using etcdv3 API?';
/** flannel's text for a lost create race (§1.4). */
export const SUBNET_EXISTS = 'subnet already exists';
/** Lease TTL flannel grants: 24 h. */
export const SUBNET_TTL_SECONDS = 86400;

export type RegistryErrorKind = 'unavailable' | 'timeout' | 'auth' | 'permission' | 'config-not-found' | 'subnet-exists' | 'other';

export class RegistryError extends Error {
  constructor(
    message: string,
    readonly kind: RegistryErrorKind,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** The config key does not exist (or was written through the v2 API only). */
export class ConfigNotFoundError extends RegistryError {
  constructor() {
    super(CONFIG_NOT_FOUND, 'config-not-found');
    this.name = 'ConfigNotFoundError';
  }
}

/** The create txn's `Version(key) == 0` compare failed: someone holds that subnet. */
export class SubnetExistsError extends RegistryError {
  constructor(readonly subnet: IPv4Net) {
    super(SUBNET_EXISTS, 'subnet-exists');
    this.name = 'SubnetExistsError';
  }
}

/** A key under <prefix>/subnets that could not be read as a lease. */
export interface SkippedEntry {
  readonly key: string;
  readonly error: string;
}

export interface LeaseList {
  /** Valid leases in etcd key order (lexicographic). */
  readonly leases: Lease[];
  /** Entries that are not leases (bad key or value); flanneld skips these too. */
  readonly skipped: SkippedEntry[];
  /** etcd revision of the snapshot; watch from revision + 1. */
  readonly revision: number;
}

export interface LeaseGrant {
  /** etcd lease ID (decimal), "0" when written without a lease. */
  readonly leaseId: string;
  /** Granted TTL in seconds, or null when written without a lease (a reservation). */
  readonly ttlSeconds: number | null;
  /** Revision of the write. */
  readonly revision: number;
}

export type WatchEvent =
  | { readonly type: 'put'; readonly key: string; readonly revision: number; readonly lease: Lease }
  /** A PUT whose key or value is not a lease; consumers log and skip it. */
  | { readonly type: 'invalid'; readonly key: string; readonly revision: number; readonly error: string }
  /** A DELETE (explicit or lease expiry); subnet is null when the key is not a subnet key. */
  | { readonly type: 'delete'; readonly key: string; readonly revision: number; readonly subnet: IPv4Net | null };

export type WatchItem =
  /** A batch of events (possibly empty: a progress notification). Resume from revision + 1. */
  | { readonly kind: 'events'; readonly revision: number; readonly events: WatchEvent[] }
  /**
   * History is lost: the start revision has been compacted away ('compacted'), or etcd's
   * revision is now below it because the store was wiped or restored from an older
   * snapshot ('revision-reset'; compactRevision is then etcd's current revision). The
   * stream ends after this item; the consumer must re-list and watch from the new revision.
   */
  | { readonly kind: 'compacted'; readonly compactRevision: number; readonly reason: 'compacted' | 'revision-reset' };

export type ConnectionState = 'connecting' | 'connected' | 'disconnected';

export interface ConnectionStatus {
  readonly state: ConnectionState;
  /** The last error that caused 'disconnected', if any. */
  readonly lastError: string | null;
  /** Date.now() of the last change. */
  readonly since: number;
}

export interface Registry {
  /** Raw text of <prefix>/config; rejects with ConfigNotFoundError when missing. */
  getNetworkConfig(): Promise<string>;
  /** All leases under <prefix>/subnets with the snapshot revision. */
  getLeases(): Promise<LeaseList>;
  /**
   * One lease by subnet. `lease` is null when the key is missing; `invalid` is set when
   * the key exists but its value is not a lease.
   */
  getLease(subnet: IPv4Net): Promise<{ lease: Lease | null; invalid: string | null; revision: number }>;
  /** Grant(ttl) + Txn(If Version(key)==0 Then Put(key, attrs, lease)); SubnetExistsError if taken. */
  createLease(subnet: IPv4Net, attrs: LeaseAttrs, ttlSeconds: number): Promise<LeaseGrant>;
  /**
   * Grant(ttl) + plain Put (no compare). ttlSeconds null writes the key without a lease.
   * opts.timeoutMs bounds each of the calls (renewals near expiry must not wait long).
   */
  updateLease(subnet: IPv4Net, attrs: LeaseAttrs, ttlSeconds: number | null, opts?: { timeoutMs?: number }): Promise<LeaseGrant>;
  /** Plain Delete of the subnet key. */
  deleteLease(subnet: IPv4Net): Promise<void>;
  /** Remaining TTL of an etcd lease in seconds; -1 when the lease does not exist (or id "0"). */
  leaseTimeToLive(leaseId: string): Promise<number>;
  /**
   * Watches <prefix>/subnets (prefix, no trailing slash, as flanneld) from a revision.
   * Yields batches until `signal` aborts (then returns) or the stream fails (then throws a
   * RegistryError; the caller backs off and watches again from its resume revision).
   * After a 'compacted' item the iterator ends.
   */
  watchLeases(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchItem>;
  /** The same for exactly one subnet key (linen does not use flanneld's prefix match here). */
  watchLease(subnet: IPv4Net, fromRevision: number, signal: AbortSignal): AsyncIterable<WatchItem>;
  /** Current connection state and a subscription to changes (returns an unsubscribe). */
  connection(): ConnectionStatus;
  onConnectionChange(listener: (s: ConnectionStatus) => void): () => void;
  /** The key layout in use (for logs and tests). */
  readonly keys: { readonly config: string; readonly subnets: string; subnet(sn: IPv4Net): string };
  close(): Promise<void>;
}

/**
 * What the lease watcher reads: the etcd registry (its keys name their subnets in etcd's layout),
 * or the nodes in kube mode (src/subnet/kube/), whose lease keys are its own and which says
 * which subnet a key names.
 */
export type LeaseSource = Pick<Registry, 'getLeases' | 'watchLeases' | 'connection' | 'onConnectionChange'> & {
  readonly keys?: Registry['keys'];
  subnetOfKey?(key: string): SubnetKey | null;
};

/**
 * Reconnect backoff sleeps that end early when the registry reports etcd reachable again, so
 * a watch or renewal loop does not sit out the rest of a long backoff. A reconnect from before
 * a sleep began does not cut that sleep short.
 */
export class ReconnectWait {
  private reconnected = new AbortController();
  private readonly unsubscribe: () => void;

  constructor(registry: Pick<Registry, 'onConnectionChange'>, private readonly clock: Clock) {
    this.unsubscribe = registry.onConnectionChange((st) => {
      if (st.state === 'connected') this.reconnected.abort();
    });
  }

  async sleep(ms: number, stop: AbortSignal): Promise<void> {
    if (this.reconnected.signal.aborted) this.reconnected = new AbortController();
    await this.clock.sleep(ms, AbortSignal.any([stop, this.reconnected.signal]));
  }

  close(): void {
    this.unsubscribe();
  }
}
