// Time for the subnet code, injectable so that tests can run a 23-hour renewal schedule in
// milliseconds: `now()` and an abortable `sleep()`. ManualClock only moves when told to.

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms`, or early (without error) when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted === true) return resolve();
      const timer = setTimeout(done, Math.max(0, ms));
      function done(): void {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      }
      signal?.addEventListener('abort', done, { once: true });
    });
  },
};

interface Sleeper {
  due: number;
  seq: number;
  resolve: () => void;
}

/** A clock that stands still until advance() is called. For tests. */
export class ManualClock implements Clock {
  private t: number;
  private seq = 0;
  private sleepers: Sleeper[] = [];

  constructor(start = Date.UTC(2024, 0, 1)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted === true) return resolve();
      const s: Sleeper = {
        due: this.t + Math.max(0, ms),
        seq: this.seq++,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        this.sleepers = this.sleepers.filter((x) => x !== s);
        s.resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.sleepers.push(s);
    });
  }

  /** Number of sleeps in progress. */
  get pending(): number {
    return this.sleepers.length;
  }

  /** Durations (from now) of the sleeps in progress, soonest first. */
  pendingDelays(): number[] {
    return this.sleepers.map((s) => s.due - this.t).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, waking sleepers in order and letting their code run. */
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    for (;;) {
      await settle();
      const due = this.sleepers.filter((s) => s.due <= target).sort((a, b) => a.due - b.due || a.seq - b.seq)[0];
      if (due === undefined) break;
      this.sleepers = this.sleepers.filter((s) => s !== due);
      this.t = Math.max(this.t, due.due);
      due.resolve();
    }
    this.t = target;
    await settle();
  }

  /** Waits (in real time) until at least `n` sleeps are in progress. */
  async waitForSleepers(n = 1, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.sleepers.length < n) {
      if (Date.now() > deadline) throw new Error(`ManualClock: timed out waiting for ${n} sleeper(s), have ${this.sleepers.length}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

/** Lets pending promise continuations run. */
function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** Rejects-free helper: true if the signal is aborted. */
export function aborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}
