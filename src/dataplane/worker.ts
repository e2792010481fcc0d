// Entry of one data-plane worker thread: its own TUN queue, UDP socket(s) and wasm core
// (addon-io.ts opens them, loop.ts forwards between them).
import { workerData, isMainThread } from 'node:worker_threads';
import { runWorker } from './addon-io.js';
import type { WorkerData } from './protocol.js';

if (isMainThread) throw new Error('dataplane/worker.js runs only as a worker thread');
await runWorker(workerData as WorkerData);
