// The lab's C tools (lab/<name>.c: tcp-rr, ref-forwarder) are compiled on first use into
// dist/lab/<name>, and again whenever the source is newer than the binary.
import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { repoRoot } from '../src/paths.js';
import { sh } from './netns.js';

/** Path of the compiled lab/<name>.c (compiled now when missing or older than its source). */
export function labToolBinary(name: string): string {
  const root = repoRoot();
  const src = join(root, 'lab', `${name}.c`);
  const dir = join(root, 'dist', 'lab');
  const bin = join(dir, name);
  if (existsSync(bin) && statSync(bin).mtimeMs >= statSync(src).mtimeMs) return bin;
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  sh('cc', ['-O2', '-Wall', '-o', tmp, src], { timeout: 60_000 });
  renameSync(tmp, bin);
  return bin;
}
