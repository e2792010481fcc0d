// The names of what the WireGuard control path counts, apart from the control path itself so
// that /metrics can list them without loading the protocol and its cryptography in other modes.
/** What the control path counts (exported as metrics). */
export const WG_EVENTS = [
  "handshake_initiations_sent", "handshake_responses_sent", "handshakes_completed", "rekeys",
  "handshake_bad_mac", "handshake_unknown_peer", "handshake_decrypt_failed", "handshake_replayed",
  "handshake_unknown_index", "cookie_replies_received", "keepalives_sent", "sessions_expired",
  "handshake_attempts_given_up", "cookie_replies_sent", "handshake_rate_limited",
] as const;
export type WgEvent = (typeof WG_EVENTS)[number];
