// Retry spacing shared by the etcd clients (watch reconnects, lease renewals) and the data
// plane (restarting a worker that fails to start).

/** Exponential backoff: 100 ms doubling to 5 s by default (flannel's watch reconnect). */
export class Backoff {
  private current: number;
  constructor(
    private readonly initialMs = 100,
    private readonly maxMs = 5000,
  ) {
    this.current = initialMs;
  }
  /** The delay to wait now; the next one doubles (up to the cap). */
  next(): number {
    const d = this.current;
    this.current = Math.min(this.current * 2, this.maxMs);
    return d;
  }
  reset(): void {
    this.current = this.initialMs;
  }
}
