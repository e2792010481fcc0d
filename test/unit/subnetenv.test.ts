import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync, symlinkSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSubnetEnv, parseDotenv, parseSubnetEnv, readSubnetEnv, StartupSubnetEnv, writeSubnetEnv } from '../../src/config/subnetenv.js';
import { formatCIDR, parseCIDR } from '../../src/net.js';
import { checkSubnetFile } from '../../src/node/setup.js';
import { execFileSync } from 'node:child_process';

const sn = (s: string) => parseCIDR(s)!;

function tmp(t: { teardown(f: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'linen-subnetenv-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

t.test('format is flanneld byte for byte', async (t) => {
  t.equal(
    formatSubnetEnv({ network: sn('10.1.0.0/16'), subnet: sn('10.1.74.0/24'), mtu: 1472, ipMasq: false }),
    'FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n',
    'dist/sample_subnet.env',
  );
  t.equal(
    formatSubnetEnv({ network: sn('10.5.0.0/16'), subnet: sn('10.5.72.128/26'), mtu: 1450, ipMasq: true }),
    'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.129/26\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
  );
  t.equal(
    formatSubnetEnv({ network: sn('10.5.0.0/16'), subnet: sn('10.5.72.0/24'), mtu: 1450, ipMasq: true, ipv6Network: '2001:cafe:42::/56', ipv6Subnet: '2001:cafe:42::1/64' }),
    'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    'IPv6 lines go between SUBNET and MTU',
  );
});

t.test('atomic write: mkdir 0755, new file 0644 whatever the umask, existing mode kept, no temp left', async (t) => {
  const d = tmp(t);
  const path = join(d, 'run', 'flannel', 'subnet.env');
  const old = process.umask(0o077);
  try {
    await writeSubnetEnv(path, { network: sn('10.1.0.0/16'), subnet: sn('10.1.74.0/24'), mtu: 1472, ipMasq: false });
  } finally {
    process.umask(old);
  }
  t.equal(readFileSync(path, 'utf8'), 'FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n');
  t.equal(statSync(path).mode & 0o777, 0o644, 'file 0644');
  t.ok(statSync(join(d, 'run', 'flannel')).isDirectory(), 'missing directories created');
  chmodSync(path, 0o600);
  const ino = statSync(path).ino;
  await writeSubnetEnv(path, { network: sn('10.1.0.0/16'), subnet: sn('10.1.75.0/24'), mtu: 1472, ipMasq: true });
  t.equal(statSync(path).mode & 0o777, 0o600, 'existing mode kept');
  t.not(statSync(path).ino, ino, 'replaced by rename, not rewritten in place');
  t.match(readFileSync(path, 'utf8'), /FLANNEL_SUBNET=10\.1\.75\.1\/24/);
  t.same(readdirSync(join(d, 'run', 'flannel')), ['subnet.env'], 'no temp files left');
});

t.test('a symlink at the path: replaced by a 0644 regular file, its target untouched; special mode bits never copied', async (t) => {
  const d = tmp(t);
  // A world-writable file elsewhere, and a link to it where subnet.env goes (anyone who can
  // write the directory could plant one): the mode must not be copied through the link.
  const target = join(d, 'planted');
  writeFileSync(target, 'planted\n');
  chmodSync(target, 0o666);
  const path = join(d, 'subnet.env');
  symlinkSync(target, path);
  await writeSubnetEnv(path, { network: sn('10.1.0.0/16'), subnet: sn('10.1.74.0/24'), mtu: 1472, ipMasq: false });
  t.ok(lstatSync(path).isFile(), 'subnet.env is a regular file now, not the link');
  t.equal(lstatSync(path).mode & 0o7777, 0o644, `mode 0644, not the link target's 0666 (got 0${(lstatSync(path).mode & 0o7777).toString(8)})`);
  t.equal(readFileSync(target, 'utf8'), 'planted\n', 'the target was not written');
  t.equal(statSync(target).mode & 0o777, 0o666, "the target's mode is unchanged");
  // An existing regular file with setuid/setgid/sticky bits: only the permission bits carry over.
  chmodSync(path, 0o6640);
  await writeSubnetEnv(path, { network: sn('10.1.0.0/16'), subnet: sn('10.1.74.0/24'), mtu: 1472, ipMasq: false });
  t.equal(lstatSync(path).mode & 0o7777, 0o640, 'setuid/setgid dropped, 0640 kept');
});

t.test('directory mode 0755 when created with a default umask', async (t) => {
  const d = tmp(t);
  const old = process.umask(0o022);
  try {
    await writeSubnetEnv(join(d, 'x', 'subnet.env'), { network: sn('10.1.0.0/16'), subnet: sn('10.1.74.0/24'), mtu: 1472, ipMasq: false });
  } finally {
    process.umask(old);
  }
  t.equal(statSync(join(d, 'x')).mode & 0o777, 0o755);
});

t.test('read back: previous subnet masked, tolerant of dotenv syntax', async (t) => {
  const d = tmp(t);
  const path = join(d, 'subnet.env');
  t.equal(readSubnetEnv(path), null, 'missing file => null');
  await writeSubnetEnv(path, { network: sn('10.1.0.0/16'), subnet: sn('10.1.74.0/24'), mtu: 1472, ipMasq: true });
  const p = readSubnetEnv(path)!;
  t.equal(formatCIDR(p.subnet!), '10.1.74.0/24', '.1/24 masked back to .0/24');
  t.equal(formatCIDR(p.network!), '10.1.0.0/16');
  t.equal(p.mtu, 1472);
  t.equal(p.ipMasq, true);

  const q = parseSubnetEnv(
    [
      '# written by hand',
      'export FLANNEL_NETWORK="10.2.0.0/16"',
      "FLANNEL_SUBNET='10.2.3.1/24' ",
      'FLANNEL_MTU=1450 # inline comment',
      'FLANNEL_IPMASQ: false',
      'garbage line without equals',
      '',
    ].join('\r\n'),
  );
  t.equal(formatCIDR(q.network!), '10.2.0.0/16');
  t.equal(formatCIDR(q.subnet!), '10.2.3.0/24');
  t.equal(q.mtu, 1450);
  t.equal(q.ipMasq, false);
  t.equal(parseSubnetEnv('FLANNEL_SUBNET=10.2.3.1/24,10.2.4.1/24\n').subnet, null, 'several CIDRs => absent');
  t.equal(parseSubnetEnv('FLANNEL_SUBNET=nonsense\n').subnet, null);
  t.equal(parseSubnetEnv('').subnet, null);
  t.same(parseDotenv('A="x\\ny"\nB=\'$z\'\nA2="multi\nline"\n'), { A: 'x\ny', B: '$z', A2: 'multi\nline' });
});

t.test('write errors surface', async (t) => {
  const d = tmp(t);
  writeFileSync(join(d, 'file'), 'x');
  await t.rejects(writeSubnetEnv(join(d, 'file', 'subnet.env'), { network: sn('10.1.0.0/16'), subnet: sn('10.1.74.0/24'), mtu: 1472, ipMasq: false }));
});

/** In a scratch folder: a link to /dev/zero and a FIFO nobody writes to (either would hang a plain read). */
function hangingFiles(t: { teardown(f: () => void): void }): { d: string; toZero: string; fifo: string } {
  const d = tmp(t);
  const toZero = join(d, 'zero.env');
  symlinkSync('/dev/zero', toZero);
  const fifo = join(d, 'fifo.env');
  execFileSync('mkfifo', [fifo]);
  return { d, toZero, fifo };
}

t.test('read back: anything but a regular file is refused at once, naming what is there', async (t) => {
  const { d, toZero, fifo } = hangingFiles(t);
  const real = join(d, 'real.env');
  await writeSubnetEnv(real, { network: sn('10.1.0.0/16'), subnet: sn('10.1.74.0/24'), mtu: 1472, ipMasq: true });
  const toReal = join(d, 'link.env');
  symlinkSync(real, toReal);
  const big = join(d, 'big.env');
  writeFileSync(big, 'x'.repeat(100_000));
  const t0 = Date.now();
  t.throws(() => readSubnetEnv(toZero), /zero\.env is a symbolic link; subnet\.env must be a regular file/, 'a link to /dev/zero');
  t.throws(() => readSubnetEnv(toReal), /link\.env is a symbolic link/, 'a link even to a regular file is not followed');
  t.throws(() => readSubnetEnv(fifo), /fifo\.env is a FIFO; subnet\.env must be a regular file/, 'a FIFO nobody writes to');
  t.throws(() => readSubnetEnv(d), /is a directory/, 'a directory');
  t.throws(() => readSubnetEnv('/dev/null'), /is a device/, 'a device');
  t.throws(() => readSubnetEnv(big), /100000 bytes/, 'a file far larger than any subnet.env');
  t.comment(`six refusals in ${Date.now() - t0} ms`);
  t.equal(formatCIDR(readSubnetEnv(real)!.subnet!), '10.1.74.0/24', 'the regular file itself reads');
});

t.test('--subnet-file check at start-up: a link, a FIFO or a device is refused before anything is set up', async (t) => {
  const { d, toZero, fifo } = hangingFiles(t);
  t.throws(() => checkSubnetFile(toZero), /--subnet-file .*zero\.env: is a symbolic link; it must be a regular file or not exist yet/);
  t.throws(() => checkSubnetFile(fifo), /--subnet-file .*fifo\.env: is a FIFO/);
  t.throws(() => checkSubnetFile('/dev/null'), /--subnet-file \/dev\/null: is a device/);
  t.throws(() => checkSubnetFile(d), /is a directory/);
  t.doesNotThrow(() => checkSubnetFile(join(d, 'new', 'subnet.env')), 'a file not there yet, in a directory to be created');
  writeFileSync(join(d, 'subnet.env'), 'FLANNEL_MTU=1450\n');
  t.doesNotThrow(() => checkSubnetFile(join(d, 'subnet.env')), 'a regular file');
});

t.test('start-up: no subnet.env after a SIGTERM before the node was up; kept once it was', async (t) => {
  const d = tmp(t);
  const env = { network: sn('10.5.0.0/16'), subnet: sn('10.5.7.0/24'), mtu: 1450, ipMasq: false };
  const path = join(d, 'subnet.env');
  const exists = (): boolean => readdirSync(d).includes('subnet.env');
  {
    const stop = new AbortController();
    stop.abort(); // SIGTERM before the write
    const f = new StartupSubnetEnv(path);
    t.equal(await f.write(env, stop.signal), false, 'not written once stopped');
    t.notOk(exists(), 'no file');
    t.equal(await f.abandon(), false);
  }
  {
    const stop = new AbortController();
    const f = new StartupSubnetEnv(path);
    t.equal(await f.write(env, stop.signal), true);
    t.ok(exists(), 'written');
    stop.abort(); // SIGTERM after the write, before the node was up
    t.equal(await f.abandon(), true, 'an unfinished start-up removes it');
    t.notOk(exists(), 'no subnet.env left behind');
  }
  {
    const stop = new AbortController();
    const f = new StartupSubnetEnv(path);
    const writing = f.write(env, stop.signal);
    stop.abort(); // SIGTERM while the write is under way
    await writing;
    t.equal(await f.abandon(), true);
    t.same(readdirSync(d), [], 'neither the file nor a temp file is left');
  }
  {
    const stop = new AbortController();
    const f = new StartupSubnetEnv(path);
    await f.write(env, stop.signal);
    f.started();
    stop.abort(); // a later SIGTERM: shutdown keeps it, as flanneld does
    t.equal(await f.abandon(), false);
    t.equal(readFileSync(path, 'utf8'), formatSubnetEnv(env), 'kept after a start-up that finished');
  }
});
