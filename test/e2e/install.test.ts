// The package as an operator meets it: npm pack (its prepack builds the wasm, the JS and the
// prebuilt addons for linux-x64 and linux-arm64), npm install of the tarball into a fresh prefix
// with no compiler on PATH, and the installed linend forwarding pod traffic between two hosts
// with static peers. The arm64 prebuild is loaded and exercised by Debian's arm64 Node under
// qemu-user (scripts/setup.sh installs qemu-user and scripts/arm64-node.sh unpacks that Node).
//
// Packing happens in a copy of the source tree: prepack rewrites dist/ and other tests may be
// running from this tree's dist/ and build/ at the same time.
import t from 'tap';
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { buildTopology } from '../../lab/topology.js';
import { repoRoot } from '../../src/paths.js';
import { ping } from '../../lab/traffic.js';

const run = promisify(execFile);
const root = repoRoot();
const COMPILERS = ['gcc', 'cc', 'c++', 'g++', 'clang', 'make', 'python3', 'python'];
const ELF_MACHINE = { x64: 62, arm64: 183 } as const;

/**
 * This environment minus npm's variables (an outer `npm test` sets npm_config_*) and the test
 * runner's NODE_OPTIONS (tap preloads its own modules into every node it starts).
 */
function cleanEnv(path: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'NODE_OPTIONS') env[k] = v;
  return { ...env, PATH: path, npm_config_update_notifier: 'false' };
}

/** npm's own entry point, so that npm runs with a PATH that has only node in it. */
function npmCli(): string {
  return realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
}

function elfMachine(file: string): number {
  return readFileSync(file).readUInt16LE(18);
}

