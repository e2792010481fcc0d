// TCP request/response between pods (netperf TCP_RR-like): one connection, a small request, the
// same-sized response, as many times as fit in the run; transactions per second and the
// per-transaction latency. The traffic tool is lab/tcp-rr.c, compiled on first use into
// dist/lab/tcp-rr (C, so that the tool's own cost is a few microseconds and the same for every
// contender; a JS echo would add tens of microseconds per transaction and hide the dataplane).
import { labToolBinary } from './c-tool.js';
import { runBounded, startBounded, waitForTcpListen, type Endpoint } from './traffic.js';

export interface RrOptions {
  from: { ns: string };
  to: Endpoint;
  /** Seconds of transactions; default 2. */
  seconds?: number;
  /** Request and response size in bytes; default 1 (as netperf TCP_RR). */
  bytes?: number;
  /** Server port; default 5301. */
  port?: number;
}

export interface RrResult {
  transactions: number;
  seconds: number;
  bytes: number;
  /** Transactions per second. */
  tps: number;
  /** Per-transaction round trip, microseconds. */
  latencyUs: { min: number; avg: number; p50: number; p90: number; p99: number; max: number };
}

/** Path of the compiled tool (lab/tcp-rr.c, compiled when the binary is missing or older). */
export function tcpRrBinary(): string {
  return labToolBinary('tcp-rr');
}

/** One request/response run from `from` to `to` (server one-off, bounded in time). */
export async function tcpRr(o: RrOptions): Promise<RrResult> {
  const bin = tcpRrBinary();
  const seconds = o.seconds ?? 2;
  const port = o.port ?? 5301;
  const bytes = o.bytes ?? 1;
  const limitSec = Math.ceil(seconds) + 8;
  const server = startBounded(o.to.ns, bin, ['server', o.to.ip, String(port), String(limitSec)], { timeoutMs: limitSec * 1000 });
  let serverExited = false;
  void server.done.then(() => { serverExited = true; });
  try {
    await waitForTcpListen(o.to.ns, port, 5000, () => !serverExited);
    const r = await runBounded(o.from.ns, bin, ['client', o.to.ip, String(port), String(seconds), String(bytes)],
      { timeoutMs: (Math.ceil(seconds) + 5) * 1000 });
    if (r.code !== 0) throw new Error(`tcp-rr client: ${r.timedOut ? 'timed out' : `exit ${r.code}`}: ${r.stderr.trim().slice(-1000)}`);
    const j = JSON.parse(r.stdout) as Omit<RrResult, 'tps'>;
    if (!(j.transactions > 0) || !(j.seconds > 0)) throw new Error(`tcp-rr: no transactions: ${r.stdout.trim()}`);
    return { ...j, tps: j.transactions / j.seconds };
  } finally {
    server.kill();
    await server.done;
  }
}
