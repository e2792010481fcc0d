// The worker thread of DebugNativeEngine: the product worker (runWorker) with two faults the
// reliability tests ask for, a start that fails before 'ready' and a crash on request.
import { workerData, isMainThread } from 'node:worker_threads';
import { runWorker } from './addon-io.js';
// Types only: the worker thread does not load the engine's modules.
import type { CrashMessage, DebugWorkerData } from './debug-engine.js';
import type { ControlMessage, WorkerData } from './protocol.js';

const CRASH: CrashMessage['type'] = 'crash';

if (isMainThread) throw new Error('dataplane/debug-worker.js runs only as a worker thread');
const data = workerData as WorkerData & DebugWorkerData;
await runWorker(data, {
  opened(w) {
    if (!data.failBeforeReady) return;
    w.close();
    throw new Error(`worker ${data.index}: start failure requested through the debug hook`);
  },
  io: (io) => ({
    tun: io.tun,
    udp: io.udp,
    wait: (timeoutMs) => io.wait(timeoutMs),
    clearControl: () => io.clearControl(),
    nextControl() {
      const msg: { type: string } | undefined = io.nextControl();
      if (msg?.type === CRASH) throw new Error(`worker ${data.index}: crash requested through the debug hook`);
      return msg as ControlMessage | undefined;
    },
  }),
});
