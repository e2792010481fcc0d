// What an operator reads: klog timestamps with real microseconds, and the lines linend writes
// while etcd is unreachable at start-up.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, formatHeader, wallClockMicros } from '../../src/log.js';
import { repoRoot } from '../../src/paths.js';

t.test('klog header: microseconds since the epoch are printed as they are', async (t) => {
  const d = new Date(2024, 10, 21, 0, 51, 2, 123);
  t.equal(formatHeader('I', d.getTime() * 1000 + 456, 12345, 'subnet'), 'I1121 00:51:02.123456   12345 subnet] ');
  t.equal(formatHeader('W', d.getTime() * 1000 + 999_999 - 123_000, 1, 'x'), 'W1121 00:51:02.999999       1 x] ');
  t.equal(formatHeader('I', d, 1, 'x'), 'I1121 00:51:02.123000       1 x] ', 'a Date has milliseconds only');
});

t.test('klog lines from the default clock carry microseconds, on the wall clock', async (t) => {
  const lines: string[] = [];
  const log = createLogger({ sink: { write: (l: string) => lines.push(l) } });
  const before = Date.now();
  for (let i = 0; i < 50; i++) {
    log.info(`line ${i}`);
    await new Promise((r) => setImmediate(r));
  }
  const micros = lines.map((l) => /^I\d{4} \d\d:\d\d:\d\d\.(\d{6}) /.exec(l)?.[1] ?? '');
  t.ok(micros.every((m) => m.length === 6), 'six digits after the second');
  const subMs = micros.filter((m) => !m.endsWith('000'));
  t.ok(subMs.length > 0, `sub-millisecond digits are not all 000 (${subMs.length}/50 are not; e.g. ${micros.slice(0, 3).join(', ')})`);
  const us = wallClockMicros();
  t.ok(us >= before * 1000 && us <= (Date.now() + 1) * 1000, 'wallClockMicros stays within the wall clock\'s millisecond');
});

t.test('etcd unreachable at start-up: the warning ends on the error and promises no peers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'linen-log-'));
  // Port 1 on loopback: nothing listens, connections are refused at once.
  const child = spawn(process.execPath, [join(repoRoot(), 'dist', 'src', 'node', 'cli.js'), '--etcd-endpoints=http://127.0.0.1:1',
    `--subnet-file=${join(dir, 'subnet.env')}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const deadline = Date.now() + 30_000;
  while (!/etcd unreachable/.test(err) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await gone;
  const lines = err.split('\n').filter((l) => /etcd/.test(l));
  t.comment(lines.slice(0, 3).join('\n'));
  const warn = lines.find((l) => /etcd unreachable/.test(l)) ?? '';
  t.match(warn, /^W\d{4} [\d:.]+ +\d+ linend\] etcd unreachable \(.*ECONNREFUSED 127\.0\.0\.1:1\); forwarding starts once it answers$/,
    'linend says it waits for etcd');
  t.notMatch(err, /last known peers?/, 'no "last known peers" before there are any');
  t.notMatch(err, /Resolution note:\s*(\)|$)/m, 'no dangling "Resolution note:"');
});
