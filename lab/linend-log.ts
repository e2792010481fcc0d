// linend's log (klog lines on stderr, as ClusterNode.log() holds it) read for what it says
// happened and when: a line's time, when the node routed a given number of peers, when it
// dropped one, and the subnet create races it lost on the way to a lease. Each line is written
// right after the event, stamped by linend's own clock (the machine's), with microseconds: finer
// than any poll of /metrics.
// The texts matched here are linend's (src/peers/peer-set.ts, src/subnet/manager.ts).

/** Time (ms since the epoch) of a klog line's header, e.g. `I1121 02:51:22.111000 ...`. */
export function logTime(line: string): number | null {
  const m = /^[IWE](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})/.exec(line);
  if (!m) return null;
  const [mo, d, h, mi, se, us] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  return new Date(new Date().getFullYear(), mo - 1, d, h, mi, se).getTime() + us / 1000;
}

const PEER_ADDED = /\] Peer (\d+\.\d+\.\d+\.\d+\/\d+) via /;
const PEER_REMOVED = /\] Peer (\d+\.\d+\.\d+\.\d+\/\d+) removed$/;

/**
 * When the node first routed `count` peers at once (a peer counts from its "Peer … via" line
 * until its "Peer … removed" line), or null when it has not yet.
 */
export function routedCountAt(log: string, count: number): number | null {
  const routed = new Set<string>();
  for (const line of log.split('\n')) {
    const added = PEER_ADDED.exec(line);
    const removed = added ? null : PEER_REMOVED.exec(line);
    if (added) routed.add(added[1]!);
    else if (removed) routed.delete(removed[1]!);
    else continue;
    if (routed.size >= count) return logTime(line);
  }
  return null;
}

/** When the node last dropped its route to `subnet` (e.g. 10.5.3.0/24), or null. */
export function peerRemovedAt(log: string, subnet: string): number | null {
  let at: number | null = null;
  for (const line of log.split('\n')) {
    const m = PEER_REMOVED.exec(line);
    if (m && m[1] === subnet) at = logTime(line);
  }
  return at;
}

export interface LeaseRaces {
  /** Subnet creates that another node won first ("was taken by another node while we created it"). */
  lost: number;
  /** The node gave up: every attempt lost ("max retries reached trying to acquire a subnet"). */
  gaveUp: boolean;
}

export function leaseRaces(log: string): LeaseRaces {
  return {
    lost: log.match(/was taken by another node while we created it/g)?.length ?? 0,
    gaveUp: log.includes('max retries reached trying to acquire a subnet'),
  };
}
