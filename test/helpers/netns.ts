// A lab (lab/netns.ts) for one test: its cleanup runs at the test's teardown and, in any case,
// when the process exits.
import { Lab } from '../../lab/netns.js';

/** What netnsLab needs from a tap Test: just teardown. */
export interface Teardown {
  teardown(fn: () => void | Promise<void>): void;
}

/** A new Lab whose cleanup runs at the test's teardown (when `t` is given) and on process exit. */
export function netnsLab(t?: Teardown): Lab {
  const lab = new Lab();
  t?.teardown(() => lab.cleanup());
  return lab;
}
