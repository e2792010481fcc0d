// A real etcd for one test: free 127.0.0.1 ports, a temp data dir, a unique member name.
//
//   const etcd = await startEtcd(t);          // waits until /health says true
//   etcd.endpoints                            // ["http://127.0.0.1:PORT"]
//   await etcd.ctl('put', '/k', 'v')          // etcdctl against this member, stdout back
//   await etcd.stop(); await etcd.start();    // SIGTERM and start again, data kept
//   await etcd.kill();                        // SIGKILL
//   await etcd.restart({ wipe: true })        // stop, delete the data dir, start (same ports)
//
// Cleanup (process and directory) is registered with t.teardown, and a process 'exit' hook
// kills whatever is still running if the test process dies first.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export interface Teardown {
  teardown(fn: () => void | Promise<void>): void;
}

export interface EtcdTLS {
  /** Server certificate and key (PEM files); the client URL becomes https. */
  certFile: string;
  keyFile: string;
  /** CA that signed client certificates; with it etcd requires client certificates. */
  caFile: string;
  /** Client certificate used by ctl() and the health check. */
  clientCertFile: string;
  clientKeyFile: string;
}

export interface EtcdOptions {
  /** Extra etcd flags, e.g. ['--auth-token=simple']. */
  args?: string[];
  tls?: EtcdTLS;
  /** Milliseconds to wait for health; default 20 000. */
  startTimeout?: number;
}

export interface EtcdHandle {
  readonly name: string;
  readonly dataDir: string;
  readonly clientURL: string;
  readonly endpoints: string[];
  readonly clientPort: number;
  /** True while the process is running. */
  readonly running: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
  kill(): Promise<void>;
  restart(opts?: { wipe?: boolean }): Promise<void>;
  /** Runs etcdctl (v3 API) against this member; resolves with stdout, rejects on failure. */
  ctl(...args: string[]): Promise<string>;
  /** Everything etcd wrote to stderr so far (for failure messages). */
  logs(): string;
}

const ETCD = '/usr/bin/etcd';
const ETCDCTL = '/usr/bin/etcdctl';

const live = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitHook = false;
function registerExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const p of live) {
      try {
        p.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startEtcd(t: Teardown, opts: EtcdOptions = {}): Promise<EtcdHandle> {
  registerExitHook();
  const name = `linen-test-${process.pid}-${randomBytes(4).toString('hex')}`;
  let dataDir = mkdtempSync(join(tmpdir(), `${name}-`));
  liveDirs.add(dataDir);
  const clientPort = await freePort();
  let peerPort = await freePort();
  while (peerPort === clientPort) peerPort = await freePort();
  const tls = opts.tls;
  const clientURL = `${tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`;
  const peerURL = `http://127.0.0.1:${peerPort}`;
  let proc: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let stderr = '';

  const spawnEtcd = (): void => {
    const args = [
      `--name=${name}`,
      `--data-dir=${join(dataDir, 'data')}`,
      `--listen-client-urls=${clientURL}`,
      `--advertise-client-urls=${clientURL}`,
      `--listen-peer-urls=${peerURL}`,
      `--initial-advertise-peer-urls=${peerURL}`,
      `--initial-cluster=${name}=${peerURL}`,
      '--initial-cluster-state=new',
      `--initial-cluster-token=${name}`,
      '--heartbeat-interval=10',
      '--election-timeout=100',
      '--logger=zap',
      '--log-level=warn',
      '--log-outputs=stderr',
      ...(tls
        ? [`--cert-file=${tls.certFile}`, `--key-file=${tls.keyFile}`, `--trusted-ca-file=${tls.caFile}`, '--client-cert-auth']
        : []),
      ...(opts.args ?? []),
    ];
    const p = spawn(ETCD, args, { stdio: ['ignore', 'ignore', 'pipe'] });
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

  const healthBody = async (): Promise<{ health?: string }> => {
    if (!tls) {
      const res = await fetch(`${clientURL}/health`, { signal: AbortSignal.timeout(1000) });
      return (await res.json()) as { health?: string };
    }
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        `${clientURL}/health`,
        {
          ca: readFileSync(tls.caFile),
          cert: readFileSync(tls.clientCertFile),
          key: readFileSync(tls.clientKeyFile),
          servername: '', // no SNI for an IP address
          timeout: 1000,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => {
            try {
              resolve(JSON.parse(body) as { health?: string });
            } catch (e) {
              reject(e as Error);
            }
          });
        },
      );
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.end();
    });
  };

  const waitHealthy = async (): Promise<void> => {
    const deadline = Date.now() + (opts.startTimeout ?? 20_000);
    for (;;) {
      if (proc === null) throw new Error(`etcd ${name} exited during start-up:\n${stderr.slice(-4000)}`);
      try {
        if ((await healthBody()).health === 'true') return;
      } catch {
        /* not up yet */
      }
      if (Date.now() > deadline) throw new Error(`etcd ${name} not healthy after start-up timeout:\n${stderr.slice(-4000)}`);
      await sleep(50);
    }
  };

  const signalAndWait = async (sig: NodeJS.Signals): Promise<void> => {
    const p = proc;
    if (p === null) return;
    p.kill(sig);
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  const handle: EtcdHandle = {
    name,
    get dataDir() {
      return dataDir;
    },
    clientURL,
    endpoints: [clientURL],
    clientPort,
    get running() {
      return proc !== null;
    },
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
        liveDirs.delete(dataDir);
        dataDir = mkdtempSync(join(tmpdir(), `${name}-`));
        liveDirs.add(dataDir);
      }
      spawnEtcd();
      await waitHealthy();
    },
    ctl(...args: string[]) {
      return new Promise<string>((resolve, reject) => {
        execFile(
          ETCDCTL,
          [
            `--endpoints=${clientURL}`,
            ...(tls ? [`--cacert=${tls.caFile}`, `--cert=${tls.clientCertFile}`, `--key=${tls.clientKeyFile}`] : []),
            ...args,
          ],
          { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 15_000 },
          (e, stdout, errout) => {
            if (e !== null) reject(new Error(`etcdctl ${args.join(' ')}: ${e.message}\n${errout}`));
            else resolve(stdout);
          },
        );
      });
    },
    logs: () => stderr,
  };

  t.teardown(async () => {
    await signalAndWait('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
    liveDirs.delete(dataDir);
  });

  spawnEtcd();
  await waitHealthy();
  return handle;
}
