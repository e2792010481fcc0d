// /healthz, /readyz and /metrics on --healthz-ip:--healthz-port. The first two answer as
// flanneld does (same codes and bodies, so existing probes keep working); /metrics is linen's
// own, in the Prometheus text format (metrics/prometheus.ts).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Metric } from '../metric.js';
import { renderMetrics, type MetricsSource } from '../metrics/prometheus.js';
import { ProcessMetrics } from '../metrics/process.js';

export interface HealthServer {
  setReady(ready: boolean): void;
  close(): Promise<void>;
  /** The port /healthz is served on (the first server's). */
  readonly port: number;
}

/** A test-only endpoint's answer; null: not a debug path this handler knows. */
export interface DebugAnswer { status: number; body: string }
/** Test-only endpoints under /debug/, answered only when a handler is given, and only to loopback clients. */
export type DebugHandler = (path: string, query: URLSearchParams) => DebugAnswer | null;

/** Where each endpoint is served: flanneld's --healthz-ip/--healthz-port, and linen's optional separate /metrics server. */
export interface HttpEndpoints {
  healthzIP: string;
  healthzPort: number;
  /** 0: /metrics is served beside /healthz; otherwise only on metricsIP:metricsPort. */
  metricsPort: number;
  metricsIP: string;
  /** --peer-metrics-limit: peers with per-peer series in /metrics (0: none). */
  peerMetricsLimit: number;
}

/**
 * Limits that keep one client (or a pod flooding the node's health port) from holding the
 * server: short header and request timeouts, a small header size, a connection cap, and a
 * share of it per client address. The probes and scrapes this server exists for send one small
 * GET and read a small answer, so none of these limits touches them.
 */
export const HTTP_LIMITS = {
  maxHeaderSize: 8192,
  /** A request whose headers have not all arrived by then is answered 408 and closed. */
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  /** A connection on which nothing moves either way (a client that never reads its answers) is closed. */
  idleTimeoutMs: 10_000,
  /** Requests answered on one connection before it is closed (bounds what one pipelining client queues). */
  maxRequestsPerSocket: 32,
  maxConnections: 64,
  /** Connections one remote address may hold at once, unless it is the node itself. */
  maxConnectionsPerClient: 8,
  /** Slots of maxConnections only the node itself (loopback, or its own address) may take. */
  reservedForNode: 16,
} as const;

/** Why a connection was refused before any request was read (a label of linen_http_connections_refused_total). */
export type RefusedReason = 'client_limit' | 'server_full';

/**
 * The path and query of a request target, without trusting it: origin-form ("/path?q") and
 * absolute-form ("http://host/path?q", which HTTP/1.1 servers must accept); anything else (no
 * leading slash, "//", "*", control characters) is null and answered 400.
 */
