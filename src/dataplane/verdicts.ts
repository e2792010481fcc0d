// Names of the wasm core's verdict counters, in the order of assembly/counters.ts `Verdict`.
// The core exports VERDICT_COUNT; loadCore() refuses a module whose count differs from this list.
export const VERDICTS = [
  'forwarded',
  'no_route',
  'ttl_expired',
  'malformed',
  'spoofed',
  'wrong_vni',
  'too_big',
  'bad_vxlan_flags',
  'wrong_mac',
  'not_ipv4',
  'icmp_sent',
  'icmp_rate_limited',
  'no_room',
  'unsupported',
  // not a drop: a peer's partial (offload) TCP/UDP checksum completed before the TUN write
  'checksum_completed',
  // ingress: the inner destination is not in this node's subnet (a peer may only deliver here)
  'foreign_destination',
  // ingress, UDP mode: the datagram did not come from the flannel port every node sends from
  'wrong_source_port',
] as const;

export type VerdictName = (typeof VERDICTS)[number];

export const DIRECTIONS = ['egress', 'ingress'] as const;
export type Direction = (typeof DIRECTIONS)[number];

// Verdicts that are side events, not a packet's outcome: they are counted beside the outcome
// (an ICMP error sent for a packet dropped as ttl_expired or too_big; a checksum completed on a
// packet that is then forwarded), so they do not add up with the outcomes. /metrics exports
// them as linen_events_total{event}; every other verdict, including any verdict added later,
// is an outcome (linen_packets_total{verdict}), and the outcomes of a direction sum to the
// packets handled.
export const SIDE_EVENT_VERDICTS: ReadonlySet<VerdictName> = new Set<VerdictName>(['icmp_sent', 'icmp_rate_limited', 'checksum_completed']);

/** Whether a verdict is a packet's outcome (forwarded or a drop reason), not a side event. */
export const isOutcome = (v: VerdictName): boolean => !SIDE_EVENT_VERDICTS.has(v);
