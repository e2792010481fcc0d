// WireGuard's part of /metrics: the control path's counters and, per peer, when its last
// handshake completed (`wg show`'s "latest handshake"; transfer counters are the per-peer
// linen_peer_* series every overlay mode has).
import type { Metric } from "../metrics/metric.js";
import type { WireguardReport } from "../dataplane/engine.js";
import { WG_EVENTS } from "./events.js";

export function wireguardMetrics(report: WireguardReport | null): Metric[] {
  const out: Metric[] = WG_EVENTS.map((event) => ({
    name: "linen_wireguard_events_total",
    help: "WireGuard control-path events: handshakes sent, answered and completed, rekeys, refusals by reason, cookie replies, keepalives, expired sessions.",
    type: "counter" as const,
    value: report?.events[event] ?? 0,
    labels: { event },
  }));
  for (const p of report?.peers ?? []) {
    out.push({
      name: "linen_wireguard_peer_last_handshake_seconds",
      help: "Unix time of the last completed handshake with a WireGuard peer (0: none yet).",
      type: "gauge",
      value: Math.floor(p.lastHandshakeMs / 1000),
      labels: { public_key: p.publicKey, endpoint: p.endpoint },
    });
  }
  return out;
}
