// Where linen's own files are: the package root, found the same way from src/ (tsx, tests) and
// from dist/src/ (the built CLI and an installed package). A leaf: it imports nothing of linen.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Walks up from this file to the directory that holds package.json (works from src/ and dist/src/). */
export function repoRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`linen: no package.json above ${from}`);
    dir = up;
  }
}
