// A checksummed TCP transfer between two namespaces (lab/transfer-peer.mjs on both ends).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../src/paths.js';

// Found from the repository root: the same path whether this runs from source or from dist/.
const SCRIPT = join(repoRoot(), 'lab', 'transfer-peer.mjs');

export interface TransferResult { bytes: number; sent: string; received: string; seconds: number }

function run(ns: string, args: string[], onStderr?: (s: string) => void): { done: Promise<string>; kill: () => void } {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); onStderr?.(d.toString()); });
  const done = new Promise<string>((resolve, reject) => {
    child.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`transfer ${args[0]} in ${ns} exited ${code}: ${err.trim()}`))));
  });
  return { done, kill: () => child.kill('SIGKILL') };
}

/** `bytes` from fromNs to toIp (in toNs), as fast as TCP goes or at most `bytesPerSecond`; both ends' SHA-256. */
export async function transfer(fromNs: string, toNs: string, toIp: string, bytes: number, timeoutMs = 120000, bytesPerSecond = 0): Promise<TransferResult> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  let listening!: () => void;
  const isListening = new Promise<void>((r) => { listening = r; });
  const env = { TRANSFER_TIMEOUT_MS: String(timeoutMs), TRANSFER_RATE_BPS: String(bytesPerSecond) };
  Object.assign(process.env, env);
  const server = run(toNs, ['serve', String(port)], (s) => { if (s.includes('listening')) listening(); });
  await Promise.race([isListening, server.done]);
  const t0 = Date.now();
  const client = run(fromNs, ['send', toIp, String(port), String(bytes)]);
  try {
    const [sent, received] = await Promise.all([client.done, server.done]);
    const s = JSON.parse(sent) as { bytes: number; sha256: string };
    const r = JSON.parse(received) as { bytes: number; sha256: string };
    if (r.bytes !== s.bytes) throw new Error(`received ${r.bytes} of ${s.bytes} bytes`);
    return { bytes: r.bytes, sent: s.sha256, received: r.sha256, seconds: (Date.now() - t0) / 1000 };
  } finally {
    client.kill();
    server.kill();
  }
}
