// /healthz, /readyz and /metrics on --healthz-ip:--healthz-port. The first two answer as
// flanneld does (same codes and bodies, so existing probes keep working); /metrics is linen's
// own, in the Prometheus text format.
import { createServer, type Server } from 'node:http';
import { VERDICTS, DIRECTIONS } from './dataplane/verdicts.js';
import type { EngineStats } from './dataplane/engine.js';
import { formatIPv4 } from './net.js';

export interface MetricsSource {
  engine(): EngineStats | null;
  /** Called before each scrape so the engine's counters are current. */
  refresh?(): Promise<void>;
  /** Extra gauges and counters: name -> value (and optional help/type). */
  extra(): Metric[];
}

export interface Metric {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  value: number | bigint;
  labels?: Record<string, string>;
}

function line(name: string, labels: Record<string, string> | undefined, value: number | bigint): string {
  const l = labels && Object.keys(labels).length
    ? '{' + Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',') + '}'
    : '';
  return `${name}${l} ${value.toString()}\n`;
}

export function renderMetrics(src: MetricsSource): string {
  let out = '';
  const stats = src.engine();
  if (stats) {
    out += '# HELP linen_packets_total Packets handled by the data plane, by direction and verdict.\n# TYPE linen_packets_total counter\n';
    for (const dir of DIRECTIONS) for (const v of VERDICTS) out += line('linen_packets_total', { direction: dir, verdict: v }, stats.counters[dir][v].packets);
    out += '# HELP linen_bytes_total Bytes of inner IPv4 packets handled, by direction and verdict.\n# TYPE linen_bytes_total counter\n';
    for (const dir of DIRECTIONS) for (const v of VERDICTS) out += line('linen_bytes_total', { direction: dir, verdict: v }, stats.counters[dir][v].bytes);
    out += '# HELP linen_io_total Data-plane I/O: TUN reads and writes, UDP sends and receives, errors, wake-ups.\n# TYPE linen_io_total counter\n';
    for (const [name, v] of Object.entries(stats.io)) if (name !== 'heartbeat_ms') out += line('linen_io_total', { op: name }, v);
    const subnets = stats.peers.map((p) => `${formatIPv4(p.net)}/${p.len}`);
    for (const [what, help, tx, rx] of [
      ['packets', 'Packets forwarded to (egress) and accepted from (ingress) each peer subnet.', 'txPackets', 'rxPackets'],
      ['bytes', 'Bytes of inner IPv4 packets forwarded to and accepted from each peer subnet.', 'txBytes', 'rxBytes'],
    ] as const) {
      const name = `linen_peer_${what}_total`;
      out += `# HELP ${name} ${help}\n# TYPE ${name} counter\n`;
      stats.peers.forEach((p, i) => {
        out += line(name, { subnet: subnets[i]!, direction: 'egress' }, p[tx]);
        out += line(name, { subnet: subnets[i]!, direction: 'ingress' }, p[rx]);
      });
    }
    out += '# HELP linen_workers Data-plane worker threads running.\n# TYPE linen_workers gauge\n';
    out += line('linen_workers', undefined, stats.workers);
    out += '# HELP linen_worker_restarts_total Data-plane workers that died and were restarted.\n# TYPE linen_worker_restarts_total counter\n';
    out += line('linen_worker_restarts_total', undefined, stats.workerRestarts);
  }
  const seen = new Set<string>();
  for (const m of src.extra()) {
    if (!seen.has(m.name)) {
      out += `# HELP ${m.name} ${m.help}\n# TYPE ${m.name} ${m.type}\n`;
      seen.add(m.name);
    }
    out += line(m.name, m.labels, m.value);
  }
  return out;
}

export interface HealthServer {
  setReady(ready: boolean): void;
  close(): Promise<void>;
  readonly port: number;
}

/** Test-only endpoints under /debug/, answered only when a handler is given. */
export type DebugHandler = (path: string, query: URLSearchParams) => string | null;

export async function startHealthServer(ip: string, port: number, src: MetricsSource, debug?: DebugHandler): Promise<HealthServer> {
  let ready = false;
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    const answer = debug && path.startsWith('/debug/') ? debug(path, url.searchParams) : null;
    if (answer !== null) {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(answer);
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('flanneld is running');
    } else if (path === '/readyz') {
      if (ready) res.writeHead(200, { 'content-type': 'text/plain' }).end('flanneld is ready');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end('flanneld is not ready yet');
    } else if (path === '/metrics') {
      const render = (): void => { res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(renderMetrics(src)); };
      (src.refresh?.() ?? Promise.resolve()).then(render, render);
    } else {
      res.writeHead(404).end('404 page not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`healthz server on ${ip}:${port}: ${e.message}`)));
    server.listen(port, ip, () => resolve());
  });
  const addr = server.address();
  return {
    setReady: (r) => { ready = r; },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    port: typeof addr === 'object' && addr ? addr.port : port,
  };
}