export function parseTarget(target: string | undefined): { path: string; query: URLSearchParams } | null {
  if (target === undefined || target.length === 0 || target.length > 2048) return null;
  let rest = target;
  if (/^[a-z][a-z0-9+.-]*:/i.test(rest)) {
    // Absolute-form: the authority must be a host name, an IPv4 or a bracketed IPv6 literal,
    // with an optional port in range; the path after it is what is served.
    const abs = /^https?:\/\/(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?(?=[/?#]|$)/i.exec(rest);
    if (!abs || (abs[1] !== undefined && Number(abs[1]) > 65535)) return null;
    rest = rest.slice(abs[0].length) || '/';
  }
  if (rest.startsWith('?')) rest = '/' + rest;
  if (!rest.startsWith('/') || rest.startsWith('//')) return null;
  if (/[\x00-\x20\x7f]/.test(rest)) return null;
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf('?');
  return q < 0 ? { path: rest, query: new URLSearchParams() } : { path: rest.slice(0, q), query: new URLSearchParams(rest.slice(q + 1)) };
}

/** True for 127.0.0.0/8, ::1 and their IPv4-mapped forms: the debug hooks answer only these. */
export function isLoopback(addr: string | undefined): boolean {
  if (!addr) return false;
  const v4 = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
  return v4 === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/**
 * A client that is the node itself: loopback, or the same address the connection arrived on
 * (kubelet probing the node's address, a scrape through --metrics-ip from the host). Such
 * clients get the slots HTTP_LIMITS.reservedForNode keeps, and no per-address limit.
 */
export function isNodeClient(remote: string | undefined, local: string | undefined): boolean {
  return isLoopback(remote) || (remote !== undefined && remote === local);
}

/** Counts of what the HTTP servers refused, for /metrics. */
export interface HttpStats {
  badRequests: number;
  handlerErrors: number;
  refused: Record<RefusedReason, number>;
  /** Connections closed with answers unread after nothing moved on them for HTTP_LIMITS.idleTimeoutMs. */
  stalled: number;
  /** The admission gate of each server, for the connections held now. */
  gates: ConnectionGate[];
}

/**
 * Admission of new connections: at most maxConnectionsPerClient per remote address, and
 * clients other than the node itself only up to maxConnections - reservedForNode together;
 * the node may use every slot. Returns the reason to refuse, or the function that gives the
 * slot back when the connection closes.
 */
export class ConnectionGate {
  private readonly perAddress = new Map<string, number>();
  private total = 0;
  private others = 0;

  constructor(private readonly limits: { maxConnections: number; maxConnectionsPerClient: number; reservedForNode: number } = HTTP_LIMITS) {}

  /** Admits a connection; call the returned function once when it closes. */
  admit(remote: string | undefined, local: string | undefined): { refused: RefusedReason } | { release: () => void } {
    const node = isNodeClient(remote, local);
    const key = remote ?? '';
    const mine = this.perAddress.get(key) ?? 0;
    if (this.total >= this.limits.maxConnections) return { refused: 'server_full' };
    if (!node) {
      if (mine >= this.limits.maxConnectionsPerClient) return { refused: 'client_limit' };
      if (this.others >= this.limits.maxConnections - this.limits.reservedForNode) return { refused: 'server_full' };
      this.others++;
    }
    this.total++;
    this.perAddress.set(key, mine + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.total--;
        if (!node) this.others--;
        const left = (this.perAddress.get(key) ?? 1) - 1;
        if (left > 0) this.perAddress.set(key, left);
        else this.perAddress.delete(key);
      },
    };
  }

  /** Connections held now: all, and by clients other than the node. */
  get held(): { total: number; others: number } {
    return { total: this.total, others: this.others };
  }
}

function text(res: ServerResponse, status: number, body: string, type = 'text/plain'): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'content-type': type }).end(body);
}

