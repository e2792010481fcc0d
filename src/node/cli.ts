#!/usr/bin/env -S node --no-sparkplug --no-short-builtin-calls
// linend: flanneld's command line, linen's data path.
import './heap-limits.js';
import { readFileSync } from 'node:fs';
import { createLogger } from '../log.js';
import { parseFlags } from './flags.js';
import { FlagError } from './goflag.js';
import { repoRoot } from '../paths.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(`${repoRoot()}/package.json`, 'utf8')) as { version: string };
  return `v${pkg.version}`;
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseFlags(process.argv.slice(2), process.env);
  } catch (e) {
    if (e instanceof FlagError) {
      process.stderr.write(`linend: ${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(parsed.text);
    return 0;
  }
  if (parsed.kind === 'version') {
    process.stderr.write(`${version()}\n`);
    return 0;
  }
  const o = parsed.options;
  const log = createLogger({ component: 'linend', verbosity: o.verbosity });
  log.info(`linend ${version()} starting`);
  // The daemon (etcd client, data plane) is loaded only now: a bad flag is reported
  // in a few tens of milliseconds instead of after half a second of module loading.
  const { runEtcd, runStatic, shutdownSignal } = await import('./daemon.js');
  const stop = shutdownSignal(log);
  if (o.kubeSubnetMgr) {
    const { runKube } = await import('./daemon-kube.js');
    return runKube(o, log, stop.signal);
  }
  return o.staticPeers ? runStatic(o, log, stop.signal) : runEtcd(o, log, stop.signal);
}

main().then((code) => process.exit(code), (e: Error) => {
  process.stderr.write(`linend: ${e.message}\n`);
  process.exit(1);
});
