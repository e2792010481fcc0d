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
] as const;

export type VerdictName = (typeof VERDICTS)[number];

export const DIRECTIONS = ['egress', 'ingress'] as const;
export type Direction = (typeof DIRECTIONS)[number];
