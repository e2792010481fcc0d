#!/usr/bin/env node
// linend: the command-line entry point.
import { parseArgs } from 'node:util';
import { availableParallelism } from 'node:os';
import { createLogger } from './log.js';
import { runStatic, type DaemonOptions } from './daemon.js';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      'static-peers': { type: 'string' }, iface: { type: 'string', multiple: true }, 'iface-regex': { type: 'string', multiple: true },
      'iface-can-reach': { type: 'string' }, 'public-ip': { type: 'string' }, 'subnet-file': { type: 'string' },
      'healthz-ip': { type: 'string' }, 'healthz-port': { type: 'string' }, engine: { type: 'string' },
      queues: { type: 'string' }, offload: { type: 'string' }, v: { type: 'string' },
    },
  });
  const o: DaemonOptions = {
    staticPeers: values['static-peers'] ?? '', iface: values.iface ?? [], ifaceRegex: values['iface-regex'] ?? [],
    ifaceCanReach: values['iface-can-reach'] ?? '', publicIp: values['public-ip'] ?? '', subnetFile: values['subnet-file'] ?? '/run/flannel/subnet.env',
    healthzIp: values['healthz-ip'] ?? '0.0.0.0', healthzPort: Number(values['healthz-port'] ?? 0),
    engine: values.engine === 'dgram' ? 'dgram' : 'native', queues: Number(values.queues ?? availableParallelism()),
    offload: (values.offload ?? 'auto') as DaemonOptions['offload'],
  };
  const log = createLogger({ component: 'linend', verbosity: Number(values.v ?? 0) });
  const running = await runStatic(o, log);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => { log.info(`Received ${sig}, stopping`); resolve(); };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await running.stop();
  return 0;
}

main().then((code) => process.exit(code), (e: Error) => {
  process.stderr.write(`linend: ${e.message}\n`);
  process.exit(1);
});
