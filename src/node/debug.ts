// Test-only knobs, off unless the environment turns them on: the debug endpoints
// (LINEN_DEBUG_HOOKS=1, answered only to loopback clients) and short lease timings (LINEN_DEBUG_LEASE_TTL_SECONDS,
// LINEN_DEBUG_RENEW_MARGIN_SECONDS).
import type { DebugAnswer, DebugHandler } from './http.js';
import type { Engine } from '../dataplane/engine.js';
import type { NativeEngineFactory } from '../dataplane/index.js';
import { DebugNativeEngine } from '../dataplane/debug-engine.js';

/** With LINEN_DEBUG_HOOKS=1, the native engine that the hooks below can drive; else undefined
 * (the product engine). */
export function debugNativeEngine(): NativeEngineFactory | undefined {
  if (process.env.LINEN_DEBUG_HOOKS !== '1') return undefined;
  return (opts, routes, events) => new DebugNativeEngine(opts, routes, events);
}

/**
 * Hooks for the reliability tests, off unless LINEN_DEBUG_HOOKS=1 and answered only to loopback
 * clients (the HTTP server checks), all on the native engine's workers (debugNativeEngine()'s):
 * /debug/crash-worker?index=N makes worker N throw (the restart path);
 * /debug/bad-route?index=N sends it a route its core refuses (a control message that fails);
 * /debug/fail-worker-starts?index=N&count=K makes its next K starts fail before it is ready.
 * Query values are checked strictly: anything but a small decimal number is a 400.
 */
export function debugHooks(engine: () => Engine | null): DebugHandler | undefined {
  if (process.env.LINEN_DEBUG_HOOKS !== '1') return undefined;
  const count = (query: URLSearchParams, name: string, dflt: number): number | null => {
    const raw = query.get(name) ?? String(dflt);
    return /^\d{1,4}$/.test(raw) && Number(raw) < 1024 ? Number(raw) : null;
  };
  const bad = (body: string): DebugAnswer => ({ status: 400, body });
  return (path, query) => {
    const e = engine();
    if (!(e instanceof DebugNativeEngine)) return null;
    const index = count(query, 'index', 0);
    if (index === null) return bad(`bad index ${JSON.stringify(query.get('index'))}\n`);
    try {
      if (path === '/debug/crash-worker') { e.crashWorker(index); return { status: 200, body: 'crashing\n' }; }
      if (path === '/debug/bad-route') { e.badRouteToWorker(index); return { status: 200, body: 'sent\n' }; }
      if (path === '/debug/fail-worker-starts') {
        const k = count(query, 'count', 1);
        if (k === null) return bad(`bad count ${JSON.stringify(query.get('count'))}\n`);
        e.failWorkerStarts(index, k);
        return { status: 200, body: 'armed\n' };
      }
    } catch (err) {
      return bad(`${(err as Error).message}\n`);
    }
    return null;
  };
}

/** Test-only lease timing (LINEN_DEBUG_LEASE_TTL_SECONDS, LINEN_DEBUG_RENEW_MARGIN_SECONDS). */
export function debugLeaseTiming(): { leaseTTLSeconds?: number; renewMarginMs?: number } {
  const ttl = Number(process.env.LINEN_DEBUG_LEASE_TTL_SECONDS ?? '');
  const margin = Number(process.env.LINEN_DEBUG_RENEW_MARGIN_SECONDS ?? '');
  return {
    ...(ttl > 0 ? { leaseTTLSeconds: ttl } : {}),
    ...(margin > 0 ? { renewMarginMs: margin * 1000 } : {}),
  };
}
