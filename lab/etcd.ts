// A real etcd (Debian's etcd-server) for tests, the demo and the benchmark: on 127.0.0.1 in
// this namespace, or on an address inside a network namespace, with its own data directory,
// killed and removed by destroy() and on process exit.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { nsExec } from './netns.js';
import { waitFor } from './wait.js';

const require = createRequire(import.meta.url);

export const ETCD = '/usr/bin/etcd';
export const ETCDCTL = '/usr/bin/etcdctl';

export interface EtcdServerOptions {
  /** Network namespace to run in; default: the current one. */
  ns?: string;
  /** Address to listen on; default 127.0.0.1. */
  host?: string;
  /** Client and peer ports; default: free ports (in the current namespace) or 2379/2380 in a namespace. */
  clientPort?: number;
  peerPort?: number;
  /** Extra etcd flags, e.g. ['--auth-token=simple']. */
  args?: string[];
  /** Milliseconds to wait for health; default 20 000. */
  startTimeout?: number;
  tls?: EtcdTLS;
}

export interface EtcdTLS {
  /** Server certificate and key (PEM files); the client URL becomes https. */
  certFile: string;
  keyFile: string;
  /** CA that signed client certificates; with it etcd requires client certificates (unless clientCertAuth is false). */
  caFile: string;
  /** Default true: etcd requires a client certificate (--client-cert-auth); false: server-side TLS only. */
  clientCertAuth?: boolean;
  /** Client certificate used by ctl() and the health check. */
  clientCertFile: string;
  clientKeyFile: string;
}

export interface EtcdServer {
  readonly name: string;
  readonly dataDir: string;
  readonly clientURL: string;
  readonly endpoints: string[];
  readonly clientPort: number;
  readonly running: boolean;
  /** PID of the etcd process while it runs (its CPU and memory, from /proc), else null. */
  readonly pid: number | null;
  start(): Promise<void>;
  /** SIGTERM, data kept. */
  stop(): Promise<void>;
  /** SIGKILL, data kept. */
  kill(): Promise<void>;
  restart(opts?: { wipe?: boolean }): Promise<void>;
  /** etcdctl against this member (in its namespace); resolves stdout. */
  ctl(...args: string[]): Promise<string>;
  /** `etcdctl txn` with no compares and `ops` (e.g. "put k v", "del k"; at most 128) as the success branch. */
  txn(ops: string[]): Promise<string>;
  /** The last of what etcd wrote to stderr. */
  logs(): string;
  /** Kills it and removes its data. Idempotent. */
  destroy(): Promise<void>;
}

const live = new Set<ChildProcess>();
const dataDirs = new Set<string>();
let exitHook = false;
function registerExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const p of live) {
      try { p.kill('SIGKILL'); } catch { /* already gone */ }
    }
    for (const d of dataDirs) rmSync(d, { recursive: true, force: true });
  });
}

/** A free TCP port on 127.0.0.1 (bound then released; etcd binds it right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const inNs = (ns: string | undefined, cmd: string, args: string[]): [string, string[]] =>
  ns ? ['ip', ['netns', 'exec', ns, cmd, ...args]] : [cmd, args];

export async function startEtcdServer(opts: EtcdServerOptions = {}): Promise<EtcdServer> {
  if (!existsSync(ETCD)) throw new Error(`${ETCD} is missing: install Debian's etcd-server (apt-get install -y etcd-server etcd-client)`);
  registerExitHook();
  const name = `linen-${process.pid}-${randomBytes(4).toString('hex')}`;
  let dataDir = mkdtempSync(join(tmpdir(), `${name}-`));
  dataDirs.add(dataDir);
  const host = opts.host ?? '127.0.0.1';
  const clientPort = opts.clientPort ?? (opts.ns ? 2379 : await freePort());
  let peerPort = opts.peerPort ?? (opts.ns ? 2380 : await freePort());
  while (!opts.ns && peerPort === clientPort) peerPort = await freePort();
  const scheme = opts.tls ? 'https' : 'http';
  const clientURL = `${scheme}://${host}:${clientPort}`;
  const peerURL = `http://${host}:${peerPort}`;
  let proc: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let stderr = '';
  let destroyed = false;

  const spawnEtcd = (): void => {
    const args = [
      `--name=${name}`, `--data-dir=${join(dataDir, 'data')}`,
      `--listen-client-urls=${clientURL}`, `--advertise-client-urls=${clientURL}`,
      `--listen-peer-urls=${peerURL}`, `--initial-advertise-peer-urls=${peerURL}`,
      `--initial-cluster=${name}=${peerURL}`, '--initial-cluster-state=new', `--initial-cluster-token=${name}`,
      '--heartbeat-interval=10', '--election-timeout=100',
      '--logger=zap', '--log-level=warn', '--log-outputs=stderr',
      ...(opts.tls ? [`--cert-file=${opts.tls.certFile}`, `--key-file=${opts.tls.keyFile}`] : []),
      ...(opts.tls && opts.tls.clientCertAuth !== false ? [`--trusted-ca-file=${opts.tls.caFile}`, '--client-cert-auth'] : []),
      ...(opts.args ?? []),
    ];
    const [cmd, argv] = inNs(opts.ns, ETCD, args);
    const p = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    proc = p;
    live.add(p);
    p.stderr?.setEncoding('utf8');
    p.stderr?.on('data', (d: string) => {
      stderr += d;
      if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
    });
    exited = new Promise<void>((resolve) => {
      p.once('exit', () => {
        live.delete(p);
        if (proc === p) proc = null;
        resolve();
      });
    });
  };

  const etcdctl = (args: string[], input?: string): Promise<string> => new Promise<string>((resolve, reject) => {
    const tlsArgs = opts.tls ? [`--cacert=${opts.tls.caFile}`, `--cert=${opts.tls.clientCertFile}`, `--key=${opts.tls.clientKeyFile}`] : [];
    const [cmd, argv] = inNs(opts.ns, ETCDCTL, [`--endpoints=${clientURL}`, ...tlsArgs, ...args]);
    const child = execFile(cmd, argv, { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 15_000, killSignal: 'SIGKILL' }, (e, stdout, errout) => {
      if (e !== null) reject(new Error(`etcdctl ${args.join(' ')}: ${e.message}\n${errout}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
  const ctl = (...args: string[]): Promise<string> => etcdctl(args);
  // etcdctl txn reads compares, then success ops, then failure ops, each block ended by a blank line.
  const txn = (ops: string[]): Promise<string> => etcdctl(['txn'], `\n${ops.join('\n')}\n\n\n`);

  const waitHealthy = async (): Promise<void> => {
    const took = await waitFor(async () => {
      if (proc === null) throw new Error(`etcd ${name} exited during start-up:\n${stderr.slice(-4000)}`);
      return ctl('endpoint', 'health', '--command-timeout=1s').then(() => true, () => false);
    }, opts.startTimeout ?? 20_000);
    if (took < 0) throw new Error(`etcd ${name} not healthy after start-up timeout:\n${stderr.slice(-4000)}`);
  };

  const signalAndWait = async (sig: NodeJS.Signals): Promise<void> => {
    const p = proc;
    if (p === null) return;
    p.kill(sig);
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  const server: EtcdServer = {
    name,
    get dataDir() { return dataDir; },
    clientURL,
    endpoints: [clientURL],
    clientPort,
    get running() { return proc !== null; },
    get pid() { return proc?.pid ?? null; },
    async start() {
      if (proc !== null) return;
      spawnEtcd();
      await waitHealthy();
    },
    stop: () => signalAndWait('SIGTERM'),
    kill: () => signalAndWait('SIGKILL'),
    async restart(o: { wipe?: boolean } = {}) {
      await signalAndWait('SIGTERM');
      if (o.wipe === true) {
        rmSync(dataDir, { recursive: true, force: true });
        dataDirs.delete(dataDir);
        dataDir = mkdtempSync(join(tmpdir(), `${name}-`));
        dataDirs.add(dataDir);
      }
      spawnEtcd();
      await waitHealthy();
    },
    ctl,
    txn,
    logs: () => stderr,
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      await signalAndWait('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
      dataDirs.delete(dataDir);
    },
  };
  spawnEtcd();
  try {
    await waitHealthy();
  } catch (e) {
    await server.destroy();
    throw e;
  }
  return server;
}

/**
 * Writes many keys fast from inside a network namespace (where the etcd address is reachable):
 * a short-lived node process with the etcd3 client sends transactions of up to 128 puts (etcd's
 * default --max-txn-ops), 8 at a time. Bounded: killed after timeoutMs (default 120 s).
 */
