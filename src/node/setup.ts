// What linend works out about this node before it starts anything: the external interface and
// address, whether --subnet-file can be written, and the VtepMAC it published before.
import { accessSync, constants as fsc, lstatSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import type { Options } from './flags.js';
import { selectInterface, type ExternalInterface } from '../device/iface.js';
import { formatIPv4, parseIPv4 } from '../net.js';
import { decodeVxlanBackendData } from '../subnet/lease.js';
import type { Registry } from '../subnet/registry.js';
import { notRegularFile } from '../config/subnetenv.js';

export function resolveInterface(o: Options, log: Logger): { ext: ExternalInterface; publicIP: number } {
  const ext = selectInterface({ iface: o.iface, ifaceRegex: o.ifaceRegex, ifaceCanReach: o.ifaceCanReach, publicIP: o.publicIP });
  const publicIP = parseIPv4(o.publicIP || ext.addr);
  if (publicIP === null) throw new Error(`--public-ip ${o.publicIP} is not an IPv4 address`);
  log.info(`Using interface with name ${ext.name} and address ${ext.addr}`);
  log.info(`Using ${formatIPv4(publicIP)} as external address`);
  return { ext, publicIP };
}

/**
 * Refuses a --subnet-file that can never be written (a directory, a parent that is a file,
 * a read-only place) or that is anything but a regular file (a symbolic link is not followed:
 * one to /dev/zero or a FIFO would hang the read of the previous subnet) before anything is set
 * up: otherwise linend would lease a subnet, create the device and install the rules, and only then fail.
 */
export function checkSubnetFile(path: string): void {
  const bad = (why: string): never => { throw new Error(`--subnet-file ${path}: ${why}`); };
  try {
    const what = notRegularFile(lstatSync(path));
    if (what !== null) bad(`is ${what}; it must be a regular file or not exist yet (remove it, or point --subnet-file elsewhere)`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
  }
  // The nearest existing ancestor must be a directory we can write in (it is created from there).
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    let isDir: boolean;
    try {
      isDir = statSync(dir).isDirectory();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dirname(dir) !== dir) continue;
      return bad(`${dir}: ${(e as Error).message}`);
    }
    if (!isDir) bad(`${dir} is not a directory`);
    try {
      accessSync(dir, fsc.W_OK);
    } catch (e) {
      bad(`cannot write in ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    return;
  }
}

/** The VtepMAC this node published before (same PublicIP), so peers' FDB entries stay valid. */
export async function previousVtepMAC(registry: Registry, publicIP: number): Promise<Uint8Array | null> {
  const list = await registry.getLeases();
  for (const l of list.leases) {
    if (l.attrs.publicIP !== publicIP || l.attrs.backendType !== 'vxlan') continue;
    const data = decodeVxlanBackendData(l.attrs.backendData);
    if (data.ok) return data.value.vtepMAC;
  }
  return null;
}