t.test('npm pack, install without a compiler, linend forwards between two hosts', async (t) => {
  const started = Date.now();
  const scratch = mkdtempSync(join(tmpdir(), 'linen-install-'));
  const children: ChildProcess[] = [];
  let topo: ReturnType<typeof buildTopology> | undefined;
  t.teardown(async () => {
    await Promise.all(children.map(async (c) => {
      if (c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGTERM');
      const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    }));
    topo?.destroy();
    rmSync(scratch, { recursive: true, force: true });
  });

  // 1. Pack from a copy of the sources (tracked and new files, not build outputs).
  const src = join(scratch, 'src');
  const files = execFileSync('git', ['-C', root, 'ls-files', '-z', '-co', '--exclude-standard'], { encoding: 'utf8' })
    .split('\0').filter((f) => f && existsSync(join(root, f)));
  for (const f of files) {
    mkdirSync(dirname(join(src, f)), { recursive: true });
    cpSync(join(root, f), join(src, f));
  }
  symlinkSync(join(root, 'node_modules'), join(src, 'node_modules'));
  const npm = npmCli();
  const pack = await run(process.execPath, [npm, 'pack', '--pack-destination', scratch, '--loglevel=error'],
    { cwd: src, env: cleanEnv(process.env.PATH ?? ''), timeout: 240000, maxBuffer: 16 << 20 });
  const tgz = join(scratch, pack.stdout.trim().split('\n').pop() ?? '');
  t.ok(existsSync(tgz), `npm pack made ${tgz}`);
  const listing = execFileSync('tar', ['tvzf', tgz], { encoding: 'utf8' }).trim().split('\n');
  const names = listing.map((l) => l.split(/\s+/).pop() ?? '');
  t.comment(`tarball: ${names.length} files, packed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  for (const want of ['package/dist/src/node/cli.js', 'package/dist/wasm/linen.wasm', 'package/binding.gyp',
    'package/native/linen_io.c', 'package/native/linen_abi.h', 'package/prebuilds/linux-x64/linen.glibc.node', 'package/prebuilds/linux-arm64/linen.glibc.node']) {
    t.ok(names.includes(want), `the tarball carries ${want}`);
  }
  t.same(names.filter((n) => /^package\/(test|bench|demo|lab|assembly|src|scripts|deploy)\/|\.ts$|\.map$/.test(n)), [],
    'no tests, benchmarks, lab, TypeScript sources, source maps or deployment files: what a node runs');
  // Publishable to an operator's own registry: the dry run goes through with nothing to fix
  // (it can only note that nobody is logged in here).
  const publish = await run(process.execPath, [npm, 'publish', '--dry-run', '--ignore-scripts', tgz], { env: { ...process.env }, timeout: 120000 });
  const warnings = `${publish.stdout}${publish.stderr}`.split('\n').filter((l) => /npm (warn|error)/i.test(l) && !/logged in/.test(l));
  t.same(warnings, [], `npm publish --dry-run: no warnings (${publish.stdout.trim().split('\n').at(-1)})`);
  t.match(listing.find((l) => l.endsWith(' package/dist/src/node/cli.js')) ?? '', /^-rwx/, 'the bin file is executable');

  // 2. A PATH with node and nothing to compile with (sh for install scripts, /usr/sbin for ip).
  const bin = join(scratch, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync('/bin/sh', join(bin, 'sh'));
  const path = `${bin}:/usr/sbin:/sbin`;
  const found = COMPILERS.filter((c) => path.split(':').some((d) => existsSync(join(d, c))));
  t.same(found, [], 'no compiler, make or python on the PATH used from here on');

  const prefix = join(scratch, 'prefix');
  const install = await run(process.execPath, [npm, 'install', '-g', '--prefix', prefix, '--ignore-scripts',
    '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', tgz], { env: cleanEnv(path), timeout: 180000 });
  t.comment(`npm install -g --ignore-scripts: ${install.stdout.trim()}`);
  const linend = join(prefix, 'bin', 'linend');
  const pkg = join(prefix, 'lib', 'node_modules', 'linen');
  t.ok(existsSync(linend), 'linend is on the prefix\'s bin');
  t.notOk(existsSync(join(pkg, 'build')), 'nothing was built');
  const version = await run(linend, ['--version'], { env: cleanEnv(path) });
  t.match(version.stderr, /^v\d+\.\d+\.\d+/, `the installed linend runs (${version.stderr.trim()})`);
  for (const [arch, machine] of Object.entries(ELF_MACHINE)) {
    t.equal(elfMachine(join(pkg, 'prebuilds', `linux-${arch}`, 'linen.glibc.node')), machine, `the ${arch} prebuild is an ${arch} ELF`);
  }

  // npm install of the tarball in a project, install scripts as npm's policy has them: the
  // install script (node-gyp-build) finds the prebuild loads and builds nothing.
  const project = join(scratch, 'project');
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), '{ "name": "linen-install-test", "private": true }\n');
  const projectInstall = await run(process.execPath, [npm, 'install', '--no-audit', '--no-fund', '--prefer-offline', tgz],
    { cwd: project, env: cleanEnv(path), timeout: 180000 });
  t.comment(`npm install (scripts as policy has them): ${(projectInstall.stdout + projectInstall.stderr).trim().replace(/\n/g, '\n# ')}`);
  t.ok(existsSync(join(project, 'node_modules', 'linen', 'prebuilds')), 'installed in the project');
  t.notOk(existsSync(join(project, 'node_modules', 'linen', 'build')), 'and built nothing');

  // 3. The addon answers through the package's own loader: x64 here, arm64 under qemu-user.
  const smoke = join(root, 'test', 'fixtures', 'addon-smoke.mjs');
  interface Smoke { arch: string; node: string; path: string; abi: number; sent: number; received: { text: string }[]; eventfd: { ready: number; drained: number }; badClose: { code: string } | null }
  const check = (r: Smoke, arch: string): void => {
    t.equal(r.arch, arch, `${arch}: that Node runs as ${arch}`);
    t.match(r.path, `prebuilds/linux-${arch}/linen.glibc.node`, `${arch}: node-gyp-build picked the ${arch} prebuild`);
    t.equal(r.sent, 3, `${arch}: udpSendBatch sent 3 datagrams`);
    t.same(r.received.map((x) => x.text), ['one', 'two', 'three'].map((s) => `linen ${arch} ${s}`), `${arch}: udpRecvBatch got them`);
    t.same(r.eventfd, { ready: 1, drained: 1 }, `${arch}: eventfd signal, wait, drain`);
    t.equal(r.badClose?.code, 'EBADF', `${arch}: errors come back as errno names`);
  };
  const x64 = JSON.parse((await run(process.execPath, [smoke, pkg], { env: cleanEnv(path), timeout: 30000 })).stdout) as Smoke;
  check(x64, 'x64');
  const sysroot = execFileSync('bash', [join(root, 'scripts', 'arm64-node.sh')], { encoding: 'utf8', timeout: 120000 }).trim();
  const qemuStart = Date.now();
  // env -u: tap puts its preload back into NODE_OPTIONS of every child, and Node 18 can't run it.
  const arm = JSON.parse((await run('env', ['-u', 'NODE_OPTIONS', 'qemu-aarch64', '-L', sysroot, join(sysroot, 'usr', 'bin', 'node'), smoke, pkg],
    { env: cleanEnv(process.env.PATH ?? ''), timeout: 120000 })).stdout) as Smoke;
  check(arm, 'arm64');
  t.comment(`arm64: ${arm.node} under qemu-user loaded ${arm.path.slice(pkg.length + 1)} (ABI ${arm.abi}) in ${((Date.now() - qemuStart) / 1000).toFixed(1)} s`);

  // 4. The installed linend on two hosts with static peers (UDP mode): pods ping each other.
  topo = buildTopology({});
  topo.setPodMtu(1472);
  const logs: string[] = [];
  topo.hosts.forEach((h, i) => {
    const file = join(scratch, `host${i + 1}.json`);
    writeFileSync(file, JSON.stringify({
      Network: topo!.clusterNet, Backend: { Type: 'udp' }, Subnet: h.podSubnet,
      Peers: topo!.hosts.filter((p) => p !== h).map((p) => ({ Subnet: p.podSubnet, PublicIP: p.underlayIP })),
    }));
    const child = topo!.spawn(h.ns, linend, ['--static-peers', file, '--subnet-file', join(scratch, `host${i + 1}.env`),
      '--iface', h.underlayDev, '--queues', '1'], { env: cleanEnv(path), stdio: ['ignore', 'ignore', 'pipe'] });
    logs[i] = '';
    child.stderr?.on('data', (d: Buffer) => { logs[i] += d.toString(); });
    children.push(child);
  });
  const deadline = Date.now() + 90000;
  while (!logs.every((l) => l.includes('Static peers:'))) {
    const dead = children.findIndex((c) => c.exitCode !== null || c.signalCode !== null);
    if (dead >= 0 || Date.now() > deadline) {
      t.fail(`linend ${dead >= 0 ? 'exited' : 'not ready after 90 s'}:\n${logs.join('\n---\n')}`);
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const [a, b] = topo.hosts;
  const there = await ping({ from: a.pod, to: b.pod.ip });
  const back = await ping({ from: b.pod, to: a.pod.ip });
  t.ok(there.ok, `pod A pings pod B through the installed linend (${there.received}/3)`);
  t.ok(back.ok, `pod B pings pod A (${back.received}/3)`);
  if (!there.ok || !back.ok) t.comment(logs.join('\n---\n'));
  t.comment(`whole test: ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

t.test('no addon for this platform: the error says what ships and how to build', async (t) => {
  const { nativeAddonPath } = await import('../../src/addon/native.js');
  const dir = mkdtempSync(join(tmpdir(), 'linen-noaddon-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'package.json'), '{ "name": "linen" }');
  mkdirSync(join(dir, 'prebuilds', 'linux-mips64el'), { recursive: true });
  writeFileSync(join(dir, 'prebuilds', 'linux-mips64el', 'linen.glibc.node'), '');
  t.throws(() => nativeAddonPath(dir), {
    message: new RegExp(`no native addon for ${process.platform}-${process.arch} .*prebuilt for: linux-mips64el.*npx node-gyp rebuild`),
  });
  // A matching prebuild is found when there is no local build.
  mkdirSync(join(dir, 'prebuilds', `linux-${process.arch}`));
  writeFileSync(join(dir, 'prebuilds', `linux-${process.arch}`, 'linen.glibc.node'), '');
  t.equal(nativeAddonPath(dir), join(dir, 'prebuilds', `linux-${process.arch}`, 'linen.glibc.node'));
});
