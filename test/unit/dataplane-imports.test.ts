// Imports point one way between the data plane and WireGuard: src/wireguard/ builds on the
// core, the addon and the worker loop (its stage implements the loop's WireguardStage), so
// nothing in src/dataplane/ may import from src/wireguard/, not even a type or a lazy import.
// A worker loads WireGuard's stage by the URL in its options instead.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../src/paths.js';

const IMPORT = /(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g;

t.test('src/dataplane/ imports nothing from src/wireguard/', async (t) => {
  const dir = join(repoRoot(), 'src', 'dataplane');
  const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
  t.ok(files.length > 5, `${files.length} modules read`);
  const upward: string[] = [];
  for (const f of files) {
    for (const m of readFileSync(join(dir, f), 'utf8').matchAll(IMPORT)) {
      if (/(^|\/)wireguard\//.test(m[1])) upward.push(`${f}: ${m[1]}`);
    }
  }
  t.same(upward, [], 'no import of a WireGuard module');
});

t.test('the check sees an import of each form', async (t) => {
  const found = (src: string): string[] => [...src.matchAll(IMPORT)].map((m) => m[1]);
  t.same(found("import type { A } from '../wireguard/a.js';"), ['../wireguard/a.js']);
  t.same(found('const m = await import("../wireguard/b.js");'), ['../wireguard/b.js']);
  t.same(found("import '../wireguard/c.js';"), ['../wireguard/c.js']);
});
