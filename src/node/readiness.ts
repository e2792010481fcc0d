// Whether linend is ready (/readyz): started up, and every data-plane worker running. A worker
// that died, or keeps failing to start again, makes it not ready until it runs again.
import type { EngineEvents } from '../dataplane/engine.js';
import type { HealthServer } from './http.js';
import type { Metric } from '../metric.js';
import type { Logger } from '../log.js';

/**
 * /readyz: ready once started up, and not while a data-plane worker is down (dead, or failing
 * to start again); linen_worker_errors_total counts control messages a worker could not apply.
 */
export class Readiness {
  private started = false;
  private readonly down = new Set<number>();
  private workerErrors = 0;
  private health: Pick<HealthServer, 'setReady'> | null = null;
  constructor(private readonly log: Logger) {}
  /** Where readiness is reported (none without a health server). */
  report(health: Pick<HealthServer, 'setReady'> | null): void { this.health = health; this.update(); }
  /** Start-up is done. */
  up(): void { this.started = true; this.update(); }
  /** The data plane's worker events: logged, and a worker down makes linend not ready. */
  readonly events: Required<EngineEvents> = {
    workerRestart: (i: number, why: string): void => { this.log.warn(`data-plane worker ${i} died (${why}); restarted`); this.down.add(i); this.update(); },
    workerRestarted: (i: number): void => { this.log.info(`data-plane worker ${i} is running again`); this.down.delete(i); this.update(); },
    workerStartFailed: (i: number, why: string, retryMs: number): void => { this.log.error(`data-plane worker ${i} failed to start (${why}); retrying in ${retryMs} ms`); },
    workerError: (i: number, why: string): void => { this.workerErrors++; this.log.error(`data-plane worker ${i}: ${why}; the worker carries on`); },
  };
  metrics(): Metric[] {
    return [{ name: 'linen_worker_errors_total', help: 'Control messages (route changes) a data-plane worker could not apply.', type: 'counter', value: this.workerErrors }];
  }
  private update(): void { this.health?.setReady(this.started && this.down.size === 0); }
}