export function putMany(ns: string, endpoints: string[], kvs: readonly (readonly [string, string])[], timeoutMs = 120_000): void {
  const script = `
    const { Etcd3 } = require(${JSON.stringify(require.resolve('etcd3'))});
    const kvs = JSON.parse(require('fs').readFileSync(0, 'utf8'));
    const client = new Etcd3({ hosts: ${JSON.stringify(endpoints)} });
    const batches = [];
    for (let i = 0; i < kvs.length; i += 128) batches.push(kvs.slice(i, i + 128));
    let next = 0;
    const worker = async () => {
      while (next < batches.length) {
        const b = batches[next++];
        await client.kv.txn({ success: b.map(([k, v]) => ({ request_put: { key: Buffer.from(k), value: Buffer.from(v) } })) });
      }
    };
    Promise.all(Array.from({ length: 8 }, worker)).then(() => client.close(), (e) => { console.error(e); process.exit(1); });
  `;
  nsExec(ns, process.execPath, ['-e', script], { input: JSON.stringify(kvs), timeout: timeoutMs });
}

export interface GrpcProxy {
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  readonly pid: number;
  /** SIGKILL, and waits for the exit. Idempotent. */
  stop(): Promise<void>;
}

/**
 * `etcd grpc-proxy start` on a free port of 127.0.0.1 in front of endpoints (plain http),
 * ready once a read through it answers. Killed on process exit too.
 */
export async function startGrpcProxy(endpoints: string[], startTimeoutMs = 20_000): Promise<GrpcProxy> {
  registerExitHook();
  const port = await freePort();
  const target = endpoints.map((e) => e.replace(/^[a-z]+:\/\//, '')).join(',');
  const p = spawn(ETCD, ['grpc-proxy', 'start', `--endpoints=${target}`, `--listen-addr=127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(p);
  let stderr = '';
  p.stderr?.setEncoding('utf8');
  p.stderr?.on('data', (d: string) => {
    stderr = (stderr + d).slice(-20_000);
  });
  const exited = new Promise<void>((resolve) => p.once('exit', () => {
    live.delete(p);
    resolve();
  }));
  const endpoint = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (live.has(p)) p.kill('SIGKILL');
    await exited;
  };
  const read = (): Promise<boolean> => new Promise((resolve) => {
    execFile(ETCDCTL, [`--endpoints=${endpoint}`, '--command-timeout=1s', 'get', '/linen-proxy-ready'], { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 5000 }, (e) => resolve(e === null));
  });
  const took = await waitFor(async () => {
    if (!live.has(p)) throw new Error(`etcd grpc-proxy exited during start-up:\n${stderr}`);
    return read();
  }, startTimeoutMs);
  if (took < 0) {
    await stop();
    throw new Error(`etcd grpc-proxy not answering after start-up timeout:\n${stderr}`);
  }
  return { endpoint, pid: p.pid ?? -1, stop };
}
