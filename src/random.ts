// Random bytes from the kernel (getrandom's pool, through /dev/urandom), for the few places
// linend needs them: a VTEP MAC, a temporary file name. node:crypto would do the same, but
// loading it costs linend about 1 MB of memory for these few bytes.
import { closeSync, openSync, readSync } from 'node:fs';

export function kernelRandomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  const fd = openSync('/dev/urandom', 'r');
  try {
    let got = 0;
    while (got < n) got += readSync(fd, out, got, n - got, null);
  } finally {
    closeSync(fd);
  }
  return out;
}

/** A random integer in [0, 2^32). */
export function kernelRandomU32(): number {
  const b = kernelRandomBytes(4);
  return new DataView(b.buffer).getUint32(0);
}
