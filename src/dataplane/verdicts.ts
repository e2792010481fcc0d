// Names of the wasm core's verdict counters (assembly/counters.ts `PacketVerdict`), in the core's
// order: generated into abi.ts, so the shell cannot disagree with the module it loads.
import { PACKET_VERDICTS } from './abi.js';
export { PACKET_VERDICTS };

export type PacketVerdictName = (typeof PACKET_VERDICTS)[number];

export const DIRECTIONS = ['egress', 'ingress'] as const;
export type Direction = (typeof DIRECTIONS)[number];

// Verdicts that are side events, not a packet's outcome: they are counted beside the outcome
// (an ICMP error sent for a packet dropped as ttl_expired or too_big; a checksum completed on a
// packet that is then forwarded; a WireGuard packet staged while its peer's handshake runs, whose
// outcome comes when it leaves: forwarded or wg_stage_dropped), so they do not add up with the
// outcomes. /metrics exports
// them as linen_events_total{event}; every other verdict, including any verdict added later,
// is an outcome (linen_packets_total{verdict}), and the outcomes of a direction sum to the
// packets handled.
export const SIDE_EVENT_VERDICTS: ReadonlySet<PacketVerdictName> = new Set<PacketVerdictName>(['icmp_sent', 'icmp_rate_limited', 'checksum_completed', 'wg_staged']);

/** Whether a verdict is a packet's outcome (forwarded or a drop reason), not a side event. */
export const isOutcome = (v: PacketVerdictName): boolean => !SIDE_EVENT_VERDICTS.has(v);
