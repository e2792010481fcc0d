// What keeps linend small that a later change could undo without noticing (the memory test
// measures the sum; these name the part): Node modules linend does not load in plain (non-TLS)
// mode, and V8's footprint flags reaching the main isolate through cli.ts's first line.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMALL_FOOTPRINT_V8_FLAGS } from '../../src/node/heap-limits.js';
import { kernelRandomBytes, kernelRandomU32 } from '../../src/random.js';

const srcDir = fileURLToPath(new URL('../../src/', import.meta.url));
const dist = (p: string): string => fileURLToPath(new URL(`../../dist/src/${p}`, import.meta.url));

// The modules a process loads up front: the static import closure of an entry point, following
// relative imports (type-only imports load nothing) and collecting the packages and builtins.
function staticClosure(entry: string): { modules: string[]; external: string[] } {
  const modules = new Set<string>();
  const external = new Set<string>();
  const importRe = /^\s*(?:import|export)\s+(type\s)?[^;]*?from\s+['"]([^'"]+)['"]|^\s*import\s+['"]([^'"]+)['"]/gm;
  const visit = (file: string): void => {
    if (modules.has(file)) return;
    modules.add(file);
    for (const m of readFileSync(join(srcDir, file), 'utf8').matchAll(importRe)) {
      if (m[1]) continue;
      const spec = m[2] ?? m[3];
      if (spec.startsWith('.')) visit(relative(srcDir, resolve(dirname(join(srcDir, file)), spec.replace(/\.js$/, '.ts'))));
      else external.add(spec);
    }
  };
  visit(entry);
  return { modules: [...modules].sort(), external: [...external].sort() };
}

t.test('linend loads no crypto, tls, https, http2 or zlib up front, nor the WireGuard protocol (wireguard and TLS modes load them when used)', async (t) => {
  // Checked on the sources: a child process started from the test runner finds node:crypto
  // loaded by Node's own start-up there, so its module list cannot tell.
  for (const entry of ['node/cli.ts', 'node/daemon.ts', 'node/daemon-kube.ts', 'dataplane/worker.ts']) {
    const { modules, external } = staticClosure(entry);
    t.ok(modules.length > (entry === 'node/cli.ts' ? 1 : 10), `${entry}: ${modules.length} modules up front`);
    t.same(external.filter((x) => /^node:(crypto|tls|https|http2|zlib)$/.test(x)), [], `${entry} loads none of them up front`);
    t.same(modules.filter((f) => f.startsWith('wireguard/') && !['wireguard/metrics.ts', 'wireguard/events.ts'].includes(f)), [],
      `${entry}: of the WireGuard modules only the metric names load up front`);
  }
});

t.test('the etcd client (etcd3, gRPC) is loaded only in etcd mode: one module imports it, and only dynamically is that one imported', async (t) => {
  const files = readdirSync(srcDir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  const importsGrpc = /^\s*import\s[^;]*?from\s+'(etcd3|@grpc\/[^']+)'/m;
  const importsEtcd = /^\s*import\s[^;]*?from\s+'[^']*subnet\/etcd\.js'/m;
  const users = files.filter((f) => importsGrpc.test(readFileSync(join(srcDir, f), 'utf8')));
  t.same(users, ['subnet/etcd.ts'], 'only src/subnet/etcd.ts imports etcd3 and @grpc/grpc-js');
  const static_ = files.filter((f) => importsEtcd.test(readFileSync(join(srcDir, f), 'utf8')));
  t.same(static_, [], 'no module imports src/subnet/etcd.ts up front');
  t.match(readFileSync(join(srcDir, 'node', 'daemon.ts'), 'utf8'), /await loadWithoutOptimizer\(\(\) => import\('\.\.\/subnet\/etcd\.js'\)\)/, 'the daemon loads it in etcd mode');
});

t.test("cli.ts's first line passes the footprint flags to node", async (t) => {
  const first = readFileSync(fileURLToPath(new URL('../../src/node/cli.ts', import.meta.url)), 'utf8').split('\n')[0];
  t.equal(first, `#!/usr/bin/env -S node ${SMALL_FOOTPRINT_V8_FLAGS.join(' ')}`);
  t.equal(readFileSync(dist('node/cli.js'), 'utf8').split('\n')[0], first, 'and the built cli.js keeps it');
  const r = spawnSync(dist('node/cli.js'), ['--version'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  t.equal(r.status, 0, 'linend --version runs through that line');
  t.match(r.stdout + r.stderr, /\d+\.\d+\.\d+/, 'and prints the version');
});

t.test('kernel random bytes', async (t) => {
  const a = kernelRandomBytes(32);
  const b = kernelRandomBytes(32);
  t.equal(a.length, 32);
  t.not(Buffer.from(a).toString('hex'), Buffer.from(b).toString('hex'), 'two draws differ');
  const u = new Set(Array.from({ length: 64 }, () => kernelRandomU32()));
  t.ok(u.size > 60, `u32 draws spread (${u.size} distinct of 64)`);
  t.ok([...u].every((v) => Number.isInteger(v) && v >= 0 && v < 2 ** 32), 'in [0, 2^32)');
});
