// subnet.env, as flanneld writes and reads it (docs/flanneld-compat.md, "subnet.env").
//
//   FLANNEL_NETWORK=10.1.0.0/16
//   FLANNEL_SUBNET=10.1.74.1/24        first host address of the lease, with its length
//   FLANNEL_MTU=1472
//   FLANNEL_IPMASQ=false
//
// Written atomically like renameio.WriteFile: a temp file `.<name><random>` in the same
// directory, mode 0644 for a new file regardless of the umask (an existing regular file keeps its
// mode), fsync, rename over the target (then the directory is fsynced too). The directory
// is created with 0755 if missing. Read back with a tolerant dotenv parser for the
// previous subnet (§3 step 5) and the stale-iptables-rule cleanup (§9).

import { constants as fsc } from 'node:fs';
import { lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import { closeSync, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { formatCIDR, parseCIDR, type IPv4Net } from '../net.js';
import { kernelRandomU32 } from '../random.js';

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

export interface SubnetEnv {
  /** Cluster network (FLANNEL_NETWORK). */
  readonly network: IPv4Net;
  /** The node's lease subnet in network form; written as its first host address. */
  readonly subnet: IPv4Net;
  readonly mtu: number;
  readonly ipMasq: boolean;
  /** Only for IPv6-enabled configs (never produced by linen today); text as flannel prints it. */
  readonly ipv6Network?: string;
  readonly ipv6Subnet?: string;
}

/** The exact bytes flanneld writes. */
export function formatSubnetEnv(e: SubnetEnv): string {
  const first = { ip: (e.subnet.ip + 1) >>> 0, prefixLen: e.subnet.prefixLen };
  let s = `FLANNEL_NETWORK=${formatCIDR(e.network)}\nFLANNEL_SUBNET=${formatCIDR(first)}\n`;
  if (e.ipv6Network !== undefined && e.ipv6Subnet !== undefined) {
    s += `FLANNEL_IPV6_NETWORK=${e.ipv6Network}\nFLANNEL_IPV6_SUBNET=${e.ipv6Subnet}\n`;
  }
  s += `FLANNEL_MTU=${e.mtu}\nFLANNEL_IPMASQ=${e.ipMasq ? 'true' : 'false'}\n`;
  return s;
}

/**
 * Writes `data` to `path` atomically (temp file + fsync + rename). New files get `perm`
 * (umask ignored); an existing regular file keeps its permission bits. The mode is read with
 * lstat: a symlink planted at the path (in a directory others can write) is replaced, never
 * followed, so its target's mode (say 0666) cannot end up on a root-owned file; setuid, setgid
 * and sticky bits are never carried over.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, perm = 0o644): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  let mode = perm;
  try {
    const st = await lstat(path);
    if (st.isFile()) mode = st.mode & 0o777;
  } catch {
    /* new file */
  }
  let tmp = '';
  let fh;
  for (let i = 0; ; i++) {
    tmp = join(dir, `.${basename(path)}${kernelRandomU32()}`);
    try {
      fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || i > 100) throw e;
    }
  }
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // explicit chmod: the umask does not apply
    await fh.sync();
    await fh.close();
    await rename(tmp, path);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  try {
    const d = await open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
    await d.sync().catch(() => undefined);
    await d.close();
  } catch {
    /* best effort */
  }
}

/** Writes subnet.env in flanneld's exact format, atomically. */
export async function writeSubnetEnv(path: string, e: SubnetEnv): Promise<void> {
  await writeFileAtomic(path, formatSubnetEnv(e), 0o644);
}

/**
 * subnet.env as start-up writes it: not at all once `stop` has aborted (a SIGTERM came first),
 * and removed again by abandon() when the start-up it belongs to never finished, so that no
 * subnet.env is left describing a node that never forwarded (the CNI plugin would hand out its
 * addresses). Once started() the file stays, as flanneld leaves it, for the next start.
 */
export class StartupSubnetEnv {
  private written = false;
  private finished = false;

  constructor(readonly path: string) {}

  /** Writes it unless `stop` has aborted; says whether it did. */
  async write(e: SubnetEnv, stop: AbortSignal): Promise<boolean> {
    if (stop.aborted) return false;
    this.written = true; // set first: an abort during the write still removes the file
    await writeSubnetEnv(this.path, e);
    return true;
  }

  /** The node is up: the file stays from now on. */
  started(): void {
    this.finished = true;
  }

  /** Removes the file this start-up wrote if it never finished; says whether it did. */
  async abandon(): Promise<boolean> {
    if (!this.written || this.finished) return false;
    await unlink(this.path).catch(() => undefined);
    return true;
  }
}

// ---------------------------------------------------------------------------------------
// Reading

/**
 * A tolerant dotenv parser (what flanneld's godotenv accepts, and then some): blank lines
 * and `#` comments, an optional `export ` prefix, `KEY=value` or `KEY: value`, single
 * quotes (literal), double quotes (with \n, \t, \", \\ escapes), inline ` #` comments
 * after unquoted values. Lines that make no sense are skipped; the last assignment wins.
 */
