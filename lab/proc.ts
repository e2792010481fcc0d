// What a running process holds, from /proc: memory, descriptors, threads (leak checks).
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterNode } from './cluster.js';

/** A "<field>: N kB" line of /proc/<pid>/status, in KiB. */
function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} for ${pid}`);
  return Number(m[1]);
}

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number {
  return statusKiB(pid, 'VmRSS');
}

/** VmHWM of a process in KiB: the most it was ever resident. */
export function peakRssKiB(pid: number): number {
  return statusKiB(pid, 'VmHWM');
}

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Open descriptors of a process with what they point to (fd -> readlink target). */
export function fdTargets(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try { out.set(fd, readlinkSync(`/proc/${pid}/fd/${fd}`)); } catch { /* closed meanwhile */ }
  }
  return out;
}

/**
 * The process's descriptors at rest: the smallest of `samples` readings 200 ms apart (a health
 * request being answered or an iptables check running holds a descriptor or three for a
 * moment; a leak shows in every reading). Returns the count and the targets of that reading.
 */
export async function fdsAtRest(pid: number, samples = 6): Promise<{ count: number; targets: Map<string, string> }> {
  let best: Map<string, string> | null = null;
  for (let i = 0; i < samples; i++) {
    const m = fdTargets(pid);
    if (best === null || m.size < best.size) best = m;
    await sleep(200);
  }
  return { count: best!.size, targets: best! };
}

/** What changed between two fdTargets() readings, for messages. */
export function fdDiff(a: Map<string, string>, b: Map<string, string>): string {
  const kind = (t: string): string => t.replace(/\[\d+\]$/, '[]').replace(/^\/.*/, 'file');
  const count = (m: Map<string, string>): Map<string, number> => {
    const c = new Map<string, number>();
    for (const t of m.values()) c.set(kind(t), (c.get(kind(t)) ?? 0) + 1);
    return c;
  };
  const ca = count(a), cb = count(b);
  const parts: string[] = [];
  for (const k of new Set([...ca.keys(), ...cb.keys()])) {
    const d = (cb.get(k) ?? 0) - (ca.get(k) ?? 0);
    if (d !== 0) parts.push(`${k} ${d > 0 ? '+' : ''}${d}`);
  }
  return parts.join(', ') || 'same kinds';
}

/** Threads of a process. */
export function threadCount(pid: number): number {
  const m = /Threads:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN);
}

export function pidOf(n: ClusterNode): number {
  const pid = n.process?.pid;
  if (pid === undefined) throw new Error(`linend on host ${n.index + 1} is not running`);
  return pid;
}
