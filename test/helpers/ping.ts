// ping from inside a network namespace, without blocking the event loop (linend and other
// children keep running meanwhile).
import { execFile } from 'node:child_process';

export interface PingResult { ok: boolean; received: number; ttl: number | null; out: string }

/** `count` pings every `intervalS` seconds from `ns` to `ip`; ok when every one was answered. */
export function ping(ns: string, ip: string, o: { count?: number; intervalS?: number } = {}): Promise<PingResult> {
  const count = o.count ?? 3;
  const args = ['netns', 'exec', ns, 'ping', '-n', '-c', String(count), '-i', String(o.intervalS ?? 0.2), '-W', '2', ip];
  return new Promise((resolve) => {
    execFile('ip', args, { timeout: (count + 5) * 1000, killSignal: 'SIGKILL' }, (e, stdout, stderr) => {
      const received = Number(/(\d+) received/.exec(String(stdout))?.[1] ?? 0);
      const ttl = /ttl=(\d+)/.exec(String(stdout));
      resolve({ ok: e === null && received === count, received, ttl: ttl ? Number(ttl[1]) : null, out: String(stdout) + String(stderr) });
    });
  });
}
