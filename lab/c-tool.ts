// The lab's C tools (lab/<name>.c: tcp-rr, ref-forwarder) are compiled on first use into
// dist/lab/<name>, and again whenever one of its sources is newer than the binary. A tool's
// sources are lab/<name>.c and any lab/<name>-*.c beside it; its headers lab/<name>*.h.
import { existsSync, mkdirSync, readdirSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { repoRoot } from '../src/paths.js';
import { sh } from './netns.js';

/** Path of the compiled lab/<name>.c (compiled now when missing or older than a source). */
export function labToolBinary(name: string): string {
  const root = repoRoot();
  const lab = join(root, 'lab');
  const files = readdirSync(lab).filter((f) => f === `${name}.c` || (f.startsWith(`${name}-`) && f.endsWith('.c')) || (f.startsWith(name) && f.endsWith('.h')));
  const sources = files.filter((f) => f.endsWith('.c')).map((f) => join(lab, f));
  const dir = join(root, 'dist', 'lab');
  const bin = join(dir, name);
  if (existsSync(bin) && files.every((f) => statSync(bin).mtimeMs >= statSync(join(lab, f)).mtimeMs)) return bin;
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  sh('cc', ['-O2', '-Wall', '-o', tmp, ...sources], { timeout: 60_000 });
  renameSync(tmp, bin);
  return bin;
}
