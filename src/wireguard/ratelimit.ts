// A token bucket per source address for handshake initiations, with wireguard-go's figures: 20
// a second, bursts of 5. Each initiation that gets through costs two Diffie-Hellmans on the
// data-plane thread, so one source cannot take that thread over. The table is bounded: sources
// idle for a second are forgotten on the next expire(), and while MAX_SOURCES are tracked a new
// source is refused until room frees up.

export const INITIATIONS_PER_SECOND = 20;
export const INITIATION_BURST = 5;
/** A source whose bucket has been idle this long is full again: its entry can go. */
export const SOURCE_IDLE_MS = 1_000;
export const MAX_SOURCES = 4096;

const COST_MS = 1000 / INITIATIONS_PER_SECOND;
const MAX_TOKENS_MS = COST_MS * INITIATION_BURST;

interface Bucket { tokensMs: number; at: number }

export class SourceRateLimiter {
  private readonly buckets = new Map<number, Bucket>();

  get size(): number { return this.buckets.size; }

  /** Whether an initiation from `addr` (IPv4, host order) may be handled now; takes its token. */
  allow(addr: number, now: number): boolean {
    const b = this.buckets.get(addr);
    if (!b) {
      if (this.buckets.size >= MAX_SOURCES) return false;
      this.buckets.set(addr, { tokensMs: MAX_TOKENS_MS - COST_MS, at: now });
      return true;
    }
    b.tokensMs = Math.min(MAX_TOKENS_MS, b.tokensMs + Math.max(0, now - b.at));
    b.at = now;
    if (b.tokensMs < COST_MS) return false;
    b.tokensMs -= COST_MS;
    return true;
  }

  /** Forgets sources idle for SOURCE_IDLE_MS (their buckets would be full). */
  expire(now: number): void {
    for (const [addr, b] of this.buckets) if (now - b.at > SOURCE_IDLE_MS) this.buckets.delete(addr);
  }
}
