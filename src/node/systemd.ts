// Readiness for a systemd unit with Type=notify, as flanneld reports it: READY=1 on
// NOTIFY_SOCKET once the lease is held, the device is up and the peers are routed.
import type { Logger } from '../log.js';
import { loadNative } from '../addon/native.js';

export function notifyReady(log: Logger, env: NodeJS.ProcessEnv = process.env): void {
  const socket = env['NOTIFY_SOCKET'];
  if (!socket) return;
  try {
    loadNative().sdNotify(socket, 'READY=1');
  } catch (e) {
    // As sd_notify's callers do: the service keeps running; systemd's start timeout reports it.
    log.warn(`Failed to notify systemd that linend is ready (NOTIFY_SOCKET=${socket}): ${(e as Error).message}`);
  }
}
