// V8 settings that keep linend's memory small. cli.ts imports this module first, before
// anything allocates: the settings apply to what is allocated and compiled after them.
import { setFlagsFromString } from 'node:v8';

// The young generation stays at its initial size (1 MiB semi-spaces) instead of doubling up
// to 8 MiB while modules load: linend's main thread allocates little once started, and its
// workers keep their packets in wasm memory. Saves some 6 MB in the main isolate alone.
setFlagsFromString('--semi-space-growth-factor=1');

/**
 * Runs load (a module import) with V8's optimizing compiler off. Loading the etcd client
 * parses its protobuf definitions, hot enough to send parser functions to TurboFan, whose
 * background compilations leave some 8 MB in malloc arenas and touch megabytes of compiler
 * code, for code that runs once. The flag is process-wide, so it is turned on again as soon
 * as the load is done: the data path (workers, the dgram engine) is optimized as before.
 */
export async function loadWithoutOptimizer<T>(load: () => Promise<T>): Promise<T> {
  setFlagsFromString('--no-opt');
  try {
    return await load();
  } finally {
    setFlagsFromString('--opt');
  }
}
