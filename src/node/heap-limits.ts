// V8 settings that keep linend's memory small. cli.ts imports this module first, before
// anything allocates: the settings apply to what is allocated and compiled after them.
import { setFlagsFromString } from 'node:v8';

// The young generation stays at its initial size (1 MiB semi-spaces) instead of doubling up
// to 8 MiB while modules load: linend's main thread allocates little once started, and its
// workers keep their packets in wasm memory. (README, "Memory", has what each setting here
// saves.)
setFlagsFromString('--semi-space-growth-factor=1');

/**
 * V8 flags that make an idle linend smaller without slowing its forwarding (the hot path runs
 * in wasm, and JS that runs often is still optimized):
 * - `--no-sparkplug`: no baseline tier between the interpreter and the optimizing compiler.
 *   Code that runs often is optimized all the same; start-up code stays bytecode, and the
 *   baseline compiler's code pages are never touched.
 * - `--no-short-builtin-calls`: each isolate runs V8's builtins where the node binary maps
 *   them, instead of from a copy of them mapped next to its code in every isolate.
 * The main isolate exists before any of linend's code runs, so cli.ts's first line passes
 * these to node (`#!/usr/bin/env -S node ...`, how the systemd unit starts linend). Set here
 * too, they still apply to the data-plane workers and to later compilations when linend is
 * started as `node cli.js`.
 */
export const SMALL_FOOTPRINT_V8_FLAGS = ['--no-sparkplug', '--no-short-builtin-calls'] as const;
for (const flag of SMALL_FOOTPRINT_V8_FLAGS) setFlagsFromString(flag);

/**
 * Runs load (a module import) with V8's optimizing compiler off. Loading the etcd client
 * parses its protobuf definitions, hot enough to send parser functions to TurboFan, whose
 * background compilations leave megabytes in malloc arenas and touch megabytes of compiler
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
