// What keeps linend small that a later change could undo without noticing (the memory test
// measures the sum; these name the part): Node modules linend does not load in plain (non-TLS)
// mode, and V8's footprint flags reaching the main isolate through cli.ts's first line.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMALL_FOOTPRINT_V8_FLAGS } from '../../src/node/heap-limits.js';
import { kernelRandomBytes, kernelRandomU32 } from '../../src/random.js';

const srcDir = fileURLToPath(new URL('../../src/', import.meta.url));
const dist = (p: string): string => fileURLToPath(new URL(`../../dist/src/${p}`, import.meta.url));

t.test('no module of linend imports crypto, tls, https, http2 or zlib up front (TLS loads them when used)', async (t) => {
  // Checked on the sources: a child process started from the test runner finds node:crypto
  // loaded by Node's own start-up there, so its module list cannot tell.
  const files = readdirSync(srcDir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  t.ok(files.length > 30, `${files.length} source files`);
  const heavy = /^\s*import\s[^;]*?from\s+'node:(crypto|tls|https|http2|zlib)'/m;
  for (const f of files) {
    const m = heavy.exec(readFileSync(join(srcDir, f), 'utf8'));
    t.equal(m?.[1] ?? null, null, `src/${f}${m ? ` imports node:${m[1]}` : ''}`);
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