function listen(server: Server, ip: string, port: number, what: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`${what} server on ${ip}:${port}: ${e.message}`)));
    server.listen(port, ip, () => {
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

function newServer(handler: (req: IncomingMessage, res: ServerResponse) => void, stats: HttpStats): Server {
  const server = createServer({
    maxHeaderSize: HTTP_LIMITS.maxHeaderSize,
    headersTimeout: HTTP_LIMITS.headersTimeoutMs,
    requestTimeout: HTTP_LIMITS.requestTimeoutMs,
    keepAliveTimeout: HTTP_LIMITS.keepAliveTimeoutMs,
    // How often the two timeouts above are checked (Node's default, 30 s, would let them slip).
    connectionsCheckingInterval: 1000,
  }, (req, res) => {
    try {
      handler(req, res);
    } catch {
      // Nothing a client sends may end the process: answer 500 and go on.
      stats.handlerErrors++;
      text(res, 500, 'internal error\n');
    }
  });
  server.maxRequestsPerSocket = HTTP_LIMITS.maxRequestsPerSocket;
  // The gate below replaces server.maxConnections: one cap for everyone would let one client
  // take every slot from the node's own probes.
  const gate = new ConnectionGate();
  stats.gates.push(gate);
  server.on('connection', (socket: Socket) => {
    const admission = gate.admit(socket.remoteAddress, socket.localAddress);
    if ('refused' in admission) {
      stats.refused[admission.refused]++;
      socket.destroy();
      return;
    }
    socket.once('close', admission.release);
  });
  // A client that neither sends nor reads gives up its slot. Node arms this per socket and
  // re-arms it between keep-alive requests; the keep-alive timeout ends here too, and only a
  // connection with answers still unread counts as stalled.
  server.timeout = HTTP_LIMITS.idleTimeoutMs;
  server.on('timeout', (socket: Socket) => {
    if (socket.writableLength > 0) stats.stalled++;
    socket.destroy();
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // Unparsable requests, oversized headers, timeouts: a short answer where the socket can
    // still take one, then close. (Node's own default does the same but cannot be counted.)
    stats.badRequests++;
    if (err.code !== 'ECONNRESET' && socket.writable) {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large'
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    }
    socket.destroy();
  });
  return server;
}

/**
 * Starts the /healthz, /readyz and /metrics server(s); null when --healthz-port is 0 and no
 * separate metrics port is set. With a metrics port, /metrics is served only there.
 */
export async function startHttpServers(ep: HttpEndpoints, src: MetricsSource, debug?: DebugHandler): Promise<HealthServer | null> {
  let ready = false;
  const stats: HttpStats = { badRequests: 0, handlerErrors: 0, refused: { client_limit: 0, server_full: 0 }, stalled: 0, gates: [] };
  const separateMetrics = ep.metricsPort > 0;
  const processMetrics = new ProcessMetrics();
  const httpMetrics = (): Metric[] => [
    { name: 'linen_ready', help: 'Whether /readyz answers 200: the lease is held, the data path is up and the peers are loaded.', type: 'gauge', value: ready ? 1 : 0 },
    ...processMetrics.collect(),
    { name: 'linen_http_bad_requests_total', help: 'HTTP requests on the health/metrics servers refused as malformed, oversized or too slow.', type: 'counter', value: stats.badRequests },
    { name: 'linen_http_handler_errors_total', help: 'HTTP requests whose handling failed (answered 500).', type: 'counter', value: stats.handlerErrors },
    ...(Object.entries(stats.refused) as [RefusedReason, number][]).map(([reason, value]): Metric => ({
      name: 'linen_http_connections_refused_total', help: 'Connections to the health/metrics servers closed unread: client_limit (that address already holds its share), server_full (no free slot for it).',
      type: 'counter', value, labels: { reason },
    })),
    ...(['node', 'other'] as const).map((client): Metric => ({
      name: 'linen_http_connections', help: 'Connections the health/metrics servers hold now: from the node itself (loopback or its own address) and from other clients.',
      type: 'gauge', value: stats.gates.reduce((sum, g) => sum + (client === 'node' ? g.held.total - g.held.others : g.held.others), 0), labels: { client },
    })),
    { name: 'linen_http_connections_stalled_total', help: `Connections to the health/metrics servers closed with answers unread after nothing moved on them for ${HTTP_LIMITS.idleTimeoutMs / 1000} s (a client that stopped reading).`, type: 'counter', value: stats.stalled },
  ];
  const metrics = (res: ServerResponse): void => {
    const render = (): void => {
      try {
        text(res, 200, renderMetrics({ ...src, extra: () => [...src.extra(), ...httpMetrics()] }, ep.peerMetricsLimit), 'text/plain; version=0.0.4');
      } catch {
        stats.handlerErrors++;
        text(res, 500, 'internal error\n');
      }
    };
    (src.refresh?.() ?? Promise.resolve()).then(render, render);
  };
  const handler = (serveHealth: boolean, serveMetrics: boolean) => (req: IncomingMessage, res: ServerResponse): void => {
    const target = parseTarget(req.url);
    if (target === null) {
      stats.badRequests++;
      text(res, 400, 'bad request\n');
      return;
    }
    const { path, query } = target;
    if (debug && path.startsWith('/debug/') && isLoopback(req.socket.remoteAddress)) {
      const answer = debug(path, query);
      if (answer !== null) {
        text(res, answer.status, answer.body);
        return;
      }
    }
    if (serveHealth && path === '/healthz') text(res, 200, 'flanneld is running');
    else if (serveHealth && path === '/readyz') {
      if (ready) text(res, 200, 'flanneld is ready');
      else text(res, 503, 'flanneld is not ready yet');
    } else if (serveMetrics && path === '/metrics') metrics(res);
    else text(res, 404, '404 page not found\n');
  };
  const servers: Server[] = [];
  const closeAll = async (): Promise<void> => {
    processMetrics.stop();
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    })));
  };
  let port = 0;
  try {
    if (ep.healthzPort > 0) {
      const s = newServer(handler(true, !separateMetrics), stats);
      servers.push(s);
      port = await listen(s, ep.healthzIP, ep.healthzPort, 'healthz');
    }
    if (separateMetrics) {
      const s = newServer(handler(false, true), stats);
      servers.push(s);
      const p = await listen(s, ep.metricsIP, ep.metricsPort, 'metrics');
      if (port === 0) port = p;
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  if (servers.length === 0) {
    processMetrics.stop();
    return null;
  }
  return { setReady: (r) => { ready = r; }, close: closeAll, port };
}
