// The log of a retry loop (the lease watch, the own-lease watch, the lease acquisition): a
// failure is a warning the first time, not at every retry. While the registry reports etcd
// lost (it logged that once, and logs its return), a connection failure of the loop is a
// -v=1 line; any other failure that repeats the last warning (the same text but for numbers)
// within REPEAT_LOG_MS is too. When the loop works again after more than one failure, one
// line says how many there were.
import type { Logger } from '../log.js';
import type { Clock } from './clock.js';
import { RegistryError, type Registry } from './registry.js';

/** How long a repeated failure stays quiet before it is a warning again. */
export const REPEAT_LOG_MS = 60_000;

export class RetryLog {
  private failures = 0;
  private quiet = 0;
  private lastText = '';
  private lastAt = -Infinity;

  constructor(
    private readonly log: Logger,
    private readonly registry: Pick<Registry, 'connection'>,
    private readonly clock: Clock,
  ) {}

  /** A failed attempt: `line` says what failed and when the loop tries again. */
  failed(line: string, error: unknown = null): void {
    this.failures++;
    const lost = error instanceof RegistryError && (error.kind === 'unavailable' || error.kind === 'timeout') && this.registry.connection().state === 'disconnected';
    const text = line.replace(/\d+/g, '#');
    const now = this.clock.now();
    if (lost || (text === this.lastText && now - this.lastAt < REPEAT_LOG_MS)) {
      this.quiet++;
      this.log.v(1).info(line);
      return;
    }
    this.log.warn(this.quiet > 0 ? `${line} (${this.quiet} more failure(s) since the last warning, shown with -v=1)` : line);
    this.lastText = text;
    this.lastAt = now;
    this.quiet = 0;
  }

  /** The loop works again (`what`: e.g. "watch of subnet leases"). */
  succeeded(what: string): void {
    if (this.failures === 0) return;
    if (this.failures > 1 || this.quiet > 0) this.log.info(`${what} works again after ${this.failures} failed attempt(s)`);
    this.failures = 0;
    this.quiet = 0;
    this.lastText = '';
    this.lastAt = -Infinity;
  }
}
