// The highest UDP rate a path carries without loss (< 1 % by default): iperf3 -u at offered
// rates chosen by a bounded bisection, a few short steps. The search starts from what the
// path delivered at an unlimited rate (a good first guess of its capacity), halves on loss
// until a rate passes, then bisects between the best passing and the lowest failing rate.
import { iperfUdp, type IperfUdpOptions, type IperfUdpResult } from './traffic.js';

export interface RateSearchOptions extends Omit<IperfUdpOptions, 'bitrate'> {
  /** The unlimited-rate run of the same payload size: where the search starts. */
  unlimited: Pick<IperfUdpResult, 'packetsPerSecond' | 'sentPacketsPerSecond' | 'lossPercent' | 'jitterMs'>;
  /** Probes at most (each `seconds` long); default 4. */
  steps?: number;
  /** Loss below this passes, percent; default 1. */
  maxLossPercent?: number;
}

export interface RateProbe {
  /** Offered datagrams per second (iperf3 -b = this × payload × 8). */
  offeredPps: number;
  sentPps: number;
  receivedPps: number;
  lossPercent: number;
  jitterMs: number;
  passed: boolean;
}

export interface RateSearchResult {
  /** Received datagrams/s at the highest passing probe; 0 when none passed. */
  lossFreePps: number;
  /** Jitter at that probe, ms (NaN when none passed). */
  jitterMs: number;
  /** Every probe in order; empty when the unlimited run itself passed. */
  probes: RateProbe[];
  maxLossPercent: number;
  /** 'unlimited': the unlimited-rate run already lost less than the limit. */
  foundBy: 'unlimited' | 'search' | 'none';
}

export async function udpLossFreeRate(o: RateSearchOptions): Promise<RateSearchResult> {
  const maxLoss = o.maxLossPercent ?? 1;
  const steps = o.steps ?? 4;
  if (o.unlimited.lossPercent < maxLoss) {
    return { lossFreePps: o.unlimited.packetsPerSecond, jitterMs: o.unlimited.jitterMs, probes: [], maxLossPercent: maxLoss, foundBy: 'unlimited' };
  }
  // The unlimited run offered `sentPps` and lost too much: the answer lies below it.
  let failing = Math.max(1, o.unlimited.sentPacketsPerSecond);
  let passing = 0;
  let best: RateProbe | undefined;
  let offered = Math.min(failing * 0.95, Math.max(failing * 0.05, o.unlimited.packetsPerSecond));
  const probes: RateProbe[] = [];
  for (let i = 0; i < steps; i++) {
    const bitrate = Math.max(1000, Math.round(offered * o.payloadBytes * 8));
    const r = await iperfUdp({ ...o, bitrate });
    const p: RateProbe = {
      offeredPps: offered, sentPps: r.sentPacketsPerSecond, receivedPps: r.packetsPerSecond,
      lossPercent: r.lossPercent, jitterMs: r.jitterMs, passed: r.lossPercent < maxLoss,
    };
    probes.push(p);
    if (p.passed) {
      passing = offered;
      if (!best || p.receivedPps > best.receivedPps) best = p;
    } else {
      failing = offered;
    }
    offered = passing > 0 ? (passing + failing) / 2 : failing / 2;
  }
  return {
    lossFreePps: best?.receivedPps ?? 0, jitterMs: best?.jitterMs ?? NaN, probes, maxLossPercent: maxLoss,
    foundBy: best ? 'search' : 'none',
  };
}
