// The native engine with the reliability tests' fault hooks, used only when LINEN_DEBUG_HOOKS=1
// (src/node/debug.ts): its workers run debug-worker.ts, which wraps the product worker. The product
// engine and worker carry none of this.
import { NativeEngine } from './native-engine.js';

/** A control message only the debug worker knows: throw, as a worker bug would. */
export interface CrashMessage { readonly type: 'crash' }

/** What the debug worker reads from its workerData beside WorkerData. */
export interface DebugWorkerData {
  /** Throw after opening everything, before 'ready'. */
  failBeforeReady?: boolean;
}

export class DebugNativeEngine extends NativeEngine {
  /** How many more starts of each worker fail before ready. */
  private readonly failStarts = new Map<number, number>();

  protected override workerEntry(index: number): { script: string; data?: Record<string, unknown> } {
    const failing = this.failStarts.get(index) ?? 0;
    if (failing > 0) this.failStarts.set(index, failing - 1);
    const data: DebugWorkerData = failing > 0 ? { failBeforeReady: true } : {};
    return { script: 'debug-worker', data: { ...data } };
  }

  /** Makes worker `index` throw (the restart path). */
  crashWorker(index: number): void {
    this.post(index, { type: 'crash' } satisfies CrashMessage);
  }

  /** Sends worker `index` a route its core refuses (prefix length 33), so that its control
   * path throws. */
  badRouteToWorker(index: number): void {
    this.post(index, { type: 'set', route: { subnet: { ip: 0, prefixLen: 33 }, publicIP: 0 }, slot: -1 });
  }

  /** The next `count` starts of worker `index` fail before it is ready. */
  failWorkerStarts(index: number, count: number): void {
    this.failStarts.set(index, count);
  }
}
