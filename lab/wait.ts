// Waiting in the lab: one poll loop for every "until this is true" (a daemon ready, a port
// listening, a route installed). Plain pauses use node:timers/promises' setTimeout.
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `what` every `everyMs` until it returns true; resolves the milliseconds it took, or
 * -1 after timeoutMs. An exception from `what` ends the wait with that exception.
 */
export async function waitFor(what: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await what()) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) return -1;
    await sleep(everyMs);
  }
}
