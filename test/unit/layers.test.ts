// Imports point down between the folders of src/: no folder imports (even a type, even lazily)
// from a folder that imports from it, directly or around a ring. The files at the root of src/
// are leaves every folder may use: they import nothing else of linen.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { repoRoot } from '../../src/paths.js';

const IMPORT = /(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g;
const ROOT = '(root)';

/** The folder (first path segment under src/) a module belongs to. */
const folderOf = (file: string): string => (file.includes('/') ? file.slice(0, file.indexOf('/')) : ROOT);

/** Folder -> the folders its modules import from, each with one import that shows it. */
function folderGraph(): Map<string, Map<string, string>> {
  const src = join(repoRoot(), 'src');
  const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
  const graph = new Map<string, Map<string, string>>();
  for (const f of files) {
    const from = folderOf(f);
    const edges = graph.get(from) ?? new Map<string, string>();
    graph.set(from, edges);
    for (const m of readFileSync(join(src, f), 'utf8').matchAll(IMPORT)) {
      const to = folderOf(posix.normalize(posix.join(posix.dirname(f), m[1]!)));
      if (to !== from && !edges.has(to)) edges.set(to, `${f} imports ${m[1]}`);
    }
  }
  return graph;
}

/** The groups of two or more folders that import each other around a ring (Tarjan's SCCs). */
function rings(graph: Map<string, Map<string, string>>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    for (const w of graph.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (stack.includes(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const group: string[] = [];
      for (let w = stack.pop()!; ; w = stack.pop()!) {
        group.push(w);
        if (w === v) break;
      }
      if (group.length > 1) out.push(group.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return out.sort();
}

// Imports that close a ring today, with why; the rest of the graph must have none. An
// entry that no longer exists is reported, to be taken off the list.
const KNOWN_BACK_EDGES: Record<string, string> = {};

t.test('no ring of folders importing each other in src/, beyond the known back edges', async (t) => {
  const graph = folderGraph();
  t.ok(graph.size > 8, `${graph.size} folders read`);
  for (const edge of Object.keys(KNOWN_BACK_EDGES)) {
    const [from, to] = edge.split(' -> ') as [string, string];
    if (graph.get(from)?.delete(to) !== true) t.comment(`${edge} is gone: take it off KNOWN_BACK_EDGES`);
  }
  const found = rings(graph);
  const show = (ring: string[]): string => ring.flatMap((a) => ring.filter((b) => graph.get(a)?.has(b)).map((b) => graph.get(a)!.get(b)!)).join('; ');
  t.same(found, [], found.map(show).join('\n') || 'no ring');
});

t.test('the files at the root of src/ import nothing else of linen', async (t) => {
  const up = [...(folderGraph().get(ROOT)?.values() ?? [])];
  t.same(up, [], 'root modules import only each other');
});

t.test('the check finds a ring of three and ignores a chain', async (t) => {
  const g = (edges: [string, string][]): Map<string, Map<string, string>> => {
    const m = new Map<string, Map<string, string>>();
    for (const [a, b] of edges) {
      if (!m.has(a)) m.set(a, new Map());
      if (!m.has(b)) m.set(b, new Map());
      m.get(a)!.set(b, `${a}->${b}`);
    }
    return m;
  };
  t.same(rings(g([['a', 'b'], ['b', 'c'], ['c', 'a'], ['c', 'd']])), [['a', 'b', 'c']]);
  t.same(rings(g([['a', 'b'], ['b', 'c'], ['a', 'c']])), []);
  t.same([...'import type { X } from "../y/z.js"; await import(\'./w.js\');'.matchAll(IMPORT)].map((m) => m[1]), ['../y/z.js', './w.js']);
});