export function parseDotenv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('export ')) line = line.slice(7).trimStart();
    const m = /^([A-Za-z_][A-Za-z0-9_.]*)\s*[=:]\s*(.*)$/.exec(line);
    if (m === null) continue;
    const key = m[1]!;
    let rest = m[2]!;
    let value: string;
    const q = rest[0];
    if (q === '"' || q === "'") {
      // a quoted value may span lines
      let body = rest.slice(1);
      let end = findClosingQuote(body, q);
      while (end < 0 && i + 1 < lines.length) {
        body += '\n' + lines[++i]!;
        end = findClosingQuote(body, q);
      }
      if (end < 0) continue;
      value = body.slice(0, end);
      if (q === '"') {
        value = value.replace(/\\([\\"nrt$])/g, (_, c: string) => ({ n: '\n', r: '\r', t: '\t' })[c] ?? c);
      }
    } else {
      const hash = rest.search(/\s#/);
      if (hash >= 0) rest = rest.slice(0, hash);
      value = rest.trim();
    }
    out[key] = value;
  }
  return out;
}

function findClosingQuote(s: string, q: string): number {
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && q === '"') {
      i++;
      continue;
    }
    if (s[i] === q) return i;
  }
  return -1;
}

export interface PreviousSubnetEnv {
  /** FLANNEL_NETWORK, or null when absent / unparseable / several values. */
  readonly network: IPv4Net | null;
  /** FLANNEL_SUBNET masked back to its network (10.5.72.1/24 -> 10.5.72.0/24), or null. */
  readonly subnet: IPv4Net | null;
  readonly ipv6Network: string | null;
  readonly ipv6Subnet: string | null;
  readonly mtu: number | null;
  readonly ipMasq: boolean | null;
  /** Every variable in the file. */
  readonly vars: Readonly<Record<string, string>>;
}

/** A single IPv4 CIDR (masked), or null for absent, bad, or a comma-separated list. */
function oneCIDR(v: string | undefined): IPv4Net | null {
  if (v === undefined || v.includes(',')) return null;
  return parseCIDR(v.trim());
}

/** Parses subnet.env text (see parseDotenv). */
export function parseSubnetEnv(text: string): PreviousSubnetEnv {
  const vars = parseDotenv(text);
  const mtu = vars['FLANNEL_MTU'] !== undefined && /^\d+$/.test(vars['FLANNEL_MTU']) ? Number(vars['FLANNEL_MTU']) : null;
  const masq = vars['FLANNEL_IPMASQ'];
  const one6 = (v: string | undefined): string | null => (v === undefined || v === '' || v.includes(',') ? null : v);
  return {
    network: oneCIDR(vars['FLANNEL_NETWORK']),
    subnet: oneCIDR(vars['FLANNEL_SUBNET']),
    ipv6Network: one6(vars['FLANNEL_IPV6_NETWORK']),
    ipv6Subnet: one6(vars['FLANNEL_IPV6_SUBNET']),
    mtu,
    ipMasq: masq === 'true' ? true : masq === 'false' ? false : null,
    vars,
  };
}

/** More than any subnet.env holds; a longer file is not one. */
const MAX_SUBNET_ENV_BYTES = 64 * 1024;

/** What a non-regular file at `path` is, in words, or null for a regular file. */
export function notRegularFile(st: Stats): string | null {
  if (st.isFile()) return null;
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * Reads a previous subnet.env; null when the file does not exist. The file is opened without
 * following a symbolic link and without blocking (a FIFO or a device opens at once), and
 * anything but a regular file of at most 64 KiB is refused with an error that says what is there.
 */
export function readSubnetEnv(path: string): PreviousSubnetEnv | null {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK | fsc.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new Error(`${path} is a symbolic link; subnet.env must be a regular file (remove the link or point --subnet-file at a regular file)`);
    throw e;
  }
  try {
    const st = fstatSync(fd);
    const what = notRegularFile(st);
    if (what !== null) throw new Error(`${path} is ${what}; subnet.env must be a regular file (remove it or point --subnet-file elsewhere)`);
    if (st.size > MAX_SUBNET_ENV_BYTES) throw new Error(`${path} holds ${st.size} bytes, more than a subnet.env ever does (${MAX_SUBNET_ENV_BYTES}); remove it or point --subnet-file elsewhere`);
    const buf = Buffer.alloc(MAX_SUBNET_ENV_BYTES + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length;) n += got = readSync(fd, buf, n, buf.length - n, null);
    if (n > MAX_SUBNET_ENV_BYTES) throw new Error(`${path} grew past ${MAX_SUBNET_ENV_BYTES} bytes while being read; remove it or point --subnet-file elsewhere`);
    return parseSubnetEnv(buf.subarray(0, n).toString('utf8'));
  } finally {
    closeSync(fd);
  }
}
