// The node's WireGuard private key, kept where flanneld keeps it (/run/flannel/wgkey, or the
// path in WIREGUARD_KEY_FILE) in the same form (base64, as `wg genkey` prints, mode 0400): a
// node keeps its key, and so its lease's PublicKey, across restarts and across a switch between
// flanneld and linend.
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { dirname } from "node:path";

import { generatePrivateKey } from "./crypto.js";

export const DEFAULT_KEY_FILE = "/run/flannel/wgkey";

export function keyFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.WIREGUARD_KEY_FILE ?? DEFAULT_KEY_FILE;
}

/** Reads the private key, or creates the file with a new one when there is none. */
export function loadOrCreatePrivateKey(path: string = keyFilePath()): Uint8Array {
  let text: string | null = null;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new Error(`cannot read the WireGuard key file ${path}: ${(e as Error).message}`);
    }
  }
  if (text !== null) {
    const b64 = text.trim();
    const key = Buffer.from(b64, "base64");
    if (key.length !== 32 || key.toString("base64") !== b64) {
      throw new Error(`could not parse private key from file ${path}: expected 32 bytes in base64 as \`wg genkey\` writes; ` +
        `remove the file to have a new key generated`);
    }
    return new Uint8Array(key);
  }
  const key = generatePrivateKey();
  mkdirSync(dirname(path), { recursive: true });
  // Created with mode 0400 from the start: the key is never readable by others, not even briefly.
  const fd = openSync(path, "wx", 0o400);
  try {
    writeSync(fd, Buffer.from(key).toString("base64"));
  } finally {
    closeSync(fd);
  }
  return key;
}
