// The demo as a user runs it: with --keep it says where each linend logs and how to stop it
// from another shell; a SIGINT from there (as Ctrl-C) tears everything down: namespaces,
// etcd's data and the cluster directory.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { leftovers } from '../../lab/netns.js';
import { repoRoot } from '../../src/paths.js';

t.test('demo --keep, then SIGINT from another shell: everything is removed', async (t) => {
  // env -u: tap preloads a module into every node it starts (NODE_OPTIONS) that listens for
  // SIGINT itself, which would hide how the demo behaves on its own.
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, join(repoRoot(), 'dist', 'demo', 'main.js'),
    '--hosts', '2', '--backend', 'udp', '--keep'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | string | null>((r) => child.once('exit', (code, sig) => r(code ?? sig)));
  const made: string[] = [];
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    for (const d of made) rmSync(d, { recursive: true, force: true }); // what a failed tear-down left
  });

  const deadline = Date.now() + 180_000;
  while (!/kill -INT \d+/.test(out) && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (!/kill -INT \d+/.test(out)) {
    t.fail(`the demo did not reach --keep:\n${out}`);
    return;
  }
  const pid = Number(/kill -INT (\d+)/.exec(out)?.[1]);
  const logs = [...out.matchAll(/host\d+ linend log:\s+(\S+)/g)].map((m) => m[1]);
  const dir = /Cluster files:\s+(\S+)/.exec(out)?.[1] ?? '';
  const etcdData = /etcd data:\s+(\S+)/.exec(out)?.[1] ?? '';
  const id = /\(pods: (lb[a-z0-9]+)-/.exec(out)?.[1] ?? '';
  made.push(...[dir, etcdData].filter((d) => d.startsWith(tmpdir() + '/')));
  t.equal(pid, child.pid, 'it names its own pid to signal');
  t.equal(logs.length, 2, 'one linend log per host');
  for (const f of logs) t.match(readFileSync(f, 'utf8'), /linend v[\d.]+ starting/, `${f} holds that linend's log`);
  t.ok(existsSync(dir) && existsSync(etcdData) && id !== '', `cluster ${id}: ${dir} and ${etcdData} exist while it runs`);

  process.kill(pid, 'SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await exited;
  clearTimeout(timer);
  t.equal(code, 130, 'the demo exits with 130 after tearing down');
  t.match(out, /Interrupted: tearing down/);
  t.notOk(existsSync(dir), 'the cluster directory is gone');
  t.notOk(existsSync(etcdData), 'etcd\'s data is gone');
  t.same(leftovers(id), { namespaces: [], links: [] }, 'no namespaces or devices left');
});
