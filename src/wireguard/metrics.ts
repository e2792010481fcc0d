// WireGuard's part of /metrics, what `wg show` tells about a device: its public key and listening
// port, the control path's counters and, per peer (public key), its endpoint and allowed IPs, when its last handshake completed and
// the bytes carried each way.
import type { Metric } from "../metric.js";
import type { WireguardReport } from "../dataplane/engine.js";
import { WG_EVENTS } from "./events.js";

export function wireguardMetrics(report: WireguardReport | null): Metric[] {
  const out: Metric[] = report ? [{
    name: "linen_wireguard_interface_info",
    help: "This node's WireGuard public key and listening port (always 1), as wg show's interface lines.",
    type: "gauge",
    value: 1,
    labels: { public_key: report.publicKey, listen_port: String(report.listenPort) },
  }] : [];
  out.push(...WG_EVENTS.map((event) => ({
    name: "linen_wireguard_events_total",
    help: "WireGuard control-path events: handshakes sent, answered and completed, rekeys, refusals by reason, cookie replies sent and received, rate-limited initiations, keepalives, expired sessions.",
    type: "counter" as const,
    value: report?.events[event] ?? 0,
    labels: { event },
  })));
  const peers = report?.peers ?? [];
  for (const p of peers) {
    out.push({
      name: "linen_wireguard_peer_last_handshake_seconds",
      help: "Unix time of the last completed handshake with a WireGuard peer (0: none yet), with its endpoint and allowed IPs.",
      type: "gauge",
      value: Math.floor(p.lastHandshakeMs / 1000),
      labels: { public_key: p.publicKey, endpoint: p.endpoint, allowed_ips: p.allowedIps },
    });
  }
  for (const [name, help, key] of [
    ["linen_wireguard_peer_receive_bytes_total", "Bytes of the WireGuard messages received from a peer, as wg show's transfer counts them (transport messages whole, handshakes).", "rxBytes"],
    ["linen_wireguard_peer_transmit_bytes_total", "Bytes of the WireGuard messages sent to a peer, as wg show's transfer counts them (transport messages whole, handshakes).", "txBytes"],
  ] as const) {
    for (const p of peers) out.push({ name, help, type: "counter", value: p[key], labels: { public_key: p.publicKey } });
  }
  return out;
}
