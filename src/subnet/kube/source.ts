// The peers' leases in kube mode: the nodes annotated kube-subnet-manager=true, read as leases
// and fed to the same LeaseWatcher and peer set as etcd mode's leases, so that admission is
// the same. A list gives the snapshot and its resource version; a watch from there turns node
// events into lease events (a node that stops being a peer, changes its pod CIDR or is deleted
// becomes a delete of its subnet); a 410 Gone becomes 'compacted', on which the watcher lists
// again; bookmarks move the resume point. Resource versions are taken as numbers, as the API
// server hands out etcd's revisions.
import { formatCIDR, netEqual, type IPv4Net } from '../../net.js';
import type { Logger } from '../../log.js';
import { RegistryError, type ConnectionStatus, type LeaseList, type LeaseSource, type SkippedEntry, type WatchEvent, type WatchItem } from '../registry.js';
import type { Lease, SubnetKey } from '../lease.js';
import { nodeLease, nodeLeaseKey, nodeLeaseKeySubnet, readablePodCIDR, type AnnotationNames, type NodeView } from './annotations.js';
import type { KubeClient } from './client.js';

/** How long one watch request lasts before it is made again (the API server's limit is similar). */
const WATCH_TIMEOUT_S = 300;

const parseRV = (rv: string): number => {
  const n = Number(rv);
  if (rv === '' || !Number.isSafeInteger(n) || n < 0) throw new RegistryError(`the API server sent a resource version linen cannot follow: ${JSON.stringify(rv)}`, 'other');
  return n;
};

export class KubeLeaseSource implements LeaseSource {
  /** The subnet each node's lease was last reported with, by node name. */
  private readonly reported = new Map<string, IPv4Net>();
  private status: ConnectionStatus = { state: 'connecting', lastError: null, since: Date.now() };
  private readonly listeners = new Set<(s: ConnectionStatus) => void>();

  constructor(
    private readonly client: Pick<KubeClient, 'listNodes' | 'watchNodes'>,
    private readonly names: AnnotationNames,
    private readonly log: Logger,
  ) {}

  /** The subnet a node lease key names (`node/<name>/<a.b.c.d>-<len>`). */
  subnetOfKey(key: string): SubnetKey | null {
    return nodeLeaseKeySubnet(key);
  }

  connection(): ConnectionStatus {
    return this.status;
  }

  onConnectionChange(listener: (s: ConnectionStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private setState(state: ConnectionStatus['state'], error: string | null = null): void {
    if (this.status.state === state) return;
    this.status = { state, lastError: error, since: Date.now() };
    for (const l of this.listeners) l(this.status);
  }

  private failed(e: unknown): never {
    this.setState('disconnected', (e as Error).message);
    throw e;
  }

  private leaseOf(node: NodeView, rv: number): { lease: Lease | null; error: string | null } {
    const r = nodeLease(this.names, node, rv);
    return r.ok ? { lease: r.value, error: null } : { lease: null, error: r.error };
  }

  async getLeases(): Promise<LeaseList> {
    let list: Awaited<ReturnType<KubeClient['listNodes']>>;
    try {
      list = await this.client.listNodes();
    } catch (e) {
      return this.failed(e);
    }
    this.setState('connected');
    const revision = parseRV(list.resourceVersion);
    const leases: Lease[] = [];
    const skipped: SkippedEntry[] = [];
    this.reported.clear();
    for (const node of list.nodes) {
      const { lease, error } = this.leaseOf(node, revision);
      if (error !== null) skipped.push({ key: nodeLeaseKey(node.name, readablePodCIDR(node)), error });
      if (lease === null) continue;
      leases.push(lease);
      this.reported.set(node.name, lease.subnet);
    }
    return { leases, skipped, revision };
  }

  /** A node event as lease events: a delete of the subnet it was reported with, a put, or both. */
  private eventsFor(type: 'ADDED' | 'MODIFIED' | 'DELETED', node: NodeView, rv: number): WatchEvent[] {
    const before = this.reported.get(node.name) ?? null;
    const out: WatchEvent[] = [];
    const { lease, error } = type === 'DELETED' ? { lease: null, error: null } : this.leaseOf(node, rv);
    // The subnet the node names now: its lease's, or (refused) its pod CIDR if readable.
    const now = lease?.subnet ?? (error !== null ? readablePodCIDR(node) : null);
    if (before !== null && (now === null || !netEqual(before, now))) {
      out.push({ type: 'delete', key: nodeLeaseKey(node.name, before), revision: rv, subnet: before });
      this.reported.delete(node.name);
      if (now !== null) this.log.info(`node ${node.name} moved from ${formatCIDR(before)} to ${formatCIDR(now)}`);
    }
    if (error !== null) out.push({ type: 'invalid', key: nodeLeaseKey(node.name, now), revision: rv, error });
    if (lease !== null) {
      out.push({ type: 'put', key: lease.key, revision: rv, lease });
      this.reported.set(node.name, lease.subnet);
    }
    return out;
  }

  async *watchLeases(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchItem> {
    const startRV = String(Math.max(0, fromRevision - 1));
    try {
      for await (const ev of this.client.watchNodes(startRV, WATCH_TIMEOUT_S, signal)) {
        this.setState('connected');
        if (ev.type === 'EXPIRED') {
          this.log.warn(`watch of nodes from resource version ${startRV} expired (${ev.message})`);
          yield { kind: 'compacted', compactRevision: 0, reason: 'compacted' };
          return;
        }
        if (ev.type === 'BOOKMARK') {
          yield { kind: 'events', revision: parseRV(ev.resourceVersion), events: [] };
          continue;
        }
        const rv = parseRV(ev.resourceVersion);
        yield { kind: 'events', revision: rv, events: this.eventsFor(ev.type, ev.node, rv) };
      }
    } catch (e) {
      if (signal.aborted) return;
      this.failed(e);
    }
  }
}
